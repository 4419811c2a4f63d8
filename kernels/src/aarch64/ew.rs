//! NEON lanes for the elementwise tier ([`crate::ew`]).

use crate::ew::{ew_tier, Lanes};
use core::arch::aarch64::*;

/// Four f32 lanes in a `q` register. Only `unsafe` constructors make one, inside the NEON
/// tier's kernels, so a value proves the CPU has NEON.
#[derive(Clone, Copy)]
pub(crate) struct Neon(float32x4_t);

impl Lanes for Neon {
    const N: usize = 4;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Neon(vdupq_n_f32(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Neon(vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0)
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self {
        let w = (p as *const u32).read_unaligned();
        let b = vreinterpret_u8_u32(vdup_n_u32(w));
        Neon(vcvtq_f32_u32(vmovl_u16(vget_low_u16(vmovl_u8(b)))))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        let w = (p as *const u32).read_unaligned();
        let b = vreinterpret_s8_u32(vdup_n_u32(w));
        Neon(vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b)))))
    }
    #[inline(always)]
    unsafe fn store_u8(self, p: *mut u8) {
        // Lanes are integral in [0, 255]: conversion and narrowing are exact.
        let h = vmovn_u32(vcvtq_u32_f32(self.0));
        let b = vmovn_u16(vcombine_u16(h, h));
        (p as *mut u32).write_unaligned(vget_lane_u32::<0>(vreinterpret_u32_u8(b)));
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8) {
        let h = vmovn_s32(vcvtq_s32_f32(self.0));
        let b = vmovn_s16(vcombine_s16(h, h));
        (p as *mut u32).write_unaligned(vget_lane_u32::<0>(vreinterpret_u32_s8(b)));
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: `self` exists, so the CPU has NEON (see `Neon`).
        unsafe { Neon(vaddq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vsubq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vmulq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vdivq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: as in `add` (the tier also requires NEON).
        unsafe { Neon(vfmaq_f32(b.0, self.0, a.0)) }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // `fmax` would return NaN for a NaN lane; select gives `o` as `maxps` does.
        // SAFETY: as in `add`.
        unsafe { Neon(vbslq_f32(vcgtq_f32(self.0, o.0), self.0, o.0)) }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vbslq_f32(vcltq_f32(self.0, o.0), self.0, o.0)) }
    }
    #[inline(always)]
    fn round(self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vrndnq_f32(self.0)) }
    }
    #[inline(always)]
    fn exp2i(self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            let n = vaddq_s32(vcvtnq_s32_f32(self.0), vdupq_n_s32(127));
            Neon(vreinterpretq_f32_s32(vshlq_n_s32::<23>(n)))
        }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vabsq_f32(self.0)) }
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vsqrtq_f32(self.0)) }
    }
    #[inline(always)]
    fn copysign(self, s: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            let sign = vdupq_n_u32(0x8000_0000);
            Neon(vbslq_f32(sign, s.0, self.0))
        }
    }
    #[inline(always)]
    fn select_gt(self, t: Self, a: Self, b: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Neon(vbslq_f32(vcgtq_f32(self.0, t.0), a.0, b.0)) }
    }
    #[inline(always)]
    fn hsum(self) -> f32 {
        // SAFETY: as in `add`.
        unsafe { vaddvq_f32(self.0) }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        // SAFETY: as in `add`.
        unsafe { vmaxvq_f32(self.0) }
    }
}

ew_tier!(EW_NEON, Neon, [#[target_feature(enable = "neon")]], f16: (crate::ew::f32_to_f16_portable, crate::ew::f16_to_f32_portable));
