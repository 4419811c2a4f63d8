use crate::DwI8Args;
use core::arch::x86_64::*;

/// Output columns per chunk of the row-pair kernels.
const CHUNK: usize = 16;
/// Input columns a chunk may read: `CHUNK·stride + kw - 1` at most.
const SPAN: usize = 40;
/// Kernel row pairs the row-pair kernels take (kh ≤ 8), and kernel columns (kw ≤ 8).
const RPAIRS: usize = 4;
const KW: usize = 8;
/// Input maps up to this many bytes are taken one channel block at a time.
const SMALL_MAP: usize = 192 * 1024;

/// One channel block's `[w(ta, c), w(tb, c)]` i16 pairs for 16 channels (`m` masks a
/// shorter tail; no `tb`: zeros), in channel order.
///
/// # Safety
/// `a.weights` holds taps `ta` and `tb` of channels `c0..` under `m`; AVX-512F/BW/VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn weight_pair(a: &DwI8Args, m: u16, c0: usize, ta: usize, tb: Option<usize>) -> __m512i {
    let w0 = _mm256_maskz_loadu_epi16(m, a.weights.add(ta * a.c + c0));
    let w1 = match tb {
        Some(tb) => _mm256_maskz_loadu_epi16(m, a.weights.add(tb * a.c + c0)),
        None => _mm256_setzero_si256(),
    };
    // Per 128-bit lane: lo = channels 0-3 | 8-11, hi = 4-7 | 12-15.
    let (l, h) = (_mm256_unpacklo_epi16(w0, w1), _mm256_unpackhi_epi16(w0, w1));
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_permute2x128_si256::<0x20>(l, h)),
        _mm256_permute2x128_si256::<0x31>(l, h),
    )
}

/// The bias (zeros without one) and the scales of channels `c0..` under `m`.
///
/// # Safety
/// `a.bias` (if not null) and `a.scale` hold those channels; AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bias_scale(a: &DwI8Args, m: u16, c0: usize) -> (__m512i, __m512) {
    let bias = if a.bias.is_null() {
        _mm512_setzero_si512()
    } else {
        _mm512_maskz_loadu_epi32(m, a.bias.add(c0))
    };
    (bias, _mm512_maskz_loadu_ps(m, a.scale.add(c0)))
}

/// The reference's epilogue on 16 accumulators (bias, scale, clamp to `[lo, hi]`, round
/// half to even, zero point), stored as the low bytes under `m` at `y`.
///
/// # Safety
/// `y` holds the channels under `m`; AVX-512F/BW/VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_q(
    y: *mut u8,
    m: u16,
    acc: __m512i,
    bias: __m512i,
    scale: __m512,
    (lo, hi, yz): (__m512, __m512, __m512i),
) {
    let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, bias)), scale);
    let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), yz);
    _mm_mask_storeu_epi8(y as *mut i8, m, _mm512_cvtepi32_epi8(q));
}

/// The input rows under output row `oy`'s first `kh` kernel rows at `stride`, from
/// channel `c0` (null outside the image, and past `kh`), and whether all `kh` are inside.
#[inline(always)]
fn kernel_rows<const N: usize>(
    a: &DwI8Args,
    oy: usize,
    stride: usize,
    kh: usize,
    c0: usize,
) -> ([*const u8; N], bool) {
    let iy0 = (oy * stride) as isize - a.pad_top as isize;
    let mut r = [core::ptr::null(); N];
    for (ky, p) in r.iter_mut().enumerate().take(kh) {
        let iy = iy0 + ky as isize;
        if iy >= 0 && iy < a.h as isize {
            *p = a.x.wrapping_add(iy as usize * a.w * a.c + c0);
        }
    }
    (r, r.iter().take(kh).all(|p| !p.is_null()))
}

/// The widened column `ix` of a 3×3 kernel's rows `r` (null outside the image) when it
/// or one of the rows lies outside the image: the zero point there (see `slide3`).
///
/// # Safety
/// The non-null rows hold 16 channels under `m` at every column inside; AVX-512F/BW/VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn edge_col(a: &DwI8Args, r: &[*const u8; 3], m: u16, ix: isize) -> (__m512i, __m512i) {
    let zp = _mm_set1_epi8(a.x_zero as u8 as i8);
    let inside = ix >= 0 && ix < a.w as isize;
    let mut x = [zp; 3];
    for (v, p) in x.iter_mut().zip(r) {
        if inside && !p.is_null() {
            *v = _mm_maskz_loadu_epi8(m, p.add(ix as usize * a.c) as *const i8);
        }
    }
    (
        _mm512_or_si512(
            _mm512_cvtepu8_epi32(x[0]),
            _mm512_slli_epi32::<16>(_mm512_cvtepu8_epi32(x[1])),
        ),
        _mm512_cvtepu8_epi32(x[2]),
    )
}

