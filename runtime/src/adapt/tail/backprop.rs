//! Forward and backward passes of the tail: its [`Head`] implementation.

use super::net::{Act1, Layer};
use super::train::{dw_backward, dw_forward, two, PRanges, Tail, Variant};
use crate::adapt::rng::Rng;
use crate::adapt::train::Head;
use edgetune_kernels::pack;

fn clamp_mask(y: f32, lo: f32, hi: f32) -> bool {
    y > lo && y < hi
}

fn act1(f: Act1, x: f32) -> (f32, f32) {
    match f {
        Act1::Relu => (x.max(0.0), (x > 0.0) as u8 as f32),
        Act1::Relu6 => (x.clamp(0.0, 6.0), (x > 0.0 && x < 6.0) as u8 as f32),
        Act1::HardSwish => {
            if x <= -3.0 {
                (0.0, 0.0)
            } else if x >= 3.0 {
                (x, 1.0)
            } else {
                (x * (x + 3.0) / 6.0, (2.0 * x + 3.0) / 6.0)
            }
        }
    }
}

impl Head for Tail {
    fn classes(&self) -> usize {
        self.classes
    }
    fn n_params(&self) -> usize {
        self.n_params
    }
    fn scratch_len(&self) -> usize {
        self.sc.len
    }
    fn fixed_bytes(&self) -> usize {
        Tail::fixed_bytes(self)
    }

    fn init(&self, rng: &mut Rng, p: &mut [f32]) {
        for (i, l) in self.net.layers.iter().enumerate() {
            let r = &self.pr[i];
            match *l {
                Layer::Pw {
                    cin, cout, w, b, ..
                } => {
                    if let Some(rw) = &r.w {
                        p[rw.clone()].copy_from_slice(&self.net.frozen[w..w + cin * cout]);
                    }
                    if let Some(rb) = &r.b {
                        p[rb.clone()].copy_from_slice(&self.net.frozen[b..b + cout]);
                    }
                    if let Some(rg) = &r.g {
                        p[rg.clone()].fill(1.0);
                    }
                    if let Some(ra) = &r.a {
                        let bound = 1.0 / libm::sqrtf(cin as f32);
                        p[ra.clone()]
                            .iter_mut()
                            .for_each(|v| *v = (2.0 * rng.f32() - 1.0) * bound);
                    }
                    if let Some(rb) = &r.bb {
                        p[rb.clone()].fill(0.0);
                    }
                }
                Layer::Dw { g, w, b, .. } => {
                    if let Some(rw) = &r.w {
                        p[rw.clone()].copy_from_slice(&self.net.frozen[w..w + g.kh * g.kw * g.c]);
                    }
                    if let Some(rb) = &r.b {
                        p[rb.clone()].copy_from_slice(&self.net.frozen[b..b + g.c]);
                    }
                    if let Some(rg) = &r.g {
                        p[rg.clone()].fill(1.0);
                    }
                }
                _ => {}
            }
        }
        let hw = &mut p[self.head.clone()];
        if self.proto.len() == hw.len() {
            hw.copy_from_slice(&self.proto);
        } else {
            hw.iter_mut()
                .for_each(|v| *v = (2.0 * rng.f32() - 1.0) * 0.01);
        }
    }

    fn lr_scales(&self, out: &mut [f32]) -> bool {
        out.fill(self.body_lr);
        out[self.head.clone()].fill(1.0);
        true
    }

    fn prepare(&self, p: &[f32]) {
        let mut prep = self.prep.borrow_mut();
        let n = prep.len();
        let wmax = (n - self
            .packs
            .iter()
            .map(|(a, b)| a.len() + b.len())
            .sum::<usize>())
            / 2;
        for (i, l) in self.net.layers.iter().enumerate() {
            let Layer::Pw { cin, cout, .. } = *l else {
                continue;
            };
            let (fr, br) = self.packs[i].clone();
            let (packs, tmp) = prep.split_at_mut(n - 2 * wmax);
            let (we, wt) = tmp.split_at_mut(wmax);
            let (we, wt) = (&mut we[..cin * cout], &mut wt[..cin * cout]);
            self.weff(i, p, we);
            pack::pack_f32(we, cin, cout, &mut packs[fr]);
            for r in 0..cin {
                for c in 0..cout {
                    wt[c * cin + r] = we[r * cout + c];
                }
            }
            pack::pack_f32(wt, cout, cin, &mut packs[br]);
        }
    }

