//! Shape and data-movement ops: constants, casts, the reshape family, transposes and row
//! gathers. On row-major float tensors they copy into the new shape (or permutation); on a
//! quantised feature map only the free flattening of a 1×1 map is lowered.

use super::elementwise::pad4;
use super::lower::Lowering;
use super::value::{attr, attr_i, attr_ints, tensor_const, Const, Data, Val};
use crate::error::Result;
use crate::plan::{Op, Unary};
use tract_onnx::pb;

/// A `value` tensor attribute becomes a constant of the graph.
pub(super) fn constant(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let t = attr(n, "value")
        .and_then(|a| a.t.as_ref())
        .ok_or_else(|| lw.unsupported(n, "only tensor constants"))?;
    let c = tensor_const(t)?;
    lw.vals.insert(n.output[0].clone(), Val::Const(c));
    Ok(())
}

/// False when the input is neither a float tensor, a constant nor a MatMulInteger result.
fn cast_form(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    if let (Some(x), 9) = (x0, attr_i(n, "to", 1)) {
        super::logic::to_bool(lw, idx, x)?;
        return Ok(true);
    }
    match lw.val(n, 0)?.clone() {
        // Every float-path tensor is f32; integer ids stay exact below 2^24.
        v @ (Val::Act(_) | Val::IntMM { .. }) if x0.is_some() || matches!(v, Val::IntMM { .. }) => {
            lw.vals.insert(n.output[0].clone(), v);
        }
        Val::Const(c) => {
            let to = attr_i(n, "to", 1);
            let data = if to == 1 {
                Data::F32(c.ints().iter().map(|&v| v as f32).collect())
            } else if to == 9 {
                let nz: Vec<i64> = match &c.data {
                    Data::F32(v) => v.iter().map(|&x| (x != 0.0) as i64).collect(),
                    _ => c.ints().iter().map(|&x| (x != 0) as i64).collect(),
                };
                Data::I64(nz)
            } else {
                Data::I64(c.ints())
            };
            let data = match (&c.data, to) {
                (Data::F32(v), 1) => Data::F32(v.clone()),
                _ => data,
            };
            lw.vals.insert(
                n.output[0].clone(),
                Val::Const(Const { dims: c.dims, data }),
            );
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Casts of float tensors are copies (every float-path tensor is f32); casts of constants
/// convert them.
pub(super) fn cast(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if cast_form(lw, idx)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}

/// The float form (and constants for Squeeze and Unsqueeze); false otherwise.
fn reshape_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let op = n.op_type.as_str();
    let x0 = lw.fact(n, 0);
    if lw.int_names.contains(&n.input[0]) {
        lw.int_names.insert(n.output[0].clone());
    }
    let Some(x) = x0 else {
        return match lw.val(n, 0)? {
            Val::Const(c) if op != "Reshape" && op != "Flatten" => {
                let mut c = c.clone();
                c.dims = lw.reshaped(n, &c.dims)?;
                lw.vals.insert(n.output[0].clone(), Val::Const(c));
                Ok(true)
            }
            _ => Ok(false),
        };
    };
    let shape = lw.reshaped(n, &lw.fshape(x))?;
    let y = lw.new_f32(&n.output[0], shape);
    lw.b.ops.push(Op::UnaryF32 {
        x,
        y,
        f: Unary::Identity,
    });
    lw.out_f32(n, y);
    Ok(true)
}

/// Reshape, Flatten, Squeeze or Unsqueeze of a quantised tensor whose bytes stay put.
fn flatten_quantised(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let v = lw.val(n, 0)?.clone();
    let t = match v {
        Val::Deq(t) | Val::Act(t) => t,
        _ => return Err(lw.unsupported(n, "constant input")),
    };
    let ti = lw.b.tensors[t as usize].clone();
    let s = &ti.shape;
    let out = lw.reshaped(n, &ti.logical_shape())?;
    if ti.nhwc && s.len() == 4 {
        // A 1×1 spatial map has the same bytes in NHWC and NCHW: flattening is free.
        if s[1] == 1 && s[2] == 1 && out.len() <= 2 {
            lw.vals.insert(n.output[0].clone(), v);
            return Ok(());
        }
        // The codes move to NCHW order (a u8 transpose) under the new shape.
        let form = if matches!(v, Val::Deq(_)) { 0 } else { 1 };
        let q = crate::plan::Q8 {
            scale: ti.scale,
            zero: ti.zero,
        };
        let y = lw.b.tensor(&n.output[0], ti.dtype, out, false, Some(q));
        lw.b.ops.push(Op::TransposeF32 {
            x: t,
            y,
            dims: [1, (s[1] * s[2]) as u32, s[3] as u32, 1],
            perm: [0, 2, 1, 3],
        });
        let v = lw.moved_value(&n.output[0], y, form);
        lw.vals.insert(n.output[0].clone(), v);
        return Ok(());
    }
    if &out == s {
        lw.vals.insert(n.output[0].clone(), v);
        return Ok(());
    }
    // Row-major codes: the bytes stay where they are; one copy under the new shape.
    let form = if matches!(v, Val::Deq(_)) { 0 } else { 1 };
    let y = lw.moved_tensor(&n.output[0], &ti, out, form);
    let len = s.iter().product::<usize>() as u32;
    lw.b.ops.push(Op::Slice {
        x: t,
        y,
        outer: 1,
        inner: len,
        off: 0,
        len,
    });
    let v = lw.moved_value(&n.output[0], y, form);
    lw.vals.insert(n.output[0].clone(), v);
    Ok(())
}

/// Reshape, Flatten, Squeeze and Unsqueeze: a copy into the new shape for float tensors
/// and constants; of a quantised tensor only where the bytes do not move (row-major
/// codes, or a 1×1 feature map).
pub(super) fn reshape(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if reshape_float(lw, idx)? {
        return Ok(());
    }
    flatten_quantised(lw, idx)
}

/// False when the input is not a row-major f32 tensor.
fn transpose_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let shape = lw.fshape(x);
    let r = shape.len();
    let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p < 0 || p as usize >= r || std::mem::replace(&mut seen[p as usize], true))
    {
        return Err(lw.unsupported(n, "perm is not a permutation of the input's axes"));
    }
    let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
    let Some((dims, p)) = fewer_axes(&shape, &perm) else {
        return Err(lw.unsupported(
            n,
            "a permutation of more than 4 groups of axes that move together",
        ));
    };
    // Padded to 4-D on the left.
    let off = 4 - dims.len();
    let mut p4 = [0u8, 1, 2, 3];
    for (i, &q) in p.iter().enumerate() {
        p4[off + i] = (off + q) as u8;
    }
    let out: Vec<usize> = perm.iter().map(|&q| shape[q]).collect();
    let y = lw.new_f32(&n.output[0], out);
    lw.b.ops.push(Op::TransposeF32 {
        x,
        y,
        dims: pad4(&dims).map(|v| v as u32),
        perm: p4,
    });
    lw.out_f32(n, y);
    Ok(true)
}

