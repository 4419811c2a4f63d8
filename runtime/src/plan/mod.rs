//! The compiled backbone: tensors, ops, packed weights, arena size, taps.
//!
//! File layout (`.etm`, little-endian): a 64-byte [`Header`], the metadata (tensors, ops,
//! names) at byte 64, then the weight blob at a 64-aligned offset. Every weight range in
//! the blob is 64-aligned too, so a 64-aligned file image is used in place.

use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

mod ops;
use alloc::string::String;
use alloc::vec::Vec;
use edgetune_kernels::reference::ConvGeom;
pub use ops::{chain, Op, CHAIN_WORDS};

pub const MAGIC: [u8; 4] = *b"ETM\0";
/// The plan format's version as a literal, for static refusal text.
macro_rules! plan_version {
    () => {
        1
    };
}
pub const VERSION: u32 = plan_version!();
/// Largest arena a plan may claim unless the caller allows more.
pub const DEFAULT_ARENA_LIMIT: usize = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 4],
    pub version: u32,
    pub meta_len: u32,
    pub reserved: u32,
    pub blob_off: u64,
    pub blob_len: u64,
    pub arena_bytes: u64,
    /// FNV-1a 64 of every byte after the header.
    pub checksum: u64,
    /// Identifies the backbone: adapters are bound to it.
    pub hash: [u8; 16],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DType {
    F32 = 0,
    U8 = 1,
    I8 = 2,
    I32 = 3,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::U8 | DType::I8 => 1,
        }
    }
    fn from_u8(v: u8) -> Result<DType> {
        Ok(match v {
            0 => DType::F32,
            1 => DType::U8,
            2 => DType::I8,
            3 => DType::I32,
            _ => return Err(bad("dtype out of range")),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Physical shape; 4-D activations are NHWC (see `nhwc`).
    pub shape: Vec<usize>,
    pub nhwc: bool,
    pub scale: f32,
    pub zero: i32,
    /// Byte offset in the arena.
    pub offset: usize,
}

impl TensorInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> usize {
        self.len() * self.dtype.size()
    }
    /// Shape as ONNX sees it (NCHW for 4-D).
    pub fn logical_shape(&self) -> Vec<usize> {
        let s = &self.shape;
        if self.nhwc && s.len() == 4 {
            alloc::vec![s[0], s[3], s[1], s[2]]
        } else {
            s.clone()
        }
    }
}

/// Most axes a plan's tensor has.
pub const MAX_RANK: usize = 8;

/// A tensor's physical shape held inline (at most [`MAX_RANK`] axes): no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

impl Shape {
    /// `None` above [`MAX_RANK`] axes.
    pub fn new(dims: &[usize]) -> Option<Shape> {
        let mut s = Shape {
            dims: [0; MAX_RANK],
            rank: dims.len() as u8,
        };
        s.dims.get_mut(..dims.len())?.copy_from_slice(dims);
        Some(s)
    }
}

impl core::ops::Deref for Shape {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }
}

/// What the executor and the plan's checks read of a tensor: all of [`TensorInfo`] but
/// its name, with no heap (a plan read in place decodes it from the image on each use).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorMeta {
    pub dtype: DType,
    /// Physical shape; 4-D activations are NHWC (see `nhwc`).
    pub shape: Shape,
    pub nhwc: bool,
    pub scale: f32,
    pub zero: i32,
    /// Byte offset in the arena.
    pub offset: usize,
}

impl TensorMeta {
    /// No elements at offset 0: what a tensor id that no plan check let through reads as.
    const EMPTY: TensorMeta = TensorMeta {
        dtype: DType::F32,
        shape: Shape {
            dims: [0; MAX_RANK],
            rank: 1,
        },
        nhwc: false,
        scale: 1.0,
        zero: 0,
        offset: 0,
    };
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> usize {
        self.len() * self.dtype.size()
    }
    /// Shape as ONNX sees it (NCHW for 4-D).
    pub fn logical_shape(&self) -> Vec<usize> {
        let s = &self.shape;
        if self.nhwc && s.len() == 4 {
            alloc::vec![s[0], s[3], s[1], s[2]]
        } else {
            s.to_vec()
        }
    }
}

/// A byte range of the weight blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Blob {
    pub off: u32,
    pub len: u32,
}

/// Quantisation of one u8 tensor, as the kernels take it.
pub type Q8 = edgetune_kernels::elementwise::Q8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Unary {
    Relu = 0,
    Relu6 = 1,
    Sigmoid = 2,
    HardSwish = 3,
    GeluErf = 4,
    Erf = 5,
    Sqrt = 6,
    /// A copy: Reshape, Flatten, Unsqueeze, Squeeze, Cast between float views.
    Identity = 7,
    Tanh = 8,
    Exp = 9,
    Log = 10,
    Abs = 11,
    Neg = 12,
    /// `ln(1 + e^x)`.
    Softplus = 13,
    Reciprocal = 14,
    Floor = 15,
    Ceil = 16,
    /// Halves to even, as ONNX's Round.
    Round = 17,
    /// GELU with the tanh approximation.
    GeluTanh = 18,
}

