//! AVX2 lanes for the elementwise tier ([`crate::ew`]) and F16C half conversion.

use crate::ew::{ew_tier, Lanes};
use core::arch::x86_64::*;
use half::f16;

/// Eight f32 lanes in a `ymm` register. Only `unsafe` constructors make one, and they
/// run inside the AVX2 tier's kernels, so a value proves the CPU has AVX2 and FMA.
#[derive(Clone, Copy)]
pub(crate) struct Avx(__m256);

impl Lanes for Avx {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Avx(_mm256_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self {
        let b = _mm_loadl_epi64(p as *const __m128i);
        Avx(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        let b = _mm_loadl_epi64(p as *const __m128i);
        Avx(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)))
    }
    #[inline(always)]
    unsafe fn store_u8(self, p: *mut u8) {
        // Lanes are integral in [0, 255]: the conversion is exact and the packs do not
        // saturate.
        let i = _mm256_cvtps_epi32(self.0);
        let w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        _mm_storel_epi64(p as *mut __m128i, _mm_packus_epi16(w, w));
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8) {
        let i = _mm256_cvtps_epi32(self.0);
        let w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        _mm_storel_epi64(p as *mut __m128i, _mm_packs_epi16(w, w));
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: `self` exists, so the CPU has AVX2 (see `Avx`).
        unsafe { Avx(_mm256_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx(_mm256_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx(_mm256_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx(_mm256_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: as in `add` (the tier also requires FMA).
        unsafe { Avx(_mm256_fmadd_ps(self.0, a.0, b.0)) }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx(_mm256_max_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx(_mm256_min_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn round(self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            Avx(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
    }
    #[inline(always)]
    fn exp2i(self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            let n = _mm256_add_epi32(_mm256_cvtps_epi32(self.0), _mm256_set1_epi32(127));
            Avx(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(n)))
        }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0)) }
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        // SAFETY: as in `add`.
        unsafe { Avx(_mm256_sqrt_ps(self.0)) }
    }
    #[inline(always)]
    fn copysign(self, s: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            Avx(_mm256_or_ps(
                _mm256_andnot_ps(sign, self.0),
                _mm256_and_ps(sign, s.0),
            ))
        }
    }
    #[inline(always)]
    fn select_gt(self, t: Self, a: Self, b: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe {
            Avx(_mm256_blendv_ps(
                b.0,
                a.0,
                _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, t.0),
            ))
        }
    }
    #[inline(always)]
    fn hsum(self) -> f32 {
        // SAFETY: as in `add`.
        unsafe {
            let s = _mm_add_ps(
                _mm256_castps256_ps128(self.0),
                _mm256_extractf128_ps(self.0, 1),
            );
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        // SAFETY: as in `add`.
        unsafe {
            let s = _mm_max_ps(
                _mm256_castps256_ps128(self.0),
                _mm256_extractf128_ps(self.0, 1),
            );
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }
    }
}

ew_tier!(EW_AVX2, Avx, [#[target_feature(enable = "avx2,fma,f16c")]], f16: (f32_to_f16__f16c, f16_to_f32__f16c));

/// f32 → f16 with `vcvtps2ph`, round to nearest even as `half::f16::from_f32`.
///
/// # Safety
/// The CPU has F16C and AVX.
#[target_feature(enable = "avx,f16c")]
pub unsafe fn f32_to_f16__f16c(x: &[f32], y: &mut [f16]) {
    let len = x.len().min(y.len());
    let n = len - len % 8;
    let mut i = 0;
    while i < n {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
        _mm_storeu_si128(y.as_mut_ptr().add(i) as *mut __m128i, h);
        i += 8;
    }
    crate::quant::f32_to_f16(&x[n..len], &mut y[n..len]);
}

/// f16 → f32 with `vcvtph2ps` (exact).
///
/// # Safety
/// The CPU has F16C and AVX.
#[target_feature(enable = "avx,f16c")]
pub unsafe fn f16_to_f32__f16c(x: &[f16], y: &mut [f32]) {
    let len = x.len().min(y.len());
    let n = len - len % 8;
    let mut i = 0;
    while i < n {
        let h = _mm_loadu_si128(x.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    crate::quant::f16_to_f32(&x[n..len], &mut y[n..len]);
}
