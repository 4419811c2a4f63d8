//! Comparisons, boolean logic and selection on float tensors: booleans are f32 0.0 and
//! 1.0 (exact, like the integer ids the float path carries), so an attention mask built
//! from an `attention_mask` input (Cast to bool, And, Equal, Where into an additive mask)
//! runs on the f32 kernels. Constant operands fold before lowering.

use super::elementwise::{broadcast, pad4, strides4};
use super::lower::Lowering;
use crate::error::Result;
use crate::plan::{BinOp, Op, Src};

/// `y = a ∘ b` with broadcasting, for the comparison and logic ops.
pub(super) fn emit_bin(
    lw: &mut Lowering<'_>,
    idx: usize,
    (a, sa): (Src, Vec<usize>),
    (b, sb): (Src, Vec<usize>),
    f: BinOp,
) -> Result<()> {
    let n = &lw.graph.node[idx];
    let out = broadcast(&sa, &sb)
        .ok_or_else(|| lw.unsupported(n, "shapes do not broadcast (or rank > 4)"))?;
    let y = lw.new_f32(&n.output[0], out.clone());
    lw.b.ops.push(Op::BinF32 {
        a,
        b,
        y,
        f,
        dims: pad4(&out).map(|v| v as u32),
        sa: strides4(&sa, &out),
        sb: strides4(&sb, &out),
    });
    let n = &lw.graph.node[idx];
    lw.out_f32(n, y);
    Ok(())
}

/// Both operands of a binary op; an error when neither is a run-time tensor (constants
/// fold before they get here).
fn operands(lw: &mut Lowering<'_>, idx: usize) -> Result<((Src, Vec<usize>), (Src, Vec<usize>))> {
    let n = &lw.graph.node[idx];
    if n.input.len() != 2 {
        return Err(lw.unsupported(n, "needs exactly two operands"));
    }
    let a = lw.operand(n, 0)?;
    let n = &lw.graph.node[idx];
    let b = lw.operand(n, 1)?;
    Ok((a, b))
}

/// Equal, Less, LessOrEqual, Greater, GreaterOrEqual: 1.0 where true.
pub(super) fn compare(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let f = match lw.graph.node[idx].op_type.as_str() {
        "Equal" => BinOp::Eq,
        "Less" => BinOp::Lt,
        "LessOrEqual" => BinOp::Le,
        "Greater" => BinOp::Gt,
        _ => BinOp::Ge,
    };
    let (a, b) = operands(lw, idx)?;
    emit_bin(lw, idx, a, b, f)
}

/// And (a product of 0/1 values), Or (their maximum), Xor (their inequality).
pub(super) fn logical(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let f = match lw.graph.node[idx].op_type.as_str() {
        "And" => BinOp::Mul,
        "Or" => BinOp::Max,
        _ => BinOp::Ne,
    };
    let (a, b) = operands(lw, idx)?;
    emit_bin(lw, idx, a, b, f)
}

/// Not: `x == 0`; IsNaN: `x != x`.
pub(super) fn not_isnan(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let x = lw.operand(n, 0)?;
    if n.op_type == "Not" {
        let zero = lw.b.push(&[0f32]);
        emit_bin(lw, idx, x, (Src::C(zero), vec![]), BinOp::Eq)
    } else {
        emit_bin(lw, idx, x.clone(), x, BinOp::Ne)
    }
}

/// A run-time float tensor to bool: `x != 0`.
pub(super) fn to_bool(lw: &mut Lowering<'_>, idx: usize, x: u32) -> Result<()> {
    let shape = lw.fshape(x);
    let zero = lw.b.push(&[0f32]);
    lw.int_names.remove(&lw.graph.node[idx].output[0]);
    emit_bin(
        lw,
        idx,
        (Src::T(x), shape),
        (Src::C(zero), vec![]),
        BinOp::Ne,
    )
}

/// Where(c, a, b) with broadcasting over the three.
pub(super) fn where_(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if n.input.len() != 3 {
        return Err(lw.unsupported(n, "needs three operands"));
    }
    let (c, sc) = lw.operand(n, 0)?;
    let n = &lw.graph.node[idx];
    let (a, sa) = lw.operand(n, 1)?;
    let n = &lw.graph.node[idx];
    let (b, sb) = lw.operand(n, 2)?;
    let n = &lw.graph.node[idx];
    let out = broadcast(&sc, &sa)
        .and_then(|o| broadcast(&o, &sb))
        .ok_or_else(|| lw.unsupported(n, "shapes do not broadcast (or rank > 4)"))?;
    if [a, b].iter().all(|s| s.tensor().is_none()) && c.tensor().is_none() {
        return Err(lw.unsupported(n, "all operands constant"));
    }
    if let Some(x) = nan_test(lw, c) {
        // Where(IsNaN(x), v, x), v one constant: x with its NaNs replaced (torch's
        // attention export clears fully masked rows of its softmax so). One pass instead
        // of two; the test itself goes when nothing else reads it.
        let one = matches!(a, Src::C(_)) && sa.iter().product::<usize>() == 1;
        if one && b == Src::T(x) && sb == out {
            return emit_bin(lw, idx, (b, sb), (a, sa), BinOp::NanTo);
        }
    }
    let y = lw.new_f32(&n.output[0], out.clone());
    lw.b.ops.push(Op::WhereF32 {
        c,
        a,
        b,
        y,
        dims: pad4(&out).map(|v| v as u32),
        sc: strides4(&sc, &out),
        sa: strides4(&sa, &out),
        sb: strides4(&sb, &out),
    });
    let n = &lw.graph.node[idx];
    lw.out_f32(n, y);
    Ok(())
}

/// The tensor `x` whose NaN test `c` is (`c = x != x`, as IsNaN lowers), if it is one.
fn nan_test(lw: &Lowering<'_>, c: Src) -> Option<u32> {
    let c = c.tensor()?;
    lw.b.ops.iter().rev().find_map(|op| match *op {
        Op::BinF32 {
            a: Src::T(x),
            b: Src::T(z),
            y,
            f: BinOp::Ne,
            sa,
            sb,
            ..
        } if y == c && x == z && sa == sb => Some(x),
        _ => None,
    })
}

/// Expand of a run-time tensor to a constant shape: a copy with broadcasting (times 1.0,
/// which keeps every value, -0.0 and NaN included).
pub(super) fn expand(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let Some(x) = lw.fact(n, 0) else {
        return Err(lw.unsupported(n, "input must be a float tensor (constants fold)"));
    };
    let to: Vec<usize> = lw
        .constant(n, 1)?
        .ints()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let xs = lw.fshape(x);
    let one = lw.b.push(&[1f32]);
    if lw.int_names.contains(&n.input[0]) {
        let o = n.output[0].clone();
        lw.int_names.insert(o);
    }
    let n = &lw.graph.node[idx];
    let out = broadcast(&xs, &to)
        .ok_or_else(|| lw.unsupported(n, "shapes do not broadcast (or rank > 4)"))?;
    // Sizes come from the file: a shape past 2^31 elements is refused.
    if out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none_or(|c| c > 1 << 31)
    {
        return Err(lw.unsupported(n, "more than 2^31 elements"));
    }
    let y = lw.new_f32(&n.output[0], out.clone());
    lw.b.ops.push(Op::BinF32 {
        a: Src::T(x),
        b: Src::C(one),
        y,
        f: BinOp::Mul,
        dims: pad4(&out).map(|v| v as u32),
        sa: strides4(&xs, &out),
        sb: [0; 4],
    });
    let n = &lw.graph.node[idx];
    lw.out_f32(n, y);
    Ok(())
}
