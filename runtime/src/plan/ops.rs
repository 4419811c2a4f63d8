//! The plan's ops, each declared once: its fields, kind name, wire tag, the tensors it
//! reads and writes (for the memory planner) and, from its field types, its encoding and
//! the weight ranges it names. Adding an op is one entry in [`plan_ops!`] plus its
//! kernel in the executor and its shape rules in `Plan::validate`.
//!
//! The encoding is the op's tag byte, then each field in declaration order; field types
//! check what they can on their own while reading (quantisation parameters, convolution
//! geometry, enum tags), the plan checks the rest against its tensors.

use super::{bad, BinOp, Blob, Src, Unary, Q8};
use crate::error::Result;
use crate::wire::{Reader, Writer};
use edgetune_kernels::reference::ConvGeom;

/// How a field is written to and read from a plan, and which weight ranges it names.
pub(crate) trait Field: Sized {
    fn put(&self, w: &mut Writer);
    fn get(r: &mut Reader) -> Result<Self>;
    fn blobs(&self, _out: &mut heapless::Vec<Blob, 4>) {}
}

/// A field naming runtime tensors: what the memory planner sees an op read or write.
pub(crate) trait Tensors {
    fn tensors(&self, out: &mut heapless::Vec<u32, 3>);
    /// Names `to` where the field names `from`.
    fn rename(&mut self, from: u32, to: u32);
}

impl Field for u32 {
    fn put(&self, w: &mut Writer) {
        w.u32(*self)
    }
    fn get(r: &mut Reader) -> Result<u32> {
        r.u32()
    }
}

impl Field for i32 {
    fn put(&self, w: &mut Writer) {
        w.i32(*self)
    }
    fn get(r: &mut Reader) -> Result<i32> {
        r.i32()
    }
}

impl Field for f32 {
    fn put(&self, w: &mut Writer) {
        w.f32(*self)
    }
    fn get(r: &mut Reader) -> Result<f32> {
        r.f32()
    }
}

impl Field for bool {
    fn put(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
    fn get(r: &mut Reader) -> Result<bool> {
        Ok(r.u8()? != 0)
    }
}

impl Field for u8 {
    fn put(&self, w: &mut Writer) {
        w.u8(*self)
    }
    fn get(r: &mut Reader) -> Result<u8> {
        r.u8()
    }
}

impl<T: Field + Copy + Default, const N: usize> Field for [T; N] {
    fn put(&self, w: &mut Writer) {
        self.iter().for_each(|v| v.put(w))
    }
    fn get(r: &mut Reader) -> Result<[T; N]> {
        let mut a = [T::default(); N];
        for v in a.iter_mut() {
            *v = T::get(r)?;
        }
        Ok(a)
    }
}

/// An optional tensor: `u32::MAX` when absent.
impl Field for Option<u32> {
    fn put(&self, w: &mut Writer) {
        w.u32(self.unwrap_or(u32::MAX))
    }
    fn get(r: &mut Reader) -> Result<Option<u32>> {
        let v = r.u32()?;
        Ok((v != u32::MAX).then_some(v))
    }
}

/// Optional (scale, zero point): a flag byte, then both when present.
impl Field for Option<(f32, i32)> {
    fn put(&self, w: &mut Writer) {
        match self {
            Some((s, z)) => {
                w.u8(1);
                w.f32(*s);
                w.i32(*z);
            }
            None => w.u8(0),
        }
    }
    fn get(r: &mut Reader) -> Result<Option<(f32, i32)>> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some((r.f32()?, r.i32()?))),
            _ => Err(bad("bad gather quantisation flag")),
        }
    }
}

impl Field for Q8 {
    fn put(&self, w: &mut Writer) {
        w.f32(self.scale);
        w.i32(self.zero);
    }
    fn get(r: &mut Reader) -> Result<Q8> {
        let q = Q8 {
            scale: r.f32()?,
            zero: r.i32()?,
        };
        if !q.scale.is_finite() || q.scale <= 0.0 || !(-128..=255).contains(&q.zero) {
            return Err(bad("invalid quantisation parameters"));
        }
        Ok(q)
    }
}

impl Field for Blob {
    fn put(&self, w: &mut Writer) {
        w.u32(self.off);
        w.u32(self.len);
    }
    fn get(r: &mut Reader) -> Result<Blob> {
        Ok(Blob {
            off: r.u32()?,
            len: r.u32()?,
        })
    }
    fn blobs(&self, out: &mut heapless::Vec<Blob, 4>) {
        let _ = out.push(*self);
    }
}

