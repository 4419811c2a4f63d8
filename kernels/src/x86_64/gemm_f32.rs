use crate::pack::F32_NR;
use crate::F32GemmArgs;
use core::arch::x86_64::*;

/// `R` rows (at most 6) × 16 columns of `A·B` over one packed panel, left in registers
/// for the epilogue: 12 accumulators, 2 panel vectors and the broadcast. With `HALVES` = 1
/// only the first 8 columns are summed (a last panel of at most 8 columns).
///
/// # Safety
/// Each `a[r]` points at `k` readable floats, `b` at a packed panel of `k` rows; the CPU
/// has AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_6x16_avx2<const R: usize, const HALVES: usize>(
    k: usize,
    a: &[*const f32; R],
    b: *const f32,
) -> [[__m256; 2]; R] {
    let mut c = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..k {
        let bp = b.add(kk * F32_NR);
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for r in 0..R {
            let av = _mm256_broadcast_ss(&*a[r].add(kk));
            c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
            if HALVES == 2 {
                c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
            }
        }
    }
    c
}

/// The f32 GEMM on AVX2: 6×16 tiles whose epilogue (bias, then the clamp to `[lo, hi]`:
/// `max` then `min`, NaN to `lo` as `f32::max` gives) runs on the accumulators in
/// registers; column blocks of packed B that stay in L2, as the shared driver walks them.
///
/// # Safety
/// `args` describes valid buffers and the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn f32_gemm_6x16__avx2(args: &F32GemmArgs) {
    if args.m == 0 || args.n == 0 {
        return;
    }
    let panels = args.n.div_ceil(F32_NR);
    let block = if args.m <= 6 {
        panels
    } else {
        (crate::tile::F32_L2_FLOATS / (args.k * F32_NR).max(1)).max(1)
    };
    let mut p0 = 0;
    while p0 < panels {
        let p1 = (p0 + block).min(panels);
        let mut i0 = 0;
        while i0 < args.m {
            // The last block of fewer than 6 rows takes the smallest tile that holds it.
            match args.m - i0 {
                5.. => block_avx2::<6>(args, i0, p0..p1),
                3..=4 => block_avx2::<4>(args, i0, p0..p1),
                2 => block_avx2::<2>(args, i0, p0..p1),
                _ => block_avx2::<1>(args, i0, p0..p1),
            }
            i0 += 6;
        }
        p0 = p1;
    }
}

/// Rows `i0..i0 + R` of A (those below `m`) against `panels`, each tile's epilogue on its
/// accumulators in registers, the columns past `n` left alone.
///
/// # Safety
/// As [`f32_gemm_6x16__avx2`], with `i0 < m` and the panels within B.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const R: usize>(
    args: &F32GemmArgs,
    i0: usize,
    panels: core::ops::Range<usize>,
) {
    let rows: [*const f32; R] =
        core::array::from_fn(|r| args.a.add((i0 + r).min(args.m - 1) * args.lda));
    let live = (args.m - i0).min(R);
    let (lo, hi) = (_mm256_set1_ps(args.lo), _mm256_set1_ps(args.hi));
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for p in panels {
        let col0 = p * F32_NR;
        let ncols = (args.n - col0).min(F32_NR);
        let b = args.b.add(p * args.k * F32_NR);
        let c = if ncols > 8 {
            micro_6x16_avx2::<R, 2>(args.k, &rows, b)
        } else {
            micro_6x16_avx2::<R, 1>(args.k, &rows, b)
        };
        let nv = _mm256_set1_epi32(ncols as i32);
        let mask = [
            _mm256_cmpgt_epi32(nv, idx),
            _mm256_cmpgt_epi32(nv, _mm256_add_epi32(idx, _mm256_set1_epi32(8))),
        ];
        let bias: [Option<__m256>; 2] = core::array::from_fn(|h| {
            (!args.bias.is_null()).then(|| _mm256_maskload_ps(args.bias.add(col0 + 8 * h), mask[h]))
        });
        for (r, acc) in c.iter().enumerate().take(live) {
            let y = args.c.add((i0 + r) * args.ldc + col0);
            for h in 0..2 {
                let v = match bias[h] {
                    Some(b) => _mm256_add_ps(acc[h], b),
                    None => acc[h],
                };
                let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                if ncols >= 16 {
                    _mm256_storeu_ps(y.add(8 * h), v);
                } else {
                    _mm256_maskstore_ps(y.add(8 * h), mask[h], v);
                }
            }
        }
    }
}

/// `R` rows (at most 12) × 16 columns of `A·B` over one packed panel, left in registers.
///
/// # Safety
/// Each `a[r]` points at `k` readable floats, `b` at a packed panel of `k` rows; the CPU
/// has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn micro_12x16_avx512<const R: usize>(
    k: usize,
    a: &[*const f32; R],
    b: *const f32,
) -> [__m512; R] {
    let mut c = [_mm512_setzero_ps(); R];
    for kk in 0..k {
        let bv = _mm512_loadu_ps(b.add(kk * F32_NR));
        for r in 0..R {
            c[r] = _mm512_fmadd_ps(_mm512_set1_ps(*a[r].add(kk)), bv, c[r]);
        }
    }
    c
}

