//! Layers of the trainable heads: forward and hand-written backward on one example.
//! Backward functions *accumulate* parameter gradients (the trainer sums over a batch)
//! and *overwrite* input gradients. Every backward is checked against central finite
//! differences in the tests below.
//!
//! Weight matrices are row-major `[in][out]`, so `y = b + x·W`.

/// Dot product with eight partial sums, so that the compiler can vectorise it (a
/// single running f32 sum is a dependency chain it may not reorder).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y = b + x·W`, `x: [d]`, `w: [d·o]`, `b: [o]`, `y: [o]`.
pub fn linear(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    let o = b.len();
    y.copy_from_slice(b);
    for (i, &xv) in x.iter().enumerate() {
        let row = &w[i * o..][..o];
        y.iter_mut().zip(row).for_each(|(y, w)| *y += xv * w);
    }
}

/// Backward of [`linear`]: `gw += xᵀ·dy`, `gb += dy`, `dx = W·dy` when asked.
pub fn linear_back(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    gw: &mut [f32],
    gb: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let o = dy.len();
    for (i, &xv) in x.iter().enumerate() {
        let g = &mut gw[i * o..][..o];
        g.iter_mut().zip(dy).for_each(|(g, d)| *g += xv * d);
    }
    gb.iter_mut().zip(dy).for_each(|(g, d)| *g += d);
    if let Some(dx) = dx {
        for (i, d) in dx.iter_mut().enumerate() {
            let row = &w[i * o..][..o];
            *d = dot(row, dy);
        }
    }
}

const LN_EPS: f32 = 1e-5;

/// Layer norm of one row: `xhat = (x-μ)/σ` is kept for the backward; returns `1/σ`.
/// With `gamma = None` there is no affine part (`y = xhat`).
pub fn layer_norm(
    x: &[f32],
    gamma: Option<(&[f32], &[f32])>,
    xhat: &mut [f32],
    y: &mut [f32],
) -> f32 {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let rstd = 1.0 / libm::sqrtf(var + LN_EPS);
    for (h, &v) in xhat.iter_mut().zip(x) {
        *h = (v - mean) * rstd;
    }
    match gamma {
        Some((g, b)) => {
            for i in 0..x.len() {
                y[i] = xhat[i] * g[i] + b[i];
            }
        }
        // Without an affine part an empty `y` asks for xhat only.
        None if y.is_empty() => {}
        None => y.copy_from_slice(xhat),
    }
    rstd
}

/// Backward of [`layer_norm`]: accumulates `ggamma`, `gbeta`; writes `dx`.
pub fn layer_norm_back(
    xhat: &[f32],
    rstd: f32,
    gamma: Option<(&[f32], &mut [f32], &mut [f32])>,
    dy: &[f32],
    dx: &mut [f32],
) {
    let n = xhat.len() as f32;
    // dxhat = dy·γ
    match gamma {
        Some((g, gg, gb)) => {
            for i in 0..xhat.len() {
                gg[i] += dy[i] * xhat[i];
                gb[i] += dy[i];
                dx[i] = dy[i] * g[i];
            }
        }
        None => dx.copy_from_slice(dy),
    }
    let mean_d = dx.iter().sum::<f32>() / n;
    let mean_dx = dx.iter().zip(xhat).map(|(d, h)| d * h).sum::<f32>() / n;
    for (d, &h) in dx.iter_mut().zip(xhat) {
        *d = rstd * (*d - mean_d - h * mean_dx);
    }
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2/π)

/// GELU, tanh form.
pub fn gelu(x: &[f32], y: &mut [f32]) {
    for (y, &v) in y.iter_mut().zip(x) {
        *y = 0.5 * v * (1.0 + tanh(GELU_C * (v + 0.044715 * v * v * v)));
    }
}