    fn forward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], logits: &mut [f32]) {
        let prep = self.prep.borrow();
        let sc = &self.sc;
        let input = x[self.tap];
        for (i, l) in self.net.layers.iter().enumerate() {
            match *l {
                Layer::Pw {
                    x: xi,
                    y,
                    cin,
                    cout,
                    ..
                } => {
                    let t = self.net.slots[y].0;
                    let zr = sc.z[i].clone();
                    {
                        let (xv, z) = if xi == 0 {
                            (input, &mut s[zr.clone()])
                        } else {
                            two(s, &sc.val[xi], &zr)
                        };
                        self.gemm((t, cout, cin), xv, &prep[self.packs[i].0.clone()], z);
                    }
                    self.affine(i, p, s, y);
                }
                Layer::Dw { x: xi, y, g, .. } => {
                    let zr = sc.z[i].clone();
                    {
                        let (xv, z) = if xi == 0 {
                            (input, &mut s[zr.clone()])
                        } else {
                            two(s, &sc.val[xi], &zr)
                        };
                        dw_forward(&g, xv, self.wdw(i, p), z);
                    }
                    self.affine(i, p, s, y);
                }
                Layer::Add { a, b, y } => {
                    let yr = sc.val[y].clone();
                    for k in 0..yr.len() {
                        let va = if a == 0 {
                            input[k]
                        } else {
                            s[sc.val[a].start + k]
                        };
                        let vb = if b == 0 {
                            input[k]
                        } else {
                            s[sc.val[b].start + k]
                        };
                        s[yr.start + k] = va + vb;
                    }
                }
                Layer::Gap { x: xi, y } => {
                    let (t, c) = self.net.slots[xi];
                    let yr = sc.val[y].clone();
                    s[yr.clone()].fill(0.0);
                    for tok in 0..t {
                        for ch in 0..c {
                            let v = if xi == 0 {
                                input[tok * c + ch]
                            } else {
                                s[sc.val[xi].start + tok * c + ch]
                            };
                            s[yr.start + ch] += v;
                        }
                    }
                    s[yr].iter_mut().for_each(|v| *v /= t as f32);
                }
                Layer::Act { x: xi, y, f } => {
                    let yr = sc.val[y].clone();
                    for k in 0..yr.len() {
                        let v = if xi == 0 {
                            input[k]
                        } else {
                            s[sc.val[xi].start + k]
                        };
                        s[yr.start + k] = act1(f, v).0;
                    }
                }
            }
        }
        // Cosine classifier.
        let fdim = self.net.feature_dim();
        let (f, fh) = two(s, &sc.val[self.net.features], &sc.fhat);
        let norm = libm::sqrtf(f.iter().map(|v| v * v).sum::<f32>()) + 1e-6;
        for (o, v) in fh.iter_mut().zip(f) {
            *o = v / norm;
        }
        fh[fdim] = norm;
        let hw = &p[self.head.clone()];
        for (k, l) in logits.iter_mut().enumerate().take(self.classes) {
            let row = &hw[k * fdim..(k + 1) * fdim];
            *l = self.scale * row.iter().zip(&fh[..fdim]).map(|(a, b)| a * b).sum::<f32>();
        }
    }

    fn backward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], dl: &[f32], g: &mut [f32]) {
        let prep = self.prep.borrow();
        let sc = &self.sc;
        let input = x[self.tap];
        let fdim = self.net.feature_dim();
        for r in &sc.grad {
            s[r.clone()].fill(0.0);
        }
        // Classifier and the normalisation.
        {
            let hw = &p[self.head.clone()];
            let fh = &s[sc.fhat.clone()];
            let norm = fh[fdim];
            let gh = &mut g[self.head.clone()];
            let mut dot = 0.0;
            for k in 0..self.classes {
                let d = self.scale * dl[k];
                for i in 0..fdim {
                    gh[k * fdim + i] += d * fh[i];
                }
            }
            let gr = sc.grad[self.net.features].clone();
            for i in 0..fdim {
                let mut v = 0.0;
                for k in 0..self.classes {
                    v += self.scale * dl[k] * hw[k * fdim + i];
                }
                s[gr.start + i] = v;
                dot += v * s[sc.fhat.start + i];
            }
            for i in 0..fdim {
                let fhi = s[sc.fhat.start + i];
                s[gr.start + i] = (s[gr.start + i] - fhi * dot) / norm;
            }
        }
        for (i, l) in self.net.layers.iter().enumerate().rev() {
            match *l {
                Layer::Gap { x: xi, y } => {
                    if xi == 0 {
                        continue;
                    }
                    let (t, c) = self.net.slots[xi];
                    let (dy, dx) = two(s, &sc.grad[y], &sc.grad[xi]);
                    for tok in 0..t {
                        for ch in 0..c {
                            dx[tok * c + ch] += dy[ch] / t as f32;
                        }
                    }
                }
                Layer::Add { a, b, y } => {
                    for src in [a, b] {
                        if src != 0 {
                            let (dy, dx) = two(s, &sc.grad[y], &sc.grad[src]);
                            dx.iter_mut().zip(dy).for_each(|(o, v)| *o += v);
                        }
                    }
                }
                Layer::Act { x: xi, y, f } => {
                    if xi == 0 {
                        continue;
                    }
                    let (n, gy, gx, vx) = (
                        sc.val[y].len(),
                        sc.grad[y].start,
                        sc.grad[xi].start,
                        sc.val[xi].start,
                    );
                    for k in 0..n {
                        s[gx + k] += s[gy + k] * act1(f, s[vx + k]).1;
                    }
                }
                Layer::Pw {
                    x: xi,
                    y,
                    cin,
                    cout,
                    ..
                } => {
                    let t = self.net.slots[y].0;
                    self.affine_back(i, p, s, g, y);
                    // Now grad[y] holds dz.
                    let dzr = sc.grad[y].clone();
                    if self.pr[i].w.is_some() || self.pr[i].a.is_some() {
                        self.dweight(i, p, input, s, g, (t, cin, cout));
                    }
                    if xi != 0 {
                        let (dz, dx) = two(s, &dzr, &sc.dx);
                        let dx = &mut dx[..t * cin];
                        self.gemm((t, cin, cout), dz, &prep[self.packs[i].1.clone()], dx);
                        let gx = sc.grad[xi].start;
                        let dxs = sc.dx.start;
                        for k in 0..t * cin {
                            s[gx + k] += s[dxs + k];
                        }
                    }
                }
                Layer::Dw {
                    x: xi, y, g: geo, ..
                } => {
                    self.affine_back(i, p, s, g, y);
                    let dzr = sc.grad[y].clone();
                    let w = self.wdw(i, p);
                    if let Some(rw) = self.pr[i].w.clone() {
                        let xv: &[f32] = if xi == 0 {
                            input
                        } else {
                            &s[sc.val[xi].clone()]
                        };
                        dw_backward(&geo, xv, w, &s[dzr.clone()], None, Some(&mut g[rw]));
                    }
                    if xi != 0 {
                        let (dz, dx) = two(s, &dzr, &sc.grad[xi]);
                        dw_backward(&geo, &[], w, dz, Some(dx), None);
                    }
                }
            }
        }
    }
}