/// The same data movement over fewer axes: axes of size 1 dropped and axes that stay
/// neighbours in the output merged. None when more than 4 axes remain.
pub(super) fn fewer_axes(shape: &[usize], perm: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    let kept: Vec<usize> = perm.iter().copied().filter(|&a| shape[a] != 1).collect();
    // Runs of input axes a, a+1, ... that appear in that order in the output.
    let mut runs: Vec<(usize, usize)> = vec![];
    for &a in &kept {
        match runs.last_mut() {
            Some((_, last)) if a > *last && (*last + 1..a).all(|b| shape[b] == 1) => *last = a,
            _ => runs.push((a, a)),
        }
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].0);
    let dims: Vec<usize> = order
        .iter()
        .map(|&i| (runs[i].0..=runs[i].1).map(|a| shape[a]).product())
        .collect();
    // Output group i is input group p[i].
    let mut p = vec![0; runs.len()];
    for (pos, &i) in order.iter().enumerate() {
        p[i] = pos;
    }
    match dims.len() {
        0 => Some((vec![1], vec![0])),
        1..=4 => Some((dims, p)),
        _ => None,
    }
}

pub(super) fn transpose(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if transpose_float(lw, idx)? {
        Ok(())
    } else {
        transpose_quantised(lw, idx)
    }
}

/// Transpose of a quantised tensor: its u8 codes move (the parameters stay) into a
/// row-major tensor; an NHWC map's stored order is composed into the permutation.
fn transpose_quantised(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let (t, form) = lw.data_input(n, 0)?;
    if form == 2 {
        return Err(lw.no_form(idx));
    }
    let ti = lw.b.tensors[t as usize].clone();
    let logical = ti.logical_shape();
    let r = logical.len();
    let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p < 0 || p as usize >= r || std::mem::replace(&mut seen[p as usize], true))
    {
        return Err(lw.unsupported(n, "perm is not a permutation of the input's axes"));
    }
    let nhwc = ti.nhwc && r == 4;
    let stored = |a: usize| if nhwc { [0, 3, 1, 2][a] } else { a };
    let sperm: Vec<usize> = perm.iter().map(|&p| stored(p as usize)).collect();
    let Some((dims, p)) = fewer_axes(&ti.shape, &sperm) else {
        return Err(lw.unsupported(
            n,
            "a permutation of more than 4 groups of axes that move together",
        ));
    };
    let out: Vec<usize> = perm.iter().map(|&q| logical[q as usize]).collect();
    let q = crate::plan::Q8 {
        scale: ti.scale,
        zero: ti.zero,
    };
    let y = lw.b.tensor(&n.output[0], ti.dtype, out, false, Some(q));
    let off = 4 - dims.len();
    let mut p4 = [0u8, 1, 2, 3];
    for (i, &q) in p.iter().enumerate() {
        p4[off + i] = (off + q) as u8;
    }
    lw.b.ops.push(Op::TransposeF32 {
        x: t,
        y,
        dims: pad4(&dims).map(|v| v as u32),
        perm: p4,
    });
    let v = lw.moved_value(&n.output[0], y, form);
    lw.vals.insert(n.output[0].clone(), v);
    Ok(())
}