/// `tanh(u) = 1 − 2/(e^{2u} + 1)` on the kernels' polynomial `exp` (within 1e-7 absolute
/// of libm's `tanhf`, several times faster; training calls it for every side unit).
#[inline]
fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (edgetune_kernels::elementwise::exp_fast(2.0 * u) + 1.0)
}

/// Backward of [`gelu`] given its input `x`; `dx` may alias nothing.
pub fn gelu_back(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for i in 0..x.len() {
        let v = x[i];
        let u = GELU_C * (v + 0.044715 * v * v * v);
        let t = tanh(u);
        let du = GELU_C * (1.0 + 3.0 * 0.044715 * v * v);
        dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
    }
}

#[cfg(test)]
#[test]
fn fast_tanh_is_close_to_libm() {
    let mut u = -12.0f32;
    while u < 12.0 {
        assert!((tanh(u) - libm::tanhf(u)).abs() < 2e-7, "tanh({u})");
        u += 0.0013;
    }
    assert_eq!(tanh(100.0), 1.0);
    assert_eq!(tanh(-100.0), -1.0);
}

pub fn relu(x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, &v)| *y = v.max(0.0));
}

pub fn relu_back(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for i in 0..x.len() {
        dx[i] = if x[i] > 0.0 { dy[i] } else { 0.0 };
    }
}

pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-v))
}

/// Learned gate: `y = σ(a)·z + (1-σ(a))·h`, one gate per channel.
pub fn gate(a: &[f32], z: &[f32], h: &[f32], y: &mut [f32]) {
    for i in 0..y.len() {
        let g = sigmoid(a[i]);
        y[i] = g * z[i] + (1.0 - g) * h[i];
    }
}

/// Backward of [`gate`]: accumulates `ga`; writes `dz`, `dh`.
pub fn gate_back(
    a: &[f32],
    z: &[f32],
    h: &[f32],
    dy: &[f32],
    ga: &mut [f32],
    dz: &mut [f32],
    dh: &mut [f32],
) {
    for i in 0..dy.len() {
        let g = sigmoid(a[i]);
        ga[i] += dy[i] * (z[i] - h[i]) * g * (1.0 - g);
        dz[i] = dy[i] * g;
        dh[i] = dy[i] * (1.0 - g);
    }
}

/// Scaled dot-product attention of `q` learned queries over `t` tokens that serve as
/// both keys and values: `A = softmax(Q·Xᵀ/√c)`, `O = A·X`.
/// `qm: [q·c]`, `x: [t·c]`, `a: [q·t]` (kept for the backward), `o: [q·c]`.
pub fn attend(qm: &[f32], x: &[f32], c: usize, a: &mut [f32], o: &mut [f32]) {
    let t = x.len() / c;
    let scale = 1.0 / libm::sqrtf(c as f32);
    for (qi, qrow) in qm.chunks_exact(c).enumerate() {
        let arow = &mut a[qi * t..][..t];
        for (j, xr) in x.chunks_exact(c).enumerate() {
            arow[j] = scale * dot(qrow, xr);
        }
        softmax_in_place(arow);
        let orow = &mut o[qi * c..][..c];
        orow.fill(0.0);
        for (j, xr) in x.chunks_exact(c).enumerate() {
            let w = arow[j];
            orow.iter_mut().zip(xr).for_each(|(o, v)| *o += w * v);
        }
    }
}

/// Backward of [`attend`] to the queries (the tokens are frozen): accumulates `gq`.
/// `da` is scratch of `t`.
pub fn attend_back(x: &[f32], c: usize, a: &[f32], dout: &[f32], gq: &mut [f32], da: &mut [f32]) {
    let t = x.len() / c;
    let scale = 1.0 / libm::sqrtf(c as f32);
    for (qi, drow) in dout.chunks_exact(c).enumerate() {
        let arow = &a[qi * t..][..t];
        // dA_j = dO·x_j; softmax backward: dS_j = A_j (dA_j - Σ A dA)
        let mut sum = 0.0;
        for (j, xr) in x.chunks_exact(c).enumerate() {
            da[j] = dot(drow, xr);
            sum += arow[j] * da[j];
        }
        let g = &mut gq[qi * c..][..c];
        for (j, xr) in x.chunks_exact(c).enumerate() {
            let ds = arow[j] * (da[j] - sum) * scale;
            g.iter_mut().zip(xr).for_each(|(g, v)| *g += ds * v);
        }
    }
}

