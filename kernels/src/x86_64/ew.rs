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

#[cfg(feature = "std")]
crate::ew::program_fn!(program__avx2, Avx, "avx2,fma");

ew_tier!(EW_AVX2_F32, Avx, [#[target_feature(enable = "avx2,fma,f16c")]], f16: (f32_to_f16__f16c, f16_to_f32__f16c));

/// The AVX2 tier: the generic bodies and the blocked transpose.
pub static EW_AVX2: crate::ew::EwFns = crate::ew::EwFns {
    transpose_f32: transpose_f32__avx,
    ..EW_AVX2_F32
};

/// [`crate::elementwise::transpose_f32`] in 8 × 8 blocks transposed in registers (eight
/// row loads, three rounds of shuffles, eight column stores); the columns and rows past
/// the last whole block as the reference. A copy: the same values on every tier.
///
/// # Safety
/// The CPU has AVX; `x` holds `rows·cols` values and `c0 <= cols`.
#[target_feature(enable = "avx")]
pub unsafe fn transpose_f32__avx(x: &[f32], rows: usize, cols: usize, c0: usize, y: &mut [f32]) {
    if rows == 3 {
        // Three planes into triples (an RGB image into NHWC): no 8 × 8 block, and a
        // loop of fixed shape the compiler vectorises with shuffles.
        let k = (y.len() / 3).min(cols.saturating_sub(c0));
        let (p0, rest) = x[c0..].split_at(cols);
        let (p1, p2) = rest.split_at(cols);
        for (((t, &a), &b), &c) in y[..3 * k].chunks_exact_mut(3).zip(p0).zip(p1).zip(p2) {
            t[0] = a;
            t[1] = b;
            t[2] = c;
        }
        return;
    }
    let k = y
        .len()
        .checked_div(rows)
        .unwrap_or(0)
        .min(cols.saturating_sub(c0));
    let (r8, k8) = (rows - rows % 8, k - k % 8);
    assert!(x.len() >= rows * cols && y.len() >= k * rows);
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    // Block (r0, cb): rows r0..r0 + 8 ≤ r8, columns cb..cb + 8 ≤ k8.
    let block = |r0: usize, cb: usize| {
        // SAFETY: rows r0..r0 + 8 ≤ rows and columns c0 + cb..c0 + cb + 8 ≤ c0 + k ≤
        // cols: within `x` (checked above); each store is 8 values at (cb + j)·rows +
        // r0, below k·rows ≤ y.len().
        unsafe {
            let at = xp.add(r0 * cols + c0 + cb);
            let r = [
                _mm256_loadu_ps(at),
                _mm256_loadu_ps(at.add(cols)),
                _mm256_loadu_ps(at.add(2 * cols)),
                _mm256_loadu_ps(at.add(3 * cols)),
                _mm256_loadu_ps(at.add(4 * cols)),
                _mm256_loadu_ps(at.add(5 * cols)),
                _mm256_loadu_ps(at.add(6 * cols)),
                _mm256_loadu_ps(at.add(7 * cols)),
            ];
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (j, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(yp.add((cb + j) * rows + r0), v);
            }
        }
    };
    // Blocks down RUN rows per column block: each output row gets RUN consecutive values
    // (whole cache lines) at once. Output rows a power of two apart share cache sets, so
    // a line left half written is evicted before its other half comes.
    const RUN: usize = 128;
    for g in (0..r8).step_by(RUN) {
        for cb in (0..k8).step_by(8) {
            for r0 in (g..(g + RUN).min(r8)).step_by(8) {
                block(r0, cb);
            }
        }
    }
    // Rows past the last block of 8 in the blocked columns; every row of the rest.
    for c in 0..k {
        let from = if c < k8 { r8 } else { 0 };
        for r in from..rows {
            y[c * rows + r] = x[r * cols + c0 + c];
        }
    }
}

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
