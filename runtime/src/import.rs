//! ONNX import (feature `onnx`): tract-onnx parses the protobuf; edgetune's lowering maps
//! the graph onto its own op set, folding QDQ pairs into int8 kernels.
//!
//! The lowering reads the parsed ONNX graph rather than tract's typed graph: the QDQ
//! patterns are visible there as written, and tract's internal op structs are not a stable
//! interface to match on.

use crate::error::{Error, Result};
use crate::exec::plan_arena;
use crate::plan::{BinOp, Blob, DType, Op, PlanParts, Port, Src, TensorInfo, Unary, Q8};
use edgetune_kernels::pack;
use edgetune_kernels::reference::ConvGeom;
use std::collections::{HashMap, HashSet};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

/// Which intermediate tensors to expose.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Taps {
    #[default]
    None,
    /// The output of each residual block and of the last feature map.
    Blocks,
    Names(Vec<String>),
}

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Fixed input shapes by name; symbolic batch dimensions default to 1.
    pub inputs: Vec<(String, Vec<usize>)>,
    pub taps: Taps,
    /// Extra metadata stored in the plan (preprocessing, source).
    pub meta: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Const {
    dims: Vec<usize>,
    data: Data,
}

impl Const {
    fn f32s(&self) -> Option<Vec<f32>> {
        Some(match &self.data {
            Data::F32(v) => v.clone(),
            _ => return None,
        })
    }
    fn ints(&self) -> Vec<i64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
}

#[derive(Clone, Debug)]
enum Val {
    Const(Const),
    /// Dequantised constant: integer values with per-axis scale and zero point.
    QConst {
        dims: Vec<usize>,
        q: Vec<i64>,
        scale: Vec<f32>,
        zero: Vec<i64>,
    },
    /// A runtime tensor.
    Act(u32),
    /// The dequantised view of a quantised runtime tensor.
    Deq(u32),
    /// Float elementwise function of a u8 tensor, as a table of `channels`·256 values
    /// (per NHWC channel); lowered to one `LutU8` at the next QuantizeLinear.
    Mapped(Mapped),
    /// DynamicQuantizeLinear of a float tensor: its codes, scale and zero point, which
    /// only the MatMulInteger pattern consumes.
    DynQ(u32),
    DynScale(u32),
    DynZero(u32),
    /// The dynamic scale of tensor `t` times per-column weight scales.
    ScaleProd {
        t: u32,
        ws: Vec<f32>,
    },
    /// MatMulInteger of `DynQ(t)` by constant int8 weights `[k, n]`, awaiting its scale.
    IntMM {
        t: u32,
        k: usize,
        n: usize,
        w: Vec<i64>,
    },
}

fn malformed(what: impl Into<String>) -> Error {
    Error::Malformed { what: what.into() }
}

fn tensor_const(t: &pb::TensorProto) -> Result<Const> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| malformed(format!("negative dim in {}", t.name))))
        .collect::<Result<_>>()?;
    let n: usize = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| malformed("tensor size overflows"))?;
    let raw = &t.raw_data;
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(malformed(format!(
                "tensor {} holds {len} values, dims say {n}",
                t.name
            )))
        }
    };
    let data = match t.data_type {
        1 => {
            let v: Vec<f32> = if raw.is_empty() {
                t.float_data.clone()
            } else {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            check(v.len())?;
            Data::F32(v)
        }
        2 => {
            let v: Vec<u8> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as u8).collect()
            } else {
                raw.clone()
            };
            check(v.len())?;
            Data::U8(v)
        }
        3 => {
            let v: Vec<i8> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as i8).collect()
            } else {
                raw.iter().map(|&x| x as i8).collect()
            };
            check(v.len())?;
            Data::I8(v)
        }
        6 => {
            let v: Vec<i32> = if raw.is_empty() {
                t.int32_data.clone()
            } else {
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            check(v.len())?;
            Data::I32(v)
        }
        7 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int64_data.clone()
            } else {
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            check(v.len())?;
            Data::I64(v)
        }
        dt => {
            return Err(malformed(format!(
                "tensor {} has unsupported data type {dt}",
                t.name
            )))
        }
    };
    Ok(Const { dims, data })
}

struct Builder {
    tensors: Vec<TensorInfo>,
    ops: Vec<Op>,
    blob: Vec<u8>,
}

impl Builder {
    fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        nhwc: bool,
        q: Option<Q8>,
    ) -> u32 {
        let q = q.unwrap_or(Q8 {
            scale: 1.0,
            zero: 0,
        });
        self.tensors.push(TensorInfo {
            name: name.into(),
            dtype,
            shape,
            nhwc,
            scale: q.scale,
            zero: q.zero,
            offset: 0,
        });
        (self.tensors.len() - 1) as u32
    }
    /// Packs int8 weights `w(kk, col)` for the GEMM and stores them and their column sums.
    fn push_packed_i8(
        &mut self,
        k: usize,
        n: usize,
        w: impl Fn(usize, usize) -> i8,
    ) -> (Blob, Blob) {
        let mut packed = vec![0i8; pack::packed_i8_len(k, n)];
        let mut colsum = vec![0i32; pack::i8_cols(n)];
        pack::pack_i8_with(k, n, w, &mut packed, &mut colsum);
        (self.push(&packed), self.push(&colsum))
    }

    fn push<T: bytemuck::Pod>(&mut self, v: &[T]) -> Blob {
        let off = self.blob.len().div_ceil(64) * 64;
        self.blob.resize(off, 0);
        self.blob.extend_from_slice(bytemuck::cast_slice(v));
        Blob {
            off: off as u32,
            len: (self.blob.len() - off) as u32,
        }
    }
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn attr_i(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

#[derive(Clone, Debug)]
struct Mapped {
    t: u32,
    table: Vec<f32>,
    channels: usize,
    /// Non-decreasing in the code for every channel, so max pooling commutes with it.
    monotone: bool,
}

impl Mapped {
    fn value(&self, c: usize, code: usize) -> f32 {
        self.table[(c % self.channels) * 256 + code]
    }
}

struct Lowering<'g> {
    graph: &'g pb::GraphProto,
    vals: HashMap<String, Val>,
    consumers: HashMap<String, Vec<usize>>,
    skip: HashSet<usize>,
    b: Builder,
    /// Float output name of each fused node → the tensor holding it (for taps).
    produced: HashMap<String, u32>,
    block_taps: Vec<(String, u32)>,
    /// Values holding integers (integer-typed graph inputs and their reshapes): float
    /// arithmetic on them would not wrap or truncate as ONNX integer ops do.
    int_names: HashSet<String>,
}

impl<'g> Lowering<'g> {
    fn unsupported(&self, n: &pb::NodeProto, why: impl Into<String>) -> Error {
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

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match self.vals.get(name)? {
            Val::Const(c) => Some(c.dims.clone()),
            Val::QConst { dims, .. } => Some(dims.clone()),
            Val::Act(t) | Val::Deq(t) => Some(self.b.tensors[*t as usize].logical_shape()),
            Val::Mapped(m) => Some(self.b.tensors[m.t as usize].logical_shape()),
            _ => None,
        }
    }

