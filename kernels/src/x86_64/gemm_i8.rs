use crate::pack::I8_NR;
use crate::tile::{drive_i8, for_each_a4, load_a4};
use crate::I8GemmArgs;
use core::arch::x86_64::*;

/// `R` rows (at most 12) × 16 columns of `init + A·B` over one packed panel: the `R`
/// accumulators stay in registers for the epilogue. With `FLIP` (i8 A) each word's sign bits are flipped;
/// otherwise A's words are broadcast straight from memory. When `k` is not a multiple of
/// 4, the rows whose bit is set in `whole` read their last word whole: its bytes past `k`
/// (the next row's) meet the panel's zero padding, so they add nothing.
///
/// # Safety
/// Each `a[r]` points at `k` readable bytes (`k` rounded up to a multiple of 4 where its
/// bit in `whole` is set), `b` at a packed panel of `k`; the CPU has AVX-512F/BW/VL and
/// AVX-512 VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn micro_12x16_vnni<const FLIP: bool, const R: usize>(
    k: usize,
    a: &[*const u8; R],
    b: *const i8,
    whole: u16,
    init: __m512i,
) -> [__m512i; R] {
    let mut c = [init; R];
    let mask = _mm512_set1_epi32(0x8080_8080u32 as i32);
    let full = k / 4;
    for g in 0..full {
        let w = _mm512_loadu_si512(b.add(g * 64) as *const _);
        for r in 0..R {
            let mut av = _mm512_set1_epi32((a[r].add(g * 4) as *const i32).read_unaligned());
            if FLIP {
                av = _mm512_xor_si512(av, mask);
            }
            c[r] = _mm512_dpbusd_epi32(c[r], av, w);
        }
    }
    if full * 4 < k {
        let w = _mm512_loadu_si512(b.add(full * 64) as *const _);
        for r in 0..R {
            let av = if whole & (1 << r) != 0 {
                let mut v = (a[r].add(full * 4) as *const u32).read_unaligned();
                if FLIP {
                    v ^= 0x8080_8080;
                }
                v as i32
            } else {
                load_a4(a[r], full, k, FLIP) as i32
            };
            c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32(av), w);
        }
    }
    c
}

/// The int8 GEMM on AVX-512 VNNI: 12×16 tiles whose epilogue runs on the accumulators
/// in registers, the reference's operations in the same order (the zero-point term and
/// the bias are folded into one i32 vector per panel first: integer sums, exact).
///
/// # Safety
/// `args` describes valid buffers and the CPU has AVX-512F/BW/VL and AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn i8_gemm_12x16__avx512vnni(args: &I8GemmArgs) {
    if args.m == 0 || args.n == 0 {
        return;
    }
    let e = Epi {
        zero: _mm512_set1_epi32(crate::quant::effective_a_zero(args)),
        lo: _mm512_set1_ps((args.qmin - args.y_zero) as f32),
        hi: _mm512_set1_ps((args.qmax - args.y_zero) as f32),
        yz: _mm512_set1_epi32(args.y_zero),
    };
    let mut i0 = 0;
    while i0 < args.m {
        // A block of fewer than 12 rows (the last) takes the smallest tile that holds it,
        // so a 7×7 map's 49 pixels cost 4 tiles of 12 and one of 1, not 5 of 12.
        match args.m - i0 {
            9.. => block_vnni::<12>(args, i0, &e),
            5..=8 => block_vnni::<8>(args, i0, &e),
            3..=4 => block_vnni::<4>(args, i0, &e),
            2 => block_vnni::<2>(args, i0, &e),
            _ => block_vnni::<1>(args, i0, &e),
        }
        i0 += 12;
    }
}

/// The epilogue's constants for one GEMM.
struct Epi {
    /// A's zero point as the tile reads A.
    zero: __m512i,
    /// The clamp: `[qmin, qmax]` less the output zero point.
    lo: __m512,
    hi: __m512,
    yz: __m512i,
}