/// Rows of a constant 2-D table by run-time indices; int8 rows carry their dequantisation.
/// Gather of a run-time tensor (float, or quantised codes) by constant indices along any
/// axis: the runs below the axis copied by one `Take`.
fn gather_take(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let (t, form) = lw.data_input(n, 0)?;
    let ti = lw.b.tensors[t as usize].clone();
    if ti.nhwc && ti.shape.len() == 4 && form < 2 {
        return Err(lw.unsupported(n, "a gather from an NHWC feature map"));
    }
    let shape = ti.shape.clone();
    let a = axis_in(lw, n, attr_i(n, "axis", 0), shape.len())?;
    let ids_c = lw.constant(n, 1)?;
    let d = shape[a] as i64;
    let ids: Vec<usize> = ids_c
        .ints()
        .iter()
        .map(|&i| {
            let i = if i < 0 { i + d } else { i };
            (0..d).contains(&i).then_some(i as usize)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| lw.unsupported(n, "an index outside the axis"))?;
    let (outer, inner) = (
        shape[..a].iter().product::<usize>(),
        shape[a + 1..].iter().product::<usize>(),
    );
    let mut offs = Vec::with_capacity(outer * ids.len());
    for o in 0..outer {
        for &i in &ids {
            offs.push(((o * shape[a] + i) * inner) as u32);
        }
    }
    let mut out = shape[..a].to_vec();
    out.extend_from_slice(&ids_c.dims);
    out.extend_from_slice(&shape[a + 1..]);
    take(lw, idx, t, form, &ti, out, &offs, inner)
}

/// One `Take` of runs of `run` elements at `offs` from `t` into n's output of `shape`.
#[allow(clippy::too_many_arguments)]
fn take(
    lw: &mut Lowering<'_>,
    idx: usize,
    t: u32,
    form: u8,
    ti: &crate::plan::TensorInfo,
    shape: Vec<usize>,
    offs: &[u32],
    run: usize,
) -> Result<()> {
    let n = &lw.graph.node[idx];
    if run == 0 || offs.is_empty() {
        return Err(lw.unsupported(n, "an empty result"));
    }
    if ti.len() > u32::MAX as usize || offs.len().checked_mul(run).is_none_or(|c| c > 1 << 31) {
        return Err(lw.unsupported(n, "more than 2^31 elements"));
    }
    let out = n.output[0].clone();
    let y = lw.moved_tensor(&out, ti, shape, form);
    let idx_blob = lw.b.push(offs);
    lw.b.ops.push(Op::Take {
        x: t,
        y,
        idx: idx_blob,
        run: run as u32,
    });
    if lw.int_names.contains(&lw.graph.node[idx].input[0]) {
        lw.int_names.insert(out.clone());
    }
    let v = lw.moved_value(&out, y, form);
    lw.vals.insert(out, v);
    Ok(())
}

/// A data movement given per logical axis as the source index of every output index
/// (`maps[a][o]`): Slice with any steps, Pad in reflect and edge modes. One `Take` over
/// the stored layout; the trailing axes that map onto themselves are copied as runs.
fn take_by_axes(lw: &mut Lowering<'_>, idx: usize, maps: Vec<Vec<usize>>) -> Result<()> {
    let n = &lw.graph.node[idx];
    let (t, form) = lw.data_input(n, 0)?;
    let ti = lw.b.tensors[t as usize].clone();
    let nhwc = ti.nhwc && ti.shape.len() == 4;
    // Stored axis k holds logical axis order[k].
    let order: Vec<usize> = if nhwc {
        vec![0, 2, 3, 1]
    } else {
        (0..ti.shape.len()).collect()
    };
    if maps.len() != order.len() {
        return Err(lw.unsupported(n, "one index map per axis"));
    }
    let s = &ti.shape;
    let maps: Vec<&Vec<usize>> = order.iter().map(|&a| &maps[a]).collect();
    let out: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    if out.contains(&0) {
        return Err(lw.unsupported(n, "an empty result"));
    }
    if out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none_or(|c| c > 1 << 31)
    {
        return Err(lw.unsupported(n, "more than 2^31 elements"));
    }
    // Trailing axes copied whole form the run.
    let mut k = out.len();
    while k > 0
        && maps[k - 1].len() == s[k - 1]
        && maps[k - 1].iter().enumerate().all(|(i, &v)| i == v)
    {
        k -= 1;
    }
    let run: usize = s[k..].iter().product();
    let strides: Vec<usize> = (0..s.len()).map(|a| s[a + 1..].iter().product()).collect();
    let count: usize = out[..k].iter().product();
    if count > 1 << 24 {
        return Err(lw.unsupported(n, "more than 2^24 runs to move"));
    }
    let mut offs = Vec::with_capacity(count);
    let mut ix = vec![0usize; k];
    for _ in 0..count {
        offs.push((0..k).map(|a| maps[a][ix[a]] * strides[a]).sum::<usize>() as u32);
        for a in (0..k).rev() {
            ix[a] += 1;
            if ix[a] < out[a] {
                break;
            }
            ix[a] = 0;
        }
    }
    take(lw, idx, t, form, &ti, out, &offs, run)
}

/// Pad in reflect or edge mode: every output index mapped to its source.
fn pad_modes(lw: &mut Lowering<'_>, idx: usize, pads: &[i64], reflect: bool) -> Result<()> {
    let n = &lw.graph.node[idx];
    let shape = lw
        .shape_of(&n.input[0])
        .ok_or_else(|| lw.unsupported(n, "input of unknown shape"))?;
    let r = shape.len();
    if pads.len() != 2 * r || pads.iter().any(|&p| !(0..=1 << 16).contains(&p)) {
        return Err(lw.unsupported(n, "pads for every axis, none negative"));
    }
    if shape.iter().any(|&d| d > 1 << 24) {
        return Err(lw.unsupported(n, "an axis longer than 2^24"));
    }
    let mut maps = vec![];
    for (a, &d) in shape.iter().enumerate() {
        let (b, e) = (pads[a] as usize, pads[a + r] as usize);
        if reflect && (d < 2 && b + e > 0 || b >= d || e >= d) {
            return Err(lw.unsupported(n, "reflect pads as wide as the axis"));
        }
        maps.push(
            (0..b + d + e)
                .map(|o| {
                    let i = o as i64 - b as i64;
                    let last = d as i64 - 1;
                    (if reflect {
                        if i < 0 {
                            -i
                        } else if i > last {
                            2 * last - i
                        } else {
                            i
                        }
                    } else {
                        i.clamp(0, last)
                    }) as usize
                })
                .collect(),
        );
    }
    take_by_axes(lw, idx, maps)
}

/// GatherND (batch_dims 0) of a run-time tensor by constant index tuples.
pub(super) fn gather_nd(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if attr_i(n, "batch_dims", 0) != 0 {
        return Err(lw.unsupported(n, "batch_dims other than 0"));
    }
    let (t, form) = lw.data_input(n, 0)?;
    let ti = lw.b.tensors[t as usize].clone();
    if ti.nhwc && ti.shape.len() == 4 && form < 2 {
        return Err(lw.unsupported(n, "a gather from an NHWC feature map"));
    }
    let shape = ti.shape.clone();
    let ic = lw.constant(n, 1)?;
    let k = *ic.dims.last().unwrap_or(&0);
    if k == 0 || k > shape.len() {
        return Err(lw.unsupported(n, "index tuples longer than the data's rank"));
    }
    let run: usize = shape[k..].iter().product();
    let strides: Vec<usize> = (0..k).map(|j| shape[j + 1..].iter().product()).collect();
    let ints = ic.ints();
    let mut offs = Vec::with_capacity(ints.len() / k);
    for tuple in ints.chunks_exact(k) {
        let mut off = 0usize;
        for (j, &i) in tuple.iter().enumerate() {
            let d = shape[j] as i64;
            let i = if i < 0 { i + d } else { i };
            if !(0..d).contains(&i) {
                return Err(lw.unsupported(n, "an index outside the data"));
            }
            off += i as usize * strides[j];
        }
        offs.push(off as u32);
    }
    let mut out = ic.dims[..ic.dims.len() - 1].to_vec();
    out.extend_from_slice(&shape[k..]);
    take(lw, idx, t, form, &ti, out, &offs, run)
}

pub(super) fn gather(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if matches!(lw.val(n, 1)?, Val::Const(_)) && !matches!(lw.val(n, 0)?, Val::Const(_)) {
        return gather_take(lw, idx);
    }
    let ids = lw
        .fact(n, 1)
        .ok_or_else(|| lw.unsupported(n, "indices must be a run-time tensor"))?;
    let table = lw.constant(n, 0)?;
    if attr_i(n, "axis", 0) != 0 || table.dims.len() != 2 {
        return Err(lw.unsupported(n, "only row gathers from a 2-D table"));
    }
    let (rows, dim) = (table.dims[0], table.dims[1]);
    let mut shape = lw.fshape(ids);
    shape.push(dim);
    let (blob, quant, name) = match &table.data {
        Data::F32(v) => (lw.b.push(v), None, n.output[0].clone()),
        Data::I8(_) | Data::U8(_) => {
            // The DequantizeLinear that alone reads the gathered int8 rows.
            let cons = lw.consumers.get(&n.output[0]).cloned().unwrap_or_default();
            let [dq] = cons.as_slice() else {
                return Err(lw.unsupported(n, "int8 rows must feed one DequantizeLinear"));
            };
            let dn = &lw.graph.node[*dq];
            if dn.op_type != "DequantizeLinear" {
                return Err(lw.unsupported(n, "int8 rows must feed one DequantizeLinear"));
            }
            let sc = lw.constant(dn, 1)?.f32s().unwrap_or_default();
            let z = if dn.input.len() > 2 && !dn.input[2].is_empty() {
                lw.constant(dn, 2)?.ints()
            } else {
                vec![0]
            };
            if sc.len() != 1 || z.len() != 1 || !sc[0].is_finite() {
                return Err(lw.unsupported(dn, "per-tensor scale and zero point"));
            }
            lw.skip.insert(*dq);
            // u8 codes become i8 with the zero point moved by 128: same values.
            let (bytes, z): (Vec<u8>, i32) = match &table.data {
                Data::U8(v) => (v.iter().map(|&q| q ^ 0x80).collect(), z[0] as i32 - 128),
                Data::I8(v) => (v.iter().map(|&q| q as u8).collect(), z[0] as i32),
                _ => unreachable!("matched above"),
            };
            (lw.b.push(&bytes), Some((sc[0], z)), dn.output[0].clone())
        }
        _ => return Err(lw.unsupported(n, "table must be f32 or int8")),
    };
    let y = lw.new_f32(&name, shape);
    lw.b.ops.push(Op::GatherF32 {
        ids,
        y,
        table: blob,
        rows: rows as u32,
        dim: dim as u32,
        quant,
    });
    lw.vals.insert(name.clone(), Val::Act(y));
    lw.produced.insert(name, y);
    Ok(())
}

impl Lowering<'_> {
    /// Output shape of a shape op on `shape`.
    fn reshaped(&self, n: &pb::NodeProto, shape: &[usize]) -> Result<Vec<usize>> {
        // Sizes come from the file: products are checked, a shape past 2^31 elements refused.
        let count = |s: &Self, d: &[usize]| -> Result<usize> {
            d.iter()
                .try_fold(1usize, |a, &v| a.checked_mul(v))
                .filter(|&c| c <= 1 << 31)
                .ok_or_else(|| s.unsupported(n, "more than 2^31 elements"))
        };
        let total = count(self, shape)?;
        let axes_of = |s: &Self| -> Result<Vec<i64>> {
            if n.input.len() > 1 && !n.input[1].is_empty() {
                Ok(s.constant(n, 1)?.ints())
            } else {
                Ok(attr_ints(n, "axes").unwrap_or_default())
            }
        };
        let out = match n.op_type.as_str() {
            "Reshape" => {
                let spec = self.constant(n, 1)?.ints();
                let mut out = vec![];
                let mut infer = None;
                for (i, &d) in spec.iter().enumerate() {
                    match d {
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            out.push(1);
                        }
                        0 if attr_i(n, "allowzero", 0) == 0 => out.push(
                            *shape
                                .get(i)
                                .ok_or_else(|| self.unsupported(n, "0 past the input rank"))?,
                        ),
                        d if d > 0 => out.push(d as usize),
                        _ => return Err(self.unsupported(n, "bad target shape")),
                    }
                }
                if let Some(i) = infer {
                    let known = count(self, &out)?;
                    if known == 0 || !total.is_multiple_of(known) {
                        return Err(self.unsupported(n, "cannot infer -1"));
                    }
                    out[i] = total / known;
                }
                out
            }
            "Flatten" => {
                let r = shape.len() as i64;
                let ax = attr_i(n, "axis", 1);
                let ax = if ax < 0 { ax + r } else { ax };
                if !(0..=r).contains(&ax) {
                    return Err(self.unsupported(n, "axis out of range"));
                }
                let a = count(self, &shape[..ax as usize])?;
                vec![a, total / a.max(1)]
            }
            "Unsqueeze" => {
                let axes = axes_of(self)?;
                let r = (shape.len() + axes.len()) as i64;
                let mut ax: Vec<usize> = axes
                    .iter()
                    .map(|&a| if a < 0 { a + r } else { a })
                    .filter(|a| (0..r).contains(a))
                    .map(|a| a as usize)
                    .collect();
                ax.sort_unstable();
                if ax.len() != axes.len() {
                    return Err(self.unsupported(n, "axis out of range"));
                }
                let mut out = shape.to_vec();
                for a in ax {
                    out.insert(a, 1);
                }
                out
            }
            _ => {
                let axes = axes_of(self)?;
                let r = shape.len() as i64;
                shape
                    .iter()
                    .enumerate()
                    .filter(|(i, &d)| {
                        !(d == 1
                            && (axes.is_empty()
                                || axes
                                    .iter()
                                    .any(|&a| (if a < 0 { a + r } else { a }) == *i as i64)))
                    })
                    .map(|(_, &d)| d)
                    .collect()
            }
        };
        if count(self, &out)? != total {
            return Err(self.unsupported(n, "element count changes"));
        }
        Ok(out)
    }
}