    fn val(&self, n: &pb::NodeProto, i: usize) -> Result<&Val> {
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

    fn constant(&self, n: &pb::NodeProto, i: usize) -> Result<Const> {
        match self.val(n, i)? {
            Val::Const(c) => Ok(c.clone()),
            _ => Err(self.unsupported(n, format!("input {i} must be a constant"))),
        }
    }

    /// The QuantizeLinear that alone consumes `n`'s output, giving the output quantisation.
    fn fused_q(&mut self, n: &pb::NodeProto) -> Result<(usize, Q8)> {
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

    fn q8_of(&self, qn: &pb::NodeProto) -> Result<Q8> {
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
        if scale.len() != 1 || !matches!(zero.data, Data::U8(_)) {
            return Err(self.unsupported(qn, "activations must be per-tensor u8"));
        }
        if !(scale[0].is_finite() && scale[0] > 0.0) {
            return Err(Error::NonFinite {
                what: format!("scale of '{}'", qn.name),
            });
        }
        Ok(Q8 {
            scale: scale[0],
            zero: zero.ints()[0] as i32,
        })
    }

    fn deq(&self, n: &pb::NodeProto, i: usize) -> Result<u32> {
        match self.val(n, i)? {
            Val::Deq(t) => Ok(*t),
            _ => Err(self.unsupported(
                n,
                format!("input {i} must come from DequantizeLinear of a u8 tensor"),
            )),
        }
    }

    fn qconst(
        &self,
        n: &pb::NodeProto,
        i: usize,
    ) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>, Vec<i64>)> {
        match self.val(n, i)? {
            Val::QConst {
                dims,
                q,
                scale,
                zero,
            } => Ok((dims.clone(), q.clone(), scale.clone(), zero.clone())),
            _ => Err(self.unsupported(n, format!("input {i} must be a dequantised constant"))),
        }
    }

    fn set_out(&mut self, qi: usize, t: u32, float_name: &str) {
        let qout = self.graph.node[qi].output[0].clone();
        self.vals.insert(qout, Val::Act(t));
        self.produced.insert(float_name.into(), t);
    }

    fn node(&mut self, idx: usize) -> Result<()> {
        if self.skip.contains(&idx) {
            return Ok(());
        }
        let n = &self.graph.node[idx];
        let op = n.op_type.as_str();
        if self.float_seq(idx)? {
            return Ok(());
        }
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return Err(self.unsupported(n, format!("domain {}", n.domain)));
        }
        match op {
            "Constant" => {
                let t = attr(n, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| self.unsupported(n, "only tensor constants"))?;
                let c = tensor_const(t)?;
                self.vals.insert(n.output[0].clone(), Val::Const(c));
            }
            "DequantizeLinear" => match self.val(n, 0)?.clone() {
                Val::Const(c) => {
                    let scale = self
                        .constant(n, 1)?
                        .f32s()
                        .ok_or_else(|| self.unsupported(n, "scale must be f32"))?;
                    let zero = if n.input.len() > 2 && !n.input[2].is_empty() {
                        self.constant(n, 2)?.ints()
                    } else {
                        vec![0; scale.len()]
                    };
                    if scale.iter().any(|s| !s.is_finite()) {
                        return Err(Error::NonFinite {
                            what: format!("scale of '{}'", n.name),
                        });
                    }
                    let axis = attr_i(n, "axis", 1);
                    if scale.len() > 1 && (axis != 0 || c.dims.first() != Some(&scale.len())) {
                        return Err(self
                            .unsupported(n, "per-channel weights must be quantised along axis 0"));
                    }
                    self.vals.insert(
                        n.output[0].clone(),
                        Val::QConst {
                            dims: c.dims.clone(),
                            q: c.ints(),
                            scale,
                            zero,
                        },
                    );
                }
                Val::Act(t) => {
                    let q = self.q8_of(n)?;
                    let ti = &self.b.tensors[t as usize];
                    if ti.dtype != DType::U8 || ti.scale != q.scale || ti.zero != q.zero {
                        return Err(self.unsupported(
                            n,
                            "dequantises with parameters other than its QuantizeLinear",
                        ));
                    }
                    self.vals.insert(n.output[0].clone(), Val::Deq(t));
                }
                _ => {
                    return Err(
                        self.unsupported(n, "input must be a constant or a quantised tensor")
                    )
                }
            },
            "QuantizeLinear" => {
                if self.skip.contains(&idx) {
                    return Ok(());
                }
                let q = self.q8_of(n)?;
                match self.val(n, 0)?.clone() {
                    Val::Act(t) if self.b.tensors[t as usize].dtype == DType::F32 => {
                        let ti = self.b.tensors[t as usize].clone();
                        let s = ti.shape.clone();
                        let (shape, nhwc) = if s.len() == 4 {
                            (vec![s[0], s[2], s[3], s[1]], true)
                        } else {
                            (s, false)
                        };
                        let y = self.b.tensor(&n.output[0], DType::U8, shape, nhwc, Some(q));
                        self.b.ops.push(Op::Quantize {
                            x: t,
                            y,
                            q,
                            to_nhwc: nhwc,
                        });
                        self.vals.insert(n.output[0].clone(), Val::Act(y));
                    }
                    Val::Deq(t) => {
                        let ti = &self.b.tensors[t as usize];
                        if ti.scale != q.scale || ti.zero != q.zero {
                            let m = self.mapped(n, 0)?;
                            self.lut(n, m, q)?;
                        } else {
                            self.vals.insert(n.output[0].clone(), Val::Act(t));
                        }
                    }
                    Val::Mapped(m) => self.lut(n, m, q)?,
                    _ => return Err(self.unsupported(n, "input must be a float tensor")),
                }
            }
            "Conv" => self.conv(idx)?,
            "Gemm" => self.gemm(idx)?,
            "Add" => {
                let (a, b) = (self.deq(n, 0)?, self.deq(n, 1)?);
                let (sa, sb) = (
                    self.b.tensors[a as usize].shape.clone(),
                    self.b.tensors[b as usize].shape.clone(),
                );
                if sa != sb {
                    return Err(self.unsupported(n, "int8 Add needs equal shapes"));
                }
                let (qi, qy) = self.fused_q(n)?;
                let nhwc = self.b.tensors[a as usize].nhwc;
                let y = self.b.tensor(&n.output[0], DType::U8, sa, nhwc, Some(qy));
                let q = |t: u32, b: &Builder| Q8 {
                    scale: b.tensors[t as usize].scale,
                    zero: b.tensors[t as usize].zero,
                };
                self.b.ops.push(Op::AddU8 {
                    a,
                    b,
                    y,
                    qa: q(a, &self.b),
                    qb: q(b, &self.b),
                    qy,
                });
                self.set_out(qi, y, &n.output[0]);
                self.block_taps.push((n.output[0].clone(), y));
            }
            "GlobalAveragePool" => {
                let x = self.deq(n, 0)?;
                let xi = self.b.tensors[x as usize].clone();
                if xi.shape.len() != 4 || xi.shape[0] != 1 {
                    return Err(self.unsupported(n, "needs a 4-D input of batch 1"));
                }
                let (qi, qy) = self.fused_q(n)?;
                let y = self.b.tensor(
                    &n.output[0],
                    DType::U8,
                    vec![xi.shape[0], 1, 1, xi.shape[3]],
                    true,
                    Some(qy),
                );
                self.b.ops.push(Op::GapU8 {
                    x,
                    y,
                    qx: Q8 {
                        scale: xi.scale,
                        zero: xi.zero,
                    },
                    qy,
                });
                self.set_out(qi, y, &n.output[0]);
                self.block_taps.push((n.input[0].clone(), x));
            }
            "Relu" | "LeakyRelu" | "Sigmoid" | "Clip" | "Max" | "Min" | "BatchNormalization" => {
                self.elementwise(n)?
            }
            "MaxPool" => self.max_pool(n)?,
            "Flatten" | "Reshape" => {
                let v = self.val(n, 0)?.clone();
                let t = match v {
                    Val::Deq(t) | Val::Act(t) => t,
                    _ => return Err(self.unsupported(n, "constant input")),
                };
                let s = self.b.tensors[t as usize].shape.clone();
                // A 1×1 spatial map has the same bytes in NHWC and NCHW: flattening is free.
                if !(s.len() == 4 && s[1] == 1 && s[2] == 1) && s.len() != 2 {
                    return Err(self.unsupported(n, "only flattening of 1×1 feature maps"));
                }
                self.vals.insert(n.output[0].clone(), v);
            }
            _ => return Err(self.unsupported(n, "no lowering for this op")),
        }
        Ok(())
    }

    /// A float tensor input (row-major, not an NHWC feature map).
    fn fact(&self, n: &pb::NodeProto, i: usize) -> Option<u32> {
        match self.val(n, i).ok()? {
            Val::Act(t) => {
                let ti = &self.b.tensors[*t as usize];
                (ti.dtype == DType::F32 && !ti.nhwc).then_some(*t)
            }
            _ => None,
        }
    }

    fn fshape(&self, t: u32) -> Vec<usize> {
        self.b.tensors[t as usize].shape.clone()
    }

