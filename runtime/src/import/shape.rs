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
    match lw.val(n, 0)?.clone() {
        // Every float-path tensor is f32; integer ids stay exact below 2^24.
        v @ (Val::Act(_) | Val::IntMM { .. }) if x0.is_some() || matches!(v, Val::IntMM { .. }) => {
            lw.vals.insert(n.output[0].clone(), v);
        }
        Val::Const(c) => {
            let to = attr_i(n, "to", 1);
            let data = if to == 1 {
                Data::F32(c.ints().iter().map(|&v| v as f32).collect())
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

/// Reshape or Flatten of a quantised tensor where NHWC and NCHW bytes agree.
fn flatten_quantised(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let v = lw.val(n, 0)?.clone();
    let t = match v {
        Val::Deq(t) | Val::Act(t) => t,
        _ => return Err(lw.unsupported(n, "constant input")),
    };
    let s = lw.b.tensors[t as usize].shape.clone();
    // A 1×1 spatial map has the same bytes in NHWC and NCHW: flattening is free.
    if !(s.len() == 4 && s[1] == 1 && s[2] == 1) && s.len() != 2 {
        return Err(lw.unsupported(n, "only flattening of 1×1 feature maps"));
    }
    lw.vals.insert(n.output[0].clone(), v);
    Ok(())
}

/// Reshape, Flatten, Squeeze and Unsqueeze: a copy into the new shape for float tensors
/// and constants; Reshape and Flatten of a quantised tensor only where the bytes do not
/// move.
pub(super) fn reshape(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if reshape_float(lw, idx)? {
        return Ok(());
    }
    match lw.graph.node[idx].op_type.as_str() {
        "Reshape" | "Flatten" => flatten_quantised(lw, idx),
        _ => Err(lw.no_form(idx)),
    }
}

/// False when the input is not a row-major f32 tensor.
fn transpose_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let shape = lw.fshape(x);
    let r = shape.len();
    let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
    if r > 4 || perm.len() != r || perm.iter().any(|&p| p < 0 || p as usize >= r) {
        return Err(lw.unsupported(n, "permutation of ≤ 4 axes"));
    }
    // Padded to 4-D on the left.
    let off = 4 - r;
    let mut p4 = [0u8, 1, 2, 3];
    for (i, &p) in perm.iter().enumerate() {
        p4[off + i] = (off + p as usize) as u8;
    }
    let out: Vec<usize> = perm.iter().map(|&p| shape[p as usize]).collect();
    let y = lw.new_f32(&n.output[0], out);
    lw.b.ops.push(Op::TransposeF32 {
        x,
        y,
        dims: pad4(&shape).map(|v| v as u32),
        perm: p4,
    });
    lw.out_f32(n, y);
    Ok(true)
}

pub(super) fn transpose(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if transpose_float(lw, idx)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}

/// Rows of a constant 2-D table by run-time indices; int8 rows carry their dequantisation.
pub(super) fn gather(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
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