/// Pad, constant mode, of a quantised map (its dequantised view or, in QOperator form,
/// its u8 codes) or a float tensor of rank ≤ 4. Zero padding of the spatial axes that only
/// convolutions read becomes extra padding of those convolutions; any other padding (the
/// channel padding of BlazeFace-style residuals, say) is a `Pad` copy.
pub(super) fn pad(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    // 0: a dequantised view, 1: u8 codes, 2: a float tensor.
    let (t, form) = lw.data_input(n, 0)?;
    let ti = lw.b.tensors[t as usize].clone();
    let mode = attr(n, "mode").map_or(&b"constant"[..], |a| a.s.as_slice());
    let pads = if n.input.len() > 1 && !n.input[1].is_empty() {
        lw.constant(n, 1)?.ints()
    } else {
        attr_ints(n, "pads").unwrap_or_default()
    };
    if n.input.len() > 3 && !n.input[3].is_empty() {
        return Err(lw.unsupported(n, "the axes input"));
    }
    match mode {
        b"constant" => {}
        b"reflect" | b"edge" => return pad_modes(lw, idx, &pads, mode == b"reflect"),
        _ => return Err(lw.unsupported(n, "modes other than constant, reflect and edge")),
    }
    let value = if n.input.len() > 2 && !n.input[2].is_empty() {
        match lw.val(n, 2)? {
            Val::Const(c) => c
                .f32s()
                .unwrap_or_else(|| c.ints().iter().map(|&v| v as f32).collect()),
            _ => lw.floats(n, 2)?,
        }
    } else {
        vec![attr(n, "value").map_or(0.0, |a| a.f)]
    };
    let rank = ti.shape.len();
    if value.len() != 1 || !value[0].is_finite() || rank > 4 || pads.len() != 2 * rank {
        return Err(lw.unsupported(
            n,
            "pads for every axis of a tensor of rank ≤ 4, one finite value",
        ));
    }
    if pads.iter().any(|&p| p < 0) {
        return Err(lw.unsupported(n, "negative pads (cropping)"));
    }
    // The fill as a float value (form 1 holds codes).
    let fill = if form == 1 {
        (value[0] - ti.zero as f32) * ti.scale
    } else {
        value[0]
    };
    let spatial_only = rank == 4 && [pads[0], pads[1], pads[4], pads[5]].iter().all(|&p| p == 0);
    // (A float tensor is padded by a copy: the float convolutions take no extra padding.)
    if spatial_only && fill == 0.0 && form == 0 && lw.feeds_only_convs(&n.output[0]) {
        let add = [pads[2], pads[3], pads[6], pads[7]].map(|p| p as usize);
        lw.vals.insert(
            n.output[0].clone(),
            Val::Padded {
                t,
                pads: add,
                deq: form == 0,
            },
        );
        return Ok(());
    }
    if form == 1 && spatial_only && fill == 0.0 && lw.feeds_only_convs(&n.output[0]) {
        lw.vals.insert(
            n.output[0].clone(),
            Val::Padded {
                t,
                pads: [pads[2], pads[3], pads[6], pads[7]].map(|p| p as usize),
                deq: false,
            },
        );
        return Ok(());
    }
    // The pads in the stored layout (NHWC maps keep the channel last), padded to 4 axes.
    let logical: Vec<(usize, usize)> = (0..rank)
        .map(|i| (pads[i] as usize, pads[i + rank] as usize))
        .collect();
    let stored: Vec<(usize, usize)> = if ti.nhwc && rank == 4 {
        vec![logical[0], logical[2], logical[3], logical[1]]
    } else {
        logical
    };
    let mut before = [0u32; 4];
    let mut after = [0u32; 4];
    for (k, &(b, a)) in stored.iter().enumerate() {
        before[4 - rank + k] = b as u32;
        after[4 - rank + k] = a as u32;
    }
    let dims = pad4(&ti.shape).map(|v| v as u32);
    let shape: Vec<usize> = ti
        .shape
        .iter()
        .enumerate()
        .map(|(k, &d)| d + stored[k].0 + stored[k].1)
        .collect();
    let value = match form {
        2 => fill.to_bits(),
        _ => edgetune_kernels::quant::requant(fill / ti.scale, ti.zero, 0, 255) as u32,
    };
    let y = lw.moved_tensor(&n.output[0], &ti, shape, form);
    lw.b.ops.push(Op::Pad {
        x: t,
        y,
        dims,
        before,
        after,
        value,
    });
    let v = lw.moved_value(&n.output[0], y, form);
    lw.vals.insert(n.output[0].clone(), v);
    Ok(())
}