impl Field for Src {
    fn put(&self, w: &mut Writer) {
        match self {
            Src::T(t) => {
                w.u8(0);
                w.u32(*t);
            }
            Src::C(b) => {
                w.u8(1);
                b.put(w);
            }
        }
    }
    fn get(r: &mut Reader) -> Result<Src> {
        match r.u8()? {
            0 => Ok(Src::T(r.u32()?)),
            1 => Ok(Src::C(Blob::get(r)?)),
            _ => Err(bad("bad operand tag")),
        }
    }
    fn blobs(&self, out: &mut heapless::Vec<Blob, 4>) {
        if let Src::C(b) = self {
            let _ = out.push(*b);
        }
    }
}

impl Field for Unary {
    fn put(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
    fn get(r: &mut Reader) -> Result<Unary> {
        Unary::ALL
            .get(r.u8()? as usize)
            .copied()
            .ok_or_else(|| bad("unknown unary op"))
    }
}

impl Field for BinOp {
    fn put(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
    fn get(r: &mut Reader) -> Result<BinOp> {
        BinOp::ALL
            .get(r.u8()? as usize)
            .copied()
            .ok_or_else(|| bad("unknown binary op"))
    }
}

impl Field for ConvGeom {
    fn put(&self, w: &mut Writer) {
        let g = self;
        for v in [
            g.h,
            g.w,
            g.ic,
            g.oc,
            g.kh,
            g.kw,
            g.stride_h,
            g.stride_w,
            g.dil_h,
            g.dil_w,
            g.pad_top,
            g.pad_left,
            g.pad_bottom,
            g.pad_right,
            g.groups,
        ] {
            w.u32(v as u32);
        }
    }
    fn get(r: &mut Reader) -> Result<ConvGeom> {
        let mut v = [0usize; 15];
        for x in v.iter_mut() {
            *x = r.u32()? as usize;
        }
        let g = ConvGeom {
            h: v[0],
            w: v[1],
            ic: v[2],
            oc: v[3],
            kh: v[4],
            kw: v[5],
            stride_h: v[6],
            stride_w: v[7],
            dil_h: v[8],
            dil_w: v[9],
            pad_top: v[10],
            pad_left: v[11],
            pad_bottom: v[12],
            pad_right: v[13],
            groups: v[14],
        };
        let zero = [
            g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.groups,
        ]
        .contains(&0);
        if zero
            || !g.ic.is_multiple_of(g.groups)
            || !g.oc.is_multiple_of(g.groups)
            || g.dil_h * (g.kh - 1) + 1 > g.h + g.pad_top + g.pad_bottom
            || g.dil_w * (g.kw - 1) + 1 > g.w + g.pad_left + g.pad_right
        {
            return Err(bad("invalid convolution geometry"));
        }
        Ok(g)
    }
}

impl Tensors for u32 {
    fn tensors(&self, out: &mut heapless::Vec<u32, 3>) {
        let _ = out.push(*self);
    }
    fn rename(&mut self, from: u32, to: u32) {
        if *self == from {
            *self = to;
        }
    }
}

impl Tensors for Option<u32> {
    fn tensors(&self, out: &mut heapless::Vec<u32, 3>) {
        if let Some(t) = self {
            let _ = out.push(*t);
        }
    }
    fn rename(&mut self, from: u32, to: u32) {
        if let Some(t) = self {
            t.rename(from, to);
        }
    }
}

impl Tensors for Src {
    fn tensors(&self, out: &mut heapless::Vec<u32, 3>) {
        if let Src::T(t) = self {
            let _ = out.push(*t);
        }
    }
    fn rename(&mut self, from: u32, to: u32) {
        if let Src::T(t) = self {
            t.rename(from, to);
        }
    }
}

/// Declares [`Op`]: per op its wire tag, kind name, fields, and the fields that are the
/// tensors it reads and writes.
macro_rules! plan_ops {
    ($(
        $(#[$doc:meta])*
        $tag:literal $label:literal $name:ident {
            $($f:ident : $t:ty),* $(,)?
        } reads [$($i:ident),*] writes [$($o:ident),*];
    )*) => {
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $( $(#[$doc])* $name { $($f: $t),* }, )*
        }

        impl Op {
            /// The op's kind, as profiles and `inspect` print it.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$name { .. } => $label,)*
                }
            }

            /// The refusal of a plan whose tensors do not fit this op: static text, so a
            /// device without a heap can refuse the plan too.
            pub fn misfit(&self) -> &'static str {
                match self {
                    $(Op::$name { .. } => concat!($label, ": tensor types or sizes do not fit the op"),)*
                }
            }

            /// The op's tag in the plan file.
            pub fn tag(&self) -> u8 {
                match self {
                    $(Op::$name { .. } => $tag,)*
                }
            }

            /// (inputs, outputs) tensor ids, for the memory planner.
            pub fn io(&self) -> (heapless::Vec<u32, 3>, heapless::Vec<u32, 3>) {
                let (mut ins, mut outs) = (heapless::Vec::new(), heapless::Vec::new());
                match self {
                    $(Op::$name { $($i,)* $($o,)* .. } => {
                        $( Tensors::tensors($i, &mut ins); )*
                        $( Tensors::tensors($o, &mut outs); )*
                    })*
                }
                (ins, outs)
            }

            /// Reads tensor `to` wherever the op reads `from` (an import rewrite).
            pub fn rename_reads(&mut self, from: u32, to: u32) {
                match self {
                    $(Op::$name { $($i,)* .. } => {
                        $( Tensors::rename($i, from, to); )*
                    })*
                }
            }

            /// Every weight range the op reads.
            pub fn blobs(&self) -> heapless::Vec<Blob, 4> {
                let mut v = heapless::Vec::new();
                match self {
                    $(Op::$name { $($f),* } => { $( Field::blobs($f, &mut v); )* })*
                }
                v
            }

            pub(crate) fn write(&self, w: &mut Writer) {
                match self {
                    $(Op::$name { $($f),* } => {
                        w.u8($tag);
                        $( Field::put($f, w); )*
                    })*
                }
            }

            pub(crate) fn read(r: &mut Reader) -> Result<Op> {
                Ok(match r.u8()? {
                    $($tag => Op::$name { $($f: <$t as Field>::get(r)?),* },)*
                    _ => return Err(bad("unknown op tag")),
                })
            }
        }
    };
}

plan_ops! {
    /// f32 → u8, NCHW → NHWC when `to_nhwc`.
    0 "Quantize" Quantize { x: u32, y: u32, q: Q8, to_nhwc: bool } reads [x] writes [y];
    /// u8 → f32, NHWC → NCHW when `to_nchw`.
    1 "Dequantize" Dequantize { x: u32, y: u32, q: Q8, to_nchw: bool } reads [x] writes [y];
    /// Dense int8 convolution (also Gemm/MatMul as 1×1), per-channel requantisation.
    2 "ConvI8" ConvI8 {
        x: u32,
        y: u32,
        scratch: Option<u32>,
        geom: ConvGeom,
        x_zero: i32,
        y_zero: i32,
        w: Blob,
        colsum: Blob,
        bias: Blob,
        scale: Blob,
    } reads [x] writes [y, scratch];
    /// Depthwise int8 convolution.
    3 "DepthwiseI8" DwI8 {
        x: u32,
        y: u32,
        geom: ConvGeom,
        x_zero: i32,
        y_zero: i32,
        w: Blob,
        bias: Blob,
        scale: Blob,
    } reads [x] writes [y];
    4 "AddU8" AddU8 { a: u32, b: u32, y: u32, qa: Q8, qb: Q8, qy: Q8 } reads [a, b] writes [y];
    5 "GlobalAvgPoolU8" GapU8 { x: u32, y: u32, qx: Q8, qy: Q8 } reads [x] writes [y];
    /// Dense f32 convolution / Gemm with fused bias and clamp.
    6 "ConvF32" ConvF32 {
        x: u32,
        y: u32,
        scratch: Option<u32>,
        geom: ConvGeom,
        w: Blob,
        bias: Blob,
        lo: f32,
        hi: f32,
    } reads [x] writes [y, scratch];
    7 "UnaryF32" UnaryF32 { x: u32, y: u32, f: Unary } reads [x] writes [y];
    8 "AddF32" AddF32 { a: u32, b: u32, y: u32 } reads [a, b] writes [y];
    9 "GlobalAvgPoolF32" GapF32 { x: u32, y: u32 } reads [x] writes [y];
    /// Max pool over u8 codes: exact, the quantisation passes through unchanged.
    10 "MaxPoolU8" MaxPoolU8 { x: u32, y: u32, geom: ConvGeom } reads [x] writes [y];
    /// Per-channel 256-entry table (`channels`·256 bytes): any elementwise function
    /// between two quantised tensors, e.g. a batch norm followed by LeakyReLU.
    11 "LutU8" LutU8 { x: u32, y: u32, channels: u32, table: Blob } reads [x] writes [y];
    /// Elementwise `a ∘ b` with NumPy broadcasting over ≤ 4 axes: `dims` is y's shape,
    /// `sa`/`sb` the element strides of a and b on it (0 on broadcast axes).
    12 "BinF32" BinF32 {
        a: Src,
        b: Src,
        y: u32,
        f: BinOp,
        dims: [u32; 4],
        sa: [u32; 4],
        sb: [u32; 4],
    } reads [a, b] writes [y];
    13 "ClampF32" ClampF32 { x: u32, y: u32, lo: f32, hi: f32 } reads [x] writes [y];
    /// Sum over the middle axis of `x` viewed as `[outer, len, inner]`.
    14 "SumF32" SumF32 { x: u32, y: u32, outer: u32, len: u32, inner: u32 } reads [x] writes [y];
    /// Layer norm over rows of `cols`, `f32` gamma and beta in the blob.
    15 "LayerNormF32" LayerNormF32 {
        x: u32,
        y: u32,
        cols: u32,
        gamma: Blob,
        beta: Blob,
        eps: f32,
    } reads [x] writes [y];
    16 "SoftmaxF32" SoftmaxF32 { x: u32, y: u32, cols: u32 } reads [x] writes [y];
    /// `y = x.transpose(perm)` over ≤ 4 axes; `dims` is x's shape. f32 values, or u8
    /// codes (a quantised tensor's bytes moved between layouts).
    17 "TransposeF32" TransposeF32 { x: u32, y: u32, dims: [u32; 4], perm: [u8; 4] }
        reads [x] writes [y];
    /// Batched `[batch, m, k] × [batch, k, n]`, both at run time; each B is packed into
    /// `scratch` for the f32 GEMM.
    18 "MatMulF32" MatMulF32 {
        a: u32,
        b: u32,
        y: u32,
        scratch: u32,
        batch: u32,
        m: u32,
        k: u32,
        n: u32,
    } reads [a, b] writes [y, scratch];
    /// DynamicQuantizeLinear + MatMulInteger + scaling: `x [m,k]` f32 is quantised to u8
    /// per tensor at run time (into `scratch`, with the n column scales after it), times
    /// packed int8 weights `[k,n]` with per-column scales; y is f32.
    19 "MatMulDynI8" MatMulDynI8 {
        x: u32,
        y: u32,
        scratch: u32,
        m: u32,
        k: u32,
        n: u32,
        w: Blob,
        colsum: Blob,
        wscale: Blob,
    } reads [x] writes [y, scratch];
    /// Rows of a `[rows, dim]` table picked by integer-valued f32 ids; an int8 table
    /// (`quant` = scale, zero point) is dequantised on the way.
    20 "GatherF32" GatherF32 {
        ids: u32,
        y: u32,
        table: Blob,
        rows: u32,
        dim: u32,
        quant: Option<(f32, i32)>,
    } reads [ids] writes [y];
    /// Per-channel table from u8 codes to f32 values (`channels`·256 f32): the float view
    /// of a quantised tensor after elementwise functions, NHWC → NCHW when `to_nchw`.
    21 "LutF32" LutF32 { x: u32, y: u32, channels: u32, table: Blob, to_nchw: bool }
        reads [x] writes [y];
    /// `y` = `a` and `b` concatenated block by block: for each of `outer` blocks, `ia`
    /// elements of a then `ib` of b. On u8 tensors `ta`/`tb` (256 bytes, or empty for a
    /// plain copy) requantise each input to y's parameters; f32 tensors are copied.
    22 "Concat" Concat {
        a: u32,
        b: u32,
        y: u32,
        outer: u32,
        ia: u32,
        ib: u32,
        ta: Blob,
        tb: Blob,
    } reads [a, b] writes [y];
    /// `y` = a window of `x` along one axis: for each of `outer` blocks of `inner`
    /// elements, the `len` elements from `off` (Slice with step 1, each output of Split).
    23 "Slice" Slice { x: u32, y: u32, outer: u32, inner: u32, off: u32, len: u32 }
        reads [x] writes [y];
    /// Constant padding of a ≤ 4-D tensor in its stored layout: `dims` is x's shape
    /// (padded to 4 on the left), `before`/`after` the entries added per axis, `value` the
    /// fill (a u8 code in the low byte for u8 tensors, else f32 bits).
    24 "Pad" Pad {
        x: u32,
        y: u32,
        dims: [u32; 4],
        before: [u32; 4],
        after: [u32; 4],
        value: u32,
    } reads [x] writes [y];
    /// Nearest-neighbour upsampling by whole factors: `x` viewed as `[outer, h, w, inner]`
    /// becomes `[outer, h·fh, w·fw, inner]`, each entry repeated (Resize, nearest).
    25 "Upsample" Upsample {
        x: u32,
        y: u32,
        outer: u32,
        h: u32,
        w: u32,
        inner: u32,
        fh: u32,
        fw: u32,
    } reads [x] writes [y];
    /// Zeros inserted between the pixels of an NHWC map (a transposed convolution's
    /// stride): `x` `[h, w, c]` becomes `[(h-1)·sh+1, (w-1)·sw+1, c]`, the new positions
    /// holding `fill`: for u8 codes the zero point (the value 0), for f32 the bits of 0.0.
    26 "DilateU8" Dilate {
        x: u32,
        y: u32,
        h: u32,
        w: u32,
        c: u32,
        sh: u32,
        sw: u32,
        fill: u32,
    } reads [x] writes [y];
    /// Maximum over the middle axis of `x` viewed as `[outer, len, inner]`.
    27 "MaxF32" MaxF32 { x: u32, y: u32, outer: u32, len: u32, inner: u32 } reads [x] writes [y];
    /// Bilinear resize of `outer` f32 planes `[h, w]` to `[oh, ow]` (ONNX Resize, mode
    /// linear): `ct` the coordinate transform (0 half_pixel, 1 pytorch_half_pixel,
    /// 2 align_corners, 3 asymmetric), `sh`/`sw` the scales.
    28 "ResizeLinearF32" ResizeLinearF32 {
        x: u32,
        y: u32,
        outer: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        ct: u32,
        sh: f32,
        sw: f32,
    } reads [x] writes [y];
    /// `y = c != 0 ? a : b` with NumPy broadcasting over ≤ 4 axes (ONNX Where; booleans
    /// are f32 0.0 and 1.0): `dims` is y's shape, the strides as for `BinF32`.
    29 "WhereF32" WhereF32 {
        c: Src,
        a: Src,
        b: Src,
        y: u32,
        dims: [u32; 4],
        sc: [u32; 4],
        sa: [u32; 4],
        sb: [u32; 4],
    } reads [c, a, b] writes [y];
    /// Runs of `run` elements picked from `x` at the element offsets in `idx` (u32), one
    /// after the other into `y`: Gather and GatherND of a run-time tensor by constant
    /// indices. f32 values or u8 codes.
    30 "Take" Take { x: u32, y: u32, idx: Blob, run: u32 } reads [x] writes [y];
    /// Max or average pooling of `geom.ic` f32 planes `[h, w]` (NCHW); the average counts
    /// the padding when `count_pad`.
    31 "PoolF32" PoolF32 { x: u32, y: u32, geom: ConvGeom, max: bool, count_pad: bool }
        reads [x] writes [y];
    /// Grouped (depthwise among them) f32 convolution over NCHW planes, directly: weights
    /// `[oc][ic / groups][kh][kw]` as ONNX holds them, bias of `oc` values or none.
    32 "GroupConvF32" GroupConvF32 { x: u32, y: u32, geom: ConvGeom, w: Blob, bias: Blob }
        reads [x] writes [y];
    /// Depthwise f32 convolution over an NHWC map, the channels in the inner loop:
    /// weights `[kh][kw][c]`, bias of `c` values or none.
    33 "DepthwiseF32" DwF32 { x: u32, y: u32, geom: ConvGeom, w: Blob, bias: Blob }
        reads [x] writes [y];
    /// A chain of elementwise f32 operations run block by block in registers, so the
    /// intermediate values never go to memory (a GELU, a bias and residual add, a scaled
    /// and masked score): `prog` holds instructions of [`CHAIN_WORDS`] u32 words `[code,
    /// dst, lhs, lhs_len, rhs, rhs_len]` (see [`chain`]), `consts` the f32 constants they
    /// name. The inputs `a` and `b` have y's length, or a length dividing it (repeated
    /// along y, as NumPy broadcasts over leading axes). y is the last instruction's result.
    34 "ChainF32" ChainF32 { a: u32, b: Option<u32>, y: u32, prog: Blob, consts: Blob }
        reads [a, b] writes [y];
    /// `y = x·s` of two u8 tensors, `x` an NHWC map and `s` one code per channel of each
    /// image (squeeze-and-excitation scales), quantised to `qy`: per image, each channel's
    /// table of x's codes (`xf` and `sf` the codes' values, 256 f32 for every channel or
    /// for each) built into `tables` (channels · 256 bytes), then x looked up in them.
    35 "MulChanU8" MulChanU8 { x: u32, s: u32, y: u32, tables: u32, xf: Blob, sf: Blob, qy: Q8 }
        reads [x, s] writes [y, tables];
}

/// Words per instruction of a [`Op::ChainF32`] program.
pub const CHAIN_WORDS: usize = 6;

/// The encoding of [`Op::ChainF32`] programs, shared by the importer and the executor.
///
/// An instruction is `[code, dst, lhs, lhs_len, rhs, rhs_len]`: `code` below 256 is a
/// [`Unary`] tag (`dst = f(lhs)`, `rhs` unused), `256 + t` the [`BinOp`] of tag `t`
/// (`dst = lhs ∘ rhs`; Add, Sub, Mul, Div, Max, Min or PRelu), [`chain::CLAMP`] `dst =
/// min(max(lhs, lo), hi)` with `rhs` the constant pair `[lo, hi]`. `dst` is a register
/// below [`chain::REGS`]; an operand is a register, [`chain::INPUT`]` + k` (input `a` or
/// `b`), or [`chain::CONST`]` + offset` with its length in the `_len` word (the constant
/// repeated along y, as an input).
pub mod chain {
    /// Registers of a block each.
    pub const REGS: u32 = 4;
    /// Operand base of the inputs (`+ 0`: `a`, `+ 1`: `b`).
    pub const INPUT: u32 = 1 << 28;
    /// Operand base of the constants (`+` their offset in `consts`).
    pub const CONST: u32 = 2 << 28;
    /// Code base of the binary operations.
    pub const BIN: u32 = 256;
    /// Code of the clamp.
    pub const CLAMP: u32 = 512;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn geom() -> ConvGeom {
        ConvGeom {
            h: 8,
            w: 8,
            ic: 4,
            oc: 4,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dil_h: 1,
            dil_w: 1,
            pad_top: 1,
            pad_left: 1,
            pad_bottom: 1,
            pad_right: 1,
            groups: 4,
        }
    }