/// The epilogue of `P` panels' sums for rows `i0..i0 + live`, panels `p0..`: bias, then
/// the clamp to `[lo, hi]`, stored under the mask of the columns inside `n`.
///
/// # Safety
/// As [`block_avx512`], with the `P` panels from `p0` within B.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_panels<const R: usize, const P: usize>(
    args: &F32GemmArgs,
    i0: usize,
    live: usize,
    p0: usize,
    c: [[__m512; P]; R],
    lo: __m512,
    hi: __m512,
) {
    for p in 0..P {
        let col0 = (p0 + p) * F32_NR;
        let ncols = (args.n - col0).min(F32_NR);
        let mask: u16 = if ncols >= 16 {
            0xffff
        } else {
            (1u16 << ncols) - 1
        };
        let bias = (!args.bias.is_null()).then(|| _mm512_maskz_loadu_ps(mask, args.bias.add(col0)));
        for (r, acc) in c.iter().enumerate().take(live) {
            let v = match bias {
                Some(b) => _mm512_add_ps(acc[p], b),
                None => acc[p],
            };
            let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            _mm512_mask_storeu_ps(args.c.add((i0 + r) * args.ldc + col0), mask, v);
        }
    }
}

/// `R` rows × `P` panels of `A·B`, left in registers: for fewer than 8 rows, several panels
/// at once give the FMAs `R·P` independent sums (one panel's `R` would wait on each FMA's
/// latency: a one-row GEMM ran at a quarter of the issue rate). Each sum runs over `k` in
/// order, as in [`micro_12x16_avx512`]: the same bits.
///
/// # Safety
/// As [`micro_12x16_avx512`], with `P` packed panels of `k` rows from `b` on.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn micro_panels_avx512<const R: usize, const P: usize>(
    k: usize,
    a: &[*const f32; R],
    b: *const f32,
) -> [[__m512; P]; R] {
    let mut c = [[_mm512_setzero_ps(); P]; R];
    for kk in 0..k {
        let mut bv = [_mm512_setzero_ps(); P];
        for (p, v) in bv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(b.add((p * k + kk) * F32_NR));
        }
        for r in 0..R {
            let av = _mm512_set1_ps(*a[r].add(kk));
            for p in 0..P {
                c[r][p] = _mm512_fmadd_ps(av, bv[p], c[r][p]);
            }
        }
    }
    c
}

/// The f32 GEMM on AVX-512: 12×16 tiles whose epilogue (bias, then the clamp to
/// `[lo, hi]`: `max` then `min`, NaN to `lo` as `f32::max` gives) runs on the
/// accumulators in registers; column blocks of packed B that stay in L2, as the shared
/// driver walks them.
///
/// # Safety
/// `args` describes valid buffers and the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_gemm_12x16__avx512(args: &F32GemmArgs) {
    if args.m == 0 || args.n == 0 {
        return;
    }
    let panels = args.n.div_ceil(F32_NR);
    // Column blocks that stay in L2 for the next rows; one row tile reads each panel once.
    let block = if args.m <= 12 {
        panels
    } else {
        (crate::tile::F32_L2_FLOATS / (args.k * F32_NR).max(1)).max(1)
    };
    let (lo, hi) = (_mm512_set1_ps(args.lo), _mm512_set1_ps(args.hi));
    let mut p0 = 0;
    while p0 < panels {
        let p1 = (p0 + block).min(panels);
        let mut i0 = 0;
        while i0 < args.m {
            // The last block of fewer than 12 rows takes the smallest tile that holds it.
            match args.m - i0 {
                9.. => block_avx512::<12>(args, i0, p0..p1, lo, hi),
                5..=8 => block_avx512::<8>(args, i0, p0..p1, lo, hi),
                3..=4 => block_avx512::<4>(args, i0, p0..p1, lo, hi),
                2 => block_avx512::<2>(args, i0, p0..p1, lo, hi),
                _ => block_avx512::<1>(args, i0, p0..p1, lo, hi),
            }
            i0 += 12;
        }
        p0 = p1;
    }
}

/// Rows `i0..i0 + R` of A (those below `m`) against `panels`, each tile's epilogue on its
/// accumulators in registers.
///
/// # Safety
/// As [`f32_gemm_12x16__avx512`], with `i0 < m` and the panels within B.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512<const R: usize>(
    args: &F32GemmArgs,
    i0: usize,
    panels: core::ops::Range<usize>,
    lo: __m512,
    hi: __m512,
) {
    let rows: [*const f32; R] =
        core::array::from_fn(|r| args.a.add((i0 + r).min(args.m - 1) * args.lda));
    let live = (args.m - i0).min(R);
    // Fewer than 8 rows: panels in groups, so that 8 sums run side by side.
    let group = match R {
        1 => 8,
        2 => 4,
        3 | 4 => 2,
        _ => 1,
    };
    let mut p = panels.start;
    while p + group <= panels.end && group > 1 {
        let b = args.b.add(p * args.k * F32_NR);
        match group {
            8 => store_panels(
                args,
                i0,
                live,
                p,
                micro_panels_avx512::<R, 8>(args.k, &rows, b),
                lo,
                hi,
            ),
            4 => store_panels(
                args,
                i0,
                live,
                p,
                micro_panels_avx512::<R, 4>(args.k, &rows, b),
                lo,
                hi,
            ),
            _ => store_panels(
                args,
                i0,
                live,
                p,
                micro_panels_avx512::<R, 2>(args.k, &rows, b),
                lo,
                hi,
            ),
        }
        p += group;
    }
    for p in p..panels.end {
        let c = micro_12x16_avx512::<R>(args.k, &rows, args.b.add(p * args.k * F32_NR));
        store_panels(args, i0, live, p, c.map(|v| [v]), lo, hi);
    }
}