    fn new_f32(&mut self, name: &str, shape: Vec<usize>) -> u32 {
        self.b.tensor(name, DType::F32, shape, false, None)
    }

    fn out_f32(&mut self, n: &pb::NodeProto, t: u32) {
        self.vals.insert(n.output[0].clone(), Val::Act(t));
        self.produced.insert(n.output[0].clone(), t);
    }

    /// Lowers the float sequence ops (transformer encoders, mel front ends) when `idx` is
    /// one of them applied to row-major float tensors; false leaves the node to the
    /// quantised-CNN lowering.
    fn float_seq(&mut self, idx: usize) -> Result<bool> {
        let n = &self.graph.node[idx];
        let op = n.op_type.as_str();
        let x0 = self.fact(n, 0);
        match op {
            "Cast" => match self.val(n, 0)?.clone() {
                // Every float-path tensor is f32; integer ids stay exact below 2^24.
                v @ (Val::Act(_) | Val::IntMM { .. })
                    if x0.is_some() || matches!(v, Val::IntMM { .. }) =>
                {
                    self.vals.insert(n.output[0].clone(), v);
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
                    self.vals.insert(
                        n.output[0].clone(),
                        Val::Const(Const { dims: c.dims, data }),
                    );
                }
                _ => return Ok(false),
            },
            "Reshape" | "Flatten" | "Unsqueeze" | "Squeeze" => {
                if self.int_names.contains(&n.input[0]) {
                    self.int_names.insert(n.output[0].clone());
                }
                let Some(x) = x0 else {
                    return match self.val(n, 0)? {
                        Val::Const(c) if op != "Reshape" && op != "Flatten" => {
                            let mut c = c.clone();
                            c.dims = self.reshaped(n, &c.dims)?;
                            self.vals.insert(n.output[0].clone(), Val::Const(c));
                            Ok(true)
                        }
                        _ => Ok(false),
                    };
                };
                let shape = self.reshaped(n, &self.fshape(x))?;
                let y = self.new_f32(&n.output[0], shape);
                self.b.ops.push(Op::UnaryF32 {
                    x,
                    y,
                    f: Unary::Identity,
                });
                self.out_f32(n, y);
            }
            "Gather" => {
                let ids = self
                    .fact(n, 1)
                    .ok_or_else(|| self.unsupported(n, "indices must be a run-time tensor"))?;
                let table = self.constant(n, 0)?;
                if attr_i(n, "axis", 0) != 0 || table.dims.len() != 2 {
                    return Err(self.unsupported(n, "only row gathers from a 2-D table"));
                }
                let (rows, dim) = (table.dims[0], table.dims[1]);
                let mut shape = self.fshape(ids);
                shape.push(dim);
                let (blob, quant, name) = match &table.data {
                    Data::F32(v) => (self.b.push(v), None, n.output[0].clone()),
                    Data::I8(_) | Data::U8(_) => {
                        // The DequantizeLinear that alone reads the gathered int8 rows.
                        let cons = self
                            .consumers
                            .get(&n.output[0])
                            .cloned()
                            .unwrap_or_default();
                        let [dq] = cons.as_slice() else {
                            return Err(
                                self.unsupported(n, "int8 rows must feed one DequantizeLinear")
                            );
                        };
                        let dn = &self.graph.node[*dq];
                        if dn.op_type != "DequantizeLinear" {
                            return Err(
                                self.unsupported(n, "int8 rows must feed one DequantizeLinear")
                            );
                        }
                        let sc = self.constant(dn, 1)?.f32s().unwrap_or_default();
                        let z = if dn.input.len() > 2 && !dn.input[2].is_empty() {
                            self.constant(dn, 2)?.ints()
                        } else {
                            vec![0]
                        };
                        if sc.len() != 1 || z.len() != 1 || !sc[0].is_finite() {
                            return Err(self.unsupported(dn, "per-tensor scale and zero point"));
                        }
                        self.skip.insert(*dq);
                        // u8 codes become i8 with the zero point moved by 128: same values.
                        let (bytes, z): (Vec<u8>, i32) = match &table.data {
                            Data::U8(v) => {
                                (v.iter().map(|&q| q ^ 0x80).collect(), z[0] as i32 - 128)
                            }
                            Data::I8(v) => (v.iter().map(|&q| q as u8).collect(), z[0] as i32),
                            _ => unreachable!("matched above"),
                        };
                        (self.b.push(&bytes), Some((sc[0], z)), dn.output[0].clone())
                    }
                    _ => return Err(self.unsupported(n, "table must be f32 or int8")),
                };
                let y = self.new_f32(&name, shape);
                self.b.ops.push(Op::GatherF32 {
                    ids,
                    y,
                    table: blob,
                    rows: rows as u32,
                    dim: dim as u32,
                    quant,
                });
                self.vals.insert(name.clone(), Val::Act(y));
                self.produced.insert(name, y);
            }
            "DynamicQuantizeLinear" => {
                let Some(x) = x0 else { return Ok(false) };
                let o = &n.output;
                if o.len() != 3 {
                    return Err(self.unsupported(n, "needs its three outputs"));
                }
                self.vals.insert(o[0].clone(), Val::DynQ(x));
                self.vals.insert(o[1].clone(), Val::DynScale(x));
                self.vals.insert(o[2].clone(), Val::DynZero(x));
            }
            "MatMulInteger" => {
                let t = match (self.val(n, 0)?, n.input.get(2).map(|s| self.vals.get(s))) {
                    (Val::DynQ(t), Some(Some(Val::DynZero(z)))) if t == z => *t,
                    _ => {
                        return Err(self.unsupported(
                            n,
                            "A must be DynamicQuantizeLinear's codes with its zero point",
                        ))
                    }
                };
                let w = self.constant(n, 1)?;
                if w.dims.len() != 2 || !matches!(w.data, Data::I8(_)) {
                    return Err(self.unsupported(n, "B must be constant int8 [K, N]"));
                }
                let wz = if n.input.len() > 3 && !n.input[3].is_empty() {
                    self.constant(n, 3)?.ints()
                } else {
                    vec![0]
                };
                if wz.iter().any(|&z| z != 0) {
                    return Err(self.unsupported(n, "weights must be symmetric (zero point 0)"));
                }
                let (k, nn) = (w.dims[0], w.dims[1]);
                if self.fshape(t).last() != Some(&k) {
                    return Err(self.unsupported(n, "inner dimensions differ"));
                }
                self.vals.insert(
                    n.output[0].clone(),
                    Val::IntMM {
                        t,
                        k,
                        n: nn,
                        w: w.ints(),
                    },
                );
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (a, b) = (self.val(n, 0)?.clone(), self.val(n, 1)?.clone());
                match (&a, &b) {
                    (Val::Deq(_), _) | (_, Val::Deq(_)) => return Ok(false),
                    (Val::DynScale(t), Val::Const(c)) | (Val::Const(c), Val::DynScale(t))
                        if op == "Mul" =>
                    {
                        let ws = c.f32s().ok_or_else(|| self.unsupported(n, "f32 scales"))?;
                        self.vals
                            .insert(n.output[0].clone(), Val::ScaleProd { t: *t, ws });
                        return Ok(true);
                    }
                    (Val::IntMM { t, k, n: nn, w }, Val::ScaleProd { t: t2, ws })
                    | (Val::ScaleProd { t: t2, ws }, Val::IntMM { t, k, n: nn, w })
                        if op == "Mul" =>
                    {
                        if t != t2 || !(ws.len() == 1 || ws.len() == *nn) {
                            return Err(self.unsupported(n, "scale of another quantisation"));
                        }
                        let ws: Vec<f32> = (0..*nn)
                            .map(|c| ws[if ws.len() == 1 { 0 } else { c }])
                            .collect();
                        self.dyn_matmul(n, *t, *k, *nn, w, &ws)?;
                        return Ok(true);
                    }
                    _ => {}
                }
                if n.input.iter().take(2).any(|i| self.int_names.contains(i)) {
                    return Err(
                        self.unsupported(n, "integer arithmetic (Cast the operands to float)")
                    );
                }
                let (sa, sb) = (self.operand(n, 0)?, self.operand(n, 1)?);
                if sa.0.tensor().is_none() && sb.0.tensor().is_none() {
                    return Err(self.unsupported(n, "both operands constant"));
                }
                let out = broadcast(&sa.1, &sb.1)
                    .ok_or_else(|| self.unsupported(n, "shapes do not broadcast (or rank > 4)"))?;
                let f = match op {
                    "Add" => BinOp::Add,
                    "Sub" => BinOp::Sub,
                    "Mul" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let y = self.new_f32(&n.output[0], out.clone());
                self.b.ops.push(Op::BinF32 {
                    a: sa.0,
                    b: sb.0,
                    y,
                    f,
                    dims: pad4(&out).map(|v| v as u32),
                    sa: strides4(&sa.1, &out),
                    sb: strides4(&sb.1, &out),
                });
                self.out_f32(n, y);
            }
            "LayerNormalization" => {
                let Some(x) = x0 else { return Ok(false) };
                let shape = self.fshape(x);
                let cols = *shape.last().unwrap_or(&0);
                let axis = attr_i(n, "axis", -1);
                if !(axis == -1 || axis == shape.len() as i64 - 1) {
                    return Err(self.unsupported(n, "normalises over the last axis only"));
                }
                let g = self.constant(n, 1)?.f32s().unwrap_or_default();
                let bt = if n.input.len() > 2 && !n.input[2].is_empty() {
                    self.constant(n, 2)?.f32s().unwrap_or_default()
                } else {
                    vec![0.0; cols]
                };
                if g.len() != cols
                    || bt.len() != cols
                    || n.output.iter().skip(1).any(|o| !o.is_empty())
                {
                    return Err(self.unsupported(n, "scale and bias of the row width; one output"));
                }
                let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
                let (gamma, beta) = (self.b.push(&g), self.b.push(&bt));
                let y = self.new_f32(&n.output[0], shape);
                self.b.ops.push(Op::LayerNormF32 {
                    x,
                    y,
                    cols: cols as u32,
                    gamma,
                    beta,
                    eps,
                });
                self.out_f32(n, y);
            }
            "Softmax" => {
                let Some(x) = x0 else { return Ok(false) };
                let shape = self.fshape(x);
                let axis = attr_i(n, "axis", -1);
                if !(axis == -1 || axis == shape.len() as i64 - 1) {
                    return Err(self.unsupported(n, "softmax over the last axis only"));
                }
                let y = self.new_f32(&n.output[0], shape.clone());
                self.b.ops.push(Op::SoftmaxF32 {
                    x,
                    y,
                    cols: *shape.last().unwrap_or(&1) as u32,
                });
                self.out_f32(n, y);
            }
            "Transpose" => {
                let Some(x) = x0 else { return Ok(false) };
                let shape = self.fshape(x);
                let r = shape.len();
                let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
                if r > 4 || perm.len() != r || perm.iter().any(|&p| p < 0 || p as usize >= r) {
                    return Err(self.unsupported(n, "permutation of ≤ 4 axes"));
                }
                // Padded to 4-D on the left.
                let off = 4 - r;
                let mut p4 = [0u8, 1, 2, 3];
                for (i, &p) in perm.iter().enumerate() {
                    p4[off + i] = (off + p as usize) as u8;
                }
                let out: Vec<usize> = perm.iter().map(|&p| shape[p as usize]).collect();
                let y = self.new_f32(&n.output[0], out);
                self.b.ops.push(Op::TransposeF32 {
                    x,
                    y,
                    dims: pad4(&shape).map(|v| v as u32),
                    perm: p4,
                });
                self.out_f32(n, y);
            }
            "MatMul" => {
                let (Some(a), Some(b)) = (x0, self.fact(n, 1)) else {
                    return Ok(false);
                };
                let (sa, sb) = (self.fshape(a), self.fshape(b));
                if sa.len() < 2 || sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2]
                {
                    return Err(self.unsupported(n, "batched operands of the same batch shape"));
                }
                let r = sa.len();
                let (m, k, nn) = (sa[r - 2], sa[r - 1], sb[r - 1]);
                if sb[r - 2] != k {
                    return Err(self.unsupported(n, "inner dimensions differ"));
                }
                let batch: usize = sa[..r - 2].iter().product();
                let mut out = sa.clone();
                out[r - 1] = nn;
                let y = self.new_f32(&n.output[0], out);
                let packed = edgetune_kernels::pack::packed_f32_len(k, nn);
                let scratch = self.new_f32(&format!("{}#packed", n.name), vec![packed]);
                self.b.ops.push(Op::MatMulF32 {
                    a,
                    b,
                    y,
                    scratch,
                    batch: batch as u32,
                    m: m as u32,
                    k: k as u32,
                    n: nn as u32,
                });
                self.out_f32(n, y);
            }
            "ReduceSum" => {
                let Some(x) = x0 else { return Ok(false) };
                let shape = self.fshape(x);
                let axes = if n.input.len() > 1 && !n.input[1].is_empty() {
                    self.constant(n, 1)?.ints()
                } else {
                    attr_ints(n, "axes").unwrap_or_default()
                };
                let r = shape.len() as i64;
                let [ax] = axes.as_slice() else {
                    return Err(self.unsupported(n, "one reduction axis"));
                };
                let ax = if *ax < 0 { ax + r } else { *ax };
                if !(0..r).contains(&ax) {
                    return Err(self.unsupported(n, "axis out of range"));
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
                let y = self.new_f32(&n.output[0], out);
                self.b.ops.push(Op::SumF32 {
                    x,
                    y,
                    outer: outer as u32,
                    len: len as u32,
                    inner: inner as u32,
                });
                self.out_f32(n, y);
            }
            "Clip" => {
                let Some(x) = x0 else { return Ok(false) };
                let bound = |s: &Self, i: usize, d: f32| -> Result<f32> {
                    if n.input.len() > i && !n.input[i].is_empty() {
                        match s.constant(n, i)?.f32s().as_deref() {
                            Some([v]) if !v.is_nan() => Ok(*v),
                            _ => Err(s.unsupported(n, "bounds must be scalar constants")),
                        }
                    } else {
                        Ok(d)
                    }
                };
                let (lo, hi) = (
                    bound(self, 1, f32::NEG_INFINITY)?,
                    bound(self, 2, f32::INFINITY)?,
                );
                let y = self.new_f32(&n.output[0], self.fshape(x));
                self.b.ops.push(Op::ClampF32 { x, y, lo, hi });
                self.out_f32(n, y);
            }
            "Sqrt" | "Erf" | "Relu" | "Sigmoid" => {
                let Some(x) = x0 else { return Ok(false) };
                let f = match op {
                    "Sqrt" => Unary::Sqrt,
                    "Erf" => Unary::Erf,
                    "Relu" => Unary::Relu,
                    _ => Unary::Sigmoid,
                };
                let y = self.new_f32(&n.output[0], self.fshape(x));
                self.b.ops.push(Op::UnaryF32 { x, y, f });
                self.out_f32(n, y);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

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

    /// Operand `i` of a float binary op: a run-time tensor or a constant in the blob.
    fn operand(&mut self, n: &pb::NodeProto, i: usize) -> Result<(Src, Vec<usize>)> {
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
            _ => Err(self.unsupported(n, format!("operand {i} is not a float tensor"))),
        }
    }

    fn dyn_matmul(
        &mut self,
        n: &pb::NodeProto,
        t: u32,
        k: usize,
        nn: usize,
        w: &[i64],
        ws: &[f32],
    ) -> Result<()> {
        let shape = self.fshape(t);
        let m: usize = shape[..shape.len() - 1].iter().product();
        let (wp, colsum) = self.b.push_packed_i8(k, nn, |kk, c| w[kk * nn + c] as i8);
        if ws.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("weight scales of '{}'", n.name),
            });
        }
        let wscale = self.b.push(ws);
        let mut out = shape.clone();
        *out.last_mut().expect("rank checked by MatMulInteger") = nn;
        let y = self.new_f32(&n.output[0], out);
        let scratch_len = (m * k).div_ceil(4) * 4 + 4 * nn;
        let scratch = self.b.tensor(
            &format!("{}#dynq", n.name),
            DType::U8,
            vec![scratch_len],
            false,
            None,
        );
        self.b.ops.push(Op::MatMulDynI8 {
            x: t,
            y,
            scratch,
            m: m as u32,
            k: k as u32,
            n: nn as u32,
            w: wp,
            colsum,
            wscale,
        });
        self.out_f32(n, y);
        Ok(())
    }