    /// One op of every kind, with distinct field values.
    fn every_op() -> Vec<Op> {
        let q = Q8 {
            scale: 0.5,
            zero: 3,
        };
        let b = |o: u32| Blob {
            off: 64 * o,
            len: 8,
        };
        vec![
            Op::Quantize {
                x: 1,
                y: 2,
                q,
                to_nhwc: true,
            },
            Op::Dequantize {
                x: 1,
                y: 2,
                q,
                to_nchw: false,
            },
            Op::ConvI8 {
                x: 1,
                y: 2,
                scratch: Some(3),
                geom: geom(),
                x_zero: 4,
                y_zero: -5,
                w: b(1),
                colsum: b(2),
                bias: b(3),
                scale: b(4),
            },
            Op::DwI8 {
                x: 1,
                y: 2,
                geom: geom(),
                x_zero: 1,
                y_zero: 2,
                w: b(1),
                bias: b(2),
                scale: b(3),
            },
            Op::AddU8 {
                a: 1,
                b: 2,
                y: 3,
                qa: q,
                qb: q,
                qy: q,
            },
            Op::GapU8 {
                x: 1,
                y: 2,
                qx: q,
                qy: q,
            },
            Op::ConvF32 {
                x: 1,
                y: 2,
                scratch: None,
                geom: geom(),
                w: b(1),
                bias: b(2),
                lo: -1.0,
                hi: 6.0,
            },
            Op::UnaryF32 {
                x: 1,
                y: 2,
                f: Unary::Neg,
            },
            Op::ChainF32 {
                a: 1,
                b: Some(2),
                y: 3,
                prog: b(1),
                consts: b(2),
            },
            Op::AddF32 { a: 1, b: 2, y: 3 },
            Op::GapF32 { x: 1, y: 2 },
            Op::MaxPoolU8 {
                x: 1,
                y: 2,
                geom: geom(),
            },
            Op::LutU8 {
                x: 1,
                y: 2,
                channels: 4,
                table: b(1),
            },
            Op::MulChanU8 {
                x: 1,
                s: 2,
                y: 3,
                tables: 4,
                xf: b(1),
                sf: b(2),
                qy: q,
            },
            Op::BinF32 {
                a: Src::T(1),
                b: Src::C(b(2)),
                y: 3,
                f: BinOp::Div,
                dims: [1, 2, 3, 4],
                sa: [24, 12, 4, 1],
                sb: [0, 0, 1, 0],
            },
            Op::ClampF32 {
                x: 1,
                y: 2,
                lo: 0.0,
                hi: 1.0,
            },
            Op::SumF32 {
                x: 1,
                y: 2,
                outer: 3,
                len: 4,
                inner: 5,
            },
            Op::MaxF32 {
                x: 1,
                y: 2,
                outer: 3,
                len: 4,
                inner: 5,
            },
            Op::LayerNormF32 {
                x: 1,
                y: 2,
                cols: 8,
                gamma: b(1),
                beta: b(2),
                eps: 1e-5,
            },
            Op::SoftmaxF32 {
                x: 1,
                y: 2,
                cols: 8,
            },
            Op::TransposeF32 {
                x: 1,
                y: 2,
                dims: [1, 2, 3, 4],
                perm: [0, 2, 3, 1],
            },
            Op::MatMulF32 {
                a: 1,
                b: 2,
                y: 3,
                scratch: 4,
                batch: 2,
                m: 3,
                k: 4,
                n: 5,
            },
            Op::MatMulDynI8 {
                x: 1,
                y: 2,
                scratch: 3,
                m: 4,
                k: 5,
                n: 6,
                w: b(1),
                colsum: b(2),
                wscale: b(3),
            },
            Op::GatherF32 {
                ids: 1,
                y: 2,
                table: b(1),
                rows: 10,
                dim: 4,
                quant: Some((0.1, 7)),
            },
            Op::LutF32 {
                x: 1,
                y: 2,
                channels: 4,
                table: b(1),
                to_nchw: true,
            },
            Op::Concat {
                a: 1,
                b: 2,
                y: 3,
                outer: 1,
                ia: 4,
                ib: 5,
                ta: b(1),
                tb: b(2),
            },
            Op::Slice {
                x: 1,
                y: 2,
                outer: 1,
                inner: 2,
                off: 3,
                len: 4,
            },
            Op::Pad {
                x: 1,
                y: 2,
                dims: [1, 2, 3, 4],
                before: [0, 0, 1, 1],
                after: [0, 0, 2, 2],
                value: 7,
            },
            Op::Upsample {
                x: 1,
                y: 2,
                outer: 1,
                h: 2,
                w: 3,
                inner: 4,
                fh: 2,
                fw: 2,
            },
            Op::Dilate {
                x: 1,
                y: 2,
                h: 3,
                w: 4,
                c: 5,
                sh: 2,
                sw: 3,
                fill: 7,
            },
            Op::WhereF32 {
                c: Src::T(1),
                a: Src::C(b(1)),
                b: Src::T(2),
                y: 3,
                dims: [1, 2, 3, 4],
                sc: [0, 0, 1, 0],
                sa: [0; 4],
                sb: [24, 12, 4, 1],
            },
            Op::Take {
                x: 1,
                y: 2,
                idx: b(3),
                run: 4,
            },
            Op::PoolF32 {
                x: 1,
                y: 2,
                geom: ConvGeom {
                    h: 5,
                    w: 6,
                    ic: 3,
                    oc: 3,
                    kh: 2,
                    kw: 3,
                    stride_h: 2,
                    stride_w: 1,
                    dil_h: 1,
                    dil_w: 2,
                    pad_top: 1,
                    pad_left: 0,
                    pad_bottom: 1,
                    pad_right: 2,
                    groups: 1,
                },
                max: true,
                count_pad: false,
            },
            Op::GroupConvF32 {
                x: 1,
                y: 2,
                geom: ConvGeom {
                    h: 5,
                    w: 6,
                    ic: 4,
                    oc: 4,
                    kh: 3,
                    kw: 3,
                    stride_h: 1,
                    stride_w: 2,
                    dil_h: 1,
                    dil_w: 1,
                    pad_top: 1,
                    pad_left: 1,
                    pad_bottom: 1,
                    pad_right: 1,
                    groups: 4,
                },
                w: b(1),
                bias: b(2),
            },
            Op::DwF32 {
                x: 1,
                y: 2,
                geom: ConvGeom {
                    h: 5,
                    w: 6,
                    ic: 4,
                    oc: 4,
                    kh: 3,
                    kw: 3,
                    stride_h: 2,
                    stride_w: 2,
                    dil_h: 1,
                    dil_w: 1,
                    pad_top: 1,
                    pad_left: 1,
                    pad_bottom: 1,
                    pad_right: 1,
                    groups: 4,
                },
                w: b(1),
                bias: b(2),
            },
            Op::ResizeLinearF32 {
                x: 1,
                y: 2,
                outer: 3,
                h: 2,
                w: 3,
                oh: 4,
                ow: 6,
                ct: 0,
                sh: 2.0,
                sw: 2.0,
            },
        ]
    }

