//! The lowering state: what each ONNX name holds so far and the plan being built, the
//! helpers every op family reads its inputs with, and the walk that hands each node to
//! its registered lowering.

use super::registry;
use super::value::{malformed, Builder, Const, Data, Mapped, Val};
use crate::error::{Error, Result};
use crate::plan::{DType, Src, Q8};
use std::collections::{HashMap, HashSet};
use tract_onnx::pb;

pub(super) struct Lowering<'g> {
    pub(super) graph: &'g pb::GraphProto,
    pub(super) vals: HashMap<String, Val>,
    pub(super) consumers: HashMap<String, Vec<usize>>,
    pub(super) skip: HashSet<usize>,
    pub(super) b: Builder,
    /// Float output name of each fused node → the tensor holding it (for taps).
    pub(super) produced: HashMap<String, u32>,
    pub(super) block_taps: Vec<(String, u32)>,
    /// Values holding integers (integer-typed graph inputs and their reshapes): float
    /// arithmetic on them would not wrap or truncate as ONNX integer ops do.
    pub(super) int_names: HashSet<String>,
    /// The float view made for a quantised value (its name → the f32 tensor).
    pub(super) floated: HashMap<String, u32>,
    /// Set by a lowering that replaces its node with other nodes (an inlined `If`, a
    /// spelt-out `LSTM`): the import splices them in and lowers the graph again.
    pub(super) expand: Option<super::control::Expansion>,
    /// `ImportOptions::unfused`: each node's plain lowering (a transposed convolution as
    /// the dilated convolution it equals, even where its kernel equals its stride; a
    /// product of two functions of one quantised tensor in float, not as one table, a
    /// depthwise convolution with a stride of its own per axis as a dense convolution).
    pub(super) plain: bool,
}

/// The state a lowering can change, to undo it when the lowering fails.
struct Mark {
    tensors: usize,
    ops: usize,
    blob: usize,
    taps: usize,
    skip: HashSet<usize>,
}

impl<'g> Lowering<'g> {
    /// Lowers node `idx` through the registry; nodes that a pattern already consumed (the
    /// QuantizeLinear after a convolution, the DequantizeLinear of gathered int8 rows)
    /// are skipped.
    pub(super) fn node(&mut self, idx: usize) -> Result<()> {
        if self.skip.contains(&idx) {
            return Ok(());
        }
        if self.fold(idx)? {
            return Ok(());
        }
        let n = &self.graph.node[idx];
        match registry::lowering(&n.domain, &n.op_type) {
            Some(lower) => {
                let mark = self.mark();
                match lower(self, idx) {
                    Err(e @ Error::UnsupportedOp { .. }) => {
                        self.rollback(idx, mark);
                        self.float_island(idx, lower, e)
                    }
                    r => r,
                }
            }
            None if !registry::is_default_domain(&n.domain) => {
                Err(self.unsupported(n, format!("domain {}", n.domain)))
            }
            None => Err(self.unsupported(n, registry::missing_why(&n.op_type))),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            tensors: self.b.tensors.len(),
            ops: self.b.ops.len(),
            blob: self.b.blob.len(),
            taps: self.block_taps.len(),
            skip: self.skip.clone(),
        }
    }

    /// Undoes what a lowering of node `idx` that failed left behind.
    fn rollback(&mut self, idx: usize, m: Mark) {
        self.b.tensors.truncate(m.tensors);
        self.b.ops.truncate(m.ops);
        self.b.blob.truncate(m.blob);
        self.block_taps.truncate(m.taps);
        let mut outs: Vec<String> = self.graph.node[idx].output.clone();
        for &k in self.skip.difference(&m.skip) {
            outs.extend(self.graph.node[k].output.iter().cloned());
        }
        for o in outs {
            self.vals.remove(&o);
            self.produced.remove(&o);
        }
        self.skip = m.skip;
    }