    /// The input `i` as a table over its u8 codes (a plain dequantisation is the identity).
    fn mapped(&self, n: &pb::NodeProto, i: usize) -> Result<Mapped> {
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
    fn floats(&self, n: &pb::NodeProto, i: usize) -> Result<Vec<f32>> {
        match self.val(n, i)? {
            Val::Const(c) => c
                .f32s()
                .ok_or_else(|| self.unsupported(n, format!("input {i} must be f32"))),
            Val::QConst { q, scale, zero, .. } => {
                let per = q.len() / scale.len().max(1);
                Ok(q.iter()
                    .enumerate()
                    .map(|(k, &v)| {
                        let a = (k / per.max(1)).min(scale.len() - 1);
                        (v - zero[a.min(zero.len() - 1)]) as f32 * scale[a]
                    })
                    .collect())
            }
            _ => Err(self.unsupported(n, format!("input {i} must be a constant"))),
        }
    }

    /// Elementwise float ops on a quantised tensor fold into its table.
    fn elementwise(&mut self, n: &pb::NodeProto) -> Result<()> {
        let op = n.op_type.as_str();
        // Max/Min: one operand is a scalar constant, the other the tensor.
        let xi = if matches!(op, "Max" | "Min") {
            if n.input.len() != 2 {
                return Err(self.unsupported(n, "needs exactly two operands"));
            }
            match self.val(n, 0)? {
                Val::Const(_) | Val::QConst { .. } => 1,
                _ => 0,
            }
        } else {
            0
        };
        let mut m = self.mapped(n, xi)?;
        let scalar = |s: &Self, i: usize| -> Result<f32> {
            match s.floats(n, i)?.as_slice() {
                [v] if !v.is_nan() => Ok(*v),
                _ => Err(s.unsupported(n, format!("input {i} must be a scalar constant"))),
            }
        };
        let f: Box<dyn Fn(usize, f32) -> f32> = match op {
            "Relu" => Box::new(|_, v: f32| v.max(0.0)),
            "Sigmoid" => Box::new(|_, v| edgetune_kernels::elementwise::sigmoid1(v)),
            "LeakyRelu" => {
                let a = attr(n, "alpha").map_or(0.01, |a| a.f);
                if !a.is_finite() {
                    return Err(Error::NonFinite {
                        what: format!("alpha of '{}'", n.name),
                    });
                }
                m.monotone &= a >= 0.0;
                Box::new(move |_, v: f32| if v < 0.0 { a * v } else { v })
            }
            "Max" | "Min" => {
                let c = scalar(self, 1 - xi)?;
                if op == "Max" {
                    Box::new(move |_, v: f32| v.max(c))
                } else {
                    Box::new(move |_, v: f32| v.min(c))
                }
            }
            "Clip" => {
                let get = |s: &Self, i: usize, d: f32| -> Result<f32> {
                    if n.input.len() > i && !n.input[i].is_empty() {
                        scalar(s, i)
                    } else {
                        Ok(d)
                    }
                };
                let lo = get(self, 1, attr(n, "min").map_or(f32::NEG_INFINITY, |a| a.f))?;
                let hi = get(self, 2, attr(n, "max").map_or(f32::INFINITY, |a| a.f))?;
                Box::new(move |_, v: f32| v.max(lo).min(hi))
            }
            "BatchNormalization" => {
                let c = self
                    .b
                    .tensors
                    .get(m.t as usize)
                    .and_then(|t| {
                        if t.nhwc {
                            t.shape.last().copied()
                        } else {
                            None
                        }
                    })
                    .ok_or_else(|| self.unsupported(n, "needs an NHWC feature map"))?;
                let p: Vec<Vec<f32>> = (1..5).map(|i| self.floats(n, i)).collect::<Result<_>>()?;
                if p.iter().any(|v| v.len() != c) {
                    return Err(self.unsupported(n, "parameters differ from the channel count"));
                }
                let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
                let (mul, add): (Vec<f32>, Vec<f32>) = (0..c)
                    .map(|k| {
                        let s = p[0][k] / (p[3][k] + eps).sqrt();
                        (s, p[1][k] - p[2][k] * s)
                    })
                    .unzip();
                if mul.iter().chain(&add).any(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        what: format!("batch norm '{}'", n.name),
                    });
                }
                m.monotone &= mul.iter().all(|&s| s >= 0.0);
                if m.channels == 1 {
                    m.table = m.table.repeat(c);
                } else if m.channels != c {
                    return Err(self.unsupported(n, "per-channel tables of different widths"));
                }
                m.channels = c;
                // The ONNX formula in its own order, so table entries round as a float
                // evaluation of the graph does.
                let (g, b, mu, den): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) = (
                    p[0].clone(),
                    p[1].clone(),
                    p[2].clone(),
                    p[3].iter().map(|v| (v + eps).sqrt()).collect(),
                );
                Box::new(move |k, v: f32| (v - mu[k]) / den[k] * g[k] + b[k])
            }
            _ => return Err(self.unsupported(n, "no lowering for this op")),
        };
        for c in 0..m.channels {
            for code in 0..256 {
                m.table[c * 256 + code] = f(c, m.value(c, code));
            }
        }
        self.vals.insert(n.output[0].clone(), Val::Mapped(m));
        Ok(())
    }

    /// QuantizeLinear of a table-mapped tensor: one `LutU8`.
    fn lut(&mut self, n: &pb::NodeProto, m: Mapped, q: Q8) -> Result<()> {
        let ti = self.b.tensors[m.t as usize].clone();
        if m.channels > 1 && !(ti.nhwc && ti.shape.last() == Some(&m.channels)) {
            return Err(self.unsupported(n, "per-channel table over a non-NHWC tensor"));
        }
        if m.table.iter().any(|v| v.is_nan()) {
            return Err(Error::NonFinite {
                what: format!("values quantised by '{}'", n.name),
            });
        }
        let codes: Vec<u8> = m
            .table
            .iter()
            .map(|&v| edgetune_kernels::quant::requant(v / q.scale, q.zero, 0, 255) as u8)
            .collect();
        let y = self
            .b
            .tensor(&n.output[0], DType::U8, ti.shape.clone(), ti.nhwc, Some(q));
        let table = self.b.push(&codes);
        self.b.ops.push(Op::LutU8 {
            x: m.t,
            y,
            channels: m.channels as u32,
            table,
        });
        self.vals.insert(n.output[0].clone(), Val::Act(y));
        self.produced.insert(n.input[0].clone(), y);
        Ok(())
    }

    fn max_pool(&mut self, n: &pb::NodeProto) -> Result<()> {
        let v = self.val(n, 0)?.clone();
        let (t, mapped) = match v {
            Val::Deq(t) => (t, None),
            Val::Mapped(m) if m.monotone => (m.t, Some(m)),
            _ => {
                return Err(self.unsupported(
                    n,
                    "input must be a quantised tensor or a non-decreasing function of one",
                ))
            }
        };
        let xi = self.b.tensors[t as usize].clone();
        if xi.shape.len() != 4 || !xi.nhwc || xi.shape[0] != 1 {
            return Err(self.unsupported(n, "needs a 4-D feature map of batch 1"));
        }
        if attr_i(n, "ceil_mode", 0) != 0
            || attr(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET")
            || n.output.len() > 1 && !n.output[1].is_empty()
        {
            return Err(self.unsupported(n, "ceil_mode, auto_pad and indices"));
        }
        let k = attr_ints(n, "kernel_shape").unwrap_or_default();
        let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
        let dil = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
        if k.len() != 2
            || strides.len() != 2
            || pads.len() != 4
            || dil.len() != 2
            || k.iter()
                .chain(&strides)
                .chain(&dil)
                .any(|&v| !(1..=1 << 16).contains(&v))
            || pads.iter().any(|&v| !(0..=1 << 16).contains(&v))
        {
            return Err(self.unsupported(n, "pooling attributes"));
        }
        let (h, w, c) = (xi.shape[1], xi.shape[2], xi.shape[3]);
        let geom = ConvGeom {
            h,
            w,
            ic: c,
            oc: c,
            kh: k[0] as usize,
            kw: k[1] as usize,
            stride_h: strides[0] as usize,
            stride_w: strides[1] as usize,
            dil_h: dil[0] as usize,
            dil_w: dil[1] as usize,
            pad_top: pads[0] as usize,
            pad_left: pads[1] as usize,
            pad_bottom: pads[2] as usize,
            pad_right: pads[3] as usize,
            groups: 1,
        };
        if h + geom.pad_top + geom.pad_bottom < geom.dil_h * (geom.kh - 1) + 1
            || w + geom.pad_left + geom.pad_right < geom.dil_w * (geom.kw - 1) + 1
        {
            return Err(self.unsupported(n, "kernel larger than the padded input"));
        }
        let q = Q8 {
            scale: xi.scale,
            zero: xi.zero,
        };
        let y = self.b.tensor(
            &n.output[0],
            DType::U8,
            vec![xi.shape[0], geom.oh(), geom.ow(), c],
            true,
            Some(q),
        );
        self.b.ops.push(Op::MaxPoolU8 { x: t, y, geom });
        let out = match mapped {
            None => Val::Deq(y),
            Some(m) => Val::Mapped(Mapped { t: y, ..m }),
        };
        self.vals.insert(n.output[0].clone(), out);
        self.block_taps.push((n.output[0].clone(), y));
        Ok(())
    }

    fn conv(&mut self, idx: usize) -> Result<()> {
        let n = &self.graph.node[idx];
        let x = self.deq(n, 0)?;
        let (wd, mut wq, ws, wz) = self.qconst(n, 1)?;
        if wd.len() != 4
            || wz.iter().any(|&z| z != 0)
            || wq.iter().any(|&v| !(-128..=127).contains(&v))
        {
            return Err(self.unsupported(n, "weights must be symmetric int8 OIHW"));
        }
        let xi = self.b.tensors[x as usize].clone();
        if xi.shape.len() != 4 || xi.shape[0] != 1 {
            return Err(self.unsupported(n, "convolution input must be 4-D (1, C, H, W)"));
        }
        let (oc, icg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
        let (h, w, ic) = (xi.shape[1], xi.shape[2], xi.shape[3]);
        let groups = attr_i(n, "group", 1) as usize;
        if attr(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
            return Err(self.unsupported(n, "auto_pad"));
        }
        let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
        let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let dil = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
        if pads.len() != 4
            || strides.len() != 2
            || dil.len() != 2
            || groups == 0
            || icg * groups != ic
            || pads.iter().chain(&strides).chain(&dil).any(|&v| v < 0)
        {
            return Err(self.unsupported(n, "convolution attributes do not match the input"));
        }
        let geom = ConvGeom {
            h,
            w,
            ic,
            oc,
            kh,
            kw,
            stride_h: strides[0] as usize,
            stride_w: strides[1] as usize,
            dil_h: dil[0] as usize,
            dil_w: dil[1] as usize,
            pad_top: pads[0] as usize,
            pad_left: pads[1] as usize,
            pad_bottom: pads[2] as usize,
            pad_right: pads[3] as usize,
            groups,
        };
        if geom.stride_h == 0
            || geom.stride_w == 0
            || h + geom.pad_top + geom.pad_bottom < geom.dil_h * (kh - 1) + 1
        {
            return Err(self.unsupported(n, "kernel larger than the padded input"));
        }
        let (bias, scale) = self.bias_scale(n, 2, oc, xi.scale, &ws, &mut wq, icg * kh * kw)?;
        let (qi, qy) = self.fused_q(n)?;
        let y = self.b.tensor(
            &n.output[0],
            DType::U8,
            vec![xi.shape[0], geom.oh(), geom.ow(), oc],
            true,
            Some(qy),
        );
        let scale: Vec<f32> = scale.iter().map(|s| s / qy.scale).collect();
        let (bias, scale) = (self.b.push(&bias), self.b.push(&scale));
        if groups == 1 {
            let k = kh * kw * ic;
            let (w, colsum) = self.b.push_packed_i8(k, oc, |kk, o| {
                let (tap, i) = (kk / ic, kk % ic);
                wq[((o * ic + i) * kh + tap / kw) * kw + tap % kw] as i8
            });
            let scratch_len = edgetune_kernels::ops::conv_scratch_len(&geom);
            let scratch = (scratch_len > 0).then(|| {
                self.b.tensor(
                    &format!("{}#im2col", n.name),
                    DType::U8,
                    vec![scratch_len],
                    false,
                    None,
                )
            });
            self.b.ops.push(Op::ConvI8 {
                x,
                y,
                scratch,
                geom,
                x_zero: xi.zero,
                y_zero: qy.zero,
                w,
                colsum,
                bias,
                scale,
            });
        } else if groups == ic && oc == ic && icg == 1 {
            let mut wt = vec![0i16; kh * kw * oc];
            for c in 0..oc {
                for t in 0..kh * kw {
                    wt[t * oc + c] = wq[c * kh * kw + t] as i16;
                }
            }
            let w = self.b.push(&wt);
            self.b.ops.push(Op::DwI8 {
                x,
                y,
                geom,
                x_zero: xi.zero,
                y_zero: qy.zero,
                w,
                bias,
                scale,
            });
        } else {
            return Err(self.unsupported(n, "grouped convolution other than depthwise"));
        }
        self.set_out(qi, y, &n.output[0]);
        Ok(())
    }

    /// Bias in units of `s_x·s_w[c]` and the per-channel `s_x·s_w[c]`. A channel whose
    /// bias would not fit the accumulator (dead channels with near-zero weight scales)
    /// has its weights requantised to a coarser scale first; `wq` holds the weights of
    /// channel `c` at `c·per..(c+1)·per`.
    fn bias_scale(
        &self,
        n: &pb::NodeProto,
        i: usize,
        oc: usize,
        sx: f32,
        ws: &[f32],
        wq: &mut [i64],
        per: usize,
    ) -> Result<(Vec<i32>, Vec<f32>)> {
        // Per-tensor (1) or per-channel (oc) quantisation parameters only.
        let fits = |n: usize| n == 1 || n == oc;
        if !fits(ws.len()) {
            return Err(self.unsupported(n, "weight scales are neither per-tensor nor per-channel"));
        }
        let mut sw: Vec<f32> = (0..oc)
            .map(|c| if ws.len() == 1 { ws[0] } else { ws[c] })
            .collect();
        let mut bias = vec![0i32; oc];
        let has_bias = n.input.len() > i && !n.input[i].is_empty();
        let real: Vec<f64> = if has_bias {
            let (bd, bq, bs, bz) = self.qconst(n, i)?;
            if bd.iter().product::<usize>() != oc
                || bq.len() != oc
                || !fits(bs.len())
                || !fits(bz.len())
            {
                return Err(self.unsupported(n, "bias length differs from the output channels"));
            }
            (0..oc)
                .map(|c| {
                    (bq[c] - if bz.len() == 1 { bz[0] } else { bz[c] }) as f64
                        * (if bs.len() == 1 { bs[0] } else { bs[c] }) as f64
                })
                .collect()
        } else {
            vec![0.0; oc]
        };
        const LIMIT: f64 = (1u64 << 29) as f64;
        for c in 0..oc {
            let need = (real[c].abs() / (sx as f64 * LIMIT)) as f32;
            if need > sw[c] {
                if ws.len() == 1 {
                    return Err(self.unsupported(n, "bias does not fit the int32 accumulator"));
                }
                let ratio = sw[c] / need;
                for v in &mut wq[c * per..(c + 1) * per] {
                    *v = ((*v as f32 * ratio).round_ties_even() as i64).clamp(-127, 127);
                }
                sw[c] = need;
            }
        }
        let acc_scale: Vec<f32> = (0..oc).map(|c| sx * sw[c]).collect();
        for c in 0..oc {
            bias[c] = (real[c] / acc_scale[c] as f64).round_ties_even() as i32;
        }
        Ok((bias, acc_scale))
    }

    fn gemm(&mut self, idx: usize) -> Result<()> {
        let n = &self.graph.node[idx];
        let x = self.deq(n, 0)?;
        let xi = self.b.tensors[x as usize].clone();
        let k = xi.len() / xi.shape[0];
        let (wd, mut wq, ws, wz) = self.qconst(n, 1)?;
        let trans_b = attr_i(n, "transB", 0) == 1;
        if attr_i(n, "transA", 0) != 0
            || attr(n, "alpha").is_some_and(|a| a.f != 1.0)
            || attr(n, "beta").is_some_and(|a| a.f != 1.0)
        {
            return Err(self.unsupported(n, "transA, alpha and beta other than defaults"));
        }
        if wd.len() != 2 || wz.iter().any(|&z| z != 0) {
            return Err(self.unsupported(n, "weights must be symmetric int8 2-D"));
        }
        let (nn, kk) = if trans_b {
            (wd[0], wd[1])
        } else {
            (wd[1], wd[0])
        };
        if kk != k || xi.shape[0] != 1 {
            return Err(Error::ShapeMismatch {
                op: format!("Gemm '{}'", n.name),
                expected: vec![1, kk],
                got: xi.logical_shape(),
            });
        }
        if ws.len() > 1 && !trans_b {
            return Err(self.unsupported(n, "per-channel weights need transB=1"));
        }
        let (bias, scale) = self.bias_scale(
            n,
            2,
            nn,
            xi.scale,
            &ws,
            &mut wq,
            if trans_b { k } else { 0 },
        )?;
        let (qi, qy) = self.fused_q(n)?;
        let scale: Vec<f32> = scale.iter().map(|s| s / qy.scale).collect();
        let (w, colsum) = self.b.push_packed_i8(k, nn, |r, c| {
            if trans_b {
                wq[c * k + r] as i8
            } else {
                wq[r * nn + c] as i8
            }
        });
        let y = self
            .b
            .tensor(&n.output[0], DType::U8, vec![1, nn], false, Some(qy));
        let geom = ConvGeom {
            h: 1,
            w: 1,
            ic: k,
            oc: nn,
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            dil_h: 1,
            dil_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
            groups: 1,
        };
        let (bias, scale) = (self.b.push(&bias), self.b.push(&scale));
        self.b.ops.push(Op::ConvI8 {
            x,
            y,
            scratch: None,
            geom,
            x_zero: xi.zero,
            y_zero: qy.zero,
            w,
            colsum,
            bias,
            scale,
        });
        self.set_out(qi, y, &n.output[0]);
        Ok(())
    }
}

/// Parses ONNX bytes with tract-onnx.
/// A standalone serialised TensorProto (the ONNX test data's `input_0.pb`) as f32 values
/// with its dims: integers and u8/i8 codes converted exactly (below 2^24).
pub fn read_tensor(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    use prost::Message;
    let t = pb::TensorProto::decode(bytes).map_err(|e| malformed(format!("tensor: {e}")))?;
    let c = tensor_const(&t)?;
    let v = c
        .f32s()
        .unwrap_or_else(|| c.ints().iter().map(|&x| x as f32).collect());
    Ok((c.dims, v))
}

pub fn parse(bytes: &[u8]) -> Result<pb::ModelProto> {
    let mut r = bytes;
    tract_onnx::onnx()
        .proto_model_for_read(&mut r)
        .map_err(|e| malformed(format!("{e:#}")))
}

pub fn import_path(path: &std::path::Path, opts: &ImportOptions) -> Result<PlanParts> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    import_bytes(&bytes, opts)
}