impl Lowering<'_> {
    /// Whether every reader of `name`, through QuantizeLinear and DequantizeLinear, is the
    /// data input of a Conv.
    pub(super) fn feeds_only_convs(&self, name: &str) -> bool {
        let mut stack = vec![name.to_string()];
        let mut any = false;
        while let Some(v) = stack.pop() {
            let Some(cons) = self.consumers.get(&v) else {
                return false;
            };
            for &c in cons {
                let node = &self.graph.node[c];
                match node.op_type.as_str() {
                    "QuantizeLinear" | "DequantizeLinear" => stack.push(node.output[0].clone()),
                    "QLinearConv" | "Conv" if node.input.first() == Some(&v) => any = true,
                    _ => return false,
                }
            }
        }
        any
    }
}

/// Concat along one axis: quantised tensors (each requantised to the output's parameters
/// by a table where they differ) or float tensors, as a chain of two-input copies.
pub(super) fn concat(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let ins: Vec<&String> = n.input.iter().filter(|i| !i.is_empty()).collect();
    if ins.is_empty() {
        return Err(lw.unsupported(n, "no inputs"));
    }
    let quantised = (0..ins.len()).all(|i| matches!(lw.val(n, i), Ok(Val::Deq(_))));
    let ts: Vec<u32> = if quantised {
        (0..ins.len())
            .map(|i| lw.deq(n, i))
            .collect::<Result<_>>()?
    } else {
        (0..ins.len())
            .map(|i| {
                lw.fact(n, i).ok_or_else(|| {
                    lw.unsupported(n, format!("input {i} is neither quantised nor float"))
                })
            })
            .collect::<Result<_>>()?
    };
    let infos: Vec<_> = ts
        .iter()
        .map(|&t| lw.b.tensors[t as usize].clone())
        .collect();
    let logical = infos[0].logical_shape();
    let rank = logical.len();
    let a = attr_i(n, "axis", 0);
    let a = if a < 0 { a + rank as i64 } else { a };
    if !(0..rank as i64).contains(&a) {
        return Err(lw.unsupported(n, "axis outside the rank"));
    }
    let a = a as usize;
    let nhwc = infos[0].nhwc;
    if infos.iter().any(|t| {
        let s = t.logical_shape();
        t.nhwc != nhwc || s.len() != rank || (0..rank).any(|i| i != a && s[i] != logical[i])
    }) {
        return Err(lw.unsupported(n, "inputs differ outside the concatenated axis"));
    }
    // The axis in the stored layout (NHWC maps store the channel last).
    let stored = if nhwc && rank == 4 {
        [0, 3, 1, 2][a]
    } else {
        a
    };
    let mut out_logical = logical.clone();
    out_logical[a] = infos.iter().map(|t| t.logical_shape()[a]).sum();
    let out_stored = |l: &[usize]| {
        if nhwc && rank == 4 {
            vec![l[0], l[2], l[3], l[1]]
        } else {
            l.to_vec()
        }
    };
    let (qi, qy) = if quantised {
        let (qi, q) = lw.fused_q(n)?;
        (Some(qi), Some(q))
    } else {
        (None, None)
    };
    let dtype = infos[0].dtype;
    let table = |lw: &mut Lowering<'_>, t: &crate::plan::TensorInfo| -> crate::plan::Blob {
        match qy {
            Some(q) if t.scale != q.scale || t.zero != q.zero => {
                let codes: Vec<u8> = (0..256)
                    .map(|c| {
                        let v = (c - t.zero) as f32 * t.scale;
                        edgetune_kernels::quant::requant(v / q.scale, q.zero, 0, 255) as u8
                    })
                    .collect();
                lw.b.push(&codes)
            }
            _ => crate::plan::Blob { off: 0, len: 0 },
        }
    };
    let outer_of = |s: &[usize]| s[..stored].iter().product::<usize>();
    let inner_of = |s: &[usize]| s[stored..].iter().product::<usize>();
    if ts.len() == 1 {
        let v = lw.val(n, 0)?.clone();
        lw.vals.insert(n.output[0].clone(), v);
        return Ok(());
    }
    let mut acc = ts[0];
    let mut acc_info = infos[0].clone();
    let mut acc_table = table(lw, &infos[0]);
    let mut width = infos[0].logical_shape()[a];
    for j in 1..ts.len() {
        width += infos[j].logical_shape()[a];
        let mut l = logical.clone();
        l[a] = width;
        let last = j == ts.len() - 1;
        let name = if last {
            n.output[0].clone()
        } else {
            format!("{}#concat{j}", n.output[0])
        };
        let shape = out_stored(&l);
        let y = lw.b.tensor(&name, dtype, shape.clone(), nhwc, qy);
        let tb = table(lw, &infos[j]);
        let (sa, sb) = (acc_info.shape.clone(), infos[j].shape.clone());
        lw.b.ops.push(Op::Concat {
            a: acc,
            b: ts[j],
            y,
            outer: outer_of(&sa) as u32,
            ia: inner_of(&sa) as u32,
            ib: inner_of(&sb) as u32,
            ta: acc_table,
            tb,
        });
        acc = y;
        acc_info = lw.b.tensors[y as usize].clone();
        acc_table = crate::plan::Blob { off: 0, len: 0 };
    }
    debug_assert_eq!(width, out_logical[a]);
    match qi {
        Some(qi) => lw.set_out(qi, acc, &n.output[0]),
        None => lw.out_f32(n, acc),
    }
    Ok(())
}

