//! Stripes: runs of consecutive int8 ops that every thread carries through on its own
//! part of each op's output, waiting for another thread only where their bytes meet.
//!
//! Run op by op, every split op ends with a wait for all threads: a round trip through
//! the pool per op, about a microsecond here, sixty times in a MobileNet. But most of
//! those ops (depthwise and 1×1 convolutions, residual adds) compute each part of their
//! output from a part of their input: a thread that has computed its rows of one op can go
//! on to the next without waiting, unless its next part reads rows another thread writes
//! (a depthwise convolution's border rows) or writes bytes another thread still reads (the
//! memory planner lets a tensor take the bytes of one that is dead by then, which holds op
//! by op but not across threads that run ahead of each other).
//!
//! A stripe lists, for each op and part, the byte ranges it reads and writes. Where part
//! `p` of op `j` touches bytes part `q` touches in an earlier op `k` (one of them writing),
//! part `p` waits for part `q` to finish op `k` first: exactly the order of running op by
//! op, for those bytes. Each op computes every value as it does alone, so the bits are
//! those of one thread.

use super::Dyn;
use crate::error::{Error, Result};
use crate::par::{self, Par};
use crate::plan::{DType, Op, Tables, TensorMeta};
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use edgetune_kernels::ops::{self as kops, I8Dst};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::{I8Out, Kernels};

/// One counter per cache line: the ops a part has finished.
#[repr(align(64))]
#[derive(Default)]
struct Done(AtomicUsize);

/// Consecutive ops `start..start + ops.len()` run as one job, one part per thread.
pub(crate) struct Stripe {
    pub start: usize,
    ops: Vec<Op>,
    parts: usize,
    /// `units[j * parts + p]`: the output units (rows of a depthwise convolution, pixels
    /// of the others) part `p` computes of op `j`.
    units: Vec<Range<usize>>,
    /// `need[(j * parts + p) * parts + q]`: the ops part `q` must have finished before part
    /// `p` starts op `j`.
    need: Vec<usize>,
    done: Vec<Done>,
    /// A part failed: the others stop waiting.
    abort: AtomicBool,
}

