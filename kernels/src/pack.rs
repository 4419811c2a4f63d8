//! Weight packing, done once at import. Every tier of a family reads the same layout.

/// Columns per panel of the packed f32 B: one zmm, two ymm, four NEON q registers.
pub const F32_NR: usize = 16;
/// Columns per panel of the packed int8 B.
pub const I8_NR: usize = 16;
/// Reduction bytes per column group (`vpdpbusd` / `sdot` consume 4).
pub const I8_KR: usize = 4;

pub const fn packed_f32_len(k: usize, n: usize) -> usize {
    n.div_ceil(F32_NR) * F32_NR * k
}

/// The whole panels `out` holds (`k·16` values each) with their numbers from `p0`, after
/// checking that the source (`have` values) holds `k·n` and the panels exist.
fn f32_panels(
    have: usize,
    k: usize,
    n: usize,
    p0: usize,
    out: &mut [f32],
) -> impl Iterator<Item = (usize, &mut [f32])> {
    let panels = if k == 0 { 0 } else { out.len() / (k * F32_NR) };
    assert!(have >= k * n && p0 + panels <= n.div_ceil(F32_NR));
    (p0..).zip(out.chunks_exact_mut((k * F32_NR).max(1)).take(panels))
}

/// Packs row-major `b[k×n]` into panels of [`F32_NR`] columns: `panel[k][16]`, zero padded.
pub fn pack_f32(b: &[f32], k: usize, n: usize, out: &mut [f32]) {
    assert!(out.len() >= packed_f32_len(k, n));
    pack_f32_panels(b, k, n, 0, &mut out[..packed_f32_len(k, n)]);
}

/// Panels `p0..` of [`pack_f32`]'s output, as many as `out` holds (`k·16` values each):
/// `out` is that part of the whole packing.
pub fn pack_f32_panels(b: &[f32], k: usize, n: usize, p0: usize, out: &mut [f32]) {
    for (p, out) in f32_panels(b.len(), k, n, p0, out) {
        let c0 = p * F32_NR;
        let w = (n - c0).min(F32_NR);
        for kk in 0..k {
            let dst = &mut out[kk * F32_NR..][..F32_NR];
            if w == F32_NR {
                // A copy of known length: vector moves, no call.
                dst.copy_from_slice(&b[kk * n + c0..][..F32_NR]);
            } else {
                dst[..w].copy_from_slice(&b[kk * n + c0..][..w]);
                dst[w..].fill(0.0);
            }
        }
    }
}

/// Packs the transpose of row-major `a[n×k]` as [`pack_f32`] packs a `k×n` matrix: the
/// same layout as `pack_f32` of `aᵀ`, without forming `aᵀ`. (`ops::pack_f32_t` moves
/// whole panels with the tier's transpose.)
pub fn pack_f32_t(a: &[f32], n: usize, k: usize, out: &mut [f32]) {
    assert!(out.len() >= packed_f32_len(k, n));
    pack_f32_t_panels(a, n, k, 0, &mut out[..packed_f32_len(k, n)]);
}

/// Panels `p0..` of [`pack_f32_t`]'s output, as many as `out` holds (`k·16` values each).
pub fn pack_f32_t_panels(a: &[f32], n: usize, k: usize, p0: usize, out: &mut [f32]) {
    for (p, panel) in f32_panels(a.len(), k, n, p0, out) {
        let r0 = p * F32_NR;
        let w = (n - r0).min(F32_NR);
        if w < F32_NR {
            panel.fill(0.0);
        }
        // 64 reduction steps at a time, so the 4 KB of the panel they fill stay in L1
        // while the 16 rows write their columns into it.
        for k0 in (0..k).step_by(64) {
            let k1 = (k0 + 64).min(k);
            for j in 0..w {
                let row = &a[(r0 + j) * k + k0..(r0 + j) * k + k1];
                for (kk, &v) in (k0..).zip(row) {
                    panel[kk * F32_NR + j] = v;
                }
            }
        }
    }
}

pub const fn packed_i8_len(k: usize, n: usize) -> usize {
    n.div_ceil(I8_NR) * I8_NR * k.div_ceil(I8_KR) * I8_KR
}

/// Padded column count, the length of the column sums.
pub const fn i8_cols(n: usize) -> usize {
    n.div_ceil(I8_NR) * I8_NR
}

/// Offset of element `(kk, col)` in the packed int8 layout:
/// `panel[k/4][16 columns][4 reduction bytes]`.
#[inline]
pub const fn i8_index(k: usize, kk: usize, col: usize) -> usize {
    let groups = k.div_ceil(I8_KR);
    let p = col / I8_NR;
    ((p * groups + kk / I8_KR) * I8_NR + col % I8_NR) * I8_KR + kk % I8_KR
}

/// Packs `w` given by a getter `w(kk, col)` (so callers can pack from any layout) and
/// writes the per-column sums used for the activation zero-point correction.
pub fn pack_i8_with(
    k: usize,
    n: usize,
    w: impl Fn(usize, usize) -> i8,
    out: &mut [i8],
    colsum: &mut [i32],
) {
    assert!(out.len() >= packed_i8_len(k, n) && colsum.len() >= i8_cols(n));
    out[..packed_i8_len(k, n)].fill(0);
    colsum[..i8_cols(n)].fill(0);
    for col in 0..n {
        let mut s = 0i32;
        for kk in 0..k {
            let v = w(kk, col);
            out[i8_index(k, kk, col)] = v;
            s += v as i32;
        }
        colsum[col] = s;
    }
}

/// Packs row-major `b[k×n]`.
pub fn pack_i8(b: &[i8], k: usize, n: usize, out: &mut [i8], colsum: &mut [i32]) {
    assert!(b.len() >= k * n);
    pack_i8_with(k, n, |kk, c| b[kk * n + c], out, colsum)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// `pack_f32` against the layout's definition, and `pack_f32_t` against `pack_f32` of
    /// the explicit transpose, on full and partial panels.
    #[test]
    fn f32_packings_match_the_layout() {
        for (k, n) in [(1, 1), (3, 16), (5, 17), (7, 40), (16, 33), (130, 19)] {
            let b: Vec<f32> = (0..k * n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut out = std::vec![f32::NAN; packed_f32_len(k, n)];
            pack_f32(&b, k, n, &mut out);
            for p in 0..n.div_ceil(F32_NR) {
                for kk in 0..k {
                    for j in 0..F32_NR {
                        let col = p * F32_NR + j;
                        let want = if col < n { b[kk * n + col] } else { 0.0 };
                        assert_eq!(out[(p * k + kk) * F32_NR + j].to_bits(), want.to_bits());
                    }
                }
            }
            // Any split into runs of panels gives the same values.
            let mut parts = std::vec![f32::NAN; packed_f32_len(k, n)];
            let panels = n.div_ceil(F32_NR);
            let (first, rest) = parts.split_at_mut(panels / 2 * k * F32_NR);
            pack_f32_panels(&b, k, n, 0, first);
            pack_f32_panels(&b, k, n, panels / 2, rest);
            assert!(parts
                .iter()
                .zip(&out)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            // `b` read as an n×k matrix `a`: aᵀ is k×n.
            let mut at = std::vec![0.0; k * n];
            for r in 0..n {
                for c in 0..k {
                    at[c * n + r] = b[r * k + c];
                }
            }
            let (mut want, mut got) = (
                std::vec![f32::NAN; packed_f32_len(k, n)],
                std::vec![f32::NAN; packed_f32_len(k, n)],
            );
            pack_f32(&at, k, n, &mut want);
            pack_f32_t(&b, n, k, &mut got);
            assert!(want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
