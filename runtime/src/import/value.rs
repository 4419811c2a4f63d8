//! The values the lowering tracks per ONNX name (constants, run-time tensors, quantised
//! views and the partial patterns that later nodes complete), the plan builder and the
//! attribute readers every op family uses.

use crate::error::{Error, Result};
use crate::plan::{Blob, DType, Op, TensorInfo, Q8};
use edgetune_kernels::pack;
use tract_onnx::pb;

#[derive(Clone, Debug)]
pub(super) enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

#[derive(Clone, Debug)]
pub(super) struct Const {
    pub(super) dims: Vec<usize>,
    pub(super) data: Data,
}

impl Const {
    pub(super) fn f32s(&self) -> Option<Vec<f32>> {
        Some(match &self.data {
            Data::F32(v) => v.clone(),
            _ => return None,
        })
    }
    pub(super) fn ints(&self) -> Vec<i64> {
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
pub(super) enum Val {
    Const(Const),
    /// Dequantised constant: integer values with per-axis scale and zero point (one
    /// scale, or one per index of axis `axis`).
    QConst {
        dims: Vec<usize>,
        q: Vec<i64>,
        scale: Vec<f32>,
        zero: Vec<i64>,
        axis: usize,
    },
    /// A runtime tensor.
    Act(u32),
    /// The dequantised view of a quantised runtime tensor.
    Deq(u32),
    /// Float elementwise function of a u8 tensor, as a table of `channels`·256 values
    /// (per NHWC channel); lowered to one `LutU8` at the next QuantizeLinear.
    Mapped(Mapped),
    /// A feature map padded with zeros on the spatial axes (`pads`: top, left, bottom,
    /// right), which only a convolution reads (after a QuantizeLinear when `t` is a float
    /// NCHW tensor); `deq` for the dequantised view of a quantised map.
    Padded {
        t: u32,
        pads: [usize; 4],
        deq: bool,
    },
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

impl Val {
    /// The shape and values of a quantised constant, dequantised (per tensor, or per
    /// index of its axis).
    pub(super) fn dequantised_qconst(&self) -> Option<(Vec<usize>, Vec<f32>)> {
        let Val::QConst {
            dims,
            q,
            scale,
            zero,
            axis,
        } = self
        else {
            return None;
        };
        if zero.is_empty() || scale.is_empty() {
            return None;
        }
        let inner: usize = dims.get(*axis + 1..).map_or(1, |d| d.iter().product());
        let v = q
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let k = if scale.len() == 1 {
                    0
                } else {
                    (i / inner.max(1)) % scale.len()
                };
                (x - zero[k.min(zero.len() - 1)]) as f32 * scale[k]
            })
            .collect();
        Some((dims.clone(), v))
    }
}

pub(super) fn malformed(what: impl Into<String>) -> Error {
    Error::Malformed { what: what.into() }
}

pub(super) fn tensor_const(t: &pb::TensorProto) -> Result<Const> {
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
        // Booleans as the integers 0 and 1.
        9 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| (x != 0) as i64).collect()
            } else {
                raw.iter().map(|&x| (x != 0) as i64).collect()
            };
            check(v.len())?;
            Data::I64(v)
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

pub(super) struct Builder {
    pub(super) tensors: Vec<TensorInfo>,
    pub(super) ops: Vec<Op>,
    pub(super) blob: Vec<u8>,
}

impl Builder {
    pub(super) fn tensor(
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
    pub(super) fn push_packed_i8(
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

    pub(super) fn push<T: bytemuck::Pod>(&mut self, v: &[T]) -> Blob {
        let off = self.blob.len().div_ceil(64) * 64;
        self.blob.resize(off, 0);
        self.blob.extend_from_slice(bytemuck::cast_slice(v));
        Blob {
            off: off as u32,
            len: (self.blob.len() - off) as u32,
        }
    }
}

pub(super) fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

pub(super) fn attr_ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

pub(super) fn attr_i(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

#[derive(Clone, Debug)]
pub(super) struct Mapped {
    pub(super) t: u32,
    pub(super) table: Vec<f32>,
    pub(super) channels: usize,
    /// Non-decreasing in the code for every channel, so max pooling commutes with it.
    pub(super) monotone: bool,
}

impl Mapped {
    pub(super) fn value(&self, c: usize, code: usize) -> f32 {
        self.table[(c % self.channels) * 256 + code]
    }
}