impl Unary {
    /// Every function, indexed by its tag.
    pub const ALL: [Unary; 19] = [
        Unary::Relu,
        Unary::Relu6,
        Unary::Sigmoid,
        Unary::HardSwish,
        Unary::GeluErf,
        Unary::Erf,
        Unary::Sqrt,
        Unary::Identity,
        Unary::Tanh,
        Unary::Exp,
        Unary::Log,
        Unary::Abs,
        Unary::Neg,
        Unary::Softplus,
        Unary::Reciprocal,
        Unary::Floor,
        Unary::Ceil,
        Unary::Round,
        Unary::GeluTanh,
    ];
}

/// A float operand: a runtime tensor or a constant in the weight blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    T(u32),
    C(Blob),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BinOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Max = 4,
    Min = 5,
    /// `a^b` (powf).
    Pow = 6,
    /// `a < 0 ? a·b : a` (PRelu, LeakyRelu with a constant slope).
    PRelu = 7,
    /// `a < 0 ? b·(e^a - 1) : a`.
    Elu = 8,
    /// Comparisons: 1.0 where true, 0.0 where not (ONNX booleans as f32).
    Eq = 9,
    Ne = 10,
    Lt = 11,
    Le = 12,
    Gt = 13,
    Ge = 14,
    /// `a` where it is a number, `b` where it is NaN (Where(IsNaN(a), b, a)).
    NanTo = 15,
}

impl BinOp {
    /// Every operation, indexed by its tag.
    pub const ALL: [BinOp; 16] = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Max,
        BinOp::Min,
        BinOp::Pow,
        BinOp::PRelu,
        BinOp::Elu,
        BinOp::Eq,
        BinOp::Ne,
        BinOp::Lt,
        BinOp::Le,
        BinOp::Gt,
        BinOp::Ge,
        BinOp::NanTo,
    ];
}

impl Src {
    pub fn tensor(self) -> Option<u32> {
        match self {
            Src::T(t) => Some(t),
            Src::C(_) => None,
        }
    }
}

/// A named tensor the plan exposes.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub name: String,
    pub tensor: u32,
}

/// Bytes aligned to 64, so weights can be viewed as i16/i32/f32 in place.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
pub struct Line(pub [u8; 64]);

#[derive(Clone)]
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            lines: alloc::vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }
    pub fn from_slice(b: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(b.len());
        a.as_mut().copy_from_slice(b);
        a
    }
    #[allow(clippy::should_implement_trait)]
    pub fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
    #[allow(clippy::should_implement_trait)]
    pub fn as_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

enum Bytes<'a> {
    Borrowed(&'a [u8]),
    Owned(AlignedBytes),
}

/// A loaded plan. Borrows a 64-aligned file image in place, or owns an aligned copy.
pub struct Plan<'a> {
    pub header: Header,
    pub tensors: Vec<TensorInfo>,
    pub ops: Vec<Op>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub taps: Vec<Port>,
    /// Free-form key/value pairs: preprocessing, source model, default taps.
    pub meta: Vec<(String, String)>,
    bytes: Bytes<'a>,
}

pub(crate) fn bad(detail: &'static str) -> Error {
    Error::BadFile {
        what: "plan",
        detail: detail.into(),
    }
}

pub fn fnv64(seed: u64, data: &[u8]) -> u64 {
    let mut h = seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// Everything the importer produces, before serialisation.
pub struct PlanParts {
    pub tensors: Vec<TensorInfo>,
    pub ops: Vec<Op>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub taps: Vec<Port>,
    pub meta: Vec<(String, String)>,
    pub blob: Vec<u8>,
    pub arena_bytes: usize,
}

impl PlanParts {
    /// Serialises to the `.etm` byte layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.tensors.len() as u32);
        for t in &self.tensors {
            w.str(&t.name);
            w.u8(t.dtype as u8);
            w.u8(t.nhwc as u8);
            w.f32(t.scale);
            w.i32(t.zero);
            w.u64(t.offset as u64);
            w.u32(t.shape.len() as u32);
            for &d in &t.shape {
                w.u64(d as u64);
            }
        }
        w.u32(self.ops.len() as u32);
        for op in &self.ops {
            op.write(&mut w);
        }
        for ports in [&self.inputs, &self.outputs, &self.taps] {
            w.u32(ports.len() as u32);
            for p in ports {
                w.str(&p.name);
                w.u32(p.tensor);
            }
        }
        w.u32(self.meta.len() as u32);
        for (k, v) in &self.meta {
            w.str(k);
            w.str(v);
        }
        let meta = w.into_inner();
        let blob_off = (64 + meta.len()).div_ceil(64) * 64;
        let mut out = alloc::vec![0u8; blob_off + self.blob.len()];
        out[64..64 + meta.len()].copy_from_slice(&meta);
        out[blob_off..].copy_from_slice(&self.blob);
        let content = fnv64(FNV_BASIS, &out[64..]);
        let mut hash = [0u8; 16];
        hash[..8].copy_from_slice(&content.to_le_bytes());
        hash[8..]
            .copy_from_slice(&fnv64(content ^ 0x9e37_79b9_7f4a_7c15, &out[64..]).to_le_bytes());
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            meta_len: meta.len() as u32,
            reserved: 0,
            blob_off: blob_off as u64,
            blob_len: self.blob.len() as u64,
            arena_bytes: self.arena_bytes as u64,
            checksum: content,
            hash,
        };
        out[..64].copy_from_slice(bytemuck::bytes_of(&header));
        out
    }
}