/// Ops lowered only by constant folding: reached here, an input is not a constant.
pub(super) fn folded_only(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    Err(lw.unsupported(
        &lw.graph.node[idx],
        "only constant inputs (folded at compile time)",
    ))
}

/// `len` entries from `off` along logical axis `a` of input `i` (a quantised or a float
/// tensor) into a new tensor named `out`: one `Slice` copy.
fn window(
    lw: &mut Lowering<'_>,
    n: &pb::NodeProto,
    i: usize,
    a: usize,
    off: usize,
    len: usize,
    out: &str,
) -> Result<Val> {
    let (t, form) = lw.data_input(n, i)?;
    let ti = lw.b.tensors[t as usize].clone();
    let rank = ti.shape.len();
    let stored = if ti.nhwc && rank == 4 {
        [0, 3, 1, 2][a]
    } else {
        a
    };
    let below: usize = ti.shape[stored + 1..].iter().product();
    let mut shape = ti.shape.clone();
    shape[stored] = len;
    let y = lw.moved_tensor(out, &ti, shape, form);
    lw.b.ops.push(Op::Slice {
        x: t,
        y,
        outer: ti.shape[..stored].iter().product::<usize>() as u32,
        inner: ti.shape[stored..].iter().product::<usize>() as u32,
        off: (off * below) as u32,
        len: (len * below) as u32,
    });
    Ok(lw.moved_value(out, y, form))
}

fn axis_in(lw: &Lowering<'_>, n: &pb::NodeProto, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(lw.unsupported(n, format!("axis {a} outside rank {rank}")))
    }
}

/// Split of a quantised or float tensor along one axis: each output a window copy (a
/// quantised output keeps the input's parameters; the QuantizeLinear after it requantises
/// if it differs).
pub(super) fn split(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let shape = lw
        .shape_of(&n.input[0])
        .ok_or_else(|| lw.unsupported(n, "input of unknown shape"))?;
    let a = axis_in(lw, n, attr_i(n, "axis", 0), shape.len())?;
    let d = shape[a];
    let outs: Vec<String> = n.output.clone();
    let sizes: Vec<usize> = if n.input.len() > 1 && !n.input[1].is_empty() {
        lw.constant(n, 1)?
            .ints()
            .iter()
            .map(|&v| v.max(0) as usize)
            .collect()
    } else if let Some(s) = attr_ints(n, "split") {
        s.iter().map(|&v| v.max(0) as usize).collect()
    } else {
        let k = outs.len().max(1);
        let part = d.div_ceil(k);
        (0..k)
            .map(|j| part.min(d.saturating_sub(j * part)))
            .collect()
    };
    if sizes.len() != outs.len() || sizes.iter().sum::<usize>() != d {
        return Err(lw.unsupported(n, "split sizes do not add up to the axis"));
    }
    let mut off = 0;
    for (o, &len) in outs.iter().zip(&sizes) {
        let v = window(lw, n, 0, a, off, len, o)?;
        lw.vals.insert(o.clone(), v);
        off += len;
    }
    Ok(())
}

