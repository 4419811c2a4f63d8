//! The call ABI shared by every tier of a kernel family.
//!
//! Tiers receive raw pointers so one function-pointer type serves all of them; the safe
//! wrappers in [`crate::ops`] check every length before building these structs.

/// Error of a safe kernel wrapper: which call and what did not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeError {
    pub op: &'static str,
    pub what: &'static str,
    pub expected: usize,
    pub got: usize,
}

impl core::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{}: {} expected {} got {}",
            self.op, self.what, self.expected, self.got
        )
    }
}

/// Fused epilogue of the f32 GEMM and convolutions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    Clamp(f32, f32),
}

impl Act {
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Act::None => (f32::NEG_INFINITY, f32::INFINITY),
            Act::Relu => (0.0, f32::INFINITY),
            Act::Relu6 => (0.0, 6.0),
            Act::Clamp(lo, hi) => (lo, hi),
        }
    }
}

/// `C[m×n] = clamp(A[m×k]·B + bias, lo, hi)`, B packed by [`crate::pack::pack_f32`].
#[derive(Clone, Copy, Debug)]
pub struct F32GemmArgs {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    pub b: *const f32,
    /// Null, or `n` values.
    pub bias: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    pub lo: f32,
    pub hi: f32,
}

pub type F32GemmFn = unsafe fn(&F32GemmArgs);

/// What the int8 GEMM writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8Out {
    /// Requantised u8: `clamp(round_half_even(t·scale) + y_zero, qmin, qmax)`.
    U8,
    /// Requantised i8, same formula.
    I8,
    /// Dequantised f32: `t·scale`.
    F32,
}

/// Largest reduction depth of the int8 GEMM. With u8·i8 products of at most 255·128,
/// `k ≤ 32768` keeps the accumulator and the zero-point correction each below 2^30, so
/// their i32 sum cannot overflow (tested at the extremes).
pub const I8_MAX_K: usize = 32768;

/// `t[i][j] = Σ_k (a[i][k]-a_zero)·w[k][j] + bias[j]`, computed as
/// `Σ a·w − a_zero·colsum[j] + bias[j]` in i32, then requantised or dequantised per
/// output channel. B packed by [`crate::pack::pack_i8`].
#[derive(Clone, Copy, Debug)]
pub struct I8GemmArgs {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const u8,
    pub lda: usize,
    /// A holds i8 values: tiers flip the sign bit to read them as u8 (`a + 128`).
    pub a_signed: bool,
    /// Zero point of A in its own type (i8 or u8 range).
    pub a_zero: i32,
    pub b: *const i8,
    pub colsum: *const i32,
    /// Null, or `n` values.
    pub bias: *const i32,
    /// `n` per-channel multipliers.
    pub scale: *const f32,
    pub out: I8Out,
    /// Points at u8, i8 or f32 elements according to `out`.
    pub c: *mut u8,
    /// In elements.
    pub ldc: usize,
    pub y_zero: i32,
    pub qmin: i32,
    pub qmax: i32,
}

pub type I8GemmFn = unsafe fn(&I8GemmArgs);

/// Depthwise 2-D convolution over NHWC u8 data, weights `[kh][kw][c]` as i16.
#[derive(Clone, Copy, Debug)]
pub struct DwI8Args {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub oh: usize,
    pub ow: usize,
    pub x: *const u8,
    pub x_zero: i32,
    pub weights: *const i16,
    pub bias: *const i32,
    pub scale: *const f32,
    pub y: *mut u8,
    pub y_zero: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl DwI8Args {
    /// Along one axis, for output index `o`: the input index under tap 0 and the taps
    /// `k0..k1` that fall inside the input (the rest read padding).
    #[inline(always)]
    pub fn taps_inside(
        o: usize,
        stride: usize,
        pad: usize,
        size: usize,
        k: usize,
    ) -> (isize, usize, usize) {
        let i0 = (o * stride) as isize - pad as isize;
        let k0 = (-i0).max(0) as usize;
        let k1 = ((size as isize - i0).min(k as isize)).max(0) as usize;
        (i0, k0, k1)
    }
}

pub type DwI8Fn = unsafe fn(&DwI8Args);