impl<'a> Plan<'a> {
    /// Uses `bytes` in place when it is 64-aligned, else copies it once.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Plan<'a>> {
        if (bytes.as_ptr() as usize).is_multiple_of(64) {
            Plan::loaded(Plan::parse(Bytes::Borrowed(bytes)))
        } else {
            Plan::loaded(Plan::parse(Bytes::Owned(AlignedBytes::from_slice(bytes))))
        }
    }

    pub fn from_owned(bytes: AlignedBytes) -> Result<Plan<'static>> {
        Plan::loaded(Plan::parse(Bytes::Owned(bytes)))
    }

    /// The log point of every load.
    fn loaded<'b>(p: Result<Plan<'b>>) -> Result<Plan<'b>> {
        match &p {
            Ok(p) => crate::logging::info!(
                "plan loaded: {} ops, {} tensors, arena {} B, weights {} B ({})",
                p.ops.len(),
                p.tensors.len(),
                p.arena_bytes(),
                p.header.blob_len,
                if matches!(p.bytes, Bytes::Borrowed(_)) {
                    "in place"
                } else {
                    "copied"
                }
            ),
            Err(e) => crate::logging::warning!("plan rejected: {}", e),
        }
        p
    }

    fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(b) => b.as_ref(),
        }
    }

    fn parse(bytes: Bytes<'a>) -> Result<Plan<'a>> {
        let data = match &bytes {
            Bytes::Borrowed(b) => *b,
            Bytes::Owned(b) => b.as_ref(),
        };
        let header = check_header(data)?;
        let mut r = Reader::new(&data[64..64 + header.meta_len as usize]);
        let nt = r.count(16)?;
        let mut tensors = Vec::with_capacity(nt);
        for _ in 0..nt {
            let (name, t) = read_tensor(&mut r, &header)?;
            tensors.push(TensorInfo {
                name: name.into(),
                dtype: t.dtype,
                shape: t.shape.to_vec(),
                nhwc: t.nhwc,
                scale: t.scale,
                zero: t.zero,
                offset: t.offset,
            });
        }
        let no = r.count(8)?;
        let mut ops = Vec::with_capacity(no);
        for _ in 0..no {
            ops.push(Op::read(&mut r)?);
        }
        let mut ports = [Vec::new(), Vec::new(), Vec::new()];
        for p in ports.iter_mut() {
            let n = r.count(8)?;
            for _ in 0..n {
                let name = r.str()?;
                let tensor = r.u32()?;
                p.push(Port { name, tensor });
            }
        }
        let nm = r.count(8)?;
        let mut meta = Vec::with_capacity(nm);
        for _ in 0..nm {
            meta.push((r.str()?, r.str()?));
        }
        let [inputs, outputs, taps] = ports;
        let plan = Plan {
            header,
            tensors,
            ops,
            inputs,
            outputs,
            taps,
            meta,
            bytes,
        };
        let ports = plan.inputs.iter().chain(&plan.outputs).chain(&plan.taps);
        validate(
            &plan,
            || plan.ops.iter().map(|op| Ok(op.clone())),
            ports.map(|p| p.tensor),
        )?;
        Ok(plan)
    }

    /// Each op's tensors have the element types and sizes the executor indexes them by.
    fn validate_shapes<P: Tables + ?Sized>(p: &P, op: &Op) -> Result<()> {
        use DType::{F32, U8};
        let t = |id: u32| p.tensor(id);
        let is = |id: u32, d: DType| t(id).dtype == d;
        let same = |a: u32, b: u32| t(a).len() == t(b).len();
        let gap_ok = |x: u32, y: u32| {
            let s = &t(x).shape;
            s.len() == 4 && t(y).len() >= s[3] && s[1] * s[2] * s[3] <= t(x).len()
        };
        let ok = match *op {
            Op::Quantize { x, y, .. } => is(x, F32) && is(y, U8) && same(x, y),
            Op::Dequantize { x, y, .. } => is(x, U8) && is(y, F32) && same(x, y),
            Op::ConvI8 { x, y, scratch, .. } => {
                is(x, U8) && (is(y, U8) || is(y, F32)) && scratch.is_none_or(|s| is(s, U8))
            }
            Op::DwI8 { x, y, .. } => is(x, U8) && is(y, U8),
            Op::AddU8 { a, b, y, .. } => {
                is(a, U8) && is(b, U8) && is(y, U8) && same(a, b) && same(a, y)
            }
            Op::GapU8 { x, y, .. } => is(x, U8) && is(y, U8) && gap_ok(x, y),
            Op::GapF32 { x, y } => is(x, F32) && is(y, F32) && gap_ok(x, y),
            Op::ConvF32 { x, y, scratch, .. } => {
                is(x, F32) && is(y, F32) && scratch.is_none_or(|s| is(s, F32))
            }
            Op::UnaryF32 { x, y, .. } => is(x, F32) && is(y, F32) && same(x, y),
            // Inputs as long as y or repeated along it; the program is checked as it runs.
            Op::ChainF32 { a, b, y, .. } => {
                let fits = |x: u32| {
                    is(x, F32) && !t(x).is_empty() && t(y).len().is_multiple_of(t(x).len())
                };
                is(y, F32) && fits(a) && b.is_none_or(fits)
            }
            // The kernel checks the geometry against the buffers it is given.
            Op::MaxPoolU8 { x, y, .. } => is(x, U8) && is(y, U8),
            // The float sequence ops check their sizes against the buffers when they run.
            Op::BinF32 { a, b, y, .. } => {
                [a, b].iter().filter_map(|s| s.tensor()).all(|t| is(t, F32)) && is(y, F32)
            }
            Op::WhereF32 { c, a, b, y, .. } => {
                [c, a, b]
                    .iter()
                    .filter_map(|s| s.tensor())
                    .all(|t| is(t, F32))
                    && is(y, F32)
            }
            // Offsets are checked against the input when the op runs.
            Op::Take { x, y, run, .. } => {
                (is(x, F32) || is(x, U8)) && t(x).dtype == t(y).dtype && run > 0
            }
            Op::PoolF32 { x, y, .. } | Op::GroupConvF32 { x, y, .. } | Op::DwF32 { x, y, .. } => {
                is(x, F32) && is(y, F32)
            }
            Op::ClampF32 { x, y, .. }
            | Op::SumF32 { x, y, .. }
            | Op::MaxF32 { x, y, .. }
            | Op::ResizeLinearF32 { x, y, .. }
            | Op::LayerNormF32 { x, y, .. }
            | Op::SoftmaxF32 { x, y, .. }
            | Op::GatherF32 { ids: x, y, .. } => is(x, F32) && is(y, F32),
            // f32 values or u8 codes, both the same.
            Op::TransposeF32 { x, y, .. } => (is(x, F32) || is(x, U8)) && t(x).dtype == t(y).dtype,
            Op::MatMulF32 {
                a, b, y, scratch, ..
            } => is(a, F32) && is(b, F32) && is(y, F32) && is(scratch, F32),
            Op::MatMulDynI8 { x, y, scratch, .. } => is(x, F32) && is(y, F32) && is(scratch, U8),
            Op::LutU8 {
                x,
                y,
                channels,
                table,
            } => {
                is(x, U8)
                    && is(y, U8)
                    && same(x, y)
                    && (channels == 1 || t(x).shape.last() == Some(&(channels as usize)))
                    && table.len as u64 == channels as u64 * 256
            }
            Op::AddF32 { a, b, y } => {
                is(a, F32) && is(b, F32) && is(y, F32) && same(a, b) && same(a, y)
            }
            // The executor checks the scales, code values and tables against the map.
            Op::MulChanU8 {
                x, s, y, tables, ..
            } => is(x, U8) && is(s, U8) && is(y, U8) && is(tables, U8) && same(x, y),
            Op::LutF32 {
                x,
                y,
                channels,
                table,
                to_nchw,
            } => {
                is(x, U8)
                    && is(y, F32)
                    && same(x, y)
                    && (channels == 1 || t(x).shape.last() == Some(&(channels as usize)))
                    && (!to_nchw || t(x).shape.len() == 4)
                    && table.len as u64 == channels as u64 * 256 * 4
            }
            Op::Upsample {
                x,
                y,
                outer,
                h,
                w,
                inner,
                fh,
                fw,
            } => {
                let n_in = [outer, h, w, inner]
                    .iter()
                    .map(|&v| v as u64)
                    .product::<u64>();
                t(x).dtype == t(y).dtype
                    && t(x).len() as u64 == n_in
                    && t(y).len() as u64 == n_in * fh as u64 * fw as u64
            }
            Op::Dilate {
                x,
                y,
                h,
                w,
                c,
                sh,
                sw,
                fill,
            } => {
                let (h, w, c, sh, sw) = (h as u64, w as u64, c as u64, sh as u64, sw as u64);
                // Each image of the batch (the first axis of both) dilated alone.
                let nb = t(x).shape.first().map_or(1, |&n| n as u64);
                let u8s = t(x).dtype == DType::U8 && t(y).dtype == DType::U8;
                (u8s && fill <= 255 || t(x).dtype == DType::F32 && t(y).dtype == DType::F32)
                    && h > 0
                    && w > 0
                    && sh > 0
                    && sw > 0
                    && t(y).shape.first().map_or(1, |&n| n as u64) == nb
                    && t(x).len() as u64 == nb * h * w * c
                    && t(y).len() as u64 == nb * ((h - 1) * sh + 1) * ((w - 1) * sw + 1) * c
            }
            Op::Pad {
                x,
                y,
                dims,
                before,
                after,
                ..
            } => {
                let n_in: u64 = dims.iter().map(|&d| d as u64).product();
                let n_out: u64 = (0..4)
                    .map(|i| dims[i] as u64 + before[i] as u64 + after[i] as u64)
                    .product();
                t(x).dtype == t(y).dtype && t(x).len() as u64 == n_in && t(y).len() as u64 == n_out
            }
            Op::Slice {
                x,
                y,
                outer,
                inner,
                off,
                len,
            } => {
                let (o, i) = (outer as u64, inner as u64);
                t(x).dtype == t(y).dtype
                    && t(x).len() as u64 == o * i
                    && t(y).len() as u64 == o * len as u64
                    && off as u64 + len as u64 <= i
            }
            Op::Concat {
                a,
                b,
                y,
                outer,
                ia,
                ib,
                ta,
                tb,
            } => {
                let d = t(y).dtype;
                let (o, ia, ib) = (outer as u64, ia as u64, ib as u64);
                let table_ok = |tb: Blob| tb.len == 0 || (d == U8 && tb.len == 256);
                is(a, d)
                    && is(b, d)
                    && t(a).len() as u64 == o * ia
                    && t(b).len() as u64 == o * ib
                    && t(y).len() as u64 == o * (ia + ib)
                    && table_ok(ta)
                    && table_ok(tb)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::BadFile {
                what: "plan",
                detail: op.misfit().into(),
            })
        }
    }

    /// Int8 ops cannot overflow their i32 accumulators: with u8 activations (zero points
    /// in 0..=255), i8 weights and column sums that match the weights, `Σ(x - z_x)·w` is
    /// at most 255·128·k < 2^30 for k ≤ I8_MAX_K = 2^15, and a bias within ±2^30 keeps the
    /// sum below 2^31 (2 143 289 344 at the extremes). A plan that breaks any of these is
    /// refused here.
    fn validate_int8<P: Tables + ?Sized>(p: &P, op: &Op) -> Result<()> {
        const BIAS_MAX: i64 = 1 << 30;
        let ints = |b: Blob, n: usize| -> Result<_> {
            let bytes = p.blob_bytes(b);
            if bytes.len() < 4 * n {
                return Err(bad("int8 op: weight range too short"));
            }
            Ok(bytes[..4 * n]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        };
        let zeros_ok = |zs: &[i32]| zs.iter().all(|z| (0..=255).contains(z));
        // Packed weights long enough, and column sums equal to the weights' (the
        // accumulator bound above relies on them).
        let packed_i8_ok = |w: Blob,
                            colsum: Blob,
                            k: usize,
                            n: usize,
                            (short, sums): (&'static str, &'static str)|
         -> Result<()> {
            let wb = p.blob_bytes(w);
            if wb.len() < edgetune_kernels::pack::packed_i8_len(k, n) {
                return Err(bad(short));
            }
            for (c, want) in ints(colsum, n)?.enumerate() {
                let got: i32 = (0..k)
                    .map(|kk| wb[edgetune_kernels::pack::i8_index(k, kk, c)] as i8 as i32)
                    .sum();
                if got != want {
                    return Err(bad(sums));
                }
            }
            Ok(())
        };
        match *op {
            Op::ConvI8 {
                ref geom,
                x_zero,
                y_zero,
                w,
                colsum,
                bias,
                ..
            } => {
                let groups = geom.groups.max(1);
                let k = geom.kh.saturating_mul(geom.kw).saturating_mul(geom.ic) / groups;
                let n = geom.oc;
                if !zeros_ok(&[x_zero, y_zero]) || k > edgetune_kernels::I8_MAX_K || n > 1 << 20 {
                    return Err(bad("int8 convolution: zero point or depth out of range"));
                }
                packed_i8_ok(
                    w,
                    colsum,
                    k,
                    n,
                    (
                        "int8 convolution: weights too short",
                        "int8 convolution: column sums do not match the weights",
                    ),
                )?;
                if ints(bias, n)?.any(|b| (b as i64).abs() > BIAS_MAX) {
                    return Err(bad("int8 convolution: bias beyond ±2^30"));
                }
            }
            Op::MatMulDynI8 {
                k, n, w, colsum, ..
            } => {
                let (k, n) = (k as usize, n as usize);
                if k > edgetune_kernels::I8_MAX_K || n > 1 << 20 {
                    return Err(bad("dynamic int8 matmul: depth out of range"));
                }
                packed_i8_ok(
                    w,
                    colsum,
                    k,
                    n,
                    (
                        "dynamic int8 matmul: weights too short",
                        "dynamic int8 matmul: column sums do not match the weights",
                    ),
                )?;
            }
            Op::DwI8 {
                ref geom,
                x_zero,
                y_zero,
                w,
                bias,
                ..
            } => {
                let taps = geom.kh.saturating_mul(geom.kw);
                let c = geom.oc;
                if !zeros_ok(&[x_zero, y_zero]) || taps > 1024 || c > 1 << 20 {
                    return Err(bad("depthwise: zero point or kernel size out of range"));
                }
                let wb = p.blob_bytes(w);
                if wb.len() < 2 * taps * c {
                    return Err(bad("depthwise: weights too short"));
                }
                if wb[..2 * taps * c]
                    .chunks_exact(2)
                    .any(|v| !(-128..=127).contains(&i16::from_le_bytes([v[0], v[1]])))
                {
                    return Err(bad("depthwise: weight outside int8"));
                }
                if ints(bias, c)?.any(|b| (b as i64).abs() > BIAS_MAX) {
                    return Err(bad("depthwise: bias beyond ±2^30"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Multiply-adds (or element operations) one run performs, saturating: lets a caller
    /// refuse a plan that asks for more compute than it will spend.
    pub fn macs(&self) -> u64 {
        let len = |t: u32| self.tensors[t as usize].len() as u64;
        let conv = |g: &ConvGeom| {
            [g.oh(), g.ow(), g.oc, g.kh, g.kw, g.ic / g.groups.max(1)]
                .iter()
                .fold(1u64, |a, &d| a.saturating_mul(d as u64))
        };
        self.ops
            .iter()
            .map(|op| match *op {
                Op::ConvI8 { ref geom, .. } | Op::ConvF32 { ref geom, .. } => conv(geom),
                Op::DwI8 { ref geom, .. } => [geom.oh(), geom.ow(), geom.oc, geom.kh, geom.kw]
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64)),
                Op::MaxPoolU8 { ref geom, .. } => [geom.oh(), geom.ow(), geom.ic, geom.kh, geom.kw]
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64)),
                // Loops run over the op's own sizes, whatever the tensors hold.
                Op::BinF32 { dims, .. }
                | Op::TransposeF32 { dims, .. }
                | Op::WhereF32 { dims, .. } => {
                    dims.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
                }
                Op::GroupConvF32 { ref geom, .. } => [
                    geom.oh(),
                    geom.ow(),
                    geom.oc,
                    geom.ic / geom.groups.max(1),
                    geom.kh,
                    geom.kw,
                ]
                .iter()
                .fold(1u64, |a, &d| a.saturating_mul(d as u64)),
                Op::PoolF32 { ref geom, .. } | Op::DwF32 { ref geom, .. } => {
                    [geom.oh(), geom.ow(), geom.ic, geom.kh, geom.kw]
                        .iter()
                        .fold(1u64, |a, &d| a.saturating_mul(d as u64))
                }
                Op::ResizeLinearF32 { outer, oh, ow, .. } => [outer, oh, ow]
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64)),
                Op::SumF32 {
                    outer, len, inner, ..
                }
                | Op::MaxF32 {
                    outer, len, inner, ..
                } => [outer, len, inner]
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64)),
                Op::MatMulF32 { batch, m, k, n, .. } => [batch, m, k, n]
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64)),
                Op::MatMulDynI8 { m, k, n, .. } => [m, k, n]
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64)),
                _ => {
                    let (i, o) = op.io();
                    i.iter().chain(o.iter()).map(|&t| len(t)).sum()
                }
            })
            .fold(0u64, |a, m| a.saturating_add(m))
    }

    pub fn hash(&self) -> [u8; 16] {
        self.header.hash
    }

    pub fn arena_bytes(&self) -> usize {
        self.header.arena_bytes as usize
    }

    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn blob_bytes(&self, b: Blob) -> &[u8] {
        Tables::blob_bytes(self, b)
    }

    pub fn blob<T: bytemuck::Pod>(&self, b: Blob) -> &[T] {
        Tables::blob(self, b)
    }

    pub fn tap(&self, name: &str) -> Option<&TensorInfo> {
        self.taps
            .iter()
            .find(|p| p.name == name)
            .map(|p| &self.tensors[p.tensor as usize])
    }

    /// Parameters held in the blob (weights and per-channel data), in bytes.
    pub fn weight_bytes(&self) -> usize {
        self.header.blob_len as usize
    }
}