/// The row-pair depthwise: for one output row and 16 channels, each input column under
/// the kernel's rows (2r, 2r + 1) is widened once into `[x(2r, c), x(2r + 1, c)]` i16
/// pairs (the zero point under rows and columns outside the image); every output pixel
/// of the row then takes one pair product per (row pair, kernel column) against weights
/// interleaved the same way once per channel block. The input columns a pixel shares
/// with its neighbours (kw of them at stride 1) are widened once, not kw times. The
/// zero point's share, z·Σw over all taps, comes off the bias once per channel block, so
/// each sum is the reference's Σ (x - z)·w over the taps inside (|x| ≤ 255 and |w| ≤
/// 2^15 over at most 64 taps keep every partial sum inside i32; integer sums are exact in
/// any order). The epilogue is the reference's operations in order. A 3×3 kernel's row
/// keeps its widened columns in registers instead, sliding along the row (`slide`).
macro_rules! dw_rows {
    ($(#[$doc:meta])* $name:ident, $features:literal, |$acc:ident, $x:ident, $w:ident| $madd:expr,
     first |$fa:ident| $first:expr) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        pub unsafe fn $name(a: &DwI8Args) {
            // A kernel of the tier's own for some shapes first (true: done).
            {
                let $fa = a;
                if $first {
                    return;
                }
            }
            /// Output rows `oys` of one channel block for a 3×3 kernel at stride `S`:
            /// the widened columns under the kernel slide along each row in registers
            /// (each input column widened once, `S` new ones per pixel). `w` are the
            /// block's weight pairs (the second pair's upper halves zero, so the upper
            /// halves of its inputs may hold anything), `bias` the bias less z·Σw. The
            /// sums start from the bias: the same integer sum in another order. A
            /// function of its own with no closures, so its loop keeps the window, the
            /// weights and the constants in registers whatever the caller's size.
            #[inline(never)]
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn slide3<const S: usize>(
                a: &DwI8Args,
                oys: core::ops::Range<usize>,
                m: u16,
                c0: usize,
                w: &[[__m512i; 3]; 2],
                bias: __m512i,
                scale: __m512,
            ) {
                let lo = _mm512_set1_ps((a.qmin - a.y_zero) as f32);
                let hi = _mm512_set1_ps((a.qmax - a.y_zero) as f32);
                let yz = _mm512_set1_epi32(a.y_zero);
                let [[w00, w01, w02], [w10, w11, w12]] = *w;
                let wi = a.w as isize;
                let ix0 = -(a.pad_left as isize);
                for oy in oys {
                    let (r, full) = kernel_rows::<3>(a, oy, S, 3, c0);
                    // The widened column `ix`: ([x(0, c), x(1, c)], x(2, c)) as i16
                    // pairs in channel c's lane.
                    macro_rules! col {
                        ($ix:expr) => {{
                            let ix: isize = $ix;
                            if full && ix >= 0 && ix < wi {
                                let off = ix as usize * a.c;
                                let x0 = _mm_maskz_loadu_epi8(m, r[0].add(off) as *const i8);
                                let x1 = _mm_maskz_loadu_epi8(m, r[1].add(off) as *const i8);
                                let x2 = _mm_maskz_loadu_epi8(m, r[2].add(off) as *const i8);
                                (
                                    _mm512_or_si512(
                                        _mm512_cvtepu8_epi32(x0),
                                        _mm512_slli_epi32::<16>(_mm512_cvtepu8_epi32(x1)),
                                    ),
                                    _mm512_cvtepu8_epi32(x2),
                                )
                            } else {
                                edge_col(a, &r, m, ix)
                            }
                        }};
                    }
                    let (mut a0, mut b0) = col!(ix0);
                    let (mut a1, mut b1) = col!(ix0 + 1);
                    let (mut a2, mut b2) = col!(ix0 + 2);
                    let mut y = a.y.add(oy * a.ow * a.c + c0);
                    for ox in 0..a.ow {
                        let mut $acc = bias;
                        for ($x, $w) in [(a0, w00), (b0, w10), (a1, w01), (b1, w11), (a2, w02), (b2, w12)] {
                            $acc = $madd;
                        }
                        let v = _mm512_mul_ps(_mm512_cvtepi32_ps($acc), scale);
                        let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                        let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), yz);
                        _mm_mask_storeu_epi8(y as *mut i8, m, _mm512_cvtepi32_epi8(q));
                        y = y.add(a.c);
                        if ox + 1 < a.ow {
                            let base = ix0 + ((ox + 1) * S) as isize;
                            if S == 1 {
                                (a0, b0, a1, b1) = (a1, b1, a2, b2);
                            } else {
                                (a0, b0) = (a2, b2);
                                (a1, b1) = col!(base + 1);
                            }
                            (a2, b2) = col!(base + 2);
                        }
                    }
                }
            }
            /// Output row `oy` of one channel block through the buffered chunks: each
            /// chunk's input columns widened into row pairs on the stack (`xv`), then
            /// every pixel's pair products against the block's weights `wv`. `KC`×`RC`
            /// is the kernel's columns × row pairs, exactly (`EXACT`, so the loops
            /// unroll) or at most (bounds from `a`). A function of its own with no
            /// closures, so its code does not depend on the caller's.
            #[inline(never)]
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn chunks<const KC: usize, const RC: usize, const EXACT: bool>(
                a: &DwI8Args,
                oy: usize,
                m: u16,
                c0: usize,
                wv: &[[__m512i; KW]; RPAIRS],
                (bias, scale): (__m512i, __m512),
                xv: &mut [[__m512i; RPAIRS]; SPAN],
            ) {
                let (kw, rp) = if EXACT { (KC, RC) } else { (a.kw, a.kh.div_ceil(2)) };
                let lo = _mm512_set1_ps((a.qmin - a.y_zero) as f32);
                let hi = _mm512_set1_ps((a.qmax - a.y_zero) as f32);
                let yz = _mm512_set1_epi32(a.y_zero);
                let zp = _mm_set1_epi8(a.x_zero as u8 as i8);
                // Each kernel row's input row, or null outside the image.
                let (rows, _) = kernel_rows::<{ 2 * RPAIRS }>(a, oy, a.stride, a.kh, c0);
                let mut ox0 = 0;
                while ox0 < a.ow {
                    let n = (a.ow - ox0).min(CHUNK);
                    let ix0 = (ox0 * a.stride) as isize - a.pad_left as isize;
                    for (j, col) in xv.iter_mut().enumerate().take((n - 1) * a.stride + kw) {
                        let ix = ix0 + j as isize;
                        let inside = ix >= 0 && ix < a.w as isize;
                        let off = if inside { ix as usize * a.c } else { 0 };
                        // [x(2r, c), x(2r + 1, c)] as i16 in channel c's lane.
                        for (r, v) in col.iter_mut().enumerate().take(rp) {
                            let (pa, pb) = (rows[2 * r], rows[2 * r + 1]);
                            let xa = if inside && !pa.is_null() {
                                _mm_maskz_loadu_epi8(m, pa.add(off) as *const i8)
                            } else {
                                zp
                            };
                            let xb = if inside && !pb.is_null() {
                                _mm_maskz_loadu_epi8(m, pb.add(off) as *const i8)
                            } else {
                                zp
                            };
                            *v = _mm512_or_si512(
                                _mm512_cvtepu8_epi32(xa),
                                _mm512_slli_epi32::<16>(_mm512_cvtepu8_epi32(xb)),
                            );
                        }
                    }
                    for o in 0..n {
                        let mut $acc = bias;
                        for kx in 0..kw {
                            let col = &xv[o * a.stride + kx];
                            for r in 0..rp {
                                let ($x, $w) = (col[r], wv[r][kx]);
                                $acc = $madd;
                            }
                        }
                        let v = _mm512_mul_ps(_mm512_cvtepi32_ps($acc), scale);
                        let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                        let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), yz);
                        let y = a.y.add((oy * a.ow + ox0 + o) * a.c + c0);
                        _mm_mask_storeu_epi8(y as *mut i8, m, _mm512_cvtepi32_epi8(q));
                    }
                    ox0 += n;
                }
            }
            let rp = a.kh.div_ceil(2);
            if a.kh == 0
                || a.kw == 0
                || a.stride == 0
                || rp > RPAIRS
                || a.kw > KW
                || (CHUNK - 1) * a.stride + a.kw > SPAN
                || !(0..=255).contains(&a.x_zero)
            {
                return pairs(a);
            }
            let xz32 = _mm512_set1_epi32(a.x_zero);
            // [row pair][kernel column] weights, [input column][row pair] inputs.
            let mut wv = [[_mm512_setzero_si512(); KW]; RPAIRS];
            let mut xv = [[_mm512_setzero_si512(); RPAIRS]; SPAN];
            // A map larger than L2 is taken with output rows outermost and channel blocks
            // inside, so the kernel's input rows (all channels) stay in cache across the
            // blocks (a block-outermost order would read the map once per block). A
            // smaller map is taken block by block, so each block's weights are
            // interleaved once, not once per output row.
            let blocks = a.c.div_ceil(16);
            let by_block = a.h * a.w * a.c <= SMALL_MAP;
            // 3×3 kernels at stride 1 or 2 slide in registers (`slide3`), a block's rows
            // in one call; larger ones (5×5: 15 widened columns and 15 weight pairs, more
            // than the registers) take the buffered chunks below, which were faster.
            let three = a.kh == 3 && a.kw == 3 && (a.stride == 1 || a.stride == 2);
            let rows_per_call = if by_block && three { a.oh.max(1) } else { 1 };
            let (outer, inner) = if by_block {
                (blocks, a.oh / rows_per_call)
            } else {
                (a.oh, blocks)
            };
            let mut loaded = usize::MAX;
            let (mut bias, mut scale) = (_mm512_setzero_si512(), _mm512_setzero_ps());
            for i in 0..outer {
                for j in 0..inner {
                    let (oy, b) = if by_block { (j, i) } else { (i, j) };
                    let c0 = b * 16;
                    let nc = (a.c - c0).min(16);
                    let m: u16 = if nc == 16 { 0xffff } else { (1u16 << nc) - 1 };
                    if loaded != b {
                        for (r, row) in wv.iter_mut().enumerate().take(rp) {
                            for (kx, w) in row.iter_mut().enumerate().take(a.kw) {
                                let ta = 2 * r * a.kw + kx;
                                let tb = (2 * r + 1 < a.kh).then_some(ta + a.kw);
                                *w = weight_pair(a, m, c0, ta, tb);
                            }
                        }
                        (bias, scale) = bias_scale(a, m, c0);
                        // The inputs are taken as they are (not minus the zero point):
                        // Σ (x - z)·w = Σ x·w - z·Σ w over every tap, the taps outside
                        // the image reading z, so z·Σ w comes off the bias once.
                        let mut sw = _mm512_setzero_si512();
                        for t in 0..a.kh * a.kw {
                            let w = _mm256_maskz_loadu_epi16(m, a.weights.add(t * a.c + c0));
                            sw = _mm512_add_epi32(sw, _mm512_cvtepi16_epi32(w));
                        }
                        bias = _mm512_sub_epi32(bias, _mm512_mullo_epi32(sw, xz32));
                        loaded = b;
                    }
                    if three {
                        let oys = oy..oy + rows_per_call;
                        let w3 = [[wv[0][0], wv[0][1], wv[0][2]], [wv[1][0], wv[1][1], wv[1][2]]];
                        match a.stride {
                            1 => slide3::<1>(a, oys, m, c0, &w3, bias, scale),
                            _ => slide3::<2>(a, oys, m, c0, &w3, bias, scale),
                        }
                        continue;
                    }
                    if (a.kh, a.kw) == (5, 5) {
                        chunks::<5, 3, true>(a, oy, m, c0, &wv, (bias, scale), &mut xv);
                    } else {
                        chunks::<KW, RPAIRS, false>(a, oy, m, c0, &wv, (bias, scale), &mut xv);
                    }
                }
            }
        }
    };
}

