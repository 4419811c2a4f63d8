//! simd128 lanes for the elementwise tier ([`crate::ew`]): four f32 lanes in a `v128`.
//! Wasm SIMD float arithmetic is IEEE (subnormals kept, `f32x4.nearest` rounds half to
//! even, `f32x4.sqrt` correctly rounded); there is no fused multiply-add.

use crate::ew::{ew_tier, Lanes};
use core::arch::wasm32::*;

/// Four f32 lanes. The module exists only in builds with simd128 enabled, so every
/// engine that loads the module runs these instructions.
#[derive(Clone, Copy)]
pub(crate) struct Simd(v128);

impl Lanes for Simd {
    const N: usize = 4;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Simd(f32x4_splat(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Simd(v128_load(p as *const v128))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        v128_store(p as *mut v128, self.0)
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self {
        let w = u32x4_splat((p as *const u32).read_unaligned());
        let v = u32x4_extend_low_u16x8(u16x8_extend_low_u8x16(w));
        Simd(f32x4_convert_u32x4(v))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        let w = u32x4_splat((p as *const u32).read_unaligned());
        let v = i32x4_extend_low_i16x8(i16x8_extend_low_i8x16(w));
        Simd(f32x4_convert_i32x4(v))
    }
    #[inline(always)]
    unsafe fn store_u8(self, p: *mut u8) {
        // Lanes are integral in [0, 255]: conversion and narrowing are exact.
        let i = i32x4_trunc_sat_f32x4(self.0);
        let h = u16x8_narrow_i32x4(i, i);
        let b = u8x16_narrow_i16x8(h, h);
        (p as *mut u32).write_unaligned(u32x4_extract_lane::<0>(b));
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8) {
        let i = i32x4_trunc_sat_f32x4(self.0);
        let h = i16x8_narrow_i32x4(i, i);
        let b = i8x16_narrow_i16x8(h, h);
        (p as *mut u32).write_unaligned(u32x4_extract_lane::<0>(b));
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Simd(f32x4_add(self.0, o.0))
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Simd(f32x4_sub(self.0, o.0))
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Simd(f32x4_mul(self.0, o.0))
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Simd(f32x4_div(self.0, o.0))
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        self.mul(a).add(b)
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // A select, not `f32x4.max`, which would return NaN for a NaN lane.
        self.select_gt(o, self, o)
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        o.select_gt(self, self, o)
    }
    #[inline(always)]
    fn round(self) -> Self {
        Simd(f32x4_nearest(self.0))
    }
    #[inline(always)]
    fn exp2i(self) -> Self {
        let n = i32x4_add(i32x4_trunc_sat_f32x4(self.0), i32x4_splat(127));
        Simd(i32x4_shl(n, 23))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Simd(f32x4_abs(self.0))
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Simd(f32x4_sqrt(self.0))
    }
    #[inline(always)]
    fn copysign(self, s: Self) -> Self {
        Simd(v128_bitselect(s.0, self.0, u32x4_splat(0x8000_0000)))
    }
    #[inline(always)]
    fn select_gt(self, t: Self, a: Self, b: Self) -> Self {
        Simd(v128_bitselect(a.0, b.0, f32x4_gt(self.0, t.0)))
    }
    #[inline(always)]
    fn hsum(self) -> f32 {
        let v = self.0;
        (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
            + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        let v = self.0;
        let m = f32x4_extract_lane::<0>(v);
        let m = f32x4_extract_lane::<1>(v).max(m);
        let m = f32x4_extract_lane::<2>(v).max(m);
        f32x4_extract_lane::<3>(v).max(m)
    }
}

ew_tier!(EW_SIMD128, Simd, [], f16: (crate::ew::f32_to_f16_portable, crate::ew::f16_to_f32_portable));