/// Rows `i0..i0 + R` of A (those below `m`) against every panel, each 16-column tile's
/// epilogue on its accumulators in registers.
///
/// # Safety
/// As [`i8_gemm_12x16__avx512vnni`], with `i0 < m`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_vnni<const R: usize>(args: &I8GemmArgs, i0: usize, e: &Epi) {
    let panels = args.n.div_ceil(I8_NR);
    let panel_bytes = args.k.div_ceil(4) * 4 * I8_NR;
    let rows: [*const u8; R] =
        core::array::from_fn(|r| args.a.add((i0 + r).min(args.m - 1) * args.lda));
    let live = (args.m - i0).min(R);
    // Rows whose whole last word ends within A (`(m - 1)·lda + k` bytes): the bytes
    // past `k` belong to the next row.
    let end = (args.m - 1) * args.lda + args.k;
    let word_end = args.k / 4 * 4 + 4;
    let whole = (0..R)
        .filter(|r| i0 + r < args.m && (i0 + r) * args.lda + word_end <= end)
        .fold(0u16, |s, r| s | 1 << r);
    for p in 0..panels {
        let b = args.b.add(p * panel_bytes);
        let col0 = p * I8_NR;
        let ncols = (args.n - col0).min(I8_NR);
        let mask: u16 = if ncols >= 16 {
            0xffff
        } else {
            (1u16 << ncols) - 1
        };
        // The zero-point term and the bias start the sums: the same integer sum.
        let mut corr = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_mullo_epi32(
                _mm512_maskz_loadu_epi32(mask, args.colsum.add(col0)),
                e.zero,
            ),
        );
        if !args.bias.is_null() {
            corr = _mm512_add_epi32(corr, _mm512_maskz_loadu_epi32(mask, args.bias.add(col0)));
        }
        let c = if args.a_signed {
            micro_12x16_vnni::<true, R>(args.k, &rows, b, whole, corr)
        } else {
            micro_12x16_vnni::<false, R>(args.k, &rows, b, whole, corr)
        };
        let scale = _mm512_maskz_loadu_ps(mask, args.scale.add(col0));
        for (r, &acc) in c.iter().enumerate().take(live) {
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
            let idx = (i0 + r) * args.ldc + col0;
            if args.out == crate::I8Out::F32 {
                _mm512_mask_storeu_ps((args.c as *mut f32).add(idx), mask, v);
                continue;
            }
            let y = args.c.add(idx) as *mut i8;
            let v = _mm512_min_ps(_mm512_max_ps(v, e.lo), e.hi);
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), e.yz);
            _mm_mask_storeu_epi8(y, mask, _mm512_cvtepi32_epi8(q));
        }
    }
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn micro_6x16_avxvnni(
    k: usize,
    a: &[*const u8; 6],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 6],
) {
    let mut c = [[_mm256_setzero_si256(); 2]; 6];
    let mask = if flip { 0x8080_8080u32 as i32 } else { 0 };
    let groups = k.div_ceil(4);
    for g in 0..groups {
        let w0 = _mm256_loadu_si256(b.add(g * 64) as *const _);
        let w1 = _mm256_loadu_si256(b.add(g * 64 + 32) as *const _);
        for r in 0..6 {
            let av = if g * 4 + 4 <= k {
                (a[r].add(g * 4) as *const i32).read_unaligned() ^ mask
            } else {
                load_a4(a[r], g, k, flip) as i32
            };
            let av = _mm256_set1_epi32(av);
            c[r][0] = _mm256_dpbusd_avx_epi32(c[r][0], av, w0);
            c[r][1] = _mm256_dpbusd_avx_epi32(c[r][1], av, w1);
        }
    }
    for r in 0..6 {
        _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut _, c[r][0]);
        _mm256_storeu_si256(acc[r].as_mut_ptr().add(8) as *mut _, c[r][1]);
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has AVX2 and AVX-VNNI.
pub unsafe fn i8_gemm_6x16__avxvnni(args: &I8GemmArgs) {
    drive_i8::<6>(args, micro_6x16_avxvnni, super::epilogue::i8_epi_avx2)
}

/// AVX2 without VNNI: bytes widened to i16 and multiplied with `vpmaddwd`, exact for
/// the full u8·i8 range (`vpmaddubsw` would saturate at 255·127·2). Two passes of 8
/// columns keep 8 accumulators and 2 weight vectors within the 16 ymm registers.
#[target_feature(enable = "avx2")]
unsafe fn micro_4x16_avx2(
    k: usize,
    a: &[*const u8; 4],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 4],
) {
    for half in 0..2 {
        let bh = b.add(half * 32);
        // c[r][q] holds pair sums for columns 8·half + 4q .. +4: lanes (col, pair).
        let mut c = [[_mm256_setzero_si256(); 2]; 4];
        for_each_a4(k, a, flip, |g, av: [i32; 4]| {
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bh.add(g * 64) as *const _));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bh.add(g * 64 + 16) as *const _));
            for r in 0..4 {
                // [a0 a1 a2 a3] as u16, repeated: one pair per vpmaddwd lane.
                let x = _mm256_cvtepu8_epi16(_mm_set1_epi32(av[r]));
                c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(x, w0));
                c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(x, w1));
            }
        });
        for r in 0..4 {
            // hadd within 128-bit lanes, then restore column order.
            let h = _mm256_hadd_epi32(c[r][0], c[r][1]);
            let h = _mm256_permute4x64_epi64(h, 0b11_01_10_00);
            _mm256_storeu_si256(acc[r].as_mut_ptr().add(half * 8) as *mut _, h);
        }
    }
}
/// The epilogue's constants for one GEMM on AVX2 (8 columns per vector).
struct Epi2 {
    /// A's zero point as the tile reads A.
    zero: __m256i,
    /// The clamp: `[qmin, qmax]` less the output zero point.
    lo: __m256,
    hi: __m256,
    yz: __m256i,
}