dw_rows!(
    /// Depthwise int8 on AVX-512: row pairs with `vpmaddwd` + `vpaddd` (see `dw_rows!`).
    ///
    /// # Safety
    /// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has
    /// AVX-512F/BW/VL.
    dw_i8_16c__avx512,
    "avx512f,avx512bw,avx512vl",
    |acc, x, w| _mm512_add_epi32(acc, _mm512_madd_epi16(x, w)),
    first |_a| false
);

dw_rows!(
    /// Depthwise int8 on AVX-512 VNNI: row pairs with `vpdpwssd` (see `dw_rows!`).
    ///
    /// # Safety
    /// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has
    /// AVX-512F/BW/VL and AVX-512 VNNI.
    dw_i8_16c__avx512vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni",
    |acc, x, w| _mm512_dpwssd_epi32(acc, x, w),
    first |a| quads_vnni(a)
);

/// Taps of a kernel whose pair-interleaved weights the AVX-512 depthwise keeps in
/// registers (a 9×9 kernel has 81); larger kernels take the per-tap loop.
const MAX_PAIRS: usize = 41;

/// Depthwise int8 by tap pairs (shapes the row-pair kernels do not take), 16 channels per
/// zmm, channel blocks outermost: the block's weights are
/// interleaved once into tap pairs (`[w(t, c), w(t + 1, c)]` as i16), then every output
/// pixel takes one `vpmaddwd` per pair of taps (exact: |x - z| ≤ 255, |w| ≤ 128, the pair
/// sum fits i32). A tap outside the image reads the zero point, so its product is 0 as
/// in the reference, which skips it; integer sums do not depend on their order. The
/// epilogue is the reference's operations in the same order.
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has
/// AVX-512F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pairs(a: &DwI8Args) {
    let taps = a.kh * a.kw;
    let pairs = taps.div_ceil(2);
    if pairs > MAX_PAIRS || !(0..=255).contains(&a.x_zero) || taps == 0 {
        return per_tap(a);
    }
    let lo = _mm512_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm512_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm512_set1_epi32(a.y_zero);
    let xz = _mm512_set1_epi16(a.x_zero as i16);
    let zp = _mm_set1_epi8(a.x_zero as u8 as i8);
    let mut wv = [_mm512_setzero_si512(); MAX_PAIRS];
    let mut off = [0isize; 2 * MAX_PAIRS];
    for (t, o) in off.iter_mut().enumerate().take(taps) {
        *o = ((t / a.kw) * a.w + t % a.kw) as isize * a.c as isize;
    }
    let mut c0 = 0;
    while c0 < a.c {
        let nc = (a.c - c0).min(16);
        let m: u16 = if nc == 16 { 0xffff } else { (1u16 << nc) - 1 };
        for (p, w) in wv.iter_mut().enumerate().take(pairs) {
            *w = weight_pair(a, m, c0, 2 * p, (2 * p + 1 < taps).then_some(2 * p + 1));
        }
        let (bias, scale) = bias_scale(a, m, c0);
        for oy in 0..a.oh {
            let (y0, ky0, ky1) = DwI8Args::taps_inside(oy, a.stride, a.pad_top, a.h, a.kh);
            for ox in 0..a.ow {
                let (x0, kx0, kx1) = DwI8Args::taps_inside(ox, a.stride, a.pad_left, a.w, a.kw);
                let inside = ky0 == 0 && ky1 == a.kh && kx0 == 0 && kx1 == a.kw;
                // Input byte offsets of tap 0 and of each tap from it.
                let base = (y0 * a.w as isize + x0) * a.c as isize + c0 as isize;
                // [a0, b0, a1, b1, ..., a15, b15] as i16 minus the zero point, times the
                // pair's weights.
                let pair = |xa: __m128i, xb: __m128i, w: __m512i| {
                    let x = _mm512_sub_epi16(
                        _mm512_cvtepu8_epi16(_mm256_set_m128i(
                            _mm_unpackhi_epi8(xa, xb),
                            _mm_unpacklo_epi8(xa, xb),
                        )),
                        xz,
                    );
                    _mm512_madd_epi16(x, w)
                };
                let load =
                    |t: usize| _mm_maskz_loadu_epi8(m, a.x.offset(base + off[t]) as *const i8);
                let mut acc = _mm512_setzero_si512();
                if inside {
                    for (p, w) in wv.iter().enumerate().take(taps / 2) {
                        acc = _mm512_add_epi32(acc, pair(load(2 * p), load(2 * p + 1), *w));
                    }
                    if taps % 2 == 1 {
                        acc = _mm512_add_epi32(acc, pair(load(taps - 1), zp, wv[pairs - 1]));
                    }
                } else {
                    // Taps in order, the zero point under those outside the image.
                    let (mut t, mut pending) = (0, zp);
                    for ky in 0..a.kh {
                        let row = ky >= ky0 && ky < ky1;
                        for kx in 0..a.kw {
                            let v = if row && kx >= kx0 && kx < kx1 {
                                load(t)
                            } else {
                                zp
                            };
                            if t % 2 == 0 {
                                pending = v;
                            } else {
                                acc = _mm512_add_epi32(acc, pair(pending, v, wv[t / 2]));
                            }
                            t += 1;
                        }
                    }
                    if taps % 2 == 1 {
                        acc = _mm512_add_epi32(acc, pair(pending, zp, wv[pairs - 1]));
                    }
                }
                let y = a.y.add((oy * a.ow + ox) * a.c + c0);
                store_q(y, m, acc, bias, scale, (lo, hi, yz));
            }
        }
        c0 += 16;
    }
}

