//! Elementwise fusion: a run of float elementwise ops (`BinF32` add, subtract, multiply,
//! divide, max, min, PRelu; `UnaryF32`; `ClampF32`; copies) over values of one length
//! becomes one [`Op::ChainF32`], which computes each block of values through the whole
//! run in registers. A GELU written out as five ops, a bias add and a residual add, a
//! scaled and masked attention score: one pass over memory each instead of one per op,
//! with the same IEEE operations in the same order (the same bits).

use super::value::Builder;
use crate::plan::{chain, BinOp, Op, Src, Unary, CHAIN_WORDS};
use alloc::vec::Vec;

/// An operand of an elementwise op in a chain.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    /// A tensor as long as the output, or repeated along it (its whole length a period).
    T(u32),
    /// Constant values repeated along the output.
    C(Vec<f32>),
}

/// An elementwise op a chain can hold.
enum Elem {
    Copy {
        x: u32,
        y: u32,
    },
    Un {
        x: u32,
        y: u32,
        f: Unary,
    },
    Clamp {
        x: u32,
        y: u32,
        lo: f32,
        hi: f32,
    },
    Bin {
        a: Operand,
        b: Operand,
        y: u32,
        f: BinOp,
    },
}

impl Elem {
    fn y(&self) -> u32 {
        match *self {
            Elem::Copy { y, .. }
            | Elem::Un { y, .. }
            | Elem::Clamp { y, .. }
            | Elem::Bin { y, .. } => y,
        }
    }
    fn tensors(&self) -> Vec<u32> {
        match self {
            Elem::Copy { x, .. } | Elem::Un { x, .. } | Elem::Clamp { x, .. } => {
                alloc::vec![*x]
            }
            Elem::Bin { a, b, .. } => [a, b]
                .iter()
                .filter_map(|o| match o {
                    Operand::T(t) => Some(*t),
                    Operand::C(_) => None,
                })
                .collect(),
        }
    }
}

/// The period along the output of an operand with element strides `s` over `dims`: the
/// operand must be the output's trailing axes from some axis on (dense there), broadcast
/// over the ones before. `None` for any other pattern.
fn period(dims: [u32; 4], s: [u32; 4]) -> Option<usize> {
    let d = dims.map(|v| v as usize);
    let s = s.map(|v| v as usize);
    // From the innermost axis out: dense while it can be, then broadcast only.
    let mut len = 1;
    let mut dense = true;
    for i in (0..4).rev() {
        if d[i] == 1 {
            continue;
        }
        if dense && s[i] == len {
            len *= d[i];
        } else if s[i] == 0 {
            dense = false;
        } else {
            return None;
        }
    }
    Some(len)
}

fn elem(b: &Builder, op: &Op) -> Option<Elem> {
    let len = |t: u32| b.tensors[t as usize].len();
    match *op {
        Op::UnaryF32 { x, y, f } if len(x) == len(y) => Some(match f {
            Unary::Identity => Elem::Copy { x, y },
            f => Elem::Un { x, y, f },
        }),
        Op::ClampF32 { x, y, lo, hi } if len(x) == len(y) => Some(Elem::Clamp { x, y, lo, hi }),
        Op::BinF32 {
            a,
            b: rhs,
            y,
            f:
                f @ (BinOp::Add
                | BinOp::Sub
                | BinOp::Mul
                | BinOp::Div
                | BinOp::Max
                | BinOp::Min
                | BinOp::PRelu),
            dims,
            sa,
            sb,
        } => {
            let n = len(y);
            if dims.iter().map(|&d| d as usize).product::<usize>() != n || n == 0 {
                return None;
            }
            let operand = |s: Src, st: [u32; 4]| -> Option<Operand> {
                let p = period(dims, st)?;
                if n % p != 0 {
                    return None;
                }
                match s {
                    Src::T(t) if len(t) == p => Some(Operand::T(t)),
                    Src::T(_) => None,
                    Src::C(c) => {
                        let bytes = b.blob.get(c.off as usize..)?.get(..c.len as usize)?;
                        let v: Vec<f32> = bytes
                            .chunks_exact(4)
                            .take(p)
                            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                            .collect();
                        (v.len() == p).then_some(Operand::C(v))
                    }
                }
            };
            Some(Elem::Bin {
                a: operand(a, sa)?,
                b: operand(rhs, sb)?,
                y,
                f,
            })
        }
        _ => None,
    }
}

/// Where a value of the chain is: an input or a register.
#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Input(u32),
    Reg(u32),
}