impl Tail {
    /// `y = clamp(γ·z + b)` of conv layer `i` from its stored `z`.
    fn affine(&self, i: usize, p: &[f32], s: &mut [f32], y: usize) {
        let (lo, hi) = Tail::clamp_bounds(&self.net.layers[i]);
        let b = self.bias(i, p);
        let gam = self.pr[i].g.clone().map(|r| &p[r]);
        let c = b.len();
        let (z, yv) = two(s, &self.sc.z[i], &self.sc.val[y]);
        for (k, (o, zv)) in yv.iter_mut().zip(z).enumerate() {
            let ch = k % c;
            let gm = gam.map_or(1.0, |g| g[ch]);
            *o = (gm * zv + b[ch]).clamp(lo, hi);
        }
    }

    /// Turns `grad[y]` into `dz` of conv layer `i`, accumulating the bias and scale
    /// gradients.
    fn affine_back(&self, i: usize, p: &[f32], s: &mut [f32], g: &mut [f32], y: usize) {
        let (lo, hi) = Tail::clamp_bounds(&self.net.layers[i]);
        let c = self.bias(i, p).len();
        let gam = self.pr[i].g.clone();
        let (yr, gr, zr) = (
            self.sc.val[y].clone(),
            self.sc.grad[y].clone(),
            self.sc.z[i].clone(),
        );
        for k in 0..gr.len() {
            let ch = k % c;
            let mut d = s[gr.start + k];
            if !clamp_mask(s[yr.start + k], lo, hi) {
                d = 0.0;
            }
            if let Some(rb) = &self.pr[i].b {
                g[rb.start + ch] += d;
            }
            if let Some(rg) = &gam {
                g[rg.start + ch] += d * s[zr.start + k];
                d *= p[rg.start + ch];
            }
            s[gr.start + k] = d;
        }
    }

