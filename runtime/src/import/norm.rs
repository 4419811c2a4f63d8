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
    let cols = *shape.last().unwrap_or(&0);
    let axis = attr_i(n, "axis", -1);
    if !(axis == -1 || axis == shape.len() as i64 - 1) {
        return Err(lw.unsupported(n, "normalises over the last axis only"));
    }
    let g = lw.constant(n, 1)?.f32s().unwrap_or_default();
    let bt = if n.input.len() > 2 && !n.input[2].is_empty() {
        lw.constant(n, 2)?.f32s().unwrap_or_default()
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

/// False when the input is not a row-major f32 tensor.
fn reduce_sum_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
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
    let [ax] = axes.as_slice() else {
        return Err(lw.unsupported(n, "one reduction axis"));
    };
    let ax = if *ax < 0 { ax + r } else { *ax };
    if !(0..r).contains(&ax) {
        return Err(lw.unsupported(n, "axis out of range"));
    }
    let ax = ax as usize;
    let (outer, len, inner) = (
        shape[..ax].iter().product::<usize>(),
        shape[ax],
        shape[ax + 1..].iter().product::<usize>(),
    );
    let mut out = shape.clone();
    if attr_i(n, "keepdims", 1) != 0 {
        out[ax] = 1;
    } else {
        out.remove(ax);
    }
    let y = lw.new_f32(&n.output[0], out);
    lw.b.ops.push(Op::SumF32 {
        x,
        y,
        outer: outer as u32,
        len: len as u32,
        inner: inner as u32,
    });
    lw.out_f32(n, y);
    Ok(true)
}

pub(super) fn reduce_sum(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if reduce_sum_float(lw, idx)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}