pub fn softmax_in_place(z: &mut [f32]) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in z.iter_mut() {
        *v = libm::expf(*v - m);
        s += *v;
    }
    z.iter_mut().for_each(|v| *v /= s);
}

/// Softmax cross-entropy with label smoothing; writes `dlogits` (for one example).
pub fn softmax_ce(logits: &[f32], label: usize, smooth: f32, dlogits: &mut [f32]) -> f32 {
    let k = logits.len();
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = m + libm::logf(logits.iter().map(|v| libm::expf(v - m)).sum());
    let mut loss = 0.0;
    for c in 0..k {
        let t = if c == label { 1.0 - smooth } else { 0.0 } + smooth / k as f32;
        loss -= t * (logits[c] - lse);
        dlogits[c] = libm::expf(logits[c] - lse) - t;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rng::Rng;
    use alloc::vec::Vec;

    fn rand(r: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.f32() * 2.0 - 1.0).collect()
    }

    /// Central difference of `f` in each coordinate of `v`, compared with `analytic`.
    fn check(name: &str, v: &mut [f32], analytic: &[f32], f: &mut dyn FnMut(&[f32]) -> f32) {
        let eps = 1e-2;
        for i in 0..v.len() {
            let v0 = v[i];
            v[i] = v0 + eps;
            let lp = f(v);
            v[i] = v0 - eps;
            let lm = f(v);
            v[i] = v0;
            let fd = (lp - lm) / (2.0 * eps);
            let tol = 3e-3 + 2e-2 * fd.abs();
            assert!(
                (fd - analytic[i]).abs() < tol,
                "{name}[{i}]: finite difference {fd}, analytic {}",
                analytic[i]
            );
        }
    }

    #[test]
    fn linear_backward() {
        let (d, o) = (5, 3);
        let mut r = Rng::new(1);
        let (mut x, mut w, mut b, dy) = (
            rand(&mut r, d),
            rand(&mut r, d * o),
            rand(&mut r, o),
            rand(&mut r, o),
        );
        let (mut gw, mut gb, mut dx) = (vec![0.0; d * o], vec![0.0; o], vec![0.0; d]);
        linear_back(&x, &w, &dy, &mut gw, &mut gb, Some(&mut dx));
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; o];
            linear(x, w, b, &mut y);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f32>()
        };
        let (w0, b0) = (w.clone(), b.clone());
        check("dx", &mut x.clone(), &dx, &mut |x| loss(x, &w0, &b0));
        check("gw", &mut w, &gw, &mut |w| loss(&x, w, &b0));
        check("gb", &mut b, &gb, &mut |b| loss(&x, &w0, b));
        let _ = &mut x;
    }

    #[test]
    fn layer_norm_backward() {
        let n = 6;
        let mut r = Rng::new(2);
        let (x, mut g, mut b, dy) = (
            rand(&mut r, n),
            rand(&mut r, n),
            rand(&mut r, n),
            rand(&mut r, n),
        );
        let loss = |x: &[f32], g: &[f32], b: &[f32], affine: bool| {
            let (mut h, mut y) = (vec![0.0; n], vec![0.0; n]);
            layer_norm(x, affine.then_some((g, b)), &mut h, &mut y);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f32>()
        };
        for affine in [true, false] {
            let (mut h, mut y) = (vec![0.0; n], vec![0.0; n]);
            let rstd = layer_norm(&x, affine.then_some((&g[..], &b[..])), &mut h, &mut y);
            let (mut gg, mut gb, mut dx) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            let gam = affine.then_some((&g[..], &mut gg[..], &mut gb[..]));
            layer_norm_back(&h, rstd, gam, &dy, &mut dx);
            let (g0, b0) = (g.clone(), b.clone());
            check("dx", &mut x.clone(), &dx, &mut |x| {
                loss(x, &g0, &b0, affine)
            });
            if affine {
                check("ggamma", &mut g, &gg, &mut |g| loss(&x, g, &b0, true));
                check("gbeta", &mut b, &gb, &mut |b| loss(&x, &g0, b, true));
            }
        }
    }

    #[test]
    fn activations_backward() {
        let n = 9;
        let mut r = Rng::new(3);
        let dy = rand(&mut r, n);
        // Keep ReLU inputs away from the kink, where the derivative is undefined.
        let mut x: Vec<f32> = rand(&mut r, n)
            .iter()
            .map(|v| v * 2.0 + 0.1f32.copysign(*v))
            .collect();
        let mut dx = vec![0.0; n];
        gelu_back(&x, &dy, &mut dx);
        check("gelu", &mut x.clone(), &dx, &mut |x| {
            let mut y = vec![0.0; n];
            gelu(x, &mut y);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum()
        });
        relu_back(&x, &dy, &mut dx);
        check("relu", &mut x, &dx, &mut |x| {
            let mut y = vec![0.0; n];
            relu(x, &mut y);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum()
        });
    }

    #[test]
    fn gate_backward() {
        let n = 5;
        let mut r = Rng::new(4);
        let (mut a, mut z, mut h, dy) = (
            rand(&mut r, n),
            rand(&mut r, n),
            rand(&mut r, n),
            rand(&mut r, n),
        );
        let (mut ga, mut dz, mut dh) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        gate_back(&a, &z, &h, &dy, &mut ga, &mut dz, &mut dh);
        let loss = |a: &[f32], z: &[f32], h: &[f32]| {
            let mut y = vec![0.0; n];
            gate(a, z, h, &mut y);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f32>()
        };
        let (a0, z0, h0) = (a.clone(), z.clone(), h.clone());
        check("ga", &mut a, &ga, &mut |a| loss(a, &z0, &h0));
        check("dz", &mut z, &dz, &mut |z| loss(&a0, z, &h0));
        check("dh", &mut h, &dh, &mut |h| loss(&a0, &z0, h));
    }

    #[test]
    fn attention_backward() {
        let (q, t, c) = (2, 5, 4);
        let mut r = Rng::new(5);
        let (mut qm, x, dout) = (
            rand(&mut r, q * c),
            rand(&mut r, t * c),
            rand(&mut r, q * c),
        );
        let (mut a, mut o) = (vec![0.0; q * t], vec![0.0; q * c]);
        attend(&qm, &x, c, &mut a, &mut o);
        for row in a.chunks(t) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let (mut gq, mut da) = (vec![0.0; q * c], vec![0.0; t]);
        attend_back(&x, c, &a, &dout, &mut gq, &mut da);
        check("gq", &mut qm, &gq, &mut |qm| {
            let (mut a, mut o) = (vec![0.0; q * t], vec![0.0; q * c]);
            attend(qm, &x, c, &mut a, &mut o);
            o.iter().zip(&dout).map(|(a, b)| a * b).sum()
        });
    }

    #[test]
    fn cross_entropy_backward() {
        let k = 4;
        let mut r = Rng::new(6);
        let mut z = rand(&mut r, k);
        let mut d = vec![0.0; k];
        softmax_ce(&z, 2, 0.1, &mut d);
        assert!(d.iter().sum::<f32>().abs() < 1e-5);
        check("dlogits", &mut z, &d.clone(), &mut |z| {
            let mut d = vec![0.0; k];
            softmax_ce(z, 2, 0.1, &mut d)
        });
    }
}
