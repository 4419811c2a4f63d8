//! 3×3 stride-1 f32 convolutions by Winograd's minimal filtering F(4×4, 3×3) (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; the interpolation
//! points 0, ±1, ±2 and ∞). Each 4×4 block of outputs comes from a 6×6 block of inputs:
//! `Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`, 36 products per channel pair where the direct form
//! needs 144. Over NHWC maps the elementwise products of all channel pairs are 36 GEMMs
//! (one per position of the 6×6 block): `[tiles × ic]·[ic × oc]`, run by the tier's f32
//! GEMM on weights transformed and packed once, at import. The transforms themselves are
//! additions and small multiples over runs of channels.
//!
//! The sums are those of the convolution in another order (and through the transforms'
//! fractions), so results differ from the direct form by rounding, not bit for bit: a
//! relative error of a few 1e-6 on trained weights (`tests` below bound it against the
//! direct convolution). They do not depend on how the tile rows are split over threads.

use crate::ops::gemm_f32;
use crate::pack::{packed_f32_len, F32_NR};
use crate::reference::ConvGeom;
use crate::{Act, Kernels, ShapeError};

/// Outputs per side of a tile.
pub const TILE: usize = 4;
/// Inputs per side of a tile.
const IN: usize = TILE + 2;
/// Positions of a transformed tile, one GEMM each.
pub const POS: usize = IN * IN;
/// Channels transformed at a time (arrays the compiler keeps in vector registers).
const L: usize = 8;
/// Most tiles per block: a block's transformed inputs and products stay in L2.
const BLOCK_MAX: usize = 64;
/// Bytes of one block's transformed inputs and products, at most.
const BLOCK_BYTES: usize = 384 << 10;

/// Whether F(4×4, 3×3) computes this convolution: 3×3, stride 1, no dilation, one group.
pub fn eligible(g: &ConvGeom) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride_h == 1
        && g.stride_w == 1
        && g.dil_h == 1
        && g.dil_w == 1
        && g.groups == 1
        && g.ic > 0
        && g.oc > 0
        && g.h + g.pad_top + g.pad_bottom >= 3
        && g.w + g.pad_left + g.pad_right >= 3
}

/// Values of the transformed, packed weights: [`POS`] packed `ic × oc` matrices.
pub const fn weights_len(ic: usize, oc: usize) -> usize {
    POS * packed_f32_len(ic, oc)
}

/// Tile rows and columns of the output.
pub fn tiles(g: &ConvGeom) -> (usize, usize) {
    (g.oh().div_ceil(TILE), g.ow().div_ceil(TILE))
}

/// Scratch of [`conv3x3_f32`] for tile rows holding `tiles` tiles: one block's
/// transformed inputs and products.
pub fn scratch_len(g: &ConvGeom, tiles: usize) -> usize {
    block(g, tiles) * POS * (g.ic + g.oc)
}

/// Parts a convolution's tile rows are split into at most (threads that share it).
pub const MAX_PARTS: usize = 8;

/// Scratch a plan holds for the convolution: a block for each of up to [`MAX_PARTS`]
/// parts.
pub fn plan_scratch_len(g: &ConvGeom) -> usize {
    let (th, tw) = tiles(g);
    scratch_len(g, th * tw) * th.min(MAX_PARTS)
}

/// Tiles per block: what fits [`BLOCK_BYTES`], a multiple of the GEMM tiers' six rows
/// where that is at least six, and no more than there are.
fn block(g: &ConvGeom, tiles: usize) -> usize {
    let per_tile = POS * (g.ic + g.oc) * 4;
    let n = (BLOCK_BYTES / per_tile).clamp(1, BLOCK_MAX);
    let n = if n >= 6 { n / 6 * 6 } else { n };
    n.min(tiles.max(1))
}

/// `G g Gᵀ` of one 3×3 kernel (row-major), in f64.
fn kernel_transform(k: &[f64; 9]) -> [f64; POS] {
    const G: [[f64; 3]; IN] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let mut gk = [[0f64; 3]; IN];
    for (i, row) in gk.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|t| G[i][t] * k[t * 3 + j]).sum();
        }
    }
    let mut u = [0f64; POS];
    for i in 0..IN {
        for j in 0..IN {
            u[i * IN + j] = (0..3).map(|t| gk[i][t] * G[j][t]).sum();
        }
    }
    u
}