/// QOperator form → QDQ form: each `QLinearConv` becomes DequantizeLinear (input,
/// weights, bias) → Conv → QuantizeLinear and each `QLinearMatMul` DequantizeLinear → Gemm
/// → QuantizeLinear, so both lower through the same int8 kernels as QDQ models. The bias
/// scale (`x_scale · w_scale[c]`) is computed here, so scales must be initializers.
fn expand_qlinear(graph: &pb::GraphProto) -> Result<Option<pb::GraphProto>> {
    if !graph
        .node
        .iter()
        .any(|n| matches!(n.op_type.as_str(), "QLinearConv" | "QLinearMatMul"))
    {
        return Ok(None);
    }
    let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
    let mut g = graph.clone();
    g.node.clear();
    let node = |op: &str, name: String, input: Vec<String>, output: String| pb::NodeProto {
        input,
        output: vec![output],
        name,
        op_type: op.into(),
        ..Default::default()
    };
    let unsupported = |n: &pb::NodeProto, why: &str| Error::UnsupportedOp {
        op: n.op_type.clone(),
        node: n.name.clone(),
        inputs: vec![],
        why: why.into(),
    };
    for n in &graph.node {
        let conv = n.op_type == "QLinearConv";
        if !conv && n.op_type != "QLinearMatMul" {
            g.node.push(n.clone());
            continue;
        }
        if n.input.len() < 8 || n.output.len() != 1 || !n.domain.is_empty() {
            return Err(malformed(format!(
                "{} '{}' needs 8 inputs and one output",
                n.op_type, n.name
            )));
        }
        let i = |k: usize| n.input[k].clone();
        let p = format!("{}#qlinear", n.output[0]);
        let dq_x = node(
            "DequantizeLinear",
            format!("{p}/x"),
            vec![i(0), i(1), i(2)],
            format!("{p}/x"),
        );
        let mut dq_w = node(
            "DequantizeLinear",
            format!("{p}/w"),
            vec![i(3), i(4), i(5)],
            format!("{p}/w"),
        );
        dq_w.attribute.push(pb::AttributeProto {
            name: "axis".into(),
            i: 0,
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        });
        let mut core_in = vec![format!("{p}/x"), format!("{p}/w")];
        let mut extra = vec![];
        if conv && n.input.len() > 8 && !n.input[8].is_empty() {
            let scalar = |name: &str| -> Result<Vec<f32>> {
                let t = init(name).ok_or_else(|| unsupported(n, "scales must be initializers"))?;
                tensor_const(t)?
                    .f32s()
                    .ok_or_else(|| unsupported(n, "scales must be f32"))
            };
            let (xs, ws) = (scalar(&n.input[1])?, scalar(&n.input[4])?);
            if xs.len() != 1 || ws.is_empty() {
                return Err(unsupported(n, "input scale must be per-tensor"));
            }
            let bs: Vec<u8> = ws.iter().flat_map(|w| (xs[0] * w).to_le_bytes()).collect();
            g.initializer.push(pb::TensorProto {
                name: format!("{p}/bias_scale"),
                dims: vec![ws.len() as i64],
                data_type: pb::tensor_proto::DataType::Float as i32,
                raw_data: bs,
                ..Default::default()
            });
            let mut dq_b = node(
                "DequantizeLinear",
                format!("{p}/b"),
                vec![i(8), format!("{p}/bias_scale")],
                format!("{p}/b"),
            );
            dq_b.attribute = dq_w.attribute.clone();
            extra.push(dq_b);
            core_in.push(format!("{p}/b"));
        }
        let mut core = node(
            if conv { "Conv" } else { "Gemm" },
            n.name.clone(),
            core_in,
            format!("{p}/y"),
        );
        if conv {
            core.attribute = n.attribute.clone();
        }
        let q = node(
            "QuantizeLinear",
            format!("{p}/q"),
            vec![format!("{p}/y"), i(6), i(7)],
            n.output[0].clone(),
        );
        g.node.extend([dq_x, dq_w]);
        g.node.extend(extra);
        g.node.extend([core, q]);
    }
    Ok(Some(g))
}