    /// An op with no quantised form whose quantised inputs are dequantised to float
    /// tensors (NCHW), so it runs in float between its DequantizeLinear and the
    /// QuantizeLinear after it, as onnxruntime runs the ops its quantiser leaves in float.
    /// `first` is the error of the quantised attempt, returned if the float one fails too.
    fn float_island(&mut self, idx: usize, lower: registry::LowerFn, first: Error) -> Result<()> {
        let n = &self.graph.node[idx];
        let quantised: Vec<String> = n
            .input
            .iter()
            .filter(|i| matches!(self.vals.get(*i), Some(Val::Deq(_) | Val::Mapped(_))))
            .cloned()
            .collect();
        if quantised.is_empty() {
            return Err(first);
        }
        let mark = self.mark();
        let mut saved = vec![];
        let fresh: Vec<String> = quantised
            .iter()
            .filter(|q| !self.floated.contains_key(*q))
            .cloned()
            .collect();
        for name in &quantised {
            let Some(f) = self.float_view(name) else {
                self.restore(saved);
                self.rollback(idx, mark);
                fresh.iter().for_each(|q| {
                    self.floated.remove(q);
                });
                return Err(first);
            };
            let old = self.vals.insert(name.clone(), Val::Act(f));
            saved.push((name.clone(), old));
        }
        let r = lower(self, idx);
        self.restore(saved);
        match r {
            Ok(()) => Ok(()),
            Err(_) => {
                self.rollback(idx, mark);
                fresh.iter().for_each(|q| {
                    self.floated.remove(q);
                });
                Err(first)
            }
        }
    }

    fn restore(&mut self, saved: Vec<(String, Option<Val>)>) {
        for (name, old) in saved {
            if let Some(v) = old {
                self.vals.insert(name, v);
            }
        }
    }

    /// The float tensor (NCHW for a 4-D map) holding a quantised value, made once.
    fn float_view(&mut self, name: &str) -> Option<u32> {
        if let Some(&t) = self.floated.get(name) {
            return Some(t);
        }
        let (x, table, channels) = match self.vals.get(name)? {
            Val::Deq(t) => (*t, None, 1),
            Val::Mapped(m) => (m.t, Some(m.table.clone()), m.channels),
            _ => return None,
        };
        let ti = self.b.tensors[x as usize].clone();
        if ti.dtype != DType::U8 || (channels > 1 && !ti.nhwc && ti.shape.len() != 2) {
            return None;
        }
        let to_nchw = ti.nhwc && ti.shape.len() == 4;
        let y = self.new_f32(&format!("{name}#float"), ti.logical_shape());
        match table {
            None => self.b.ops.push(crate::plan::Op::Dequantize {
                x,
                y,
                q: Q8 {
                    scale: ti.scale,
                    zero: ti.zero,
                },
                to_nchw,
            }),
            Some(table) => {
                let table = self.b.push(&table);
                self.b.ops.push(crate::plan::Op::LutF32 {
                    x,
                    y,
                    channels: channels as u32,
                    table,
                    to_nchw,
                });
            }
        }
        self.floated.insert(name.to_string(), y);
        Some(y)
    }

    /// The error for a registered op whose inputs take none of its lowered forms (a float
    /// sequence op on a quantised tensor, say).
    pub(super) fn no_form(&self, idx: usize) -> Error {
        self.unsupported(&self.graph.node[idx], "no lowering for this op")
    }

    pub(super) fn unsupported(&self, n: &pb::NodeProto, why: impl Into<String>) -> Error {
        let inputs = n
            .input
            .iter()
            .map(|i| self.shape_of(i).unwrap_or_default())
            .collect();
        Error::UnsupportedOp {
            op: n.op_type.clone(),
            node: n.name.clone(),
            inputs,
            why: why.into(),
        }
    }