/// The AVX-512 depthwise one tap at a time (kernels too large for the pair registers,
/// or a zero point outside u8).
///
/// # Safety
/// As [`dw_i8_16c__avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn per_tap(a: &DwI8Args) {
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
                let (bias, scale) = bias_scale(a, m, c0);
                let y = a.y.add((oy * a.ow + ox) * a.c + c0);
                store_q(y, m, acc, bias, scale, (lo, hi, yz));
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

/// A 3×3 depthwise at stride `S` on AVX2, 8 channels per block (the last block overlaps
/// the one before when 8 does not divide the channels: those channels get the same bytes
/// twice). As the AVX-512 row-pair kernel: each input column under the kernel is widened
/// once into `[x(2r, c), x(2r + 1, c)]` i16 pairs (`vpunpcklbw` + `vpmovzxbw`; the zero
/// point under padding), the columns slide along the output row in registers, one
/// `vpmaddwd` per (row pair, kernel column) against weights interleaved the same way once
/// per block, and z·Σw comes off the bias once per block (integer sums, exact). The
/// epilogue is the reference's operations in order.
///
/// # Safety
/// As [`dw_i8_8c__avx2`], with `kh = kw = 3`, `c ≥ 8` and the zero point in `0..=255`.
#[target_feature(enable = "avx2,fma")]
unsafe fn slide3_avx2<const S: usize>(a: &DwI8Args) {
    let lo = _mm256_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm256_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm256_set1_epi32(a.y_zero);
    let zp = _mm_set1_epi8(a.x_zero as u8 as i8);
    // The low byte of each i32 lane, gathered per 128-bit half, then the halves joined.
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
    // [x(ra, c), x(rb, c)] pairs of 8 channels from two 8-byte runs.
    let pair = |xa: __m128i, xb: __m128i| _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(xa, xb));
    // One block's interleaved weights, bias less z·Σw, and scales.
    let prep = |c0: usize| {
        let wt = |t: usize| _mm_loadu_si128(a.weights.add(t * a.c + c0) as *const __m128i);
        let z16 = _mm_setzero_si128();
        let mut w = [[_mm256_setzero_si256(); 3]; 2];
        let mut sw = _mm256_setzero_si256();
        for kx in 0..3 {
            let (w0, w1, w2) = (wt(kx), wt(3 + kx), wt(6 + kx));
            w[0][kx] = _mm256_set_m128i(_mm_unpackhi_epi16(w0, w1), _mm_unpacklo_epi16(w0, w1));
            w[1][kx] = _mm256_set_m128i(_mm_unpackhi_epi16(w2, z16), _mm_unpacklo_epi16(w2, z16));
            for wk in [w0, w1, w2] {
                sw = _mm256_add_epi32(sw, _mm256_cvtepi16_epi32(wk));
            }
        }
        let mut bias = if a.bias.is_null() {
            _mm256_setzero_si256()
        } else {
            _mm256_loadu_si256(a.bias.add(c0) as *const __m256i)
        };
        bias = _mm256_sub_epi32(bias, _mm256_mullo_epi32(sw, _mm256_set1_epi32(a.x_zero)));
        let scale = _mm256_loadu_ps(a.scale.add(c0));
        (w, bias, scale)
    };
    // A map larger than L2 is taken with output rows outermost, so the kernel's input rows
    // stay in cache across the blocks; a smaller one block by block.
    let blocks = a.c.div_ceil(8);
    let by_block = a.h * a.w * a.c <= SMALL_MAP;
    let (outer, inner) = if by_block {
        (blocks, a.oh)
    } else {
        (a.oh, blocks)
    };
    let (mut w, mut bias, mut scale) = prep(0);
    let mut loaded = 0;
    for i in 0..outer {
        for j in 0..inner {
            let (oy, b) = if by_block { (j, i) } else { (i, j) };
            let c0 = (b * 8).min(a.c - 8);
            if loaded != b {
                (w, bias, scale) = prep(c0);
                loaded = b;
            }
            let (rows, full) = kernel_rows::<3>(a, oy, S, 3, c0);
            let col = |ix: isize| -> [__m256i; 2] {
                let inside = ix >= 0 && ix < a.w as isize;
                let off = if inside { ix as usize * a.c } else { 0 };
                let at = |p: *const u8| {
                    if inside && (full || !p.is_null()) {
                        _mm_loadl_epi64(p.add(off) as *const __m128i)
                    } else {
                        zp
                    }
                };
                [pair(at(rows[0]), at(rows[1])), pair(at(rows[2]), zp)]
            };
            let ix0 = -(a.pad_left as isize);
            let mut win: [[__m256i; 2]; 3] = core::array::from_fn(|k| col(ix0 + k as isize));
            for ox in 0..a.ow {
                let mut acc = _mm256_setzero_si256();
                for kx in 0..3 {
                    for r in 0..2 {
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(win[kx][r], w[r][kx]));
                    }
                }
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, bias)), scale);
                let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), yz);
                let q = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, pick), join);
                let yp = a.y.add((oy * a.ow + ox) * a.c + c0);
                _mm_storel_epi64(yp as *mut __m128i, _mm256_castsi256_si128(q));
                if ox + 1 < a.ow {
                    let base = ix0 + ((ox + 1) * S) as isize;
                    for k in 0..3 {
                        win[k] = if k + S < 3 {
                            win[k + S]
                        } else {
                            col(base + k as isize)
                        };
                    }
                }
            }
        }
    }
}

/// Output columns per chunk of [`rows16_avx2`].
const CHUNK2: usize = 32;