/// Slice with step 1 along one axis of a quantised or float tensor (constant bounds);
/// constant inputs fold instead.
pub(super) fn slice(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let shape = lw
        .shape_of(&n.input[0])
        .ok_or_else(|| lw.unsupported(n, "input of unknown shape"))?;
    let ints = |lw: &Lowering<'_>, i: usize| -> Result<Option<Vec<i64>>> {
        if n.input.len() > i && !n.input[i].is_empty() {
            Ok(Some(lw.constant(n, i)?.ints()))
        } else {
            Ok(None)
        }
    };
    let starts = ints(lw, 1)?.ok_or_else(|| lw.unsupported(n, "starts"))?;
    let ends = ints(lw, 2)?.ok_or_else(|| lw.unsupported(n, "ends"))?;
    let axes = ints(lw, 3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = ints(lw, 4)?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(lw.unsupported(n, "starts, ends, axes and steps differ in length"));
    }
    // Sizes come from the file: index maps are built for axes up to 2^24 long only.
    if shape.iter().any(|&d| d > 1 << 24) {
        return Err(lw.unsupported(n, "an axis longer than 2^24"));
    }
    // The source index of every output index, per axis (ONNX's clamping rules).
    let mut maps: Vec<Vec<usize>> = shape.iter().map(|&d| (0..d).collect()).collect();
    let mut cuts = vec![];
    for j in 0..starts.len() {
        let a = axis_in(lw, n, axes[j], shape.len())?;
        let d = shape[a] as i64;
        let step = steps[j];
        if step == 0 || d == 0 {
            return Err(lw.unsupported(n, "a step of 0, or an empty axis"));
        }
        let norm = |v: i64, lo: i64, hi: i64| (if v < 0 { v + d } else { v }).clamp(lo, hi);
        let (s, e) = if step > 0 {
            (norm(starts[j], 0, d), norm(ends[j], 0, d))
        } else {
            (norm(starts[j], 0, d - 1), norm(ends[j], -1, d - 1))
        };
        let mut m = vec![];
        let mut i = s;
        while (step > 0 && i < e) || (step < 0 && i > e) {
            m.push(i as usize);
            i += step;
        }
        if m.is_empty() {
            return Err(lw.unsupported(n, "an empty window"));
        }
        if m.len() as i64 != d || step != 1 {
            cuts.push(a);
        }
        maps[a] = m;
    }
    let single = match cuts.as_slice() {
        [a] if steps.iter().all(|&s| s == 1) => Some(*a),
        [] => None,
        _ => return take_by_axes(lw, idx, maps),
    };
    let cut = single.map(|a| (a, maps[a][0], maps[a].len()));
    let v = match cut {
        Some((a, off, len)) => window(lw, n, 0, a, off, len, &n.output[0])?,
        None => lw.val(n, 0)?.clone(),
    };
    lw.vals.insert(n.output[0].clone(), v);
    Ok(())
}

/// Resize, nearest neighbour, by whole factors on the two spatial axes of a 4-D tensor
/// (quantised: the codes are repeated, the parameters kept; or float): the upsampling of
/// feature pyramids (YOLO, FPN). For whole factors the floor and round_prefer_floor modes
/// under the asymmetric and half-pixel coordinate transforms pick the same source entries.
pub(super) fn resize(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let mode = attr(n, "mode").map_or(&b"nearest"[..], |a| a.s.as_slice());
    if mode == b"linear" {
        return resize_linear(lw, idx);
    }
    let (t, form) = lw.data_input(n, 0)?;
    if mode != b"nearest" {
        return Err(lw.unsupported(n, "modes other than nearest and linear"));
    }
    // By a whole factor f, floor and round_prefer_floor pick source x / f under the
    // asymmetric and half-pixel transforms; the ceiling modes pick others.
    let nearest = attr(n, "nearest_mode").map_or(&b"round_prefer_floor"[..], |a| a.s.as_slice());
    if !matches!(nearest, b"round_prefer_floor" | b"floor") {
        return Err(lw.unsupported(n, "nearest_mode ceil or round_prefer_ceil"));
    }
    let ct =
        attr(n, "coordinate_transformation_mode").map_or(&b"half_pixel"[..], |a| a.s.as_slice());
    if !matches!(ct, b"asymmetric" | b"half_pixel" | b"pytorch_half_pixel") {
        return Err(lw.unsupported(
            n,
            "coordinate transforms other than asymmetric and half_pixel",
        ));
    }
    let ti = lw.b.tensors[t as usize].clone();
    let logical = ti.logical_shape();
    if logical.len() != 4 {
        return Err(lw.unsupported(n, "only 4-D tensors"));
    }
    let present = |i: usize| {
        n.input.len() > i
            && !n.input[i].is_empty()
            && lw
                .shape_of(&n.input[i])
                .is_some_and(|s| s.iter().product::<usize>() > 0)
    };
    let (fh, fw) = if present(3) {
        let s = lw.constant(n, 3)?.ints();
        if s.len() != 4 || s[0] as usize != logical[0] || s[1] as usize != logical[1] {
            return Err(lw.unsupported(n, "sizes must keep batch and channels"));
        }
        let (oh, ow) = (s[2] as usize, s[3] as usize);
        if oh % logical[2] != 0 || ow % logical[3] != 0 || oh == 0 || ow == 0 {
            return Err(lw.unsupported(n, "sizes that are not whole multiples"));
        }
        (oh / logical[2], ow / logical[3])
    } else if present(2) {
        let s = lw.floats(n, 2)?;
        if s.len() != 4 || s[0] != 1.0 || s[1] != 1.0 {
            return Err(lw.unsupported(n, "scales must keep batch and channels"));
        }
        let whole = |v: f32| (v >= 1.0 && v.fract() == 0.0 && v <= 64.0).then_some(v as usize);
        match (whole(s[2]), whole(s[3])) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(lw.unsupported(n, "scales that are not whole numbers")),
        }
    } else {
        return Err(lw.unsupported(n, "neither scales nor sizes"));
    };
    // Stored view [outer, h, w, inner]: NHWC maps [N, H, W, C]; float NCHW [N·C, H, W, 1].
    let (outer, h, w, inner) = if ti.nhwc {
        (ti.shape[0], ti.shape[1], ti.shape[2], ti.shape[3])
    } else {
        (logical[0] * logical[1], logical[2], logical[3], 1)
    };
    let shape = if ti.nhwc {
        vec![ti.shape[0], h * fh, w * fw, ti.shape[3]]
    } else {
        vec![logical[0], logical[1], h * fh, w * fw]
    };
    let y = lw.moved_tensor(&n.output[0], &ti, shape, form);
    lw.b.ops.push(Op::Upsample {
        x: t,
        y,
        outer: outer as u32,
        h: h as u32,
        w: w as u32,
        inner: inner as u32,
        fh: fh as u32,
        fw: fw as u32,
    });
    let v = lw.moved_value(&n.output[0], y, form);
    lw.vals.insert(n.output[0].clone(), v);
    Ok(())
}

