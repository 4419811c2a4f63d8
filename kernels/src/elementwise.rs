//! Elementwise ops and reductions. Scalar definitions via `libm` (no_std); they are both
//! the reference and the implementation on every target for now.

use crate::quant::requant;

pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

pub fn relu6(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0));
}

pub fn leaky_relu(x: &mut [f32], alpha: f32) {
    x.iter_mut().for_each(|v| {
        if *v < 0.0 {
            *v *= alpha
        }
    });
}

pub fn hard_swish(x: &mut [f32]) {
    x.iter_mut()
        .for_each(|v| *v *= (*v + 3.0).clamp(0.0, 6.0) / 6.0);
}

/// `e^x` within 2 ulp on [-87.3, 88.7] (0 below, +inf above): range reduction by ln 2
/// and a degree-6 polynomial, branch-free in the loop so it vectorises; libm's `expf`
/// is exact to 1 ulp but several times slower, and softmax calls it n² times.
#[inline]
pub fn exp_fast(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > 88.7 {
        return f32::INFINITY;
    }
    if x < -87.3 {
        return 0.0;
    }
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let n = crate::quant::round_even(x * core::f32::consts::LOG2_E);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes expf coefficients.
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// erf's constants, onnxruntime's on CPUs with FMA (MLAS's `MlasErfKernelFma3`, after N.
/// Juffa's `erff`): for `t = min(|x|, ERF_CLAMP)` below `ERF_SPLIT`, `t + t·p(t²)`; from
/// it on, `1 − e^(−t − t·q(t))` with its own `e^`: `n = round(u·log2 e)` (adding and
/// removing `ERF_ROUND`), `f = u − n·ln 2` in two parts, `e^u = r(f)·2^n`.
pub const ERF_CLAMP: f32 = 3.925;
pub const ERF_SPLIT: f32 = 0.921_875;
pub const ERF_P: [f32; 6] = [
    -5.991_049_7e-4,
    4.993_396e-3,
    -2.676_673_4e-2,
    1.128_180_25e-1,
    -3.761_248_6e-1,
    1.283_791_5e-1,
];
pub const ERF_Q: [f32; 7] = [
    1.729_489_3e-5,
    -3.832_086_8e-4,
    3.883_934_3e-3,
    -2.425_456e-2,
    1.067_778_5e-1,
    6.348_467e-1,
    1.287_175_1e-1,
];
pub const ERF_EXP: [f32; 7] = [
    1.383_198_1e-3,
    8.375_5e-3,
    4.166_895e-2,
    1.666_644_7e-1,
    4.999_998_5e-1,
    1.0,
    1.0,
];
pub const ERF_ROUND: f32 = 12_582_912.0;
pub const ERF_LN2: [f32; 2] = [-6.931_457_5e-1, -1.428_606_8e-6];

/// erf within 1 ulp (0.94 ulp of the exact value measured), every multiply-add fused:
/// the bits onnxruntime's `Erf` and `Gelu` give on x86-64 with FMA, which the tiers with
/// FMA reproduce. MiniLM's GELU feeds a dynamically quantised GEMM, where a different
/// rounding of erf can move a code; with onnxruntime's bits most sentences match its
/// int8 graph to the last bits.
#[inline]
pub fn erf1(x: f32) -> f32 {
    let fma = libm::fmaf;
    let t = x.abs();
    // NaN stays NaN (`f32::min` would return the clamp).
    let t = if t > ERF_CLAMP { ERF_CLAMP } else { t };
    let y = if t >= ERF_SPLIT {
        let q = ERF_Q[1..].iter().fold(ERF_Q[0], |q, &c| fma(q, t, c));
        let u = -fma(q, t, t);
        let n = fma(core::f32::consts::LOG2_E, u, ERF_ROUND) - ERF_ROUND;
        let f = fma(n, ERF_LN2[1], fma(n, ERF_LN2[0], u));
        let r = ERF_EXP[1..].iter().fold(ERF_EXP[0], |r, &c| fma(r, f, c));
        // n is integral in [-23, 0] (u >= -(t + t·q(t)) > -16).
        1.0 - r * f32::from_bits(((n as i32 + 127) as u32) << 23)
    } else {
        let s = t * t;
        let p = ERF_P[1..].iter().fold(ERF_P[0], |p, &c| fma(p, s, c));
        fma(p, t, t)
    };
    y.copysign(x)
}

#[inline]
pub fn sigmoid1(v: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-v))
}

