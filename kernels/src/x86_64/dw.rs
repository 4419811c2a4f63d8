use crate::DwI8Args;
use core::arch::x86_64::*;

/// Depthwise int8, 16 channels per zmm; taps outside the image are skipped, as in the
/// reference. The epilogue is the reference's operations in the same order.
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has
/// AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn dw_i8_16c__avx512(a: &DwI8Args) {
    let zero = _mm512_set1_epi32(a.x_zero);
    let lo = _mm512_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm512_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm512_set1_epi32(a.y_zero);
    for oy in 0..a.oh {
        let (y0, ky0, ky1) = DwI8Args::taps_inside(oy, a.stride, a.pad_top, a.h, a.kh);
        for ox in 0..a.ow {
            let (x0, kx0, kx1) = DwI8Args::taps_inside(ox, a.stride, a.pad_left, a.w, a.kw);
            let mut c0 = 0;
            while c0 < a.c {
                let nc = (a.c - c0).min(16);
                let m: u16 = if nc == 16 { 0xffff } else { (1u16 << nc) - 1 };
                let mut acc = _mm512_setzero_si512();
                for ky in ky0..ky1 {
                    let iy = (y0 + ky as isize) as usize;
                    for kx in kx0..kx1 {
                        let ix = (x0 + kx as isize) as usize;
                        let xp = a.x.add((iy * a.w + ix) * a.c + c0);
                        let wp = a.weights.add((ky * a.kw + kx) * a.c + c0);
                        let xv = _mm512_sub_epi32(
                            _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, xp as *const i8)),
                            zero,
                        );
                        let wv = _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(m, wp));
                        acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(xv, wv));
                    }
                }
                if !a.bias.is_null() {
                    acc = _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(m, a.bias.add(c0)));
                }
                let v = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(acc),
                    _mm512_maskz_loadu_ps(m, a.scale.add(c0)),
                );
                let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), yz);
                _mm_mask_storeu_epi8(
                    a.y.add((oy * a.ow + ox) * a.c + c0) as *mut i8,
                    m,
                    _mm512_cvtepi32_epi8(q),
                );
                c0 += 16;
            }
        }
    }
}

/// 16 channels of one output pixel: taps taken in pairs, `(x - z)` and the weights as i16
/// interleaved so one `vpmaddwd` adds two taps' products per channel (exact: |x - z| ≤
/// 255, |w| ≤ 128); no 32-bit multiplies.
///
/// # Safety
/// As [`dw_i8_8c__avx2`], with `c0 + 16 ≤ c`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::type_complexity)]
unsafe fn dw16(
    a: &DwI8Args,
    (oy, ox): (usize, usize),
    (y0, x0): (isize, isize),
    (ky0, ky1, kx0, kx1): (usize, usize, usize, usize),
    c0: usize,
    (lo, hi, yz): (__m256, __m256, __m256i),
) {
    let zero = _mm256_set1_epi16(a.x_zero as i16);
    let (mut acc_lo, mut acc_hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut pending: Option<(__m256i, __m256i)> = None;
    let mut add_pair = |x0v: __m256i, w0v: __m256i, x1v: __m256i, w1v: __m256i| {
        // Lanes: lo = channels 0-3 | 8-11, hi = 4-7 | 12-15, each (tap a, tap b).
        acc_lo = _mm256_add_epi32(
            acc_lo,
            _mm256_madd_epi16(
                _mm256_unpacklo_epi16(x0v, x1v),
                _mm256_unpacklo_epi16(w0v, w1v),
            ),
        );
        acc_hi = _mm256_add_epi32(
            acc_hi,
            _mm256_madd_epi16(
                _mm256_unpackhi_epi16(x0v, x1v),
                _mm256_unpackhi_epi16(w0v, w1v),
            ),
        );
    };
    for ky in ky0..ky1 {
        let iy = (y0 + ky as isize) as usize;
        for kx in kx0..kx1 {
            let ix = (x0 + kx as isize) as usize;
            let xp = a.x.add((iy * a.w + ix) * a.c + c0);
            let wp = a.weights.add((ky * a.kw + kx) * a.c + c0);
            let xv = _mm256_sub_epi16(
                _mm256_cvtepu8_epi16(_mm_loadu_si128(xp as *const __m128i)),
                zero,
            );
            let wv = _mm256_loadu_si256(wp as *const __m256i);
            match pending.take() {
                None => pending = Some((xv, wv)),
                Some((xa, wa)) => add_pair(xa, wa, xv, wv),
            }
        }
    }
    if let Some((xa, wa)) = pending {
        let z = _mm256_setzero_si256();
        add_pair(xa, wa, z, z);
    }
    let halves = [
        _mm256_permute2x128_si256(acc_lo, acc_hi, 0x20),
        _mm256_permute2x128_si256(acc_lo, acc_hi, 0x31),
    ];
    let yp = a.y.add((oy * a.ow + ox) * a.c + c0);
    for (h, mut acc) in halves.into_iter().enumerate() {
        let c = c0 + 8 * h;
        if !a.bias.is_null() {
            acc = _mm256_add_epi32(acc, _mm256_loadu_si256(a.bias.add(c) as *const __m256i));
        }
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(a.scale.add(c)));
        let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), yz);
        let mut out = [0i32; 8];
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, q);
        for (i, &o) in out.iter().enumerate() {
            *yp.add(8 * h + i) = o as u8;
        }
    }
}

