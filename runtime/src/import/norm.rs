//! Row-wise float ops of the sequence models: layer normalisation, softmax and sums over
//! one axis.

use super::lower::Lowering;
use super::value::{attr, attr_i, attr_ints};
use crate::error::Result;
use crate::plan::Op;

/// False when the input is not a row-major f32 tensor.
fn layer_norm_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let shape = lw.fshape(x);
    let r = shape.len() as i64;
    let axis = attr_i(n, "axis", -1);
    let axis = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&axis) {
        return Err(lw.unsupported(n, "axis outside the input"));
    }
    // Rows of every axis from `axis` on; scale and bias broadcast over them.
    let inner = &shape[axis as usize..];
    let cols: usize = inner.iter().product();
    let spread = |s: &Lowering<'_>, i: usize| -> Result<Vec<f32>> {
        let c = s.constant(n, i)?;
        let v = c.f32s().unwrap_or_default();
        if v.len() == cols {
            return Ok(v);
        }
        let dims = &c.dims;
        let ok = dims.len() <= inner.len()
            && dims
                .iter()
                .rev()
                .zip(inner.iter().rev())
                .all(|(&d, &e)| d == e || d == 1);
        if !ok || v.is_empty() {
            return Err(s.unsupported(
                n,
                "scale or bias does not broadcast over the normalised axes",
            ));
        }
        // Index of row element j in the broadcast constant.
        let st = super::elementwise::strides4(dims, inner);
        let d4 = super::elementwise::pad4(inner);
        Ok((0..cols)
            .map(|j| {
                let (mut rem, mut o) = (j, 0usize);
                for k in (0..4).rev() {
                    o += (rem % d4[k]) * st[k] as usize;
                    rem /= d4[k];
                }
                v[o]
            })
            .collect())
    };
    if inner.len() > 4 {
        return Err(lw.unsupported(n, "more than 4 normalised axes"));
    }
    let g = spread(lw, 1)?;
    let bt = if n.input.len() > 2 && !n.input[2].is_empty() {
        spread(lw, 2)?
    } else {
        vec![0.0; cols]
    };
    if g.len() != cols || bt.len() != cols || n.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(lw.unsupported(n, "scale and bias of the row width; one output"));
    }
    let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
    let (gamma, beta) = (lw.b.push(&g), lw.b.push(&bt));
    let y = lw.new_f32(&n.output[0], shape);
    lw.b.ops.push(Op::LayerNormF32 {
        x,
        y,
        cols: cols as u32,
        gamma,
        beta,
        eps,
    });
    lw.out_f32(n, y);
    Ok(true)
}

pub(super) fn layer_norm(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if layer_norm_float(lw, idx)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}

/// False when the input is not a row-major f32 tensor.
fn softmax_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let shape = lw.fshape(x);
    let r = shape.len();
    let axis = attr_i(n, "axis", -1);
    let axis = if axis < 0 { axis + r as i64 } else { axis };
    if !(0..r as i64).contains(&axis) {
        return Err(lw.unsupported(n, "axis outside the rank"));
    }
    let axis = axis as usize;
    if axis != r - 1 {
        // Another axis (a channel softmax over NCHW): swapped to the last one and back.
        if r > 4 {
            return Err(lw.unsupported(n, "softmax over an inner axis of a tensor of rank > 4"));
        }
        let off = 4 - r;
        let mut perm = [0u8, 1, 2, 3];
        perm.swap(off + axis, 3);
        let mut swapped = shape.clone();
        swapped.swap(axis, r - 1);
        let dims = |s: &[usize]| super::elementwise::pad4(s).map(|v| v as u32);
        let t1 = lw.new_f32(&format!("{}#swapped", n.output[0]), swapped.clone());
        lw.b.ops.push(Op::TransposeF32 {
            x,
            y: t1,
            dims: dims(&shape),
            perm,
        });
        let t2 = lw.new_f32(&format!("{}#softmax", n.output[0]), swapped.clone());
        lw.b.ops.push(Op::SoftmaxF32 {
            x: t1,
            y: t2,
            cols: shape[axis] as u32,
        });
        let y = lw.new_f32(&n.output[0], shape.clone());
        lw.b.ops.push(Op::TransposeF32 {
            x: t2,
            y,
            dims: dims(&swapped),
            perm,
        });
        lw.out_f32(n, y);
        return Ok(true);
    }
    let y = lw.new_f32(&n.output[0], shape.clone());
    lw.b.ops.push(Op::SoftmaxF32 {
        x,
        y,
        cols: *shape.last().unwrap_or(&1) as u32,
    });
    lw.out_f32(n, y);
    Ok(true)
}