impl Epi2 {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn new(args: &I8GemmArgs) -> Epi2 {
        Epi2 {
            zero: _mm256_set1_epi32(crate::quant::effective_a_zero(args)),
            lo: _mm256_set1_ps((args.qmin - args.y_zero) as f32),
            hi: _mm256_set1_ps((args.qmax - args.y_zero) as f32),
            yz: _mm256_set1_epi32(args.y_zero),
        }
    }
}

/// Lane masks of the columns `col0..col0 + ncols` in a panel's two 8-column halves.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn half_masks(ncols: usize) -> [__m256i; 2] {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let n = _mm256_set1_epi32(ncols as i32);
    [
        _mm256_cmpgt_epi32(n, idx),
        _mm256_cmpgt_epi32(n, _mm256_add_epi32(idx, _mm256_set1_epi32(8))),
    ]
}

/// The panel's per-column terms: the zero-point correction plus the bias (one i32 per
/// column: integer sums, exact) and the scales, the lanes past `n` zero.
///
/// # Safety
/// Columns `col0..col0 + ncols` lie within `n`; CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn panel_terms(
    args: &I8GemmArgs,
    e: &Epi2,
    col0: usize,
    m: &[__m256i; 2],
) -> ([__m256i; 2], [__m256; 2]) {
    let corr = core::array::from_fn(|h| {
        let cs = _mm256_maskload_epi32(args.colsum.add(col0 + 8 * h), m[h]);
        let c = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_mullo_epi32(cs, e.zero));
        if args.bias.is_null() {
            c
        } else {
            _mm256_add_epi32(c, _mm256_maskload_epi32(args.bias.add(col0 + 8 * h), m[h]))
        }
    });
    let scale = core::array::from_fn(|h| _mm256_maskload_ps(args.scale.add(col0 + 8 * h), m[h]));
    (corr, scale)
}