/// Transforms and packs the weights of a 3×3 convolution, `b[(ky·3 + kx)·ic + i][o]`
/// (row-major, as [`crate::pack::pack_f32`] takes them for the direct form), into
/// [`weights_len`] values: for each position `p`, the packed `ic × oc` matrix of `(G g
/// Gᵀ)[p]`.
pub fn pack_weights(b: &[f32], ic: usize, oc: usize, out: &mut [f32]) {
    assert!(b.len() >= 9 * ic * oc && out.len() >= weights_len(ic, oc));
    let plen = packed_f32_len(ic, oc);
    out[..weights_len(ic, oc)].fill(0.0);
    for i in 0..ic {
        for o in 0..oc {
            let mut k = [0f64; 9];
            for (t, v) in k.iter_mut().enumerate() {
                *v = f64::from(b[(t * ic + i) * oc + o]);
            }
            let at = (o / F32_NR) * ic * F32_NR + i * F32_NR + o % F32_NR;
            for (p, u) in kernel_transform(&k).into_iter().enumerate() {
                out[p * plen + at] = u as f32;
            }
        }
    }
}

type Lanes = [f32; L];

// The transforms are plain loops over lanes (no closures: a closure does not inherit the
// target features of the function it is written in), always inlined into the per-tier
// wrappers below, where the compiler turns each lane loop into one vector operation.