/// What the executor and the plan's checks read of a loaded plan, whether its tables were
/// decoded once into the heap ([`Plan`]) or are read in place from the image
/// ([`PlanView`]).
pub trait Tables {
    fn header(&self) -> &Header;
    /// The whole plan image (header, metadata, weights).
    fn image(&self) -> &[u8];
    fn tensor_count(&self) -> u32;
    /// Tensor `id`. Loading checked every id an op or a port names; any other id reads as
    /// an empty tensor at offset 0, which every kernel refuses by length.
    fn tensor(&self, id: u32) -> TensorMeta;

    /// A validated weight range; an empty slice for a range outside the blob.
    fn blob_bytes(&self, b: Blob) -> &[u8] {
        let off = self.header().blob_off as usize + b.off as usize;
        self.image().get(off..off + b.len as usize).unwrap_or(&[])
    }

    fn blob<T: bytemuck::Pod>(&self, b: Blob) -> &[T] {
        // Ranges were validated and are 64-aligned in a 64-aligned image; a length that is
        // not a multiple of T yields an empty slice, which the kernels reject by length.
        bytemuck::try_cast_slice(self.blob_bytes(b)).unwrap_or(&[])
    }
}

impl Tables for Plan<'_> {
    fn header(&self) -> &Header {
        &self.header
    }
    fn image(&self) -> &[u8] {
        self.data()
    }
    fn tensor_count(&self) -> u32 {
        self.tensors.len() as u32
    }
    fn tensor(&self, id: u32) -> TensorMeta {
        self.tensors
            .get(id as usize)
            .and_then(|t| {
                Some(TensorMeta {
                    dtype: t.dtype,
                    shape: Shape::new(&t.shape)?,
                    nhwc: t.nhwc,
                    scale: t.scale,
                    zero: t.zero,
                    offset: t.offset,
                })
            })
            .unwrap_or(TensorMeta::EMPTY)
    }
}