pub(super) fn softmax(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if softmax_float(lw, idx)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}

/// ReduceSum, or with `mean` ReduceMean, of a row-major f32 tensor over one axis or
/// several adjacent ones; false when the input is not such a tensor.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Reduce {
    Sum,
    Mean,
    Max,
}

pub(super) fn reduce_float(lw: &mut Lowering<'_>, idx: usize, how: Reduce) -> Result<bool> {
    let mean = how == Reduce::Mean;
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let shape = lw.fshape(x);
    let axes = if n.input.len() > 1 && !n.input[1].is_empty() {
        lw.constant(n, 1)?.ints()
    } else {
        attr_ints(n, "axes").unwrap_or_default()
    };
    let r = shape.len() as i64;
    let mut ax: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + r } else { a })
        .collect();
    if ax.is_empty() {
        // No axes: all of them, unless noop_with_empty_axes asks for the identity.
        if attr_i(n, "noop_with_empty_axes", 0) != 0 {
            return Err(lw.unsupported(n, "noop_with_empty_axes"));
        }
        ax = (0..r).collect();
    }
    ax.sort_unstable();
    ax.dedup();
    if ax.is_empty() || ax.iter().any(|a| !(0..r).contains(a)) {
        return Err(lw.unsupported(n, "axes out of range, or none"));
    }
    if ax.windows(2).any(|w| w[1] != w[0] + 1) {
        return Err(lw.unsupported(n, "reduction axes must be adjacent"));
    }
    let (a0, a1) = (ax[0] as usize, *ax.last().unwrap_or(&0) as usize + 1);
    let (outer, len, inner) = (
        shape[..a0].iter().product::<usize>(),
        shape[a0..a1].iter().product::<usize>(),
        shape[a1..].iter().product::<usize>(),
    );
    let mut out = shape.clone();
    if attr_i(n, "keepdims", 1) != 0 {
        out[a0..a1].iter_mut().for_each(|d| *d = 1);
    } else {
        out.drain(a0..a1);
    }
    let name = if mean {
        format!("{}#sum", n.output[0])
    } else {
        n.output[0].clone()
    };
    let sum = lw.new_f32(&name, out.clone());
    let (outer, len32, inner) = (outer as u32, len as u32, inner as u32);
    lw.b.ops.push(if how == Reduce::Max {
        Op::MaxF32 {
            x,
            y: sum,
            outer,
            len: len32,
            inner,
        }
    } else {
        Op::SumF32 {
            x,
            y: sum,
            outer,
            len: len32,
            inner,
        }
    });
    let y = if mean {
        let n = &lw.graph.node[idx];
        let y = lw.new_f32(&n.output[0], out.clone());
        let k = lw.b.push(&[1.0 / len.max(1) as f32]);
        lw.b.ops.push(Op::BinF32 {
            a: crate::plan::Src::T(sum),
            b: crate::plan::Src::C(k),
            y,
            f: crate::plan::BinOp::Mul,
            dims: super::elementwise::pad4(&out).map(|v| v as u32),
            sa: super::elementwise::strides4(&out, &out),
            sb: [0; 4],
        });
        y
    } else {
        sum
    };
    let n = &lw.graph.node[idx];
    lw.out_f32(n, y);
    Ok(true)
}

pub(super) fn reduce_max(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if reduce_float(lw, idx, Reduce::Max)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}

pub(super) fn reduce_sum(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if reduce_float(lw, idx, Reduce::Sum)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}