/// A 3×3 or 5×5 depthwise at stride `S` on AVX2, 16 channels per block (the last block
/// overlaps the one before when 16 does not divide the channels: those channels get the
/// same bytes twice). For each chunk of an output row, every input column under the
/// kernel is widened once into `[x(2r, c), x(2r + 1, c)]` i16 pairs on the stack (the
/// zero point under padding and under the missing row of an odd kernel, whose weights are
/// zero); every output pixel then takes one `vpmaddwd` per (row pair, kernel column) and
/// 8 channels against weights interleaved the same way once per block. z·Σw comes off
/// the bias once per block, so each sum is the reference's Σ (x - z)·w over the taps
/// inside (integer sums, exact in any order; |x| ≤ 255 and |w| ≤ 2^15 over 25 taps stay
/// inside i32). The epilogue is the reference's operations in order, and the 16 channels
/// are narrowed and stored at once (exact: the values lie in `[qmin, qmax]` ⊂ `[0, 255]`).
///
/// # Safety
/// As [`dw_i8_8c__avx2`], with `kh = kw = K` (3 or 5), `c ≥ 16`, the zero point in
/// `0..=255` and `0 ≤ qmin ≤ qmax ≤ 255`.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows16_avx2<const K: usize, const S: usize>(a: &DwI8Args) {
    const RP: usize = 3;
    const COLS: usize = (CHUNK2 - 1) * 2 + 5;
    let rpn = K.div_ceil(2);
    let lo = _mm256_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm256_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm256_set1_epi32(a.y_zero);
    let zp8 = _mm_set1_epi8(a.x_zero as u8 as i8);
    let zpair = _mm256_cvtepu8_epi16(zp8);
    // One block's interleaved weights (lo: channels 0-7, hi: 8-15), bias less z·Σw, and
    // scales.
    let prep = |c0: usize| {
        let z16 = _mm_setzero_si128();
        let wt = |ky: usize, kx: usize, h: usize| {
            if ky < K {
                _mm_loadu_si128(a.weights.add((ky * K + kx) * a.c + c0 + 8 * h) as *const _)
            } else {
                z16
            }
        };
        let mut w = [[[_mm256_setzero_si256(); 2]; 5]; RP];
        let mut sw = [_mm256_setzero_si256(); 2];
        for rp in 0..rpn {
            for kx in 0..K {
                for h in 0..2 {
                    let (wa, wb) = (wt(2 * rp, kx, h), wt(2 * rp + 1, kx, h));
                    w[rp][kx][h] =
                        _mm256_set_m128i(_mm_unpackhi_epi16(wa, wb), _mm_unpacklo_epi16(wa, wb));
                    sw[h] = _mm256_add_epi32(sw[h], _mm256_cvtepi16_epi32(wa));
                    sw[h] = _mm256_add_epi32(sw[h], _mm256_cvtepi16_epi32(wb));
                }
            }
        }
        let z = _mm256_set1_epi32(a.x_zero);
        let bias: [__m256i; 2] = core::array::from_fn(|h| {
            let b = if a.bias.is_null() {
                _mm256_setzero_si256()
            } else {
                _mm256_loadu_si256(a.bias.add(c0 + 8 * h) as *const __m256i)
            };
            _mm256_sub_epi32(b, _mm256_mullo_epi32(sw[h], z))
        });
        let scale: [__m256; 2] = core::array::from_fn(|h| _mm256_loadu_ps(a.scale.add(c0 + 8 * h)));
        (w, bias, scale)
    };
    // A map larger than L2 is taken with output rows outermost, so the kernel's input rows
    // stay in cache across the blocks; a smaller one block by block.
    let blocks = a.c.div_ceil(16);
    let by_block = a.h * a.w * a.c <= SMALL_MAP;
    let (outer, inner) = if by_block {
        (blocks, a.oh)
    } else {
        (a.oh, blocks)
    };
    let (mut w, mut bias, mut scale) = prep(0);
    let mut loaded = 0;
    let mut xb = [[[_mm256_setzero_si256(); 2]; COLS]; RP];
    for i in 0..outer {
        for j in 0..inner {
            let (oy, b) = if by_block { (j, i) } else { (i, j) };
            let c0 = (b * 16).min(a.c - 16);
            if loaded != b {
                (w, bias, scale) = prep(c0);
                loaded = b;
            }
            // The kernel's input rows from channel c0 (null outside the image and past K).
            let rows: [*const u8; 2 * RP] = core::array::from_fn(|r| {
                let iy = (oy * S + r) as isize - a.pad_top as isize;
                if r < K && iy >= 0 && (iy as usize) < a.h {
                    a.x.add(iy as usize * a.w * a.c + c0)
                } else {
                    core::ptr::null()
                }
            });
            let mut ox0 = 0;
            while ox0 < a.ow {
                let n = (a.ow - ox0).min(CHUNK2);
                let ix0 = (ox0 * S) as isize - a.pad_left as isize;
                for (rp, cols) in xb.iter_mut().enumerate().take(rpn) {
                    let (ra, rb) = (rows[2 * rp], rows[2 * rp + 1]);
                    for (col, xc) in cols.iter_mut().enumerate().take((n - 1) * S + K) {
                        let ix = ix0 + col as isize;
                        *xc = if ix < 0 || ix >= a.w as isize {
                            [zpair, zpair]
                        } else {
                            let off = ix as usize * a.c;
                            let at = |p: *const u8| {
                                if p.is_null() {
                                    zp8
                                } else {
                                    _mm_loadu_si128(p.add(off) as *const __m128i)
                                }
                            };
                            let (va, vb) = (at(ra), at(rb));
                            [
                                _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(va, vb)),
                                _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(va, vb)),
                            ]
                        };
                    }
                }
                for o in 0..n {
                    let mut acc = bias;
                    for rp in 0..rpn {
                        for kx in 0..K {
                            let x = &xb[rp][o * S + kx];
                            for h in 0..2 {
                                acc[h] =
                                    _mm256_add_epi32(acc[h], _mm256_madd_epi16(x[h], w[rp][kx][h]));
                            }
                        }
                    }
                    let q: [__m256i; 2] = core::array::from_fn(|h| {
                        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[h]), scale[h]);
                        let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                        _mm256_add_epi32(_mm256_cvtps_epi32(v), yz)
                    });
                    let w16 =
                        _mm256_permute4x64_epi64(_mm256_packus_epi32(q[0], q[1]), 0b11_01_10_00);
                    let bytes = _mm_packus_epi16(
                        _mm256_castsi256_si128(w16),
                        _mm256_extracti128_si256(w16, 1),
                    );
                    let yp = a.y.add((oy * a.ow + ox0 + o) * a.c + c0);
                    _mm_storeu_si128(yp as *mut __m128i, bytes);
                }
                ox0 += n;
            }
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
    if a.c >= 16 && a.kh == a.kw && (0..=255).contains(&a.x_zero) && a.qmin >= 0 && a.qmax <= 255 {
        match (a.kh, a.stride) {
            (3, 1) => return rows16_avx2::<3, 1>(a),
            (3, 2) => return rows16_avx2::<3, 2>(a),
            (5, 1) => return rows16_avx2::<5, 1>(a),
            (5, 2) => return rows16_avx2::<5, 2>(a),
            _ => {}
        }
    }
    if a.kh == 3 && a.kw == 3 && a.c >= 8 && (0..=255).contains(&a.x_zero) {
        match a.stride {
            1 => return slide3_avx2::<1>(a),
            2 => return slide3_avx2::<2>(a),
            _ => {}
        }
    }
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