/// The header of a plan image, checked against the image: magic, version, section sizes,
/// checksum. Every refusal is static text (no heap).
fn check_header(data: &[u8]) -> Result<Header> {
    if data.len() < 64 {
        return Err(bad("truncated header"));
    }
    let header: Header = bytemuck::pod_read_unaligned(&data[..64]);
    if header.magic != MAGIC {
        return Err(bad("wrong magic (not an edgetune plan)"));
    }
    if header.version != VERSION {
        return Err(bad(if header.version > VERSION {
            concat!(
                "a newer version than this runtime reads (version ",
                plan_version!(),
                ")"
            )
        } else {
            concat!(
                "an older version than this runtime reads (version ",
                plan_version!(),
                ")"
            )
        }));
    }
    let end = header
        .blob_off
        .checked_add(header.blob_len)
        .ok_or_else(|| bad("blob range overflows"))?;
    if 64 + header.meta_len as u64 > header.blob_off
        || end != data.len() as u64
        || !header.blob_off.is_multiple_of(64)
    {
        return Err(bad("section sizes do not match the file size (truncated?)"));
    }
    if fnv64(FNV_BASIS, &data[64..]) != header.checksum {
        return Err(bad("checksum mismatch"));
    }
    Ok(header)
}

/// One tensor record: its name (in place) and what the executor reads of it, checked to
/// lie inside the arena.
fn read_tensor<'r>(r: &mut Reader<'r>, header: &Header) -> Result<(&'r str, TensorMeta)> {
    let name = r.str_ref()?;
    let dtype = DType::from_u8(r.u8()?)?;
    let nhwc = r.u8()? != 0;
    let scale = r.f32()?;
    let zero = r.i32()?;
    let offset = r.u64()? as usize;
    let rank = r.count(8)?;
    if rank > MAX_RANK {
        return Err(bad("tensor rank above 8"));
    }
    let mut dims = [0usize; MAX_RANK];
    for d in dims[..rank].iter_mut() {
        let v = r.u64()?;
        if v > 1 << 31 {
            return Err(bad("tensor dimension above 2^31"));
        }
        *d = v as usize;
    }
    let t = TensorMeta {
        dtype,
        shape: Shape {
            dims,
            rank: rank as u8,
        },
        nhwc,
        scale,
        zero,
        offset,
    };
    let bytes = t
        .shape
        .iter()
        .try_fold(t.dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("tensor size overflows"))?;
    if offset
        .checked_add(bytes)
        .is_none_or(|e| e as u64 > header.arena_bytes)
    {
        return Err(bad("tensor outside the arena"));
    }
    Ok((name, t))
}