/// The program of the chain `ops` (elementwise, in order) if it can be one: at most two
/// input tensors, every value but the last read only inside the chain and not pinned, and
/// registers enough. Returns `(inputs, program, constants)`.
fn program(
    ops: &[Elem],
    readers: &[usize],
    pinned: &[bool],
) -> Option<(Vec<u32>, Vec<u32>, Vec<f32>)> {
    let last_y = ops.last()?.y();
    let produced: Vec<u32> = ops.iter().map(Elem::y).collect();
    // Every value but the output is read only here.
    for &t in &produced {
        let inside = ops.iter().filter(|e| e.tensors().contains(&t)).count();
        if t != last_y && (pinned[t as usize] || readers[t as usize] != inside) {
            return None;
        }
    }
    // A copy's value is its source's: `root` follows copies back.
    let copies: Vec<(u32, u32)> = ops
        .iter()
        .filter_map(|e| match *e {
            Elem::Copy { x, y } => Some((y, x)),
            _ => None,
        })
        .collect();
    let root = |mut t: u32| {
        while let Some(&(_, x)) = copies.iter().find(|(y, _)| *y == t) {
            t = x;
        }
        t
    };
    // Reads left per value (by root) among the computing ops.
    let mut left: Vec<(u32, usize)> = Vec::new();
    for e in ops.iter().filter(|e| !matches!(e, Elem::Copy { .. })) {
        for t in e.tensors() {
            let t = root(t);
            match left.iter_mut().find(|(v, _)| *v == t) {
                Some(p) => p.1 += 1,
                None => left.push((t, 1)),
            }
        }
    }
    let mut inputs: Vec<u32> = Vec::new();
    let mut slot: Vec<(u32, Slot)> = Vec::new();
    let mut free: Vec<u32> = (0..chain::REGS).rev().collect();
    let (mut prog, mut consts) = (Vec::new(), Vec::<f32>::new());
    let mut last = None;
    for e in ops {
        let (f, y, operands): (u32, u32, [Option<&Operand>; 2]) = match e {
            Elem::Copy { .. } => continue,
            Elem::Un { y, f, .. } => (*f as u32, *y, [None, None]),
            Elem::Clamp { y, .. } => (chain::CLAMP, *y, [None, None]),
            Elem::Bin { a, b, y, f } => (chain::BIN + *f as u32, *y, [Some(a), Some(b)]),
        };
        let un_x = match e {
            Elem::Un { x, .. } => Some(Operand::T(*x)),
            _ => None,
        };
        let clamp = match e {
            Elem::Clamp { x, lo, hi, .. } => {
                Some((Operand::T(*x), Operand::C(alloc::vec![*lo, *hi])))
            }
            _ => None,
        };
        let operands = match (&un_x, &clamp) {
            (Some(x), _) => [Some(x), None],
            (_, Some((x, bounds))) => [Some(x), Some(bounds)],
            _ => operands,
        };
        let mut words = [0u32; 4];
        let mut dying = Vec::new();
        for (k, o) in operands.iter().enumerate() {
            let Some(o) = o else { continue };
            words[2 * k..2 * k + 2].copy_from_slice(&match o {
                Operand::C(v) => {
                    let at = consts.len() as u32;
                    consts.extend_from_slice(v);
                    [chain::CONST + at, v.len() as u32]
                }
                Operand::T(t) => {
                    let t = root(*t);
                    let s = match slot.iter().find(|(v, _)| *v == t) {
                        Some(&(_, s)) => s,
                        // A value of the chain not computed yet: not a chain in order.
                        None if produced.contains(&t) => return None,
                        None => {
                            if inputs.len() == 2 {
                                return None;
                            }
                            inputs.push(t);
                            let s = Slot::Input(inputs.len() as u32 - 1);
                            slot.push((t, s));
                            s
                        }
                    };
                    if let Some(p) = left.iter_mut().find(|(v, _)| *v == t) {
                        p.1 -= 1;
                        if let (0, Slot::Reg(r)) = (p.1, s) {
                            dying.push(r);
                        }
                    }
                    match s {
                        Slot::Input(k) => [chain::INPUT + k, 0],
                        Slot::Reg(r) => [r, 0],
                    }
                }
            });
        }
        // A function may write the register of an operand that dies here (in place);
        // an operation writes a register it does not read.
        let d = if un_x.is_some() {
            free.extend(dying.iter().copied());
            free.pop()?
        } else {
            let d = free.pop()?;
            free.extend(dying.iter().copied());
            d
        };
        prog.extend_from_slice(&[f, d, words[0], words[1], words[2], words[3]]);
        slot.push((y, Slot::Reg(d)));
        last = Some((y, d));
    }
    // The output is the last instruction's value (not a copy of something before it).
    if last.map(|l| l.0) != Some(root(last_y)) || inputs.is_empty() {
        return None;
    }
    debug_assert!(prog.len().is_multiple_of(CHAIN_WORDS));
    Some((inputs, prog, consts))
}

/// Longest run of elementwise ops looked at for chains at once.
const MAX_RUN: usize = 32;

