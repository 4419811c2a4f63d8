//! AVX-512F lanes for the elementwise tier ([`crate::ew`]).
//!
//! Not executed on the development machine (no AVX-512; qemu 7.2 does not emulate it):
//! the tier is listed in the registry, its test skips visibly there and runs on any
//! AVX-512 machine. Each method is the 16-lane form of the AVX2 one in `ew.rs`.

use crate::ew::{ew_tier, Lanes};
use core::arch::x86_64::*;

/// Sixteen f32 lanes in a `zmm` register. Only `unsafe` constructors make one, inside
/// the AVX-512 tier's kernels, so a value proves the CPU has AVX-512F.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

impl Lanes for Avx512 {
    const N: usize = 16;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Avx512(_mm512_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self {
        let b = _mm_loadu_si128(p as *const __m128i);
        Avx512(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        let b = _mm_loadu_si128(p as *const __m128i);
        Avx512(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)))
    }
    #[inline(always)]
    unsafe fn store_u8(self, p: *mut u8) {
        // Lanes are integral in [0, 255]: `vpmovdb` keeps the low byte, which is exact.
        let b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(self.0));
        _mm_storeu_si128(p as *mut __m128i, b)
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8) {
        let b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(self.0));
        _mm_storeu_si128(p as *mut __m128i, b)
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: `self` exists, so the CPU has AVX-512F (see `Avx512`).
        unsafe { Avx512(_mm512_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_fmadd_ps(self.0, a.0, b.0)) }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_max_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_min_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn round(self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            Avx512(_mm512_roundscale_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
    }
    #[inline(always)]
    fn exp2i(self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            let n = _mm512_add_epi32(_mm512_cvtps_epi32(self.0), _mm512_set1_epi32(127));
            Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(n)))
        }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_abs_ps(self.0)) }
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx512(_mm512_sqrt_ps(self.0)) }
    }
    #[inline(always)]
    fn copysign(self, s: Self) -> Self {
        // Integer logic: the float forms of and/andnot need AVX-512DQ.
        // SAFETY: as in `add`.
        unsafe {
            let sign = _mm512_set1_epi32(i32::MIN);
            let mag = _mm512_andnot_si512(sign, _mm512_castps_si512(self.0));
            let sgn = _mm512_and_si512(sign, _mm512_castps_si512(s.0));
            Avx512(_mm512_castsi512_ps(_mm512_or_si512(mag, sgn)))
        }
    }
    #[inline(always)]
    fn select_gt(self, t: Self, a: Self, b: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, t.0);
            Avx512(_mm512_mask_blend_ps(m, b.0, a.0))
        }
    }
    #[inline(always)]
    fn hsum(self) -> f32 {
        // SAFETY: as in `add`.
        unsafe { _mm512_reduce_add_ps(self.0) }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        // SAFETY: as in `add`.
        unsafe { _mm512_reduce_max_ps(self.0) }
    }
}

#[cfg(feature = "std")]
crate::ew::program_fn!(program__avx512, Avx512, "avx512f");

ew_tier!(EW_AVX512_GENERIC, Avx512, [#[target_feature(enable = "avx512f")]], f16: (super::f32_to_f16__f16c, super::f16_to_f32__f16c));

/// The AVX-512 tier: the generic bodies, and the AVX2 tier's transpose.
pub static EW_AVX512: crate::ew::EwFns = crate::ew::EwFns {
    transpose_f32: super::ew::transpose_f32__avx,
    ..EW_AVX512_GENERIC
};

/// The AVX-512 tier with VBMI's byte permutes for table lookups.
pub static EW_AVX512VBMI: crate::ew::EwFns = crate::ew::EwFns {
    lut_u8: lut_u8__avx512vbmi,
    ..EW_AVX512
};

/// `y[i] = t[x[i]]` through one table of 256 entries, 64 bytes at a time: two two-source
/// byte permutes look each byte up among entries 0-127 and 128-255, and its top bit
/// picks one. The tail as the reference.
///
/// # Safety
/// The CPU has AVX-512F/BW and AVX-512 VBMI; `t` holds 256 entries.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub unsafe fn lut_u8__avx512vbmi(x: &[u8], t: &[u8], y: &mut [u8]) {
    let len = x.len().min(y.len());
    let n = len - len % 64;
    let t = &t[..256];
    // SAFETY: `t` holds 256 bytes: four loads of 64.
    let (t0, t1, t2, t3) = unsafe {
        (
            _mm512_loadu_si512(t.as_ptr() as *const _),
            _mm512_loadu_si512(t.as_ptr().add(64) as *const _),
            _mm512_loadu_si512(t.as_ptr().add(128) as *const _),
            _mm512_loadu_si512(t.as_ptr().add(192) as *const _),
        )
    };
    let mut i = 0;
    while i < n {
        // SAFETY: `i + 64 <= n <= len`, within `x` and `y`.
        unsafe {
            let idx = _mm512_loadu_si512(x.as_ptr().add(i) as *const _);
            let lo = _mm512_permutex2var_epi8(t0, idx, t1);
            let hi = _mm512_permutex2var_epi8(t2, idx, t3);
            let top = _mm512_movepi8_mask(idx);
            _mm512_storeu_si512(
                y.as_mut_ptr().add(i) as *mut _,
                _mm512_mask_blend_epi8(top, lo, hi),
            );
        }
        i += 64;
    }
    crate::elementwise::lut_u8(&x[n..len], t, &mut y[n..len]);
}