    #[test]
    fn every_op_round_trips_and_tags_and_names_are_unique() {
        let ops = every_op();
        let mut tags: Vec<u8> = ops.iter().map(|o| o.tag()).collect();
        tags.sort_unstable();
        assert_eq!(
            tags,
            (0..ops.len() as u8).collect::<Vec<_>>(),
            "one op per tag"
        );
        let mut names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ops.len());
        for op in &ops {
            let mut w = Writer::default();
            op.write(&mut w);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            assert_eq!(&Op::read(&mut r).unwrap(), op);
            assert_eq!(r.remaining(), 0, "{} reads what it writes", op.name());
            // Every strict prefix is a typed error, never a panic.
            for n in 0..bytes.len() {
                assert!(Op::read(&mut Reader::new(&bytes[..n])).is_err());
            }
        }
    }

    #[test]
    fn encoding_is_the_tag_then_the_fields_in_order() {
        // Pinned bytes: plans written before stay readable.
        let op = Op::ConvF32 {
            x: 1,
            y: 2,
            scratch: None,
            geom: geom(),
            w: Blob { off: 64, len: 8 },
            bias: Blob { off: 128, len: 4 },
            lo: 0.0,
            hi: 6.0,
        };
        let mut w = Writer::default();
        op.write(&mut w);
        let mut want = Writer::default();
        want.u8(6);
        for v in [
            1,
            2,
            u32::MAX,
            8,
            8,
            4,
            4,
            3,
            3,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            4,
            64,
            8,
            128,
            4,
        ] {
            want.u32(v);
        }
        want.f32(0.0);
        want.f32(6.0);
        assert_eq!(w.into_inner(), want.into_inner());
    }