    /// Weight gradient of 1×1 layer `i` from `x` and `dz = grad[y]`: the full `dW`, or
    /// its projections onto the low-rank factors.
    fn dweight(
        &self,
        i: usize,
        p: &[f32],
        input: &[f32],
        s: &mut [f32],
        g: &mut [f32],
        (t, cin, cout): (usize, usize, usize),
    ) {
        let Layer::Pw { x: xi, y, .. } = self.net.layers[i] else {
            return;
        };
        let sc = &self.sc;
        if let (
            Variant::Lora { rank },
            PRanges {
                a: Some(ra),
                bb: Some(rb),
                ..
            },
        ) = (self.variant, &self.pr[i])
        {
            // ΔW = k·A·B, dW = Xᵀ·dZ: dA = k·Xᵀ·(dZ·Bᵀ) and dB = k·(X·A)ᵀ·dZ, without
            // forming the cin × cout dW (t·rank·(cin + cout) products instead of
            // t·cin·cout).
            let k = self.lora_scale();
            let (am, bm) = (&p[ra.clone()], &p[rb.clone()]);
            let xo = if xi == 0 {
                None
            } else {
                Some(sc.val[xi].start)
            };
            let (zb, xa) = (sc.xt.start, sc.xt.start + t * rank);
            for tok in 0..t {
                for j in 0..rank {
                    let dz = &s[sc.grad[y].start + tok * cout..][..cout];
                    let v = crate::adapt::nn::dot(dz, &bm[j * cout..][..cout]);
                    s[zb + tok * rank + j] = v;
                    let x = match xo {
                        None => &input[tok * cin..][..cin],
                        Some(o) => &s[o + tok * cin..][..cin],
                    };
                    let mut u = 0.0;
                    for (r, &xv) in x.iter().enumerate() {
                        u += xv * am[r * rank + j];
                    }
                    s[xa + tok * rank + j] = u;
                }
            }
            for tok in 0..t {
                for r in 0..cin {
                    let xv = match xo {
                        None => input[tok * cin + r],
                        Some(o) => s[o + tok * cin + r],
                    };
                    for j in 0..rank {
                        g[ra.start + r * rank + j] += k * xv * s[zb + tok * rank + j];
                    }
                }
                for j in 0..rank {
                    let a = k * s[xa + tok * rank + j];
                    let dz = &s[sc.grad[y].start + tok * cout..][..cout];
                    let gb = &mut g[rb.start + j * cout..][..cout];
                    gb.iter_mut().zip(dz).for_each(|(o, v)| *o += a * v);
                }
            }
            return;
        }
        // xᵀ into `xt`, dz packed into `zpack`, then dW = xᵀ·dz into `dw`.
        for tok in 0..t {
            for ch in 0..cin {
                let v = if xi == 0 {
                    input[tok * cin + ch]
                } else {
                    s[sc.val[xi].start + tok * cin + ch]
                };
                s[sc.xt.start + ch * t + tok] = v;
            }
        }
        {
            let (dz, zp) = two(s, &sc.grad[y], &sc.zpack);
            pack::pack_f32(dz, t, cout, zp);
        }
        {
            let (head, rest) = s.split_at_mut(sc.zpack.start);
            let xt = &head[sc.xt.start..sc.xt.start + cin * t];
            let (zp, rest) = rest.split_at_mut(sc.zpack.len());
            let dw = &mut rest[sc.dw.start - sc.zpack.end..][..cin * cout];
            self.gemm((cin, cout, t), xt, zp, dw);
        }
        let dw = &s[sc.dw.start..sc.dw.start + cin * cout];
        if let Some(rw) = &self.pr[i].w {
            g[rw.clone()].iter_mut().zip(dw).for_each(|(o, v)| *o += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::nn::softmax_ce;
    use crate::adapt::tail::{DwGeom, TailNet};
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    /// cut (4×4×3) → 1×1 3→6 ReLU6 → depthwise 3×3 ReLU6 → 1×1 6→3 → + cut → hard-swish
    /// → 1×1 3→5 → depthwise 3×3 stride 2 → pool.
    fn net() -> TailNet {
        let mut r = Rng::new(5);
        let mut frozen = Vec::new();
        let mut take = |n: usize, scale: f32| {
            let o = frozen.len();
            frozen.extend((0..n).map(|_| (r.f32() * 2.0 - 1.0) * scale));
            o
        };
        let dw = |c, stride, oh| DwGeom {
            c,
            h: 4,
            w: 4,
            kh: 3,
            kw: 3,
            stride: (stride, stride),
            pad: (1, 1),
            oh,
            ow: oh,
        };
        let inf = f32::INFINITY;
        let layers = alloc::vec![
            Layer::Pw {
                x: 0,
                y: 1,
                cin: 3,
                cout: 6,
                w: take(18, 0.8),
                b: take(6, 0.3),
                lo: 0.0,
                hi: 6.0
            },
            Layer::Dw {
                x: 1,
                y: 2,
                g: dw(6, 1, 4),
                w: take(54, 0.5),
                b: take(6, 0.3),
                lo: 0.0,
                hi: 6.0
            },
            Layer::Pw {
                x: 2,
                y: 3,
                cin: 6,
                cout: 3,
                w: take(18, 0.8),
                b: take(3, 0.3),
                lo: -inf,
                hi: inf
            },
            Layer::Add { a: 3, b: 0, y: 4 },
            Layer::Act {
                x: 4,
                y: 5,
                f: Act1::HardSwish
            },
            Layer::Pw {
                x: 5,
                y: 6,
                cin: 3,
                cout: 5,
                w: take(15, 0.8),
                b: take(5, 0.3),
                lo: -inf,
                hi: inf
            },
            Layer::Dw {
                x: 6,
                y: 7,
                g: dw(5, 2, 2),
                w: take(45, 0.5),
                b: take(5, 0.3),
                lo: -inf,
                hi: inf
            },
            Layer::Gap { x: 7, y: 8 },
        ];
        TailNet {
            cut: "cut".into(),
            layers,
            slots: alloc::vec![
                (16, 3),
                (16, 6),
                (16, 6),
                (16, 3),
                (16, 3),
                (16, 3),
                (16, 5),
                (4, 5),
                (1, 5)
            ],
            frozen,
            features: 8,
        }
    }

    fn check(variant: Variant) {
        let t = Tail::new(Arc::new(net()), variant, 3);
        let mut rng = Rng::new(9);
        let x: Vec<f32> = (0..48).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let mut p = alloc::vec![0.0; t.n_params()];
        t.init(&mut rng, &mut p);
        // Away from the init's symmetric points (zero low-rank factors, unit scales).
        p.iter_mut().for_each(|v| *v += 0.2 * (rng.f32() - 0.5));
        let loss = |p: &[f32]| {
            t.prepare(p);
            let mut s = alloc::vec![0.0; t.scratch_len()];
            let (mut z, mut d) = ([0.0; 3], [0.0; 3]);
            t.forward(p, &[&x], &mut s, &mut z);
            softmax_ce(&z, 1, 0.1, &mut d)
        };
        t.prepare(&p);
        let mut s = alloc::vec![0.0; t.scratch_len()];
        let (mut z, mut d) = ([0.0; 3], [0.0; 3]);
        t.forward(&p, &[&x], &mut s, &mut z);
        softmax_ce(&z, 1, 0.1, &mut d);
        let mut g = alloc::vec![0.0; t.n_params()];
        t.backward(&p, &[&x], &mut s, &d, &mut g);
        // Clamps have kinks: a step that crosses one is retried smaller.
        for i in 0..p.len() {
            let v0 = p[i];
            let mut err = f32::INFINITY;
            let mut fd = 0.0;
            for eps in [1e-3f32, 2e-4] {
                p[i] = v0 + eps;
                let lp = loss(&p);
                p[i] = v0 - eps;
                let lm = loss(&p);
                p[i] = v0;
                fd = (lp - lm) / (2.0 * eps);
                err = err.min((fd - g[i]).abs() - 3e-2 * fd.abs());
            }
            assert!(
                err < 2e-3,
                "{variant:?} param {i}: fd {fd} analytic {}",
                g[i]
            );
        }
        // Every trained body tensor gets a gradient, not only the classifier.
        let body: f32 = g[..t.head.start].iter().map(|v| v.abs()).sum();
        assert!(body > 1e-3, "{variant:?}: no gradient reaches the tail");
    }

    #[test]
    fn full_tail_gradient_matches_finite_differences() {
        check(Variant::Full);
    }

    #[test]
    fn bias_tail_gradient_matches_finite_differences() {
        check(Variant::Bias);
    }

    #[test]
    fn lora_tail_gradient_matches_finite_differences() {
        check(Variant::Lora { rank: 2 });
    }

    #[test]
    fn hard_swish_and_relu6_derivatives() {
        for f in [Act1::Relu, Act1::Relu6, Act1::HardSwish] {
            for i in 0..200 {
                let x = -8.0 + i as f32 * 0.0813;
                let e = 1e-3;
                let fd = (act1(f, x + e).0 - act1(f, x - e).0) / (2.0 * e);
                assert!((fd - act1(f, x).1).abs() < 1e-2, "{f:?} at {x}: {fd}");
            }
        }
    }
}