/// Checks every tensor id and blob range, so the executor can index without panics, then
/// each op's types, sizes and int8 bounds. `ops` yields the plan's ops (each call from the
/// start); `ports` the tensors its inputs, outputs and taps name.
fn validate<P, I>(p: &P, ops: impl Fn() -> I, ports: impl Iterator<Item = u32>) -> Result<()>
where
    P: Tables + ?Sized,
    I: Iterator<Item = Result<Op>>,
{
    let nt = p.tensor_count();
    let blob_len = p.header().blob_len;
    for op in ops() {
        let op = op?;
        let (i, o) = op.io();
        if i.iter().chain(o.iter()).any(|&t| t >= nt) {
            return Err(bad("op refers to a tensor that does not exist"));
        }
        for b in op.blobs() {
            if b.off % 64 != 0 || b.off as u64 + b.len as u64 > blob_len {
                return Err(bad("weight range outside the blob"));
            }
        }
    }
    for t in ports {
        if t >= nt {
            return Err(bad("port refers to a tensor that does not exist"));
        }
    }
    if (0..nt).any(|t| p.tensor(t).offset % 64 != 0) {
        return Err(bad("tensor not 64-byte aligned in the arena"));
    }
    for op in ops() {
        let op = op?;
        Plan::validate_shapes(p, &op)?;
        Plan::validate_int8(p, &op)?;
    }
    Ok(())
}