impl Stripe {
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A byte range of the arena one part of one op reads or writes.
#[derive(Clone, Debug)]
struct Access {
    bytes: Range<usize>,
    write: bool,
}

/// The channels of tensor `t` if it is a u8 NHWC map of one image, with its rows and
/// columns.
fn map(t: &TensorMeta) -> Option<(usize, usize, usize)> {
    let s = &t.shape;
    let ok = t.dtype == DType::U8 && t.nhwc && s.len() == 4 && s[0] == 1 && s[3] > 0;
    ok.then(|| (s[1], s[2], s[3]))
}

/// Whether `g` is a 1×1, stride-1, unpadded, ungrouped convolution.
fn pointwise(g: &ConvGeom) -> bool {
    g.kh == 1
        && g.kw == 1
        && g.stride_h == 1
        && g.stride_w == 1
        && g.dil_h == 1
        && g.dil_w == 1
        && g.pad_top == 0
        && g.pad_left == 0
        && g.pad_bottom == 0
        && g.pad_right == 0
        && g.groups == 1
}

/// The output units of `op` if a stripe can run it: an int8 convolution with u8 output
/// (by output rows; a 1×1 one by pixels), a depthwise convolution or a max pool (by output
/// rows), an add or a table (by pixels), each over u8 NHWC maps of one image; with its
/// multiply-adds.
fn units(plan: &Dyn, op: &Op) -> Option<(usize, usize)> {
    let tt = |id: u32| plan.tensor(id);
    match *op {
        Op::DwI8 { x, y, ref geom, .. } => {
            let g = geom;
            let c = g.ic;
            let ok = par::sane(g)
                && g.groups == c
                && g.oc == c
                && g.stride_h == g.stride_w
                && g.dil_h == 1
                && g.dil_w == 1
                && map(&tt(x)) == Some((g.h, g.w, c))
                && map(&tt(y)) == Some((g.oh(), g.ow(), c));
            ok.then(|| (g.oh(), g.oh() * g.ow() * c * g.kh * g.kw))
        }
        Op::ConvI8 {
            x,
            y,
            scratch,
            ref geom,
            ..
        } => {
            let g = geom;
            let maps = par::sane(g)
                && g.groups == 1
                && map(&tt(x)) == Some((g.h, g.w, g.ic))
                && map(&tt(y)) == Some((g.oh(), g.ow(), g.oc));
            if pointwise(g) {
                let ok = maps && scratch.is_none_or(|s| tt(s).bytes() == 0);
                ok.then(|| (g.h * g.w, g.h * g.w * g.ic * g.oc))
            } else {
                // By output rows, each part lowering its rows into its rows of the
                // scratch, as when the op splits alone.
                let need = g.oh() * g.ow() * g.kh * g.kw * g.ic;
                let ok = maps && scratch.is_some_and(|s| tt(s).bytes() >= need);
                ok.then(|| (g.oh(), need * g.oc))
            }
        }
        Op::AddU8 { a, b, y, .. } => {
            let m = map(&tt(y))?;
            let n = m.0 * m.1;
            (map(&tt(a)) == Some(m) && map(&tt(b)) == Some(m)).then(|| (n, n * m.2 * 16))
        }
        Op::LutU8 { x, y, channels, .. } => {
            let m = map(&tt(y))?;
            let n = m.0 * m.1;
            let ok = map(&tt(x)) == Some(m) && (channels == 1 || channels as usize == m.2);
            ok.then(|| (n, n * m.2 * 2))
        }
        Op::MaxPoolU8 { x, y, ref geom } => {
            let g = geom;
            let ok = par::sane(g)
                && g.ic == g.oc
                && map(&tt(x)) == Some((g.h, g.w, g.ic))
                && map(&tt(y)) == Some((g.oh(), g.ow(), g.ic));
            ok.then(|| (g.oh(), g.oh() * g.ow() * g.ic * g.kh * g.kw))
        }
        _ => None,
    }
}

/// What part `u` (output units) of `op` reads and writes; `op` is one [`units`] accepts.
fn accesses(plan: &Dyn, op: &Op, u: &Range<usize>) -> heapless::Vec<Access, 3> {
    let tt = |id: u32| plan.tensor(id);
    let mut out = heapless::Vec::new();
    // Units `u` of a tensor whose unit is `unit` bytes.
    let chunk = |t: TensorMeta, unit: usize, write: bool| Access {
        bytes: t.offset + u.start * unit..t.offset + u.end * unit,
        write,
    };
    let pixel = |id: u32, write: bool| {
        let t = tt(id);
        let c = t.shape[3];
        chunk(t, c, write)
    };
    // The input rows output rows `u` of a convolution (or pool) read.
    let rows_read = |x: u32, g: &ConvGeom| {
        let (sub, first) = par::conv_rows(g, u.start, u.end);
        let (t, row) = (tt(x), g.w * g.ic);
        Access {
            bytes: t.offset + first * row..t.offset + (first + sub.h) * row,
            write: false,
        }
    };
    match *op {
        Op::DwI8 { x, y, ref geom, .. } | Op::MaxPoolU8 { x, y, ref geom } => {
            let _ = out.push(rows_read(x, geom));
            let _ = out.push(chunk(tt(y), geom.ow() * geom.ic, true));
        }
        Op::ConvI8 {
            x,
            y,
            scratch,
            ref geom,
            ..
        } => match scratch.filter(|_| !pointwise(geom)) {
            None => {
                let _ = out.push(pixel(x, false));
                let _ = out.push(pixel(y, true));
            }
            Some(s) => {
                let _ = out.push(rows_read(x, geom));
                let kdim = geom.kh * geom.kw * geom.ic;
                let _ = out.push(chunk(tt(s), geom.ow() * kdim, true));
                let _ = out.push(chunk(tt(y), geom.ow() * geom.oc, true));
            }
        },
        Op::AddU8 { a, b, y, .. } => {
            let _ = out.push(pixel(a, false));
            let _ = out.push(pixel(b, false));
            let _ = out.push(pixel(y, true));
        }
        Op::LutU8 { x, y, .. } => {
            let _ = out.push(pixel(x, false));
            let _ = out.push(pixel(y, true));
        }
        _ => {}
    }
    out
}

fn overlap(a: &Access, b: &Access) -> bool {
    let (a, b) = (&a.bytes, &b.bytes);
    a.start < b.end && b.start < a.end && !a.is_empty() && !b.is_empty()
}

fn conflict(a: &[Access], b: &[Access]) -> bool {
    a.iter()
        .any(|x| b.iter().any(|y| (x.write || y.write) && overlap(x, y)))
}

/// The parts of `op` over `parts` threads, with what each touches, if a stripe can run it
/// in an arena of `arena` bytes: every part non-empty (and, for a depthwise convolution,
/// reading an input row), inside the arena, reading none of its own writes, and touching
/// no byte another part of the same op writes.
/// Its multiply-adds with it.
#[allow(clippy::type_complexity)]
fn split(
    plan: &Dyn,
    op: &Op,
    parts: usize,
    arena: usize,
) -> Option<(Vec<(Range<usize>, heapless::Vec<Access, 3>)>, usize)> {
    let (n, work) = units(plan, op)?;
    if n < parts {
        return None;
    }
    let mut out = Vec::with_capacity(parts);
    for u in par::runs(n, parts) {
        if let Op::DwI8 { ref geom, .. }
        | Op::ConvI8 { ref geom, .. }
        | Op::MaxPoolU8 { ref geom, .. } = *op
        {
            // By rows (all but 1×1 convolutions): each part reads an input row.
            let rows = !matches!(*op, Op::ConvI8 { .. }) || !pointwise(geom);
            if rows && par::conv_rows(geom, u.start, u.end).0.h == 0 {
                return None;
            }
        }
        let acc = accesses(plan, op, &u);
        if acc.iter().any(|a| a.bytes.end > arena) || conflict(&acc[..1], &acc[1..]) {
            return None;
        }
        if acc.len() == 3 && conflict(&acc[1..2], &acc[2..]) {
            return None;
        }
        out.push((u, acc));
    }
    for (p, (_, a)) in out.iter().enumerate() {
        if out[p + 1..].iter().any(|(_, b)| conflict(a, b)) {
            return None;
        }
    }
    Some((out, work))
}

/// The stripes of `ops` for `par`'s threads in an arena of `arena` bytes (none on one
/// thread): each maximal run of at least two ops a stripe can run, whose work is worth
/// the threads.
pub(crate) fn plan(plan: &Dyn, ops: &[Op], par: &Par, arena: usize) -> Vec<Stripe> {
    let parts = par.threads();
    let mut stripes = Vec::new();
    if parts < 2 {
        return stripes;
    }
    let mut i = 0;
    while i < ops.len() {
        let mut split_ops = Vec::new();
        let (mut end, mut work) = (i, 0);
        while let Some((s, w)) = ops.get(end).and_then(|op| split(plan, op, parts, arena)) {
            split_ops.push(s);
            work += w;
            end += 1;
        }
        if end - i >= 2 && work / parts >= par::MIN_WORK_PER_PART {
            stripes.push(stripe(&ops[i..end], i, parts, split_ops));
            i = end;
        } else {
            i += 1;
        }
    }
    stripes
}

fn stripe(
    ops: &[Op],
    start: usize,
    parts: usize,
    split: Vec<Vec<(Range<usize>, heapless::Vec<Access, 3>)>>,
) -> Stripe {
    let acc: Vec<Vec<&[Access]>> = split
        .iter()
        .map(|op| op.iter().map(|(_, a)| &a[..]).collect())
        .collect();
    let need = needs(&acc, parts);
    Stripe {
        start,
        ops: ops.to_vec(),
        parts,
        units: split
            .into_iter()
            .flat_map(|s| s.into_iter().map(|(u, _)| u))
            .collect(),
        need,
        done: (0..parts).map(|_| Done::default()).collect(),
        abort: AtomicBool::new(false),
    }
}

/// `need[(j * parts + p) * parts + q]`: the ops part `q` must have finished before part
/// `p` starts op `j`, from what each part of each op touches (`acc[j][p]`): the last
/// earlier op whose part `q` touches bytes part `p` of op `j` does, one of them writing.
/// Waiting for it covers every earlier one (a part runs its ops in order).
fn needs(acc: &[Vec<&[Access]>], parts: usize) -> Vec<usize> {
    let mut need = alloc::vec![0; acc.len() * parts * parts];
    for j in 0..acc.len() {
        for p in 0..parts {
            for q in (0..parts).filter(|&q| q != p) {
                if let Some(k) = (0..j).rev().find(|&k| conflict(acc[j][p], acc[k][q])) {
                    need[(j * parts + p) * parts + q] = k + 1;
                }
            }
        }
    }
    need
}

/// The arena as the parts of a stripe share it.
#[derive(Clone, Copy)]
struct Shared(*mut u8, usize);
// SAFETY: the parts touch the arena only through `view`/`view_mut`, on ranges that either
// no two parts touch with one writing, or that parts touch in the order of the ops (see
// `run`).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Bytes `r` of the arena. SAFETY (caller): `r` lies in the arena and nothing writes
    /// it while the view lives.
    unsafe fn view<'a>(self, r: Range<usize>) -> &'a [u8] {
        debug_assert!(r.start <= r.end && r.end <= self.1);
        // SAFETY: per the caller's contract.
        unsafe { core::slice::from_raw_parts(self.0.add(r.start), r.end - r.start) }
    }