/// Resize, linear, over the last two axes of a float tensor of rank ≥ 2 (a quantised one
/// runs as a float island): any scales or sizes, every coordinate transform but
/// tf_crop_and_resize.
fn resize_linear(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let Some(x) = lw.fact(n, 0) else {
        return Err(lw.unsupported(
            n,
            "linear resize of a float tensor (a quantised one is dequantised first)",
        ));
    };
    let ct = match attr(n, "coordinate_transformation_mode")
        .map_or(&b"half_pixel"[..], |a| a.s.as_slice())
    {
        b"half_pixel" => 0,
        b"pytorch_half_pixel" => 1,
        b"align_corners" => 2,
        b"asymmetric" => 3,
        _ => return Err(lw.unsupported(n, "coordinate transform tf_crop_and_resize")),
    };
    let shape = lw.fshape(x);
    let r = shape.len();
    if r < 2 {
        return Err(lw.unsupported(n, "rank below 2"));
    }
    let present = |i: usize| {
        n.input.len() > i
            && !n.input[i].is_empty()
            && lw
                .shape_of(&n.input[i])
                .is_some_and(|s| s.iter().product::<usize>() > 0)
    };
    let (h, w) = (shape[r - 2], shape[r - 1]);
    let (oh, ow, sh, sw) = if present(3) {
        let s = lw.constant(n, 3)?.ints();
        if s.len() != r
            || s.iter()
                .zip(&shape)
                .take(r - 2)
                .any(|(&a, &b)| a as usize != b)
        {
            return Err(lw.unsupported(n, "sizes may change only the last two axes"));
        }
        let (oh, ow) = (s[r - 2].max(0) as usize, s[r - 1].max(0) as usize);
        (
            oh,
            ow,
            oh as f32 / h.max(1) as f32,
            ow as f32 / w.max(1) as f32,
        )
    } else if present(2) {
        let s = lw.floats(n, 2)?;
        if s.len() != r
            || s[..r - 2].iter().any(|&v| v != 1.0)
            || s[r - 2..].iter().any(|&v| !(v > 0.0 && v <= 64.0))
        {
            return Err(lw.unsupported(n, "scales may change only the last two axes"));
        }
        let (sh, sw) = (s[r - 2], s[r - 1]);
        ((h as f32 * sh) as usize, (w as f32 * sw) as usize, sh, sw)
    } else {
        return Err(lw.unsupported(n, "neither scales nor sizes"));
    };
    if oh == 0 || ow == 0 || oh > 1 << 16 || ow > 1 << 16 {
        return Err(lw.unsupported(n, "output size"));
    }
    let mut out = shape.clone();
    out[r - 2] = oh;
    out[r - 1] = ow;
    let outer: usize = shape[..r - 2].iter().product();
    let y = lw.new_f32(&n.output[0], out);
    lw.b.ops.push(Op::ResizeLinearF32 {
        x,
        y,
        outer: outer as u32,
        h: h as u32,
        w: w as u32,
        oh: oh as u32,
        ow: ow as u32,
        ct,
        sh,
        sw,
    });
    lw.out_f32(n, y);
    Ok(())
}

impl Lowering<'_> {
    /// Input `i` of a data-movement op and its form: 0, the dequantised view of a u8 map;
    /// 1, u8 codes (QOperator form); 2, a row-major float tensor.
    fn data_input(&self, n: &pb::NodeProto, i: usize) -> Result<(u32, u8)> {
        match self.val(n, i)? {
            Val::Deq(t) => Ok((*t, 0)),
            Val::Act(t) if self.b.tensors[*t as usize].dtype == crate::plan::DType::U8 => {
                Ok((*t, 1))
            }
            _ => match self.fact(n, i) {
                Some(t) => Ok((t, 2)),
                None => Err(self.unsupported(n, "input is neither quantised nor float")),
            },
        }
    }

    /// A tensor `name` of `shape` in the layout, type and quantisation of `like`.
    fn moved_tensor(
        &mut self,
        name: &str,
        like: &crate::plan::TensorInfo,
        shape: Vec<usize>,
        form: u8,
    ) -> u32 {
        let q = crate::plan::Q8 {
            scale: like.scale,
            zero: like.zero,
        };
        self.b
            .tensor(name, like.dtype, shape, like.nhwc, (form < 2).then_some(q))
    }

    /// The value tensor `y` of form `form` holds, recorded under `name`.
    fn moved_value(&mut self, name: &str, y: u32, form: u8) -> Val {
        if form == 2 {
            self.produced.insert(name.to_string(), y);
        }
        if form == 0 {
            Val::Deq(y)
        } else {
            Val::Act(y)
        }
    }
}