    #[test]
    fn io_and_blobs_follow_the_declaration() {
        for op in every_op() {
            let (ins, outs) = op.io();
            assert!(!ins.is_empty() && !outs.is_empty(), "{}", op.name());
            match op {
                Op::ConvI8 { .. } => {
                    assert_eq!((&ins[..], &outs[..]), (&[1][..], &[2, 3][..]));
                    assert_eq!(op.blobs().len(), 4);
                }
                Op::ConvF32 { .. } => assert_eq!(&outs[..], &[2]),
                Op::BinF32 { .. } => {
                    assert_eq!((&ins[..], &outs[..]), (&[1][..], &[3][..]));
                    assert_eq!(&op.blobs()[..], &[Blob { off: 128, len: 8 }]);
                }
                Op::MatMulF32 { .. } => {
                    assert_eq!((&ins[..], &outs[..]), (&[1, 2][..], &[3, 4][..]))
                }
                _ => {}
            }
        }
    }

    #[test]
    fn bad_field_values_are_typed_errors() {
        let mut w = Writer::default();
        Op::UnaryF32 {
            x: 1,
            y: 2,
            f: Unary::Relu,
        }
        .write(&mut w);
        let mut bytes = w.into_inner();
        *bytes.last_mut().unwrap() = 200;
        assert!(Op::read(&mut Reader::new(&bytes)).is_err());
        assert!(Op::read(&mut Reader::new(&[99])).is_err());
        let mut w = Writer::default();
        Op::GapU8 {
            x: 1,
            y: 2,
            qx: Q8 {
                scale: 1.0,
                zero: 0,
            },
            qy: Q8 {
                scale: 1.0,
                zero: 0,
            },
        }
        .write(&mut w);
        let mut bytes = w.into_inner();
        bytes[9..13].copy_from_slice(&(-1.0f32).to_le_bytes());
        assert!(Op::read(&mut Reader::new(&bytes)).is_err());
    }
}