/// `Bᵀ d` of six rows (or columns) of lanes.
#[inline(always)]
fn input_1d(d: [&Lanes; IN], o: &mut [Lanes; IN]) {
    for l in 0..L {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        o[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        o[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        o[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        o[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        o[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        o[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

/// `Aᵀ m` of six rows (or columns) of lanes.
#[inline(always)]
fn output_1d(m: [&Lanes; IN], o: &mut [Lanes; TILE]) {
    for l in 0..L {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        o[0][l] = m0 + m1 + m2 + m3 + m4;
        o[1][l] = m1 - m2 + 2.0 * (m3 - m4);
        o[2][l] = m1 + m2 + 4.0 * (m3 + m4);
        o[3][l] = m1 - m2 + 8.0 * (m3 - m4) + m5;
    }
}

/// `cw` values of `src` into `dst` (a vector move when all lanes are there; the rest of
/// `dst` as it was).
#[inline(always)]
fn load(dst: &mut Lanes, src: &[f32], cw: usize) {
    if cw == L {
        *dst = src[..L].try_into().unwrap_or([0.0; L]);
    } else {
        for (d, s) in dst[..cw].iter_mut().zip(&src[..cw]) {
            *d = *s;
        }
    }
}

/// The first `cw` lanes of `src` into `dst`.
#[inline(always)]
fn store(dst: &mut [f32], src: &Lanes, cw: usize) {
    if cw == L {
        if let Some(d) = dst.get_mut(..L) {
            d.copy_from_slice(src);
        }
    } else {
        for (d, s) in dst[..cw].iter_mut().zip(&src[..cw]) {
            *d = *s;
        }
    }
}

/// Six lanes of `a` from `at`, `step` apart.
#[inline(always)]
fn six<const N: usize>(a: &[Lanes; N], at: usize, step: usize) -> [&Lanes; IN] {
    [
        &a[at],
        &a[at + step],
        &a[at + 2 * step],
        &a[at + 3 * step],
        &a[at + 4 * step],
        &a[at + 5 * step],
    ]
}

/// `Bᵀ d B` of the input tile at output tile (ty, tx) into `v` (`[POS][ic]`), zeros
/// outside the map. The tile is first copied into `v` row by row (each row's six pixels
/// are one run of the NHWC map), then transformed there, `L` channels at a time: the
/// map is read in order, the transform reads from L1.
#[inline(always)]
fn input_tile(
    g: &ConvGeom,
    x: &[f32],
    (ty, tx): (usize, usize),
    v: &mut [f32],
    (d, t): (&mut [Lanes; POS], &mut [Lanes; POS]),
) {
    let ic = g.ic;
    let y0 = (ty * TILE) as isize - g.pad_top as isize;
    let x0 = (tx * TILE) as isize - g.pad_left as isize;
    // The tile's columns inside the map, and their run in x.
    let c_lo = (-x0).clamp(0, IN as isize) as usize;
    let c_hi = (g.w as isize - x0).clamp(c_lo as isize, IN as isize) as usize;
    for r in 0..IN {
        let row = &mut v[r * IN * ic..(r + 1) * IN * ic];
        let iy = y0 + r as isize;
        if iy < 0 || iy >= g.h as isize || c_lo == c_hi {
            row.fill(0.0);
            continue;
        }
        row[..c_lo * ic].fill(0.0);
        row[c_hi * ic..].fill(0.0);
        let at = (iy as usize * g.w + (x0 + c_lo as isize) as usize) * ic;
        row[c_lo * ic..c_hi * ic].copy_from_slice(&x[at..at + (c_hi - c_lo) * ic]);
    }
    for c0 in (0..ic).step_by(L) {
        let cw = (ic - c0).min(L);
        for (p, d) in d.iter_mut().enumerate() {
            load(d, &v[p * ic + c0..p * ic + c0 + cw], cw);
        }
        let mut col = [[0f32; L]; IN];
        for c in 0..IN {
            input_1d(six(d, c, IN), &mut col);
            for (r, v) in col.iter().enumerate() {
                t[r * IN + c] = *v;
            }
        }
        let mut row = [[0f32; L]; IN];
        for r in 0..IN {
            input_1d(six(t, r * IN, 1), &mut row);
            for (c, val) in row.iter().enumerate() {
                let p = r * IN + c;
                store(&mut v[p * ic + c0..p * ic + c0 + cw], val, cw);
            }
        }
    }
}

/// `Aᵀ m A` of one tile's products `m` (`[POS][oc]`), plus the bias, clamped, into the
/// outputs of tile (ty, tx) that exist; `y` holds output rows from `row0`.
#[inline(always)]
fn output_tile(
    g: &ConvGeom,
    m: &[f32],
    (bias, lo, hi): (Option<&[f32]>, f32, f32),
    (ty, tx): (usize, usize),
    row0: usize,
    y: &mut [f32],
    (s, t): (&mut [Lanes; POS], &mut [Lanes; TILE * IN]),
) {
    let (oc, oh, ow) = (g.oc, g.oh(), g.ow());
    for o0 in (0..oc).step_by(L) {
        let cw = (oc - o0).min(L);
        for (p, s) in s.iter_mut().enumerate() {
            load(s, &m[p * oc + o0..p * oc + o0 + cw], cw);
        }
        let mut col = [[0f32; L]; TILE];
        for c in 0..IN {
            output_1d(six(s, c, IN), &mut col);
            for (r, v) in col.iter().enumerate() {
                t[r * IN + c] = *v;
            }
        }
        let mut b = [0f32; L];
        if let Some(bias) = bias {
            load(&mut b, &bias[o0..o0 + cw], cw);
        }
        let mut row = [[0f32; L]; TILE];
        for r in 0..TILE {
            let oy = ty * TILE + r;
            if oy >= oh {
                break;
            }
            output_1d(six(t, r * IN, 1), &mut row);
            for (c, val) in row.iter().enumerate() {
                let ox = tx * TILE + c;
                if ox >= ow {
                    break;
                }
                let at = ((oy - row0) * ow + ox) * oc + o0;
                let mut out = [0f32; L];
                for l in 0..L {
                    out[l] = (val[l] + b[l]).max(lo).min(hi);
                }
                store(&mut y[at..at + cw], &out, cw);
            }
        }
    }
}

/// The tiles of one block: their first number, how many, and the tile columns.
#[derive(Clone, Copy)]
struct Block {
    row0: usize,
    t0: usize,
    n: usize,
    tw: usize,
}

impl Block {
    #[inline(always)]
    fn at(&self, j: usize) -> (usize, usize) {
        let t = self.t0 + j;
        (self.row0 + t / self.tw, t % self.tw)
    }
}

#[inline(always)]
fn inputs_body(g: &ConvGeom, x: &[f32], b: Block, v: &mut [f32]) {
    let len = POS * g.ic;
    let (mut d, mut t) = ([[0f32; L]; POS], [[0f32; L]; POS]);
    for j in 0..b.n {
        let v = &mut v[j * len..(j + 1) * len];
        input_tile(g, x, b.at(j), v, (&mut d, &mut t));
    }
}

#[inline(always)]
fn outputs_body(g: &ConvGeom, m: &[f32], epi: (Option<&[f32]>, f32, f32), b: Block, y: &mut [f32]) {
    let len = POS * g.oc;
    let (mut s, mut t) = ([[0f32; L]; POS], [[0f32; L]; TILE * IN]);
    for j in 0..b.n {
        let m = &m[j * len..(j + 1) * len];
        output_tile(g, m, epi, b.at(j), b.row0 * TILE, y, (&mut s, &mut t));
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn inputs_avx2(g: &ConvGeom, x: &[f32], b: Block, v: &mut [f32]) {
    inputs_body(g, x, b, v)
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn outputs_avx2(
    g: &ConvGeom,
    m: &[f32],
    epi: (Option<&[f32]>, f32, f32),
    b: Block,
    y: &mut [f32],
) {
    outputs_body(g, m, epi, b, y)
}

/// Whether the transforms may use 256-bit vectors.
fn wide() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        false
    }
}

fn inputs(g: &ConvGeom, x: &[f32], b: Block, v: &mut [f32], wide: bool) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if wide {
        // SAFETY: `wide` is true only where the CPU has AVX2 and FMA.
        return unsafe { inputs_avx2(g, x, b, v) };
    }
    let _ = wide;
    inputs_body(g, x, b, v)
}

fn outputs(
    g: &ConvGeom,
    m: &[f32],
    epi: (Option<&[f32]>, f32, f32),
    b: Block,
    y: &mut [f32],
    wide: bool,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if wide {
        // SAFETY: `wide` is true only where the CPU has AVX2 and FMA.
        return unsafe { outputs_avx2(g, m, epi, b, y) };
    }
    let _ = wide;
    outputs_body(g, m, epi, b, y)
}

/// Tile rows `rows` of a 3×3 stride-1 convolution over NHWC (one image) with weights
/// from [`pack_weights`]: `y` holds the output rows from `rows.start·4` on (as many as
/// exist up to `rows.end·4`), `scratch` at least [`scratch_len`] of the part's tiles.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_f32(
    kern: &Kernels,
    g: &ConvGeom,
    rows: core::ops::Range<usize>,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    scratch: &mut [f32],
    y: &mut [f32],
) -> Result<(), ShapeError> {
    run(kern, g, rows, x, u, (bias, act), scratch, y, wide())
}

/// [`conv3x3_f32`], the transforms on 256-bit vectors when `wide`.
#[allow(clippy::too_many_arguments)]
fn run(
    kern: &Kernels,
    g: &ConvGeom,
    rows: core::ops::Range<usize>,
    x: &[f32],
    u: &[f32],
    (bias, act): (Option<&[f32]>, Act),
    scratch: &mut [f32],
    y: &mut [f32],
    wide: bool,
) -> Result<(), ShapeError> {
    const OP: &str = "winograd_f32";
    let bad = |what, expected, got| ShapeError {
        op: OP,
        what,
        expected,
        got,
    };
    if !eligible(g) {
        return Err(bad("3×3 stride-1 geometry", 3, g.kh));
    }
    let (ic, oc, oh, ow) = (g.ic, g.oc, g.oh(), g.ow());
    let (th, tw) = tiles(g);
    if rows.start > rows.end || rows.end > th {
        return Err(bad("tile rows", th, rows.end));
    }
    let need = |what, expected: usize, got: usize| {
        if got < expected {
            Err(bad(what, expected, got))
        } else {
            Ok(())
        }
    };
    need("x", g.h * g.w * ic, x.len())?;
    need("weights", weights_len(ic, oc), u.len())?;
    if let Some(b) = bias {
        need("bias", oc, b.len())?;
    }
    let row0 = rows.start * TILE;
    let row1 = (rows.end * TILE).min(oh);
    need("y", row1.saturating_sub(row0) * ow * oc, y.len())?;
    let count = rows.len() * tw;
    if count == 0 {
        return Ok(());
    }
    need("scratch", scratch_len(g, count), scratch.len())?;
    let nb = block(g, count);
    let (v, rest) = scratch.split_at_mut(nb * POS * ic);
    let m = &mut rest[..nb * POS * oc];
    let plen = packed_f32_len(ic, oc);
    let (lo, hi) = act.bounds();
    for t0 in (0..count).step_by(nb) {
        let b = Block {
            row0: rows.start,
            t0,
            n: (count - t0).min(nb),
            tw,
        };
        inputs(g, x, b, v, wide);
        for p in 0..POS {
            gemm_f32(
                kern,
                (b.n, oc, ic),
                &v[p * ic..],
                POS * ic,
                &u[p * plen..(p + 1) * plen],
                None,
                &mut m[p * oc..],
                POS * oc,
                Act::None,
            )?;
        }
        outputs(g, m, (bias, lo, hi), b, y, wide);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv_f32;
    use crate::pack::pack_f32;

    fn rng(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Against the direct convolution (im2col and the same tier's GEMM): every output
    /// within a few 1e-6 of the largest, over sizes that leave partial tiles, paddings
    /// on any side, channel counts off the lane width, and a clamp.
    #[test]
    fn gives_the_direct_convolution() {
        let kern = Kernels::detect();
        let mut seed = 7u64;
        let cases = [
            (1, 1, 1, 1, [1, 1, 1, 1]),
            (3, 3, 2, 5, [0, 0, 0, 0]),
            (5, 7, 9, 17, [1, 1, 1, 1]),
            (8, 8, 16, 16, [1, 1, 1, 1]),
            (10, 13, 8, 24, [0, 1, 2, 0]),
            (12, 9, 33, 7, [2, 0, 0, 2]),
            (17, 11, 20, 40, [1, 1, 1, 1]),
        ];
        for (h, w, ic, oc, [pt, pl, pb, pr]) in cases {
            let g = ConvGeom {
                h,
                w,
                ic,
                oc,
                kh: 3,
                kw: 3,
                stride_h: 1,
                stride_w: 1,
                dil_h: 1,
                dil_w: 1,
                pad_top: pt,
                pad_left: pl,
                pad_bottom: pb,
                pad_right: pr,
                groups: 1,
            };
            if !eligible(&g) {
                continue;
            }
            let x: Vec<f32> = (0..h * w * ic).map(|_| rng(&mut seed)).collect();
            let b: Vec<f32> = (0..9 * ic * oc).map(|_| rng(&mut seed)).collect();
            let bias: Vec<f32> = (0..oc).map(|_| rng(&mut seed)).collect();
            let mut direct_w = vec![0f32; packed_f32_len(9 * ic, oc)];
            pack_f32(&b, 9 * ic, oc, &mut direct_w);
            let mut u = vec![0f32; weights_len(ic, oc)];
            pack_weights(&b, ic, oc, &mut u);
            let (oh, ow) = (g.oh(), g.ow());
            let act = Act::Clamp(-2.0, 2.5);
            let mut want = vec![0f32; oh * ow * oc];
            let mut scratch = vec![0f32; crate::ops::conv_scratch_len(&g)];
            conv_f32(
                &kern,
                &g,
                &x,
                &direct_w,
                Some(&bias),
                act,
                &mut scratch,
                &mut want,
            )
            .unwrap();
            let (th, tw) = tiles(&g);
            // All tile rows at once, then one at a time: the same values.
            let mut got = vec![f32::NAN; oh * ow * oc];
            let mut s = vec![0f32; scratch_len(&g, th * tw)];
            conv3x3_f32(&kern, &g, 0..th, &x, &u, Some(&bias), act, &mut s, &mut got).unwrap();
            let mut by_rows = vec![f32::NAN; oh * ow * oc];
            for r in 0..th {
                let (a, b) = (r * TILE * ow * oc, ((r + 1) * TILE).min(oh) * ow * oc);
                let mut s = vec![0f32; scratch_len(&g, tw)];
                conv3x3_f32(
                    &kern,
                    &g,
                    r..r + 1,
                    &x,
                    &u,
                    Some(&bias),
                    act,
                    &mut s,
                    &mut by_rows[a..b],
                )
                .unwrap();
            }
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                by_rows.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{h}x{w} {ic}->{oc}: tile rows apart"
            );
            // The transforms without 256-bit vectors: the same operations, the same bits.
            let mut narrow = vec![f32::NAN; oh * ow * oc];
            let epi = (Some(&bias[..]), act);
            run(&kern, &g, 0..th, &x, &u, epi, &mut s, &mut narrow, false).unwrap();
            assert!(
                narrow
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{h}x{w} {ic}->{oc}: narrow transforms"
            );
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
            let tol = 4e-6 * scale * (9.0 * ic as f32).sqrt();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= tol,
                    "{h}x{w} {ic}->{oc} pads {pt}{pl}{pb}{pr} at {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn refuses_what_it_does_not_compute() {
        let kern = Kernels::detect();
        let g = ConvGeom {
            h: 4,
            w: 4,
            ic: 2,
            oc: 2,
            kh: 3,
            kw: 3,
            stride_h: 2,
            stride_w: 2,
            dil_h: 1,
            dil_w: 1,
            pad_top: 1,
            pad_left: 1,
            pad_bottom: 1,
            pad_right: 1,
            groups: 1,
        };
        let mut y = [0f32; 8];
        let u = vec![0f32; weights_len(2, 2)];
        let x = [0f32; 32];
        assert!(conv3x3_f32(
            &kern,
            &g,
            0..1,
            &x,
            &u,
            None,
            Act::None,
            &mut [0.0; 4096],
            &mut y
        )
        .is_err());
        let g = ConvGeom {
            stride_h: 1,
            stride_w: 1,
            ..g
        };
        // Weights of the direct form are too short.
        assert!(conv3x3_f32(
            &kern,
            &g,
            0..1,
            &x,
            &u[..72],
            None,
            Act::None,
            &mut [0.0; 4096],
            &mut [0.0; 32]
        )
        .is_err());
        // Too little scratch for one tile.
        assert!(conv3x3_f32(
            &kern,
            &g,
            0..1,
            &x,
            &u,
            None,
            Act::None,
            &mut [0.0; 8],
            &mut [0.0; 32]
        )
        .is_err());
    }
}
