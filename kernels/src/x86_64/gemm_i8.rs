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

/// AVX2 as onnxruntime computes u8×i8 without VNNI: `vpmaddubsw` multiplies 32 byte
/// pairs and adds each pair into i16 with saturation, `vpmaddwd` by ones widens to i32.
/// Four k per column per step, on the same packed panel as every tier. Not exact when a
/// pair sum leaves i16 (255·(w0 + w1) > 32767); twin: `i8_gemm_sat__reference`.
/// Six rows: 12 accumulators, 2 weight vectors, the ones and the broadcast fill the 16
/// ymm registers.
#[target_feature(enable = "avx2")]
unsafe fn micro_6x16_avx2sat(
    k: usize,
    a: &[*const u8; 6],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 6],
) {
    let ones = _mm256_set1_epi16(1);
    let mut c = [[_mm256_setzero_si256(); 2]; 6];
    for_each_a4(k, a, flip, |g, av: [i32; 6]| {
        let w0 = _mm256_loadu_si256(b.add(g * 64) as *const _);
        let w1 = _mm256_loadu_si256(b.add(g * 64 + 32) as *const _);
        for r in 0..6 {
            let x = _mm256_set1_epi32(av[r]);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones);
            c[r][0] = _mm256_add_epi32(c[r][0], p0);
            c[r][1] = _mm256_add_epi32(c[r][1], p1);
        }
    });
    for r in 0..6 {
        _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut _, c[r][0]);
        _mm256_storeu_si256(acc[r].as_mut_ptr().add(8) as *mut _, c[r][1]);
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn i8_gemm_6x16__avx2sat(args: &I8GemmArgs) {
    drive_i8::<6>(args, micro_6x16_avx2sat, super::epilogue::i8_epi_avx2)
}

/// Longest reduction the widened path keeps on the stack (6 rows × 2 KiB of u16).
const WIDE_K: usize = 2048;

/// The 6×16 tile with A already widened to u16 (sign-flipped, zero padded to a multiple
/// of 4): each group of 4 activations is one 64-bit broadcast load, no shuffle. Per half
/// (8 columns) 12 accumulators, 2 weight vectors and the broadcast fill 15 of the 16 ymm
/// registers, so the weights widened per group serve six rows.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn micro_6x16_avx2_wide(
    groups: usize,
    a: &[*const u16; 6],
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 6],
) {
    for half in 0..2 {
        let bh = b.add(half * 32);
        let mut c = [[_mm256_setzero_si256(); 2]; 6];
        for g in 0..groups {
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bh.add(g * 64) as *const _));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bh.add(g * 64 + 16) as *const _));
            for r in 0..6 {
                let x = _mm256_set1_epi64x((a[r].add(g * 4) as *const i64).read_unaligned());
                c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(x, w0));
                c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(x, w1));
            }
        }
        for r in 0..6 {
            let h = _mm256_hadd_epi32(c[r][0], c[r][1]);
            let h = _mm256_permute4x64_epi64(h, 0b11_01_10_00);
            _mm256_storeu_si256(acc[r].as_mut_ptr().add(half * 8) as *mut _, h);
        }
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has AVX2 and FMA.
// The tile loop carries the features so the micro-kernel and the epilogue inline into
// it: with small reductions (1×1 convolutions over 16-40 channels) two calls per tile
// row cost as much as the arithmetic.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn i8_gemm_6x16__avx2(args: &I8GemmArgs) {
    const MR: usize = 6;
    if args.k > WIDE_K || args.m == 0 || args.n == 0 {
        drive_i8::<4>(args, micro_4x16_avx2, super::epilogue::i8_epi_avx2);
        return;
    }
    // Each 6-row tile is widened once and reused by every 16-column panel.
    let groups = args.k.div_ceil(4);
    let panels = args.n.div_ceil(I8_NR);
    let panel_bytes = groups * 4 * I8_NR;
    let flip = if args.a_signed { 0x80u8 } else { 0 };
    let mut wide = [[0u16; WIDE_K]; MR];
    let mut i0 = 0;
    while i0 < args.m {
        for (r, row) in wide.iter_mut().enumerate() {
            // Rows past m repeat the last row (results discarded), as the shared driver does.
            let src = args.a.add((i0 + r).min(args.m - 1) * args.lda);
            for (kk, d) in row[..args.k].iter_mut().enumerate() {
                *d = (*src.add(kk) ^ flip) as u16;
            }
            row[args.k..groups * 4].fill(0);
        }
        let rows: [*const u16; MR] = core::array::from_fn(|r| wide[r].as_ptr());
        for p in 0..panels {
            let mut acc = [[0i32; I8_NR]; MR];
            micro_6x16_avx2_wide(groups, &rows, args.b.add(p * panel_bytes), &mut acc);
            let col0 = p * I8_NR;
            let ncols = (args.n - col0).min(I8_NR);
            for (r, row) in acc.iter().enumerate().take((args.m - i0).min(MR)) {
                super::epilogue::i8_epi_avx2(args, i0 + r, col0, ncols, row);
            }
        }
        i0 += MR;
    }
}
