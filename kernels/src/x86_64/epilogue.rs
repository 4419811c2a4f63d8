use crate::pack::I8_NR;
use crate::{I8GemmArgs, I8Out};
use core::arch::x86_64::*;

/// AVX2 form of [`crate::quant::i8_epilogue`], 8 columns at a time (the last `ncols % 8`
/// columns of an edge tile take the scalar path); same operations in the same order, so
/// bit-identical.
///
/// # Safety
/// `row < m`, `col0 + ncols ≤ n`, buffers valid, CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn i8_epi_avx2(
    args: &I8GemmArgs,
    row: usize,
    col0: usize,
    ncols: usize,
    acc: &[i32; I8_NR],
) {
    let halves = ncols.min(16) / 8;
    if halves == 0 {
        crate::tile::i8_epi_scalar(args, row, col0, ncols, acc);
        return;
    }
    let zero = _mm256_set1_epi32(crate::quant::effective_a_zero(args));
    let idx = row * args.ldc + col0;
    let lo = _mm256_set1_ps((args.qmin - args.y_zero) as f32);
    let hi = _mm256_set1_ps((args.qmax - args.y_zero) as f32);
    let yz = _mm256_set1_epi32(args.y_zero);
    let mut q = [0i32; 16];
    for h in 0..halves {
        let o = 8 * h;
        let colsum = _mm256_loadu_si256(args.colsum.add(col0 + o) as *const __m256i);
        let mut t = _mm256_sub_epi32(
            _mm256_loadu_si256(acc.as_ptr().add(o) as *const __m256i),
            _mm256_mullo_epi32(colsum, zero),
        );
        if !args.bias.is_null() {
            t = _mm256_add_epi32(
                t,
                _mm256_loadu_si256(args.bias.add(col0 + o) as *const __m256i),
            );
        }
        let v = _mm256_mul_ps(
            _mm256_cvtepi32_ps(t),
            _mm256_loadu_ps(args.scale.add(col0 + o)),
        );
        if args.out == I8Out::F32 {
            _mm256_storeu_ps((args.c as *mut f32).add(idx + o), v);
            continue;
        }
        let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        let r = _mm256_add_epi32(_mm256_cvtps_epi32(v), yz);
        _mm256_storeu_si256(q.as_mut_ptr().add(o) as *mut __m256i, r);
    }
    if args.out == I8Out::U8 && halves == 2 {
        // Values are already in [qmin, qmax] ⊂ [0, 255]: the saturating packs are exact.
        let a = _mm256_loadu_si256(q.as_ptr() as *const __m256i);
        let b = _mm256_loadu_si256(q.as_ptr().add(8) as *const __m256i);
        let w = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0b11_01_10_00);
        let bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128(args.c.add(idx) as *mut __m128i, bytes);
    } else if args.out != I8Out::F32 {
        // Values are already in [qmin, qmax]: narrowing keeps the low byte, as the
        // scalar `as u8` / `as i8` does.
        let c = args.c.add(idx);
        for (j, &v) in q.iter().enumerate().take(8 * halves) {
            *c.add(j) = v as u8;
        }
    }
    let zero = crate::quant::effective_a_zero(args);
    for j in 8 * halves..ncols {
        let col = col0 + j;
        let bias = if args.bias.is_null() {
            0
        } else {
            *args.bias.add(col)
        };
        let t = acc[j] - zero * *args.colsum.add(col) + bias;
        crate::quant::i8_epilogue(args, t, *args.scale.add(col), row, col);
    }
}