/// Depthwise int8, 16 channels at a time with `vpmaddwd` over tap pairs, then 8 per ymm
/// (AVX2 machines without AVX-512). A channel tail shorter than 8 goes through
/// zero-padded stack copies.
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has AVX2.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dw_i8_8c__avx2(a: &DwI8Args) {
    let zero = _mm256_set1_epi32(a.x_zero);
    let lo = _mm256_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm256_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm256_set1_epi32(a.y_zero);
    for oy in 0..a.oh {
        let (y0, ky0, ky1) = DwI8Args::taps_inside(oy, a.stride, a.pad_top, a.h, a.kh);
        for ox in 0..a.ow {
            let (x0, kx0, kx1) = DwI8Args::taps_inside(ox, a.stride, a.pad_left, a.w, a.kw);
            let mut c0 = 0;
            while c0 < a.c {
                if a.c - c0 >= 16 {
                    dw16(
                        a,
                        (oy, ox),
                        (y0, x0),
                        (ky0, ky1, kx0, kx1),
                        c0,
                        (lo, hi, yz),
                    );
                    c0 += 16;
                    continue;
                }
                let nc = (a.c - c0).min(8);
                let mut acc = _mm256_setzero_si256();
                for ky in ky0..ky1 {
                    let iy = (y0 + ky as isize) as usize;
                    for kx in kx0..kx1 {
                        let ix = (x0 + kx as isize) as usize;
                        let xp = a.x.add((iy * a.w + ix) * a.c + c0);
                        let wp = a.weights.add((ky * a.kw + kx) * a.c + c0);
                        let (xv, wv) = if nc == 8 {
                            // SAFETY: 8 channels from c0 lie inside the row (nc == 8).
                            (
                                _mm256_cvtepu8_epi32(_mm_loadl_epi64(xp as *const __m128i)),
                                _mm256_cvtepi16_epi32(_mm_loadu_si128(wp as *const __m128i)),
                            )
                        } else {
                            let (mut xb, mut wb) = ([0u8; 8], [0i16; 8]);
                            core::ptr::copy_nonoverlapping(xp, xb.as_mut_ptr(), nc);
                            core::ptr::copy_nonoverlapping(wp, wb.as_mut_ptr(), nc);
                            (
                                _mm256_cvtepu8_epi32(
                                    _mm_loadl_epi64(xb.as_ptr() as *const __m128i),
                                ),
                                _mm256_cvtepi16_epi32(_mm_loadu_si128(
                                    wb.as_ptr() as *const __m128i
                                )),
                            )
                        };
                        let xv = _mm256_sub_epi32(xv, zero);
                        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(xv, wv));
                    }
                }
                let (mut bias, mut scale) = ([0i32; 8], [0f32; 8]);
                if !a.bias.is_null() {
                    core::ptr::copy_nonoverlapping(a.bias.add(c0), bias.as_mut_ptr(), nc);
                }
                core::ptr::copy_nonoverlapping(a.scale.add(c0), scale.as_mut_ptr(), nc);
                acc = _mm256_add_epi32(acc, _mm256_loadu_si256(bias.as_ptr() as *const __m256i));
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(scale.as_ptr()));
                let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), yz);
                let mut out = [0i32; 8];
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, q);
                let yp = a.y.add((oy * a.ow + ox) * a.c + c0);
                for (i, &o) in out.iter().enumerate().take(nc) {
                    *yp.add(i) = o as u8;
                }
                c0 += 8;
            }
        }
    }
}