    /// Bytes `r` of the arena, to write. SAFETY (caller): `r` lies in the arena and
    /// nothing else reads or writes it while the view lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn view_mut<'a>(self, r: Range<usize>) -> &'a mut [u8] {
        debug_assert!(r.start <= r.end && r.end <= self.1);
        // SAFETY: per the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.0.add(r.start), r.end - r.start) }
    }
}

/// Runs `s` over `arena` (of the size `plan` checked it against): `false` when the
/// threads cannot take its parts at once (the caller then runs its ops one by one).
pub(crate) fn run(
    plan: &Dyn,
    kern: &Kernels,
    par: &Par,
    arena: &mut [u8],
    s: &Stripe,
) -> Result<bool> {
    for d in &s.done {
        d.0.store(0, Ordering::Relaxed);
    }
    s.abort.store(false, Ordering::Relaxed);
    let shared = Shared(arena.as_mut_ptr(), arena.len());
    let err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let body = |p: usize| {
        // On an error or a panic, the other parts stop waiting for this one.
        struct Fail<'a>(&'a Stripe, bool);
        impl Drop for Fail<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.abort.store(true, Ordering::Release);
                }
            }
        }
        let mut guard = Fail(s, false);
        let r = (|| -> Result<()> {
            for (j, op) in s.ops.iter().enumerate() {
                for q in 0..s.parts {
                    let need = s.need[(j * s.parts + p) * s.parts + q];
                    let mut spins = 0u32;
                    while s.done[q].0.load(Ordering::Acquire) < need {
                        if s.abort.load(Ordering::Acquire) {
                            return Err(Error::Invalid {
                                what: "another part of the stripe failed".into(),
                            });
                        }
                        spins = spins.wrapping_add(1);
                        if spins.is_multiple_of(32) {
                            // The part waited for may share this core (more threads than
                            // cores): it gets it.
                            std::thread::yield_now();
                        } else {
                            core::hint::spin_loop();
                        }
                    }
                }
                part(plan, kern, shared, op, &s.units[j * s.parts + p])?;
                s.done[p].0.store(j + 1, Ordering::Release);
            }
            Ok(())
        })();
        match r {
            Ok(()) => guard.1 = true,
            Err(e) => {
                err.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        }
    };
    if !par.each_at_once(s.parts, &body) {
        return Ok(false);
    }
    match err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// Output units `u` of one op of a stripe.