/// A named tensor of a [`PlanView`], its name read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRef<'a> {
    pub name: &'a str,
    pub tensor: u32,
}

/// A plan read in place from a 64-aligned image (a microcontroller's flash): nothing is
/// copied or allocated. Loading checks the whole plan as [`Plan::from_bytes`] does; then
/// the tables are decoded from the image when they are read: the ops in order on each run,
/// a tensor by walking the tensor records to it (a few bytes each, so a lookup costs
/// O(tensors), which suits the small plans of a device). Every refusal is static text, so
/// a device without a heap gets a typed error too.
#[derive(Clone, Copy)]
pub struct PlanView<'a> {
    pub header: Header,
    data: &'a [u8],
    tensors: (u32, usize),
    ops: (u32, usize),
    ports: [(u32, usize); 3],
    meta: (u32, usize),
}

impl<'a> PlanView<'a> {
    /// Reads `bytes` in place; it must be 64-aligned (the weights are viewed as i16, i32
    /// and f32 where they lie).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<PlanView<'a>> {
        let v = PlanView::parse(bytes);
        match &v {
            Ok(v) => crate::logging::info!(
                "plan loaded: {} ops, {} tensors, arena {} B, weights {} B and tables (in place)",
                v.ops.0,
                v.tensors.0,
                v.arena_bytes(),
                v.header.blob_len
            ),
            Err(e) => crate::logging::warning!("plan rejected: {}", e),
        }
        v
    }

    fn parse(data: &'a [u8]) -> Result<PlanView<'a>> {
        if !(data.as_ptr() as usize).is_multiple_of(64) {
            return Err(bad(
                "image not 64-byte aligned (a plan read in place must be)",
            ));
        }
        let header = check_header(data)?;
        let meta = &data[64..64 + header.meta_len as usize];
        let mut r = Reader::new(meta);
        let nt = r.count(16)?;
        let tensors = (nt as u32, r.pos());
        for _ in 0..nt {
            read_tensor(&mut r, &header)?;
        }
        let no = r.count(8)?;
        let ops = (no as u32, r.pos());
        for _ in 0..no {
            Op::read(&mut r)?;
        }
        let mut ports = [(0, 0); 3];
        for p in ports.iter_mut() {
            let n = r.count(8)?;
            *p = (n as u32, r.pos());
            for _ in 0..n {
                r.str_ref()?;
                r.u32()?;
            }
        }
        let nm = r.count(8)?;
        let meta_at = (nm as u32, r.pos());
        for _ in 0..nm {
            r.str_ref()?;
            r.str_ref()?;
        }
        let v = PlanView {
            header,
            data,
            tensors,
            ops,
            ports,
            meta: meta_at,
        };
        let ports = (0..3).flat_map(|k| v.ports(k).map(|p| p.tensor));
        validate(&v, || v.ops(), ports)?;
        Ok(v)
    }

    fn reader(&self, at: usize) -> Reader<'a> {
        let meta = &self.data[64..64 + self.header.meta_len as usize];
        Reader::at(meta, at)
    }

    /// The ops in order, each decoded from the image.
    pub fn ops(&self) -> OpIter<'a> {
        OpIter {
            r: self.reader(self.ops.1),
            left: self.ops.0,
        }
    }

    pub fn op_count(&self) -> usize {
        self.ops.0 as usize
    }

    fn ports(&self, kind: usize) -> PortIter<'a> {
        let (n, at) = self.ports[kind];
        PortIter {
            r: self.reader(at),
            left: n,
        }
    }

    /// The plan's inputs, in the order `Executor::run` takes them.
    pub fn inputs(&self) -> PortIter<'a> {
        self.ports(0)
    }

    pub fn input_count(&self) -> usize {
        self.ports[0].0 as usize
    }

    pub fn outputs(&self) -> PortIter<'a> {
        self.ports(1)
    }

    pub fn taps(&self) -> PortIter<'a> {
        self.ports(2)
    }

    /// The value of a metadata key, in place.
    pub fn meta(&self, key: &str) -> Option<&'a str> {
        let (n, at) = self.meta;
        let mut r = self.reader(at);
        for _ in 0..n {
            let (k, v) = (r.str_ref().ok()?, r.str_ref().ok()?);
            if k == key {
                return Some(v);
            }
        }
        None
    }

    /// A tensor's name, in place.
    pub fn tensor_name(&self, id: u32) -> Option<&'a str> {
        let mut r = self.seek_tensor(id)?;
        r.str_ref().ok()
    }

    /// A reader at tensor record `id`: the records before it are skipped by their lengths.
    fn seek_tensor(&self, id: u32) -> Option<Reader<'a>> {
        if id >= self.tensors.0 {
            return None;
        }
        let mut r = self.reader(self.tensors.1);
        for _ in 0..id {
            let name = r.u32().ok()? as usize;
            r.take(name + 18).ok()?;
            let rank = r.u32().ok()? as usize;
            r.take(rank * 8).ok()?;
        }
        Some(r)
    }

    pub fn hash(&self) -> [u8; 16] {
        self.header.hash
    }

    pub fn arena_bytes(&self) -> usize {
        self.header.arena_bytes as usize
    }

    /// Parameters held in the blob (weights and per-channel data), in bytes.
    pub fn weight_bytes(&self) -> usize {
        self.header.blob_len as usize
    }
}