pub fn import_bytes(bytes: &[u8], opts: &ImportOptions) -> Result<PlanParts> {
    let model = parse(bytes)?;
    let graph = model.graph.as_ref().ok_or_else(|| malformed("no graph"))?;
    let expanded = expand_qlinear(graph)?;
    let graph = expanded.as_ref().unwrap_or(graph);
    let mut lw = Lowering {
        graph,
        vals: HashMap::new(),
        consumers: HashMap::new(),
        skip: HashSet::new(),
        b: Builder {
            tensors: vec![],
            ops: vec![],
            blob: vec![],
        },
        produced: HashMap::new(),
        block_taps: vec![],
        int_names: HashSet::new(),
    };
    for t in &graph.initializer {
        lw.vals.insert(t.name.clone(), Val::Const(tensor_const(t)?));
    }
    for (i, n) in graph.node.iter().enumerate() {
        // Every lowering reads the first output's name.
        if n.output.first().is_none_or(|o| o.is_empty()) {
            return Err(malformed(format!(
                "node '{}' ({}) has no output",
                n.name, n.op_type
            )));
        }
        for inp in &n.input {
            lw.consumers.entry(inp.clone()).or_default().push(i);
        }
    }
    let mut inputs = vec![];
    for vi in &graph.input {
        if lw.vals.contains_key(&vi.name) {
            continue;
        }
        let shape = match opts.inputs.iter().find(|(n, _)| n == &vi.name) {
            Some((_, s)) => s.clone(),
            None => value_info_shape(vi)?,
        };
        // Any batch for the float sequence ops; the convolution and pooling lowerings
        // refuse a batch other than 1 themselves.
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::ShapeMismatch {
                op: format!("input '{}'", vi.name),
                expected: vec![1],
                got: shape,
            });
        }
        use pb::type_proto::Value as TV;
        let elem = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TV::TensorType(t)) => t.elem_type,
            _ => 1,
        };
        if !matches!(elem, 1 | 10 | 11 | 16) {
            lw.int_names.insert(vi.name.clone());
        }
        let t = lw.b.tensor(&vi.name, DType::F32, shape, false, None);
        lw.vals.insert(vi.name.clone(), Val::Act(t));
        inputs.push(Port {
            name: vi.name.clone(),
            tensor: t,
        });
    }
    for i in 0..graph.node.len() {
        lw.node(i)?;
    }
    let mut outputs = vec![];
    for o in &graph.output {
        let v = lw
            .vals
            .get(&o.name)
            .cloned()
            .ok_or_else(|| malformed(format!("output '{}' is never produced", o.name)))?;
        let t = match v {
            Val::Deq(t) => {
                let ti = lw.b.tensors[t as usize].clone();
                let shape = if ti.nhwc
                    && ti.shape.iter().skip(1).take(2).all(|&d| d == 1)
                    && ti.shape.len() == 4
                {
                    vec![ti.shape[0], ti.shape[3]]
                } else {
                    ti.logical_shape()
                };
                let y = lw.b.tensor(&o.name, DType::F32, shape, false, None);
                lw.b.ops.push(Op::Dequantize {
                    x: t,
                    y,
                    q: Q8 {
                        scale: ti.scale,
                        zero: ti.zero,
                    },
                    to_nchw: ti.nhwc && ti.shape[1] * ti.shape[2] > 1,
                });
                y
            }
            Val::Act(t) => t,
            _ => return Err(malformed(format!("output '{}' is a constant", o.name))),
        };
        outputs.push(Port {
            name: o.name.clone(),
            tensor: t,
        });
    }
    let taps: Vec<Port> = match &opts.taps {
        Taps::None => vec![],
        Taps::Blocks => lw
            .block_taps
            .iter()
            .map(|(n, t)| Port {
                name: n.clone(),
                tensor: *t,
            })
            .collect(),
        Taps::Names(names) => names
            .iter()
            .map(|n| {
                match lw
                    .produced
                    .get(n)
                    .copied()
                    .or_else(|| match lw.vals.get(n) {
                        Some(Val::Act(t)) | Some(Val::Deq(t)) => Some(*t),
                        _ => None,
                    }) {
                    Some(t) => Ok(Port {
                        name: n.clone(),
                        tensor: t,
                    }),
                    None => Err(Error::Invalid {
                        what: format!("tap '{n}' names no tensor of the graph"),
                    }),
                }
            })
            .collect::<Result<_>>()?,
    };
    let pin_start: Vec<u32> = inputs.iter().map(|p| p.tensor).collect();
    let pin_end: Vec<u32> = outputs.iter().chain(&taps).map(|p| p.tensor).collect();
    fuse_luts(&mut lw.b, &pin_start, &pin_end);
    let Builder {
        mut tensors,
        ops,
        blob,
    } = lw.b;
    let arena_bytes = plan_arena(&mut tensors, &ops, &pin_start, &pin_end);
    Ok(PlanParts {
        tensors,
        ops,
        inputs,
        outputs,
        taps,
        meta: opts.meta.clone(),
        blob,
        arena_bytes,
    })
}