/// The epilogue of `R` rows × 16 columns of sums in registers (the correction already
/// in them): the reference's scale, clamp, rounding and zero point in the same order,
/// then two rows at a time narrowed to bytes and stored (the columns past `ncols` left
/// alone).
///
/// # Safety
/// Rows `i0..i0 + live` and columns `col0..col0 + ncols` lie within C; CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_tile_avx2<const R: usize>(
    args: &I8GemmArgs,
    e: &Epi2,
    i0: usize,
    live: usize,
    col0: usize,
    ncols: usize,
    m: &[__m256i; 2],
    scale: &[__m256; 2],
    c: &[[__m256i; 2]; R],
) {
    if args.out == crate::I8Out::F32 {
        for (r, acc) in c.iter().enumerate().take(live) {
            let y = (args.c as *mut f32).add((i0 + r) * args.ldc + col0);
            for h in 0..2 {
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[h]), scale[h]);
                if ncols >= 16 {
                    _mm256_storeu_ps(y.add(8 * h), v);
                } else {
                    _mm256_maskstore_ps(y.add(8 * h), m[h], v);
                }
            }
        }
        return;
    }
    let signed = args.out == crate::I8Out::I8;
    // Each row's 16 values as i16 in column order (already within [qmin, qmax], so the
    // saturating packs are exact).
    let w: [__m256i; R] = core::array::from_fn(|r| {
        let q: [__m256i; 2] = core::array::from_fn(|h| {
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(c[r][h]), scale[h]);
            let v = _mm256_min_ps(_mm256_max_ps(v, e.lo), e.hi);
            _mm256_add_epi32(_mm256_cvtps_epi32(v), e.yz)
        });
        let p = if signed {
            _mm256_packs_epi32(q[0], q[1])
        } else {
            _mm256_packus_epi32(q[0], q[1])
        };
        _mm256_permute4x64_epi64(p, 0b11_01_10_00)
    });
    let mut r = 0;
    while r < live {
        let w1 = if r + 1 < R { w[r + 1] } else { w[r] };
        let b = if signed {
            _mm256_packs_epi16(w[r], w1)
        } else {
            _mm256_packus_epi16(w[r], w1)
        };
        // Row r's 16 bytes in the low half, row r + 1's in the high half.
        let b = _mm256_permute4x64_epi64(b, 0b11_01_10_00);
        let y = args.c.add((i0 + r) * args.ldc + col0);
        let halves = [_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)];
        for (j, &v) in halves.iter().enumerate().take(live - r) {
            let y = y.add(j * args.ldc);
            if ncols >= 16 {
                _mm_storeu_si128(y as *mut __m128i, v);
            } else {
                let mut t = [0u8; 16];
                _mm_storeu_si128(t.as_mut_ptr() as *mut __m128i, v);
                core::ptr::copy_nonoverlapping(t.as_ptr(), y, ncols);
            }
        }
        r += 2;
    }
}

/// AVX2 as onnxruntime computes u8×i8 without VNNI: `vpmaddubsw` multiplies 32 byte
/// pairs and adds each pair into i16 with saturation, `vpmaddwd` by ones widens to i32.
/// Four k per column per step, on the same packed panel as every tier. Not exact when a
/// pair sum leaves i16 (255·(w0 + w1) > 32767); twin: `i8_gemm_sat__reference`.
/// `R` rows (at most 6): 12 accumulators, 2 weight vectors and the broadcast take 15 of
/// the 16 ymm registers; the sums start at `init` and stay in registers for the epilogue.
/// With `FLIP` (i8 A) each word's sign bits are flipped; otherwise A's words are
/// broadcast straight from memory. With `HALVES` = 1 only the first 8 columns are summed
/// (the second half keeps `init`: a last panel of at most 8 columns).
///
/// # Safety
/// Each `a[r]` points at `k` readable bytes, `b` at a packed panel of `k`; CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn micro_avx2sat<const FLIP: bool, const R: usize, const HALVES: usize>(
    k: usize,
    a: &[*const u8; R],
    b: *const i8,
    init: [__m256i; 2],
) -> [[__m256i; 2]; R] {
    let ones = _mm256_set1_epi16(1);
    let mask = _mm256_set1_epi32(0x8080_8080u32 as i32);
    let mut c = [init; R];
    let full = k / 4;
    let step = |c: &mut [[__m256i; 2]; R], g: usize, word: &dyn Fn(usize) -> __m256i| {
        let w0 = _mm256_loadu_si256(b.add(g * 64) as *const _);
        let w1 = _mm256_loadu_si256(b.add(g * 64 + 32) as *const _);
        for (r, c) in c.iter_mut().enumerate() {
            let x = word(r);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones);
            c[0] = _mm256_add_epi32(c[0], p0);
            if HALVES == 2 {
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones);
                c[1] = _mm256_add_epi32(c[1], p1);
            }
        }
    };
    for g in 0..full {
        step(&mut c, g, &|r| {
            let x = _mm256_set1_epi32((a[r].add(g * 4) as *const i32).read_unaligned());
            if FLIP {
                _mm256_xor_si256(x, mask)
            } else {
                x
            }
        });
    }
    if full * 4 < k {
        step(&mut c, full, &|r| {
            _mm256_set1_epi32(load_a4(a[r], full, k, FLIP) as i32)
        });
    }
    c
}