impl Tables for PlanView<'_> {
    fn header(&self) -> &Header {
        &self.header
    }
    fn image(&self) -> &[u8] {
        self.data
    }
    fn tensor_count(&self) -> u32 {
        self.tensors.0
    }
    fn tensor(&self, id: u32) -> TensorMeta {
        self.seek_tensor(id)
            .and_then(|mut r| read_tensor(&mut r, &self.header).ok())
            .map_or(TensorMeta::EMPTY, |(_, t)| t)
    }
}

/// The ops of a [`PlanView`], decoded one by one.
pub struct OpIter<'a> {
    r: Reader<'a>,
    left: u32,
}

impl Iterator for OpIter<'_> {
    type Item = Result<Op>;
    fn next(&mut self) -> Option<Result<Op>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let op = Op::read(&mut self.r);
        if op.is_err() {
            self.left = 0;
        }
        Some(op)
    }
}

/// The inputs, outputs or taps of a [`PlanView`].
pub struct PortIter<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for PortIter<'a> {
    type Item = PortRef<'a>;
    fn next(&mut self) -> Option<PortRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = self.r.str_ref().ok()?;
        let tensor = self.r.u32().ok()?;
        Some(PortRef { name, tensor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn header_layout_is_pinned() {
        assert_eq!(core::mem::size_of::<Header>(), 64);
        assert_eq!(core::mem::offset_of!(Header, blob_off), 16);
        assert_eq!(core::mem::offset_of!(Header, checksum), 40);
        assert_eq!(core::mem::offset_of!(Header, hash), 48);
    }
}