    pub(super) fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match self.vals.get(name)? {
            Val::Const(c) => Some(c.dims.clone()),
            Val::QConst { dims, .. } => Some(dims.clone()),
            Val::Act(t) | Val::Deq(t) => Some(self.b.tensors[*t as usize].logical_shape()),
            Val::Mapped(m) => Some(self.b.tensors[m.t as usize].logical_shape()),
            _ => None,
        }
    }

    pub(super) fn val(&self, n: &pb::NodeProto, i: usize) -> Result<&Val> {
        let name = n
            .input
            .get(i)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.unsupported(n, format!("missing input {i}")))?;
        self.vals.get(name).ok_or_else(|| {
            malformed(format!(
                "node '{}' reads '{name}', which nothing produces",
                n.name
            ))
        })
    }

    pub(super) fn constant(&self, n: &pb::NodeProto, i: usize) -> Result<Const> {
        match self.val(n, i)? {
            Val::Const(c) => Ok(c.clone()),
            _ => Err(self.unsupported(n, format!("input {i} must be a constant"))),
        }
    }

    /// The QuantizeLinear that alone consumes `n`'s output, giving the output quantisation.
    pub(super) fn fused_q(&mut self, n: &pb::NodeProto) -> Result<(usize, Q8)> {
        let out = &n.output[0];
        let cons = self.consumers.get(out).cloned().unwrap_or_default();
        let qi = match cons.as_slice() {
            [qi] if self.graph.node[*qi].op_type == "QuantizeLinear" => *qi,
            _ => {
                return Err(self.unsupported(
                    n,
                    "a quantised op must feed exactly one QuantizeLinear (QDQ form)",
                ))
            }
        };
        let qn = &self.graph.node[qi];
        let q = self.q8_of(qn)?;
        self.skip.insert(qi);
        Ok((qi, q))
    }

    pub(super) fn q8_of(&self, qn: &pb::NodeProto) -> Result<Q8> {
        let scale = self
            .constant(qn, 1)?
            .f32s()
            .ok_or_else(|| self.unsupported(qn, "scale must be f32"))?;
        let zero = if qn.input.len() > 2 && !qn.input[2].is_empty() {
            self.constant(qn, 2)?
        } else {
            Const {
                dims: vec![],
                data: Data::U8(vec![0]),
            }
        };
        // int8 activations are u8 codes shifted by 128: clamp(round(x/s) + z, -128, 127)
        // + 128 = clamp(round(x/s) + z + 128, 0, 255), the same values exactly.
        let shift = match zero.data {
            Data::U8(_) => 0,
            Data::I8(_) => 128,
            _ => return Err(self.unsupported(qn, "activations must be u8 or int8")),
        };
        if scale.len() != 1 || zero.ints().len() != 1 {
            return Err(self.unsupported(qn, "activations must be quantised per tensor"));
        }
        if !(scale[0].is_finite() && scale[0] > 0.0) {
            return Err(Error::NonFinite {
                what: format!("scale of '{}'", qn.name),
            });
        }
        Ok(Q8 {
            scale: scale[0],
            zero: zero.ints()[0] as i32 + shift,
        })
    }

    pub(super) fn deq(&self, n: &pb::NodeProto, i: usize) -> Result<u32> {
        match self.val(n, i)? {
            Val::Deq(t) => Ok(*t),
            _ => Err(self.unsupported(
                n,
                format!("input {i} must come from DequantizeLinear of a u8 tensor"),
            )),
        }
    }

    /// A dequantised constant whose per-channel parameters (if any) are on axis 0.
    pub(super) fn qconst(
        &self,
        n: &pb::NodeProto,
        i: usize,
    ) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>, Vec<i64>)> {
        self.qconst_axis(n, i, 0)
    }

    /// A dequantised constant whose per-channel parameters (if any) are on axis `want`.
    pub(super) fn qconst_axis(
        &self,
        n: &pb::NodeProto,
        i: usize,
        want: usize,
    ) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>, Vec<i64>)> {
        match self.val(n, i)? {
            Val::QConst {
                dims,
                q,
                scale,
                zero,
                axis,
            } => {
                if scale.len() > 1 && *axis != want {
                    return Err(self.unsupported(
                        n,
                        format!("input {i}: per-channel parameters on axis {axis}, this op needs axis {want}"),
                    ));
                }
                Ok((dims.clone(), q.clone(), scale.clone(), zero.clone()))
            }
            _ => Err(self.unsupported(n, format!("input {i} must be a dequantised constant"))),
        }
    }

    pub(super) fn set_out(&mut self, qi: usize, t: u32, float_name: &str) {
        let qout = self.graph.node[qi].output[0].clone();
        self.vals.insert(qout, Val::Act(t));
        self.produced.insert(float_name.into(), t);
    }

    /// A float tensor input (row-major, not an NHWC feature map).
    pub(super) fn fact(&self, n: &pb::NodeProto, i: usize) -> Option<u32> {
        match self.val(n, i).ok()? {
            Val::Act(t) => {
                let ti = &self.b.tensors[*t as usize];
                (ti.dtype == DType::F32 && !ti.nhwc).then_some(*t)
            }
            _ => None,
        }
    }

    pub(super) fn fshape(&self, t: u32) -> Vec<usize> {
        self.b.tensors[t as usize].shape.clone()
    }

    pub(super) fn new_f32(&mut self, name: &str, shape: Vec<usize>) -> u32 {
        self.b.tensor(name, DType::F32, shape, false, None)
    }

    pub(super) fn out_f32(&mut self, n: &pb::NodeProto, t: u32) {
        self.vals.insert(n.output[0].clone(), Val::Act(t));
        self.produced.insert(n.output[0].clone(), t);
    }

    /// Operand `i` of a float binary op: a run-time tensor or a constant in the blob.
    pub(super) fn operand(&mut self, n: &pb::NodeProto, i: usize) -> Result<(Src, Vec<usize>)> {
        if let Some(t) = self.fact(n, i) {
            return Ok((Src::T(t), self.fshape(t)));
        }
        match self.val(n, i)?.clone() {
            Val::Const(c) => {
                let v = c
                    .f32s()
                    .unwrap_or_else(|| c.ints().iter().map(|&x| x as f32).collect());
                if v.iter().any(|x| x.is_nan()) {
                    return Err(Error::NonFinite {
                        what: format!("constant of '{}'", n.name),
                    });
                }
                Ok((Src::C(self.b.push(&v)), c.dims.clone()))
            }
            v @ Val::QConst { .. } => {
                let (dims, v) = v
                    .dequantised_qconst()
                    .ok_or_else(|| self.unsupported(n, format!("operand {i}: quantisation")))?;
                Ok((Src::C(self.b.push(&v)), dims))
            }
            _ => Err(self.unsupported(n, format!("operand {i} is not a float tensor"))),
        }
    }
    /// The input `i` as a table over its u8 codes (a plain dequantisation is the identity).
    pub(super) fn mapped(&self, n: &pb::NodeProto, i: usize) -> Result<Mapped> {
        match self.val(n, i)? {
            Val::Deq(t) => {
                let ti = &self.b.tensors[*t as usize];
                Ok(Mapped {
                    t: *t,
                    table: (0..256).map(|c| (c - ti.zero) as f32 * ti.scale).collect(),
                    channels: 1,
                    monotone: true,
                })
            }
            Val::Mapped(m) => Ok(m.clone()),
            _ => Err(self.unsupported(
                n,
                format!("input {i} must be a function of a quantised tensor (QDQ form)"),
            )),
        }
    }

    /// A float constant input, plain or dequantised.
    pub(super) fn floats(&self, n: &pb::NodeProto, i: usize) -> Result<Vec<f32>> {
        match self.val(n, i)? {
            Val::Const(c) => c
                .f32s()
                .ok_or_else(|| self.unsupported(n, format!("input {i} must be f32"))),
            Val::QConst {
                dims,
                q,
                scale,
                zero,
                axis,
            } => {
                let inner: usize = dims.iter().skip(axis + 1).product();
                let count = dims.get(*axis).copied().unwrap_or(1).max(1);
                Ok(q.iter()
                    .enumerate()
                    .map(|(k, &v)| {
                        let a = if scale.len() == 1 {
                            0
                        } else {
                            (k / inner.max(1)) % count
                        };
                        (v - zero[a.min(zero.len() - 1)]) as f32 * scale[a.min(scale.len() - 1)]
                    })
                    .collect())
            }
            _ => Err(self.unsupported(n, format!("input {i} must be a constant"))),
        }
    }
}