/// Four kernel rows' bytes of 16 channels (`x[r]`, row `r` in lane `r` of the input) as
/// one quad per channel: dword `c` = `[x0(c), x1(c), x2(c), x3(c)]`, the layout
/// `vpdpbusd` multiplies. A dword transpose across the lanes (`vpermd`), then a 4×4 byte
/// transpose inside each lane (`vpshufb`).
///
/// # Safety
/// AVX-512F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn to_quads(rows: __m512i, idx: __m512i, shuf: __m512i) -> __m512i {
    _mm512_shuffle_epi8(_mm512_permutexvar_epi32(idx, rows), shuf)
}

/// The `vpermd` and `vpshufb` controls of [`to_quads`]: both the pattern
/// `[0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]` (dwords across the lanes,
/// bytes inside each lane).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn quad_controls() -> (__m512i, __m512i) {
    let t = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];
    let idx = _mm512_loadu_si512(t.map(|v: i32| v).as_ptr() as *const _);
    let b: [i8; 64] = core::array::from_fn(|i| t[i % 16] as i8);
    (idx, _mm512_loadu_si512(b.as_ptr() as *const _))
}

/// Weights of a 3×3 or 5×5 depthwise as i8 (they are i16 in the plan: a weight zero
/// point taken off can leave them beyond i8).
///
/// # Safety
/// `a.weights` holds `kh·kw·c` values; AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn weights_fit_i8(a: &DwI8Args) -> bool {
    let n = a.kh * a.kw * a.c;
    let (lo, hi) = (_mm512_set1_epi16(-128), _mm512_set1_epi16(127));
    let mut bad: u32 = 0;
    let mut i = 0;
    while i < n {
        let m: u32 = if n - i >= 32 {
            u32::MAX
        } else {
            (1u32 << (n - i)) - 1
        };
        let w = _mm512_maskz_loadu_epi16(m, a.weights.add(i));
        bad |= _mm512_mask_cmplt_epi16_mask(m, w, lo) | _mm512_mask_cmpgt_epi16_mask(m, w, hi);
        i += 32;
    }
    bad == 0
}

/// Depthwise int8 on AVX-512 VNNI for 3×3 and 5×5 kernels at stride 1 or 2 with i8
/// weights: each input column under the kernel becomes one quad of kernel rows 0-3 per
/// channel (and, for 5×5, row 4 alone in a second), so one `vpdpbusd` adds four taps'
/// u8×i8 products per channel (a pair-interleaved `vpdpwssd` adds two). The columns slide
/// along the output row in registers as in the row-pair kernels; rows past the kernel
/// have zero weights (their bytes, whatever they hold, add nothing). z·Σw comes off the
/// bias once per channel block and the sums start from it (integer sums, exact in any
/// order); the epilogue is the reference's operations in order. False (nothing written)
/// for any other shape, or weights beyond i8.
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has
/// AVX-512F/BW/VL and AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quads_vnni(a: &DwI8Args) -> bool {
    let k = a.kh;
    if a.kw != k
        || !(k == 3 || k == 5)
        || !(a.stride == 1 || a.stride == 2)
        || !(0..=255).contains(&a.x_zero)
        || a.c == 0
        || !weights_fit_i8(a)
    {
        return false;
    }
    let (idx, shuf) = quad_controls();
    let xz32 = _mm512_set1_epi32(a.x_zero);
    let blocks = a.c.div_ceil(16);
    let by_block = a.h * a.w * a.c <= SMALL_MAP;
    // Rows outermost: two at a time for the 3×3 at stride 1, which takes them in pairs.
    let step = if (k, a.stride) == (3, 1) { 2 } else { 1 };
    let (outer, inner) = if by_block {
        (blocks, 1)
    } else {
        (a.oh.div_ceil(step), blocks)
    };
    for i in 0..outer {
        for j in 0..inner {
            let (oys, b) = if by_block {
                (0..a.oh, i)
            } else {
                (i * step..(i * step + step).min(a.oh), j)
            };
            let c0 = b * 16;
            let nc = (a.c - c0).min(16);
            let m: u16 = if nc == 16 { 0xffff } else { (1u16 << nc) - 1 };
            // The block's weights as quads per kernel column: rows 0-3, then row 4.
            let wt = |t: usize| {
                _mm256_cvtepi16_epi8(_mm256_maskz_loadu_epi16(m, a.weights.add(t * a.c + c0)))
            };
            let mut w = [[_mm512_setzero_si512(); 5]; 2];
            let mut sw = _mm512_setzero_si512();
            for kx in 0..k {
                let mut rows = _mm512_setzero_si512();
                for ky in 0..k.min(4) {
                    let v = wt(ky * k + kx);
                    rows = match ky {
                        0 => _mm512_inserti32x4::<0>(rows, v),
                        1 => _mm512_inserti32x4::<1>(rows, v),
                        2 => _mm512_inserti32x4::<2>(rows, v),
                        _ => _mm512_inserti32x4::<3>(rows, v),
                    };
                }
                w[0][kx] = to_quads(rows, idx, shuf);
                if k == 5 {
                    w[1][kx] = _mm512_cvtepi8_epi32(wt(4 * k + kx));
                }
                for ky in 0..k {
                    let t = ky * k + kx;
                    let v = _mm256_maskz_loadu_epi16(m, a.weights.add(t * a.c + c0));
                    sw = _mm512_add_epi32(sw, _mm512_cvtepi16_epi32(v));
                }
            }
            let (mut bias, scale) = bias_scale(a, m, c0);
            bias = _mm512_sub_epi32(bias, _mm512_mullo_epi32(sw, xz32));
            match (k, a.stride) {
                (3, 1) => quad_row_pairs3(a, oys, m, c0, &w, bias, scale),
                (3, _) => quad_rows::<3, 2>(a, oys, m, c0, &w, bias, scale),
                (_, 1) => quad_rows::<5, 1>(a, oys, m, c0, &w, bias, scale),
                _ => quad_rows::<5, 2>(a, oys, m, c0, &w, bias, scale),
            }
        }
    }
    true
}

/// The reference's epilogue on 16 sums that already hold the bias (scale, clamp to
/// `[$lo, $hi]`, round half to even, zero point), stored as the low bytes under `$m`.
/// A macro, not a function, so it lands in each kernel's own loop whatever LLVM's inlining.
macro_rules! requant_store {
    ($y:expr, $m:expr, $acc:expr, $scale:expr, ($lo:expr, $hi:expr, $yz:expr)) => {{
        let v = _mm512_mul_ps(_mm512_cvtepi32_ps($acc), $scale);
        let v = _mm512_min_ps(_mm512_max_ps(v, $lo), $hi);
        let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), $yz);
        _mm_mask_storeu_epi8($y as *mut i8, $m, _mm512_cvtepi32_epi8(q));
    }};
}