pub fn sigmoid(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = sigmoid1(*v));
}

/// GELU, exact form `x·Φ(x)`.
#[inline]
pub fn gelu_erf1(v: f32) -> f32 {
    0.5 * v * (1.0 + erf1(v * core::f32::consts::FRAC_1_SQRT_2))
}

/// GELU, tanh approximation.
#[inline]
pub fn gelu_tanh1(v: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * v * (1.0 + libm::tanhf(C * (v + 0.044715 * v * v * v)))
}

pub fn gelu_erf(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_erf1(*v));
}

pub fn gelu_tanh(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_tanh1(*v));
}

pub fn erf(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = erf1(*v));
}

/// The smallest and the largest of `x` and 0 into `out[0]` and `out[1]`, NaN ignored (the
/// range DynamicQuantizeLinear quantises to).
pub fn range0(x: &[f32], out: &mut [f32]) {
    let lo = x.iter().fold(out[0].min(0.0), |m, &v| m.min(v));
    let hi = x.iter().fold(out[1].max(0.0), |m, &v| m.max(v));
    out[0] = lo;
    out[1] = hi;
}

/// Rows `c0..` of the transpose of the `rows × cols` matrix `x`: `y[c][r] = x[r][c0 + c]`
/// for as many columns as `y` holds (`y.len() / rows`, at most `cols - c0`), in 16 × 16
/// tiles: a tile's rows of `x` stay in L1 while its columns are written.
pub fn transpose_f32(x: &[f32], rows: usize, cols: usize, c0: usize, y: &mut [f32]) {
    const B: usize = 16;
    let k = y
        .len()
        .checked_div(rows)
        .unwrap_or(0)
        .min(cols.saturating_sub(c0));
    for r0 in (0..rows).step_by(B) {
        let r1 = (r0 + B).min(rows);
        for cb in (0..k).step_by(B) {
            for c in cb..(cb + B).min(k) {
                for (r, v) in (r0..r1).zip(&mut y[c * rows + r0..c * rows + r1]) {
                    *v = x[r * cols + c0 + c];
                }
            }
        }
    }
}

/// `y[i] = t[x[i]]` through one table of 256 entries.
pub fn lut_u8(x: &[u8], t: &[u8], y: &mut [u8]) {
    let t: &[u8; 256] = t[..256].try_into().expect("a table of 256 entries");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = t[v as usize];
    }
}

pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
        *o = p + q;
    }
}

pub fn sub(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
        *o = p - q;
    }
}

pub fn div(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
        *o = p / q;
    }
}

pub fn mul(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
        *o = p * q;
    }
}

/// Quantisation of one u8 tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8 {
    pub scale: f32,
    pub zero: i32,
}

/// QLinearAdd: `y = q((a - za)·sa + (b - zb)·sb)`, u8 everywhere. The sum is formed in
/// f32 then divided by `sy`, as onnxruntime's reference does.
pub fn add_u8(a: &[u8], qa: Q8, b: &[u8], qb: Q8, y: &mut [u8], qy: Q8) {
    let inv = 1.0 / qy.scale;
    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
        let v = (p as i32 - qa.zero) as f32 * qa.scale + (q as i32 - qb.zero) as f32 * qb.scale;
        *o = requant(v * inv, qy.zero, 0, 255) as u8;
    }
}

/// Global average pool over NHWC u8 (`hw` positions × `c` channels), requantised.
pub fn global_avg_pool_u8(x: &[u8], hw: usize, c: usize, qx: Q8, y: &mut [u8], qy: Q8) {
    let mult = qx.scale / (qy.scale * hw as f32);
    for ch in 0..c {
        let mut s = 0i32;
        for p in 0..hw {
            s += x[p * c + ch] as i32;
        }
        let t = s - qx.zero * hw as i32;
        y[ch] = requant(t as f32 * mult, qy.zero, 0, 255) as u8;
    }
}