/// # Safety
/// `args` describes valid buffers and the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn i8_gemm_6x16__avx2sat(args: &I8GemmArgs) {
    if args.m == 0 || args.n == 0 {
        return;
    }
    let e = Epi2::new(args);
    let mut i0 = 0;
    while i0 < args.m {
        // The last block of fewer than 6 rows takes the smallest tile that holds it.
        match args.m - i0 {
            5.. => block_avx2sat::<6>(args, i0, &e),
            3..=4 => block_avx2sat::<4>(args, i0, &e),
            2 => block_avx2sat::<2>(args, i0, &e),
            _ => block_avx2sat::<1>(args, i0, &e),
        }
        i0 += 6;
    }
}

/// Rows `i0..i0 + R` of A (those below `m`) against every panel, the saturating tile.
///
/// # Safety
/// As [`i8_gemm_6x16__avx2sat`], with `i0 < m`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2sat<const R: usize>(args: &I8GemmArgs, i0: usize, e: &Epi2) {
    let panels = args.n.div_ceil(I8_NR);
    let panel_bytes = args.k.div_ceil(4) * 4 * I8_NR;
    let rows: [*const u8; R] =
        core::array::from_fn(|r| args.a.add((i0 + r).min(args.m - 1) * args.lda));
    let live = (args.m - i0).min(R);
    for p in 0..panels {
        let col0 = p * I8_NR;
        let ncols = (args.n - col0).min(I8_NR);
        let mk = half_masks(ncols);
        let (corr, scale) = panel_terms(args, e, col0, &mk);
        let b = args.b.add(p * panel_bytes);
        // A last panel of at most 8 columns computes its first half only.
        let c = match (args.a_signed, ncols > 8) {
            (true, true) => micro_avx2sat::<true, R, 2>(args.k, &rows, b, corr),
            (false, true) => micro_avx2sat::<false, R, 2>(args.k, &rows, b, corr),
            (true, false) => micro_avx2sat::<true, R, 1>(args.k, &rows, b, corr),
            (false, false) => micro_avx2sat::<false, R, 1>(args.k, &rows, b, corr),
        };
        store_tile_avx2(args, e, i0, live, col0, ncols, &mk, &scale, &c);
    }
}

/// Longest reduction the widened path keeps on the stack (6 rows × 8 KiB of u16: a 5×5
/// convolution over 104 channels has k = 2600).
const WIDE_K: usize = 4096;

/// `R` rows (at most 6) × 16 columns with A already widened to u16 (sign-flipped, zero
/// padded to a multiple of 4): each group of 4 activations is one 64-bit broadcast load,
/// no shuffle. Per half (8 columns) 12 accumulators, 2 weight vectors and the broadcast
/// fill 15 of the 16 ymm registers, so the weights widened per group serve six rows.
/// Returns the sums in column order plus `corr`, in registers for the epilogue; with
/// `halves` = 1 (a last panel of at most 8 columns) only the first half is computed.
///
/// # Safety
/// Each `a[r]` points at `4·groups` u16, `b` at a packed panel of `groups` groups; CPU
/// has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn micro_avx2_wide<const R: usize>(
    groups: usize,
    a: &[*const u16; R],
    b: *const i8,
    corr: [__m256i; 2],
    halves: usize,
) -> [[__m256i; 2]; R] {
    let mut out = [[_mm256_setzero_si256(); 2]; R];
    for half in 0..halves {
        let bh = b.add(half * 32);
        // c[r][q] holds pair sums for columns 8·half + 4q .. +4: lanes (col, pair).
        let mut c = [[_mm256_setzero_si256(); 2]; R];
        for g in 0..groups {
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bh.add(g * 64) as *const _));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bh.add(g * 64 + 16) as *const _));
            for r in 0..R {
                let x = _mm256_set1_epi64x((a[r].add(g * 4) as *const i64).read_unaligned());
                c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(x, w0));
                c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(x, w1));
            }
        }
        for r in 0..R {
            // hadd within 128-bit lanes, then restore column order.
            let h = _mm256_hadd_epi32(c[r][0], c[r][1]);
            let h = _mm256_permute4x64_epi64(h, 0b11_01_10_00);
            out[r][half] = _mm256_add_epi32(h, corr[half]);
        }
    }
    out
}