/// NumPy broadcast of two shapes, ≤ 4 axes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    if r > 4 {
        return None;
    }
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn pad4(s: &[usize]) -> [usize; 4] {
    let mut d = [1; 4];
    d[4 - s.len()..].copy_from_slice(s);
    d
}

/// Element strides of an operand of shape `s` read over the broadcast shape `out`.
fn strides4(s: &[usize], out: &[usize]) -> [u32; 4] {
    let (d, o) = (pad4(s), pad4(out));
    let mut st = [0u32; 4];
    let mut acc = 1usize;
    for i in (0..4).rev() {
        st[i] = if d[i] == 1 && o[i] != 1 {
            0
        } else {
            acc as u32
        };
        acc *= d[i];
    }
    st
}

/// A table applied to a table's output, where nothing else reads the middle tensor, is
/// one table: `t2[t1[x]]` (e.g. LeakyReLU then the clamp `Max(x, -0.4)`).
fn fuse_luts(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    let mut j = 0;
    while j < b.ops.len() {
        let Op::LutU8 {
            x: mid,
            y,
            channels: c2,
            table: t2,
        } = b.ops[j]
        else {
            j += 1;
            continue;
        };
        let producer = b.ops[..j].iter().rposition(|op| op.io().1.contains(&mid));
        let readers = b.ops.iter().filter(|op| op.io().0.contains(&mid)).count();
        let pinned = pin_start.contains(&mid) || pin_end.contains(&mid);
        let fusable = match producer.map(|i| &b.ops[i]) {
            Some(&Op::LutU8 { channels: c1, .. }) => {
                readers == 1 && !pinned && (c1 == c2 || c1 == 1 || c2 == 1)
            }
            _ => false,
        };
        if !fusable {
            j += 1;
            continue;
        }
        let i = producer.unwrap_or(j);
        let Op::LutU8 {
            x,
            channels: c1,
            table: t1,
            ..
        } = b.ops[i]
        else {
            unreachable!("checked above")
        };
        let c = c1.max(c2) as usize;
        let (a, z) = (
            b.blob[t1.off as usize..][..t1.len as usize].to_vec(),
            b.blob[t2.off as usize..][..t2.len as usize].to_vec(),
        );
        let table: Vec<u8> = (0..c * 256)
            .map(|k| {
                let (ch, v) = (k / 256, k % 256);
                let m = a[(ch % c1 as usize) * 256 + v] as usize;
                z[(ch % c2 as usize) * 256 + m]
            })
            .collect();
        let table = b.push(&table);
        b.ops[j] = Op::LutU8 {
            x,
            y,
            channels: c as u32,
            table,
        };
        b.ops.remove(i);
        // The op now at j-1 may fuse with its own producer: look again from there.
        j = j.saturating_sub(1);
    }
}

fn value_info_shape(vi: &pb::ValueInfoProto) -> Result<Vec<usize>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TV;
    let err = |why: &str| Error::ShapeMismatch {
        op: format!(
            "input '{}' ({why}; fix it with --input NAME:SHAPE)",
            vi.name
        ),
        expected: vec![],
        got: vec![],
    };
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TV::TensorType(t)) => t,
        _ => return Err(err("no tensor type")),
    };
    let dims = &tt.shape.as_ref().ok_or_else(|| err("no shape"))?.dim;
    dims.iter()
        .enumerate()
        .map(|(i, d)| match d.value {
            Some(Value::DimValue(v)) if v > 0 => Ok(v as usize),
            _ if i == 0 => Ok(1),
            _ => Err(err("symbolic dimension")),
        })
        .collect()
}