/// Global average pool over NHWC f32.
pub fn global_avg_pool_f32(x: &[f32], hw: usize, c: usize, y: &mut [f32]) {
    y[..c].fill(0.0);
    for p in 0..hw {
        for ch in 0..c {
            y[ch] += x[p * c + ch];
        }
    }
    let inv = 1.0 / hw as f32;
    y[..c].iter_mut().for_each(|v| *v *= inv);
}

/// Depthwise f32 convolution over NHWC: weights `[kh][kw][c]`, `bias` of `c` values or
/// empty. Each output is its bias (0 without one), then `+ w·x` for each tap inside the
/// image in the order (kernel row, kernel column); taps in the padding are skipped.
pub fn depthwise_f32(
    g: &crate::reference::ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    let (ow, c) = (g.ow(), g.ic);
    for oy in 0..g.oh() {
        for ox in 0..ow {
            for ch in 0..c {
                let mut v = if bias.is_empty() { 0.0 } else { bias[ch] };
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                            v += w[(ky * g.kw + kx) * c + ch] * x[(iy * g.w + ix) * c + ch];
                        }
                    }
                }
                y[(oy * ow + ox) * c + ch] = v;
            }
        }
    }
}

/// Max pool over NHWC f32; padded positions are ignored.
#[allow(clippy::too_many_arguments)]
pub fn max_pool_f32(g: &crate::reference::ConvGeom, x: &[f32], y: &mut [f32]) {
    let ow = g.ow();
    for oy in 0..g.oh() {
        for ox in 0..ow {
            for ch in 0..g.ic {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                            m = m.max(x[(iy * g.w + ix) * g.ic + ch]);
                        }
                    }
                }
                y[(oy * ow + ox) * g.ic + ch] = m;
            }
        }
    }
}

/// Max pool over NHWC u8; padded positions are ignored. The max of quantised codes is
/// exact for any positive scale, so the tensor keeps its parameters.
pub fn max_pool_u8(g: &crate::reference::ConvGeom, x: &[u8], y: &mut [u8]) {
    let (ow, c) = (g.ow(), g.ic);
    for oy in 0..g.oh() {
        for ox in 0..ow {
            let out = &mut y[(oy * ow + ox) * c..][..c];
            out.fill(0);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                        let row = &x[(iy * g.w + ix) * c..][..c];
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o = (*o).max(v);
                        }
                    }
                }
            }
        }
    }
}

/// Softmax over each row of `cols` values, in place.
pub fn softmax(x: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    for row in x.chunks_mut(cols) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0;
        for v in row.iter_mut() {
            *v = exp_fast(*v - m);
            s += *v;
        }
        let inv = 1.0 / s;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Layer norm over each row of `cols` values: `(x-μ)/sqrt(σ²+eps)·γ + β`.
pub fn layer_norm(x: &mut [f32], cols: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    if cols == 0 {
        return;
    }
    for row in x.chunks_mut(cols) {
        let mean = row.iter().sum::<f32>() / cols as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
        let inv = 1.0 / libm::sqrtf(var + eps);
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * gamma[i] + beta[i];
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod approx_tests {
    use super::{erf1, exp_fast};

    #[test]
    fn exp_fast_is_within_2_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_fast(x) as f64, libm::exp(x as f64));
            worst = worst.max(((a - b) / b).abs());
            x += 0.001_3;
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp_fast(-100.0), 0.0);
        assert_eq!(exp_fast(100.0), f32::INFINITY);
        assert!(exp_fast(f32::NAN).is_nan());
        assert_eq!(exp_fast(0.0), 1.0);
    }

    #[test]
    fn erf_is_within_1_ulp() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = libm::erf(x as f64);
            let ulp = (want.abs() as f32).max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
            worst = worst.max((erf1(x) as f64 - want).abs() / ulp);
            x += 0.000_37;
        }
        assert!(worst < 1.0, "{worst} ulp");
        assert_eq!(erf1(0.0).to_bits(), 0);
        assert_eq!(erf1(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(erf1(f32::INFINITY), 1.0);
        assert_eq!(erf1(f32::NEG_INFINITY), -1.0);
        assert!(erf1(f32::NAN).is_nan());
    }
}