/// # Safety
/// `args` describes valid buffers and the CPU has AVX2 and FMA.
// The tile loop carries the features so the micro-kernel and the epilogue inline into
// it: with small reductions (1×1 convolutions over 16-40 channels) two calls per tile
// row cost as much as the arithmetic.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn i8_gemm_6x16__avx2(args: &I8GemmArgs) {
    if args.k > WIDE_K || args.m == 0 || args.n == 0 {
        drive_i8::<4>(args, micro_4x16_avx2, super::epilogue::i8_epi_avx2);
        return;
    }
    let e = Epi2::new(args);
    // Each tile of rows is widened once and reused by every 16-column panel.
    let mut wide = [[0u16; WIDE_K]; 6];
    let mut i0 = 0;
    while i0 < args.m {
        match args.m - i0 {
            5.. => block_avx2_wide::<6>(args, i0, &e, &mut wide),
            3..=4 => block_avx2_wide::<4>(args, i0, &e, &mut wide),
            2 => block_avx2_wide::<2>(args, i0, &e, &mut wide),
            _ => block_avx2_wide::<1>(args, i0, &e, &mut wide),
        }
        i0 += 6;
    }
}

/// Rows `i0..i0 + R` of A (those below `m`), widened into `wide`, against every panel.
///
/// # Safety
/// As [`i8_gemm_6x16__avx2`], with `i0 < m` and `k ≤ WIDE_K`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2_wide<const R: usize>(
    args: &I8GemmArgs,
    i0: usize,
    e: &Epi2,
    wide: &mut [[u16; WIDE_K]; 6],
) {
    let groups = args.k.div_ceil(4);
    let panels = args.n.div_ceil(I8_NR);
    let panel_bytes = groups * 4 * I8_NR;
    let flip = if args.a_signed { 0x80u8 } else { 0 };
    let flip16 = _mm_set1_epi8(flip as i8);
    for (r, row) in wide.iter_mut().enumerate().take(R) {
        let src = args.a.add((i0 + r).min(args.m - 1) * args.lda);
        // 16 bytes at a time, then the rest one by one.
        let whole = args.k / 16 * 16;
        for kk in (0..whole).step_by(16) {
            let v = _mm_xor_si128(_mm_loadu_si128(src.add(kk) as *const _), flip16);
            _mm256_storeu_si256(row.as_mut_ptr().add(kk) as *mut _, _mm256_cvtepu8_epi16(v));
        }
        for (kk, d) in row[..args.k].iter_mut().enumerate().skip(whole) {
            *d = (*src.add(kk) ^ flip) as u16;
        }
        row[args.k..groups * 4].fill(0);
    }
    let rows: [*const u16; R] = core::array::from_fn(|r| wide[r].as_ptr());
    let live = (args.m - i0).min(R);
    for p in 0..panels {
        let col0 = p * I8_NR;
        let ncols = (args.n - col0).min(I8_NR);
        let mk = half_masks(ncols);
        let (corr, scale) = panel_terms(args, e, col0, &mk);
        let b = args.b.add(p * panel_bytes);
        let c = micro_avx2_wide::<R>(groups, &rows, b, corr, ncols.div_ceil(8));
        store_tile_avx2(args, e, i0, live, col0, ncols, &mk, &scale, &c);
    }
}
