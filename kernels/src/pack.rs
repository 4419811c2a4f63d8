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

/// Packs row-major `b[k×n]` into panels of [`F32_NR`] columns: `panel[k][16]`, zero padded.
pub fn pack_f32(b: &[f32], k: usize, n: usize, out: &mut [f32]) {
    assert!(b.len() >= k * n && out.len() >= packed_f32_len(k, n));
    for p in 0..n.div_ceil(F32_NR) {
        for kk in 0..k {
            for j in 0..F32_NR {
                let col = p * F32_NR + j;
                out[(p * k + kk) * F32_NR + j] = if col < n { b[kk * n + col] } else { 0.0 };
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