/// Replaces each run of consecutive elementwise float ops that feed one another (two
/// computing ops or more, one of them binary; or a lone max, min or PRelu) with one
/// [`Op::ChainF32`].
pub(super) fn fuse_chains(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    let nt = b.tensors.len();
    let mut pinned = alloc::vec![false; nt];
    for &t in pin_start.iter().chain(pin_end) {
        if let Some(p) = pinned.get_mut(t as usize) {
            *p = true;
        }
    }
    let mut readers = alloc::vec![0usize; nt];
    for op in &b.ops {
        let (ins, _) = op.io();
        let mut seen: heapless::Vec<u32, 3> = heapless::Vec::new();
        for &t in ins.iter() {
            if !seen.contains(&t) {
                let _ = seen.push(t);
                readers[t as usize] += 1;
            }
        }
    }
    let mut out: Vec<Op> = Vec::with_capacity(b.ops.len());
    let ops = core::mem::take(&mut b.ops);
    let mut run: Vec<(Op, Elem)> = Vec::new();
    // Each run becomes chains greedily from its start: the longest prefix that makes a
    // chain (a value read after the prefix, a third input or a lack of registers ends it),
    // then the rest; an op no chain takes stays as it is.
    let flush = |run: &mut Vec<(Op, Elem)>, out: &mut Vec<Op>, b: &mut Builder| {
        let mut start = 0;
        while start < run.len() {
            let mut fused = None;
            for end in (start + 1..=run.len()).rev() {
                let elems = &run[start..end];
                let computing = elems
                    .iter()
                    .filter(|(_, e)| !matches!(e, Elem::Copy { .. }))
                    .count();
                // A lone max, min or PRelu too: the separate op has no wide kernel.
                let wide_alone = elems.len() == 1
                    && matches!(
                        elems[0].1,
                        Elem::Bin {
                            f: BinOp::Max | BinOp::Min | BinOp::PRelu,
                            ..
                        }
                    );
                if !wide_alone
                    && (computing < 2 || !elems.iter().any(|(_, e)| matches!(e, Elem::Bin { .. })))
                {
                    continue;
                }
                let elems: Vec<Elem> = elems.iter().map(|(_, e)| clone_elem(e)).collect();
                if let Some(p) = program(&elems, &readers, &pinned) {
                    fused = Some((end, elems[elems.len() - 1].y(), p));
                    break;
                }
            }
            match fused {
                Some((end, y, (inputs, prog, consts))) => {
                    let prog = b.push(&prog);
                    let consts = b.push(&consts);
                    out.push(Op::ChainF32 {
                        a: inputs[0],
                        b: inputs.get(1).copied(),
                        y,
                        prog,
                        consts,
                    });
                    start = end;
                }
                None => {
                    out.push(run[start].0.clone());
                    start += 1;
                }
            }
        }
        run.clear();
    };
    for op in ops {
        let Some(e) = elem(b, &op) else {
            flush(&mut run, &mut out, b);
            out.push(op);
            continue;
        };
        let n = b.tensors[e.y() as usize].len();
        let joins = run.last().is_some_and(|(_, last)| {
            b.tensors[last.y() as usize].len() == n && {
                // It reads a value of the run or one of the run's inputs.
                let mine: Vec<u32> = run
                    .iter()
                    .flat_map(|(_, r)| {
                        let mut v = r.tensors();
                        v.push(r.y());
                        v
                    })
                    .collect();
                e.tensors().iter().any(|t| mine.contains(t))
            }
        });
        if !joins || run.len() >= MAX_RUN {
            flush(&mut run, &mut out, b);
        }
        run.push((op, e));
    }
    flush(&mut run, &mut out, b);
    b.ops = out;
}

fn clone_elem(e: &Elem) -> Elem {
    match e {
        Elem::Copy { x, y } => Elem::Copy { x: *x, y: *y },
        Elem::Clamp { x, y, lo, hi } => Elem::Clamp {
            x: *x,
            y: *y,
            lo: *lo,
            hi: *hi,
        },
        Elem::Un { x, y, f } => Elem::Un {
            x: *x,
            y: *y,
            f: *f,
        },
        Elem::Bin { a, b, y, f } => Elem::Bin {
            a: a.clone(),
            b: b.clone(),
            y: *y,
            f: *f,
        },
    }
}

/// Whether `op` is a chain computing each value from its input's value at the same
/// position and scalar constants alone, so that it commutes with any reordering of the
/// values (a transpose's).
pub(super) fn pointwise(b: &Builder, op: &Op) -> bool {
    matches!(op, Op::ChainF32 { b: None, .. }) && pointwise_inputs(b, op)
}

/// As [`pointwise`], with a second input as long as the output allowed: each value from
/// its inputs' values at the same position (a residual add and its activation).
pub(super) fn pointwise_inputs(b: &Builder, op: &Op) -> bool {
    let Op::ChainF32 {
        a,
        b: second,
        y,
        prog,
        ..
    } = *op
    else {
        return false;
    };
    if second.is_some_and(|t| b.tensors[t as usize].len() != b.tensors[y as usize].len()) {
        return false;
    }
    let Some(bytes) = b
        .blob
        .get(prog.off as usize..)
        .and_then(|v| v.get(..prog.len as usize))
    else {
        return false;
    };
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    b.tensors[a as usize].len() == b.tensors[y as usize].len()
        && words.chunks_exact(CHAIN_WORDS).all(|w| {
            let scalar = |v: u32, len: u32| v < chain::CONST || len == 1;
            scalar(w[2], w[3]) && (w[0] == chain::CLAMP || scalar(w[4], w[5]))
        })
}