/// Column `$ix` of the input rows `$r` (null outside the image; `$full` when all the
/// kernel's rows are inside) for 16 channels under `$m` as quads: rows 0-2, and row 3
/// when `$four` ([`to_quads`]), then row 4 alone in each dword's low byte when `$five`
/// (zeros otherwise); the zero point outside the image. A macro for the reason above.
macro_rules! quad_col {
    ($a:expr, $r:expr, $full:expr, $m:expr, $ix:expr, $four:expr, $five:expr, ($idx:expr, $shuf:expr)) => {{
        let a: &DwI8Args = $a;
        let ix: isize = $ix;
        let inside = ix >= 0 && ix < a.w as isize;
        let off = if inside { ix as usize * a.c } else { 0 };
        let zp = _mm_set1_epi8(a.x_zero as u8 as i8);
        macro_rules! ld {
            ($p:expr) => {{
                let p: *const u8 = $p;
                if inside && ($full || !p.is_null()) {
                    _mm_maskz_loadu_epi8($m, p.add(off) as *const i8)
                } else {
                    zp
                }
            }};
        }
        let mut rows = _mm512_zextsi128_si512(ld!($r[0]));
        rows = _mm512_inserti32x4::<1>(rows, ld!($r[1]));
        rows = _mm512_inserti32x4::<2>(rows, ld!($r[2]));
        if $four {
            rows = _mm512_inserti32x4::<3>(rows, ld!($r[3]));
        }
        let q1 = if $five {
            _mm512_cvtepu8_epi32(ld!($r[4]))
        } else {
            _mm512_setzero_si512()
        };
        (to_quads(rows, $idx, $shuf), q1)
    }};
}

/// Output rows `oys` of one channel block of a 3×3 kernel at stride 1, two rows at a
/// time: output rows `oy` and `oy + 1` read input rows 0-3 under them, one quad per
/// column serving both, with weights `[w0, w1, w2, 0]` for the first and the same
/// shifted a byte up, `[0, w0, w1, w2]`, for the second (see [`quad_rows`]; an odd last
/// row goes through it).
///
/// # Safety
/// As [`quad_rows`].
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn quad_row_pairs3(
    a: &DwI8Args,
    oys: core::ops::Range<usize>,
    m: u16,
    c0: usize,
    w: &[[__m512i; 5]; 2],
    bias: __m512i,
    scale: __m512,
) {
    let (idx, shuf) = quad_controls();
    let lo = _mm512_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm512_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm512_set1_epi32(a.y_zero);
    let ix0 = -(a.pad_left as isize);
    let wa = [w[0][0], w[0][1], w[0][2]];
    let wb = [
        _mm512_slli_epi32::<8>(wa[0]),
        _mm512_slli_epi32::<8>(wa[1]),
        _mm512_slli_epi32::<8>(wa[2]),
    ];
    let mut oy = oys.start;
    while oy + 2 <= oys.end {
        let (r, full) = kernel_rows::<5>(a, oy, 1, 4, c0);
        macro_rules! col {
            ($ix:expr) => {
                quad_col!(a, r, full, m, $ix, true, false, (idx, shuf)).0
            };
        }
        let (mut q0, mut q1, mut q2) = (col!(ix0), col!(ix0 + 1), col!(ix0 + 2));
        let mut ya = a.y.add(oy * a.ow * a.c + c0);
        let mut yb = ya.add(a.ow * a.c);
        for ox in 0..a.ow {
            let mut acc_a = _mm512_dpbusd_epi32(bias, q0, wa[0]);
            let mut acc_b = _mm512_dpbusd_epi32(bias, q0, wb[0]);
            acc_a = _mm512_dpbusd_epi32(acc_a, q1, wa[1]);
            acc_b = _mm512_dpbusd_epi32(acc_b, q1, wb[1]);
            acc_a = _mm512_dpbusd_epi32(acc_a, q2, wa[2]);
            acc_b = _mm512_dpbusd_epi32(acc_b, q2, wb[2]);
            requant_store!(ya, m, acc_a, scale, (lo, hi, yz));
            requant_store!(yb, m, acc_b, scale, (lo, hi, yz));
            ya = ya.add(a.c);
            yb = yb.add(a.c);
            if ox + 1 < a.ow {
                (q0, q1) = (q1, q2);
                q2 = col!(ix0 + ox as isize + 3);
            }
        }
        oy += 2;
    }
    if oy < oys.end {
        quad_rows::<3, 1>(a, oy..oys.end, m, c0, w, bias, scale);
    }
}

/// Output rows `oys` of one channel block of a `K`×`K` kernel (3 or 5) at stride `S`,
/// quads sliding along each row (see [`quads_vnni`]). `w[q][kx]` are the weight quads,
/// `bias` less z·Σw.
///
/// # Safety
/// As [`quads_vnni`], with `c0 + popcount(m) ≤ c`.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn quad_rows<const K: usize, const S: usize>(
    a: &DwI8Args,
    oys: core::ops::Range<usize>,
    m: u16,
    c0: usize,
    w: &[[__m512i; 5]; 2],
    bias: __m512i,
    scale: __m512,
) {
    let (idx, shuf) = quad_controls();
    let lo = _mm512_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm512_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm512_set1_epi32(a.y_zero);
    let ix0 = -(a.pad_left as isize);
    // Quads of the second group (row 4) only for 5×5.
    let two = K == 5;
    for oy in oys {
        let (r, full) = kernel_rows::<5>(a, oy, S, K, c0);
        macro_rules! col {
            ($ix:expr) => {
                quad_col!(a, r, full, m, $ix, two, two, (idx, shuf))
            };
        }
        let mut win = [(_mm512_setzero_si512(), _mm512_setzero_si512()); K];
        for (j, c) in win.iter_mut().enumerate() {
            *c = col!(ix0 + j as isize);
        }
        let mut y = a.y.add(oy * a.ow * a.c + c0);
        for ox in 0..a.ow {
            let mut acc = bias;
            for kx in 0..K {
                acc = _mm512_dpbusd_epi32(acc, win[kx].0, w[0][kx]);
                if two {
                    acc = _mm512_dpbusd_epi32(acc, win[kx].1, w[1][kx]);
                }
            }
            requant_store!(y, m, acc, scale, (lo, hi, yz));
            y = y.add(a.c);
            if ox + 1 < a.ow {
                let base = ix0 + ((ox + 1) * S) as isize;
                for j in 0..K {
                    win[j] = if j + S < K {
                        win[j + S]
                    } else {
                        col!(base + j as isize)
                    };
                }
            }
        }
    }
}

/// Depthwise int8 on AVX-VNNI (256-bit `vpdpbusd` without AVX-512): 3×3 and 5×5 kernels
/// at stride 1 or 2 with i8 weights and at least 8 channels by kernel-row quads, 8
/// channels per block (see [`quads_vnni`]; the last block overlaps the one before when 8
/// does not divide the channels, those channels getting the same bytes twice); any other
/// shape as [`dw_i8_8c__avx2`].
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has
/// AVX2, FMA and AVX-VNNI.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub unsafe fn dw_i8_8c__avxvnni(a: &DwI8Args) {
    let k = a.kh;
    if a.kw != k
        || !(k == 3 || k == 5)
        || !(a.stride == 1 || a.stride == 2)
        || !(0..=255).contains(&a.x_zero)
        || a.c < 8
        || !weights_fit_i8_avx2(a)
    {
        return dw_i8_8c__avx2(a);
    }
    let blocks = a.c.div_ceil(8);
    let by_block = a.h * a.w * a.c <= SMALL_MAP;
    let (outer, inner) = if by_block {
        (blocks, 1)
    } else {
        (a.oh, blocks)
    };
    for i in 0..outer {
        for j in 0..inner {
            let (oys, b) = if by_block {
                (0..a.oh, i)
            } else {
                (i..i + 1, j)
            };
            let c0 = (b * 8).min(a.c - 8);
            match (k, a.stride) {
                (3, 1) => quad_rows_avxvnni::<3, 1>(a, oys, c0),
                (3, _) => quad_rows_avxvnni::<3, 2>(a, oys, c0),
                (_, 1) => quad_rows_avxvnni::<5, 1>(a, oys, c0),
                _ => quad_rows_avxvnni::<5, 2>(a, oys, c0),
            }
        }
    }
}