fn part(plan: &Dyn, kern: &Kernels, shared: Shared, op: &Op, u: &Range<usize>) -> Result<()> {
    let acc = accesses(plan, op, u);
    // SAFETY (every view below): `split` checked these ranges when the stripe was made:
    // inside the arena, the op's reads apart from its writes, and apart from every range
    // another part of the same op writes (or reads, for a write). A range another part
    // touches in an earlier op (one of them writing) was waited for above: that part has
    // finished that op (`done`, released after its last write, acquired here). One that
    // another part touches in a later op waits, on its side, for this part to finish
    // this op. So nothing else touches a range this op writes, nor writes one it reads,
    // while the views live (this op only).
    let (x, y) = match acc.len() {
        // SAFETY: the first access is the op's input, the last its output, as above.
        2 | 3 => unsafe {
            (
                shared.view(acc[0].bytes.clone()),
                shared.view_mut(acc[acc.len() - 1].bytes.clone()),
            )
        },
        _ => {
            return Err(Error::Invalid {
                what: "op kind not run in stripes".into(),
            })
        }
    };
    match *op {
        Op::DwI8 {
            ref geom,
            x_zero,
            y_zero,
            w,
            bias,
            scale,
            ..
        } => {
            let (sub, _) = par::conv_rows(geom, u.start, u.end);
            kops::depthwise_i8(
                kern,
                &sub,
                x,
                x_zero,
                plan.blob(w),
                Some(plan.blob(bias)),
                plan.blob(scale),
                (y_zero, 0, 255),
                y,
            )?;
        }
        Op::ConvI8 {
            ref geom,
            x_zero,
            y_zero,
            w,
            colsum,
            bias,
            scale,
            ..
        } => {
            let q = super::conv_quant(plan, (x_zero, y_zero), (colsum, bias, scale), I8Out::U8);
            if acc.len() == 3 {
                // SAFETY: as above (the part's rows of the scratch).
                let scratch = unsafe { shared.view_mut(acc[1].bytes.clone()) };
                let (sub, _) = par::conv_rows(geom, u.start, u.end);
                let rows = 0..sub.oh();
                par::conv_i8_rows(kern, &sub, rows, x, plan.blob(w), &q, scratch, I8Dst::U8(y))?;
            } else {
                let (m, n, k) = (u.len(), geom.oc, geom.ic);
                kops::gemm_i8(kern, (m, n, k), x, k, plan.blob(w), &q, I8Dst::U8(y), n)?;
            }
        }
        Op::AddU8 { qa, qb, qy, .. } => {
            // SAFETY: as above.
            let b = unsafe { shared.view(acc[1].bytes.clone()) };
            kops::add_u8(kern, x, qa, b, qb, y, qy)?;
        }
        Op::LutU8 {
            channels, table, ..
        } => kops::lut_u8(kern, x, channels as usize, plan.blob(table), y)?,
        Op::MaxPoolU8 { ref geom, .. } => {
            let (sub, _) = par::conv_rows(geom, u.start, u.end);
            if super::pool_pairs_fit(&sub, x.len(), y.len()) {
                super::max_pool_u8_pairs_wide(kern, &sub, x, y);
            } else {
                kops::max_pool_u8(kern, &sub, x, y)?;
            }
        }
        _ => {
            return Err(Error::Invalid {
                what: "op kind not run in stripes".into(),
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Executor;
    use crate::plan::{Plan, DEFAULT_ARENA_LIMIT};

    /// A small int8 plan (the fuzz seed: a 3×3 convolution and a depthwise convolution at
    /// stride 2 over 8×8 RGB) runs as a stripe on two and three threads (unit tests split
    /// any work) and gives the bytes of one thread, run after run; under Miri too, which
    /// checks the stripe's views of the arena.
    #[test]
    fn a_stripe_gives_the_bytes_of_one_thread() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seed/tiny.etm");
        let bytes = std::fs::read(path).unwrap();
        let plan = Plan::from_bytes(&bytes).unwrap();
        let n = plan.tensors[plan.inputs[0].tensor as usize].len();
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 29) % 64) as f32 / 32.0 - 1.0)
            .collect();
        let run = |threads: usize, runs: usize| {
            let kern = crate::kernels::Kernels::detect();
            let mut exec = Executor::new(&plan, kern, DEFAULT_ARENA_LIMIT).unwrap();
            exec.set_par(Par::new(threads).unwrap());
            let stripes = exec.stripes();
            let outs: Vec<Vec<u8>> = (0..runs)
                .map(|_| {
                    exec.run(&[&x]).unwrap();
                    plan.outputs
                        .iter()
                        .chain(&plan.taps)
                        .flat_map(|p| exec.tensor_bytes(p.tensor).to_vec())
                        .collect()
                })
                .collect();
            (outs, stripes)
        };
        let (one, none) = run(1, 1);
        assert!(none.is_empty());
        for threads in [2, 3] {
            let (many, stripes) = run(threads, if cfg!(miri) { 2 } else { 20 });
            assert_eq!(stripes, [(1, 2)], "{threads} threads");
            for out in &many {
                assert_eq!(out, &one[0], "{threads} threads");
            }
        }
    }

    fn r(a: usize, b: usize) -> Access {
        Access {
            bytes: a..b,
            write: false,
        }
    }

    fn w(a: usize, b: usize) -> Access {
        Access {
            bytes: a..b,
            write: true,
        }
    }

    /// A part waits for the other exactly where their bytes meet in an earlier op, one
    /// of them writing (a border row read after it is written, a byte written after it is
    /// read or written), for the last such op; reads of the same bytes never wait.
    #[test]
    fn parts_wait_where_their_bytes_meet() {
        // op 0: each part reads its half of [0, 100) and writes its half of [100, 200).
        // op 1 (a depthwise): part 0 reads [100, 160), past part 1's first row.
        // op 2: part 1 writes [0, 30), bytes part 0 read in op 0 (the planner's reuse).
        // op 3: both read [100, 200) (no wait for reads); part 0 writes [300, 310).
        // op 4: part 1 reads [300, 310), which part 0 wrote in op 3, and [40, 50),
        //       which part 0 read in op 0 only.
        let ops: Vec<Vec<Vec<Access>>> = vec![
            vec![vec![r(0, 50), w(100, 150)], vec![r(50, 100), w(150, 200)]],
            vec![
                vec![r(100, 160), w(200, 250)],
                vec![r(140, 200), w(250, 300)],
            ],
            vec![vec![w(1000, 1010)], vec![w(0, 30)]],
            vec![
                vec![r(100, 200), w(300, 310)],
                vec![r(100, 200), w(310, 320)],
            ],
            vec![vec![r(2000, 2010)], vec![r(300, 310), r(40, 50)]],
        ];
        let acc: Vec<Vec<&[Access]>> = ops
            .iter()
            .map(|op| op.iter().map(|a| &a[..]).collect())
            .collect();
        let need = needs(&acc, 2);
        let at = |j: usize, p: usize, q: usize| need[(j * 2 + p) * 2 + q];
        assert_eq!((at(0, 0, 1), at(0, 1, 0)), (0, 0));
        // Border rows: each part reads the other's writes of op 0.
        assert_eq!((at(1, 0, 1), at(1, 1, 0)), (1, 1));
        // A write over bytes the other part read in op 0.
        assert_eq!((at(2, 1, 0), at(2, 0, 1)), (1, 0));
        // Both read [100, 200) in op 1 too: that read needs no wait, only the writes of
        // op 0 inside it do.
        assert_eq!((at(3, 0, 1), at(3, 1, 0)), (1, 1));
        // The last op met: op 3's write, not op 0's read of [40, 50) (read-read).
        assert_eq!((at(4, 1, 0), at(4, 0, 1)), (4, 0));
        // The same parts never wait for themselves.
        for j in 0..ops.len() {
            assert_eq!((at(j, 0, 0), at(j, 1, 1)), (0, 0));
        }
    }
}