/// Whether every weight fits i8 (AVX2 form of [`weights_fit_i8`]).
///
/// # Safety
/// `a.weights` holds `kh·kw·c` values; AVX2.
#[target_feature(enable = "avx2")]
unsafe fn weights_fit_i8_avx2(a: &DwI8Args) -> bool {
    let n = a.kh * a.kw * a.c;
    let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut i = 0;
    while i + 16 <= n {
        let w = _mm256_loadu_si256(a.weights.add(i) as *const __m256i);
        lo = _mm256_min_epi16(lo, w);
        hi = _mm256_max_epi16(hi, w);
        i += 16;
    }
    let mut fit = _mm256_movemask_epi8(_mm256_or_si256(
        _mm256_cmpgt_epi16(_mm256_set1_epi16(-128), lo),
        _mm256_cmpgt_epi16(hi, _mm256_set1_epi16(127)),
    )) == 0;
    while i < n {
        fit &= (-128..=127).contains(&*a.weights.add(i));
        i += 1;
    }
    fit
}

/// Four 8-byte rows (`[r0, r1 | r2, r3]` as the two halves) as 8 channels' quads, dword
/// `c` = `[r0(c), r1(c), r2(c), r3(c)]`: `vpermd` gathers each half's channels 0-3 and
/// 4-7, `vpshufb` transposes the 4×4 bytes in each half.
///
/// # Safety
/// AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn to_quads_avx2(rows: __m256i, idx: __m256i, shuf: __m256i) -> __m256i {
    _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(rows, idx), shuf)
}

/// Output rows `oys` of the 8 channels from `c0` for a `K`×`K` kernel at stride `S` on
/// AVX-VNNI (see [`dw_i8_8c__avxvnni`]).
///
/// # Safety
/// As [`dw_i8_8c__avxvnni`], with `c0 + 8 ≤ c`.
#[inline(never)]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn quad_rows_avxvnni<const K: usize, const S: usize>(
    a: &DwI8Args,
    oys: core::ops::Range<usize>,
    c0: usize,
) {
    let idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let shuf = _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
        14, 3, 7, 11, 15,
    );
    let two = K == 5;
    // The block's weights as quads per kernel column (rows 0-3, then row 4), and Σw.
    let wt = |t: usize| {
        let v = _mm_loadu_si128(a.weights.add(t * a.c + c0) as *const __m128i);
        _mm_packs_epi16(v, v)
    };
    let mut w = [[_mm256_setzero_si256(); 5]; 2];
    let mut sw = _mm256_setzero_si256();
    for kx in 0..K {
        let r01 = _mm_unpacklo_epi64(wt(kx), wt(K + kx));
        let r23 = if two {
            _mm_unpacklo_epi64(wt(2 * K + kx), wt(3 * K + kx))
        } else {
            _mm_unpacklo_epi64(wt(2 * K + kx), _mm_setzero_si128())
        };
        w[0][kx] = to_quads_avx2(_mm256_set_m128i(r23, r01), idx, shuf);
        if two {
            w[1][kx] = _mm256_cvtepi8_epi32(wt(4 * K + kx));
        }
        for ky in 0..K {
            let v = _mm_loadu_si128(a.weights.add((ky * K + kx) * a.c + c0) as *const __m128i);
            sw = _mm256_add_epi32(sw, _mm256_cvtepi16_epi32(v));
        }
    }
    let mut bias = if a.bias.is_null() {
        _mm256_setzero_si256()
    } else {
        _mm256_loadu_si256(a.bias.add(c0) as *const __m256i)
    };
    bias = _mm256_sub_epi32(bias, _mm256_mullo_epi32(sw, _mm256_set1_epi32(a.x_zero)));
    let scale = _mm256_loadu_ps(a.scale.add(c0));
    let lo = _mm256_set1_ps((a.qmin - a.y_zero) as f32);
    let hi = _mm256_set1_ps((a.qmax - a.y_zero) as f32);
    let yz = _mm256_set1_epi32(a.y_zero);
    let zp = _mm_set1_epi8(a.x_zero as u8 as i8);
    // The low byte of each i32 lane, gathered per 128-bit half, then the halves joined.
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
    let wi = a.w as isize;
    let ix0 = -(a.pad_left as isize);
    for oy in oys {
        let (r, full) = kernel_rows::<5>(a, oy, S, K, c0);
        macro_rules! col {
            ($ix:expr) => {{
                let ix: isize = $ix;
                let inside = ix >= 0 && ix < wi;
                let off = if inside { ix as usize * a.c } else { 0 };
                macro_rules! ld {
                    ($p:expr) => {{
                        let p: *const u8 = $p;
                        if inside && (full || !p.is_null()) {
                            _mm_loadl_epi64(p.add(off) as *const __m128i)
                        } else {
                            zp
                        }
                    }};
                }
                let r01 = _mm_unpacklo_epi64(ld!(r[0]), ld!(r[1]));
                let r23 = if two {
                    _mm_unpacklo_epi64(ld!(r[2]), ld!(r[3]))
                } else {
                    _mm_unpacklo_epi64(ld!(r[2]), _mm_setzero_si128())
                };
                let q1 = if two {
                    _mm256_cvtepu8_epi32(ld!(r[4]))
                } else {
                    _mm256_setzero_si256()
                };
                (to_quads_avx2(_mm256_set_m128i(r23, r01), idx, shuf), q1)
            }};
        }
        let mut win = [(_mm256_setzero_si256(), _mm256_setzero_si256()); K];
        for (j, c) in win.iter_mut().enumerate() {
            *c = col!(ix0 + j as isize);
        }
        let mut y = a.y.add(oy * a.ow * a.c + c0);
        for ox in 0..a.ow {
            let mut acc = bias;
            for kx in 0..K {
                acc = _mm256_dpbusd_avx_epi32(acc, win[kx].0, w[0][kx]);
                if two {
                    acc = _mm256_dpbusd_avx_epi32(acc, win[kx].1, w[1][kx]);
                }
            }
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale);
            let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), yz);
            let q = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, pick), join);
            _mm_storel_epi64(y as *mut __m128i, _mm256_castsi256_si128(q));
            y = y.add(a.c);
            if ox + 1 < a.ow {
                let base = ix0 + ((ox + 1) * S) as isize;
                for j in 0..K {
                    win[j] = if j + S < K {
                        win[j + S]
                    } else {
                        col!(base + j as isize)
                    };
                }
            }
        }
    }
}
