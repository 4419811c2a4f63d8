//! Forward and backward passes of the tail: its [`Head`] implementation.
//!
//! One pass runs a whole batch: activations are `[rows][tokens][channels]`, so a 1×1
//! convolution over the batch is one GEMM with `rows · tokens` rows, and its weight
//! gradient one GEMM whose reduction runs over the batch's tokens. The per-example
//! [`Head::forward`] / [`Head::backward`] are the same passes with one row.

use super::net::{Act1, Layer};
use super::pass;
use super::train::{two, Job, PRanges, Scratch, Tail, Variant};
use crate::adapt::rng::Rng;
use crate::adapt::train::Head;
use alloc::vec::Vec;
use core::ops::Range;
use edgetune_kernels::{ops as kops, pack, Act};

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

/// The first `n` values of `r`.
fn head(r: &Range<usize>, n: usize) -> Range<usize> {
    r.start..r.start + n
}

/// Two disjoint ranges of one buffer, both writable.
fn two_mut<'a>(
    g: &'a mut [f32],
    a: &Range<usize>,
    b: &Range<usize>,
) -> (&'a mut [f32], &'a mut [f32]) {
    if a.end <= b.start {
        let (x, y) = g.split_at_mut(b.start);
        (&mut x[a.clone()], &mut y[..b.len()])
    } else {
        let (x, y) = g.split_at_mut(a.start);
        (&mut y[..a.len()], &mut x[b.clone()])
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

    fn par(&self) -> crate::par::Par {
        self.par.clone()
    }

    fn lr_scales(&self, out: &mut [f32]) -> bool {
        out.fill(self.body_lr);
        out[self.head.clone()].fill(1.0);
        true
    }

    fn prepare(&self, p: &[f32]) {
        // `bias` trains no weight: its packings were made once, by `new`.
        if self.variant != Variant::Bias {
            self.pack_weights(p);
        }
    }

    fn forward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], logits: &mut [f32]) {
        self.fwd(p, x[self.tap], 1, &self.sc, s, logits, false);
    }

    fn backward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], dl: &[f32], g: &mut [f32]) {
        self.bwd(p, x[self.tap], 1, &self.sc, s, dl, g);
    }

    /// The cut's activations, then (`bias`, whose first 1×1 weights are frozen) that
    /// layer's product `z = x·W`, the same for every step.
    fn stage_len(&self) -> usize {
        let (t, c) = self.net.slots[0];
        t * c + self.staged_z0()
    }

    fn stage(&self, x: &[&[f32]], out: &mut [f32]) {
        let (t, c) = self.net.slots[0];
        let input = &x[self.tap][..t * c];
        let (xo, zo) = out.split_at_mut(t * c);
        xo.copy_from_slice(input);
        if let (n @ 1.., Some(&Layer::Pw { y, cin, cout, .. })) =
            (self.staged_z0(), self.net.layers.first())
        {
            let prep = self.prep.borrow();
            let t = self.net.slots[y].0;
            self.gemm(
                (t, cout, cin),
                input,
                &prep[self.packs[0].0.clone()],
                &mut zo[..n],
            );
        }
    }

    fn batch_scratch_len(&self, rows: usize) -> usize {
        self.batch_layout(rows);
        self.bsc.borrow().as_ref().map_or(0, |b| b.len)
    }

    fn forward_batch(&self, p: &[f32], xb: &[f32], rows: usize, s: &mut [f32], logits: &mut [f32]) {
        self.batch_layout(rows);
        let bsc = self.bsc.borrow();
        let Some(sc) = bsc.as_ref() else {
            return;
        };
        let (t, c) = self.net.slots[0];
        let (n0, nz, sl) = (t * c, self.staged_z0(), self.stage_len());
        // The inputs and staged products of the rows, each contiguous over the batch.
        let (s, inp) = s.split_at_mut(sc.inp.start);
        for r in 0..rows {
            let row = &xb[r * sl..][..sl];
            inp[r * n0..][..n0].copy_from_slice(&row[..n0]);
            if nz > 0 {
                s[sc.z[0].start + r * nz..][..nz].copy_from_slice(&row[n0..]);
            }
        }
        self.fwd(p, &inp[..rows * n0], rows, sc, s, logits, nz > 0);
    }

    fn backward_batch(
        &self,
        p: &[f32],
        _xb: &[f32],
        rows: usize,
        s: &mut [f32],
        dl: &[f32],
        g: &mut [f32],
    ) {
        let bsc = self.bsc.borrow();
        let Some(sc) = bsc.as_ref().filter(|b| b.rows >= rows) else {
            return;
        };
        let n0 = self.net.slots[0].0 * self.net.slots[0].1;
        // `forward_batch` left the batch's inputs after the layout's other buffers.
        let (s, inp) = s.split_at_mut(sc.inp.start);
        self.bwd(p, &inp[..rows * n0], rows, sc, s, dl, g);
    }
}

/// Examples [`Tail::logits_batch`] takes through the layers together.
pub const EVAL_ROWS: usize = 10;

impl Tail {
    /// Logits (`rows × classes`) of `rows` examples whose cut activations are `input`
    /// (row-major), [`EVAL_ROWS`] at a time through each layer together: per row the
    /// numbers [`Head::forward`] gives that example alone (every row of a GEMM, a
    /// depthwise pass or the pooling is computed as it is for one row). The weights are
    /// those of the last `prepare`.
    pub fn logits_batch(&self, p: &[f32], input: &[f32], rows: usize, logits: &mut [f32]) {
        let b = EVAL_ROWS.min(rows);
        self.batch_layout(b);
        let bsc = self.bsc.borrow();
        let Some(sc) = bsc.as_ref() else {
            return;
        };
        let n0 = self.net.slots[0].0 * self.net.slots[0].1;
        let mut s = alloc::vec![0.0f32; sc.inp.start];
        for (x, z) in input[..rows * n0]
            .chunks(b * n0)
            .zip(logits.chunks_mut(b * self.classes))
        {
            self.fwd(p, x, x.len() / n0, sc, &mut s, z, false);
        }
    }

    /// Values of slot `i` for `rows` examples.
    fn n_of(&self, i: usize, rows: usize) -> usize {
        rows * self.net.slots[i].0 * self.net.slots[i].1
    }

    /// Logits of `rows` examples whose cut activations are `input` (row-major); keeps
    /// what [`Tail::bwd`] needs in `s`, laid out as `sc`. With `z0_ready`, the first
    /// layer's `z` is already in place.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fwd(
        &self,
        p: &[f32],
        input: &[f32],
        rows: usize,
        sc: &Scratch,
        s: &mut [f32],
        logits: &mut [f32],
        z0_ready: bool,
    ) {
        let prep = self.prep.borrow();
        for (i, l) in self.net.layers.iter().enumerate() {
            match *l {
                Layer::Pw {
                    x: xi,
                    y,
                    cin,
                    cout,
                    ..
                } => {
                    let t = rows * self.net.slots[y].0;
                    if self.pr[i].g.is_none() {
                        // Without a trained scale, y = clamp(x·W + b) comes straight out
                        // of the GEMM's epilogue (the backward needs no z).
                        let (lo, hi) = Tail::clamp_bounds(l);
                        let yr = head(&sc.val[y], t * cout);
                        let (xv, yv) = if xi == 0 {
                            (&input[..t * cin], &mut s[yr])
                        } else {
                            two(s, &head(&sc.val[xi], t * cin), &yr)
                        };
                        let pk = &prep[self.packs[i].0.clone()];
                        let bias = Some(self.bias(i, p));
                        self.gemm_act((t, cout, cin), xv, pk, bias, Act::Clamp(lo, hi), yv);
                        continue;
                    }
                    let zr = head(&sc.z[i], t * cout);
                    if !(i == 0 && z0_ready) {
                        let (xv, z) = if xi == 0 {
                            (&input[..t * cin], &mut s[zr])
                        } else {
                            two(s, &head(&sc.val[xi], t * cin), &zr)
                        };
                        self.gemm((t, cout, cin), xv, &prep[self.packs[i].0.clone()], z);
                    }
                    self.affine(i, p, s, sc, rows, y);
                }
                Layer::Dw { x: xi, y, g, .. } => {
                    let (nx, nz) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
                    let w = self.wdw(i, p);
                    let zr = head(&sc.z[i], rows * nz);
                    let (xv, z) = if xi == 0 {
                        (&input[..rows * nx], &mut s[zr])
                    } else {
                        two(s, &head(&sc.val[xi], rows * nx), &zr)
                    };
                    pass::dw_forward_batch(&self.par, &self.kern, &g, xv, w, z);
                    self.affine(i, p, s, sc, rows, y);
                }
                Layer::Add { a, b, y } => {
                    // y = a, then y += b: the one addition per value, vectorised.
                    let n = self.n_of(y, rows);
                    let yr = head(&sc.val[y], n);
                    if a == 0 {
                        s[yr.clone()].copy_from_slice(&input[..n]);
                    } else {
                        let (va, yv) = two(s, &head(&sc.val[a], n), &yr);
                        yv.copy_from_slice(va);
                    }
                    if b == 0 {
                        pass::add_into(&self.kern, &input[..n], &mut s[yr]);
                    } else {
                        let (vb, yv) = two(s, &head(&sc.val[b], n), &yr);
                        pass::add_into(&self.kern, vb, yv);
                    }
                }
                Layer::Gap { x: xi, y } => {
                    // Each example's mean over its tokens, the examples over the threads
                    // (each value's sum over the tokens in order: the same bits).
                    let (t, c) = self.net.slots[xi];
                    let yr = head(&sc.val[y], rows * c);
                    let (xv, yv) = if xi == 0 {
                        (&input[..rows * t * c], &mut s[yr])
                    } else {
                        two(s, &head(&sc.val[xi], rows * t * c), &yr)
                    };
                    let kern = self.kern;
                    let _ = crate::par::for_runs(&self.par, c, yv, 2 * t, |at, part| {
                        let r0 = at / c.max(1);
                        for (r, yo) in (r0..).zip(part.chunks_exact_mut(c.max(1))) {
                            yo.fill(0.0);
                            for xt in xv[r * t * c..(r + 1) * t * c].chunks_exact(c) {
                                pass::add_into(&kern, xt, yo);
                            }
                            yo.iter_mut().for_each(|v| *v /= t as f32);
                        }
                        Ok(())
                    });
                }
                Layer::Act { x: xi, y, f } => {
                    let yr = head(&sc.val[y], self.n_of(y, rows));
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
        let hw = &p[self.head.clone()];
        for r in 0..rows {
            let fr = sc.val[self.net.features].start + r * fdim;
            let hr = sc.fhat.start + r * (fdim + 1);
            let (f, fh) = two(s, &(fr..fr + fdim), &(hr..hr + fdim + 1));
            let norm = libm::sqrtf(f.iter().map(|v| v * v).sum::<f32>()) + 1e-6;
            for (o, v) in fh.iter_mut().zip(f) {
                *o = v / norm;
            }
            fh[fdim] = norm;
            for k in 0..self.classes {
                let row = &hw[k * fdim..(k + 1) * fdim];
                logits[r * self.classes + k] =
                    self.scale * row.iter().zip(&fh[..fdim]).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }

    /// Accumulates the gradient of `rows` examples into `g`, after [`Tail::fwd`] on the
    /// same `s`; `dl` holds `classes` logit gradients per row.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bwd(
        &self,
        p: &[f32],
        input: &[f32],
        rows: usize,
        sc: &Scratch,
        s: &mut [f32],
        dl: &[f32],
        g: &mut [f32],
    ) {
        let prep = self.prep.borrow();
        let fdim = self.net.feature_dim();
        for (i, r) in sc.grad.iter().enumerate().skip(1) {
            // A slot whose one reader is a 1×1 layer gets its gradient written whole by
            // that layer's GEMM.
            if !self.net.pw_sole_reader(i) {
                let part = &mut s[head(r, self.n_of(i, rows))];
                let _ = crate::par::for_runs(&self.par, 1024, part, 1, |_, p| {
                    p.fill(0.0);
                    Ok(())
                });
            }
        }
        // Classifier and the normalisation, row by row.
        let hw = &p[self.head.clone()];
        for r in 0..rows {
            let dl = &dl[r * self.classes..][..self.classes];
            let hr = sc.fhat.start + r * (fdim + 1);
            let gr = sc.grad[self.net.features].start + r * fdim;
            let norm = s[hr + fdim];
            {
                let fh = &s[hr..hr + fdim];
                let gh = &mut g[self.head.clone()];
                for k in 0..self.classes {
                    let d = self.scale * dl[k];
                    for i in 0..fdim {
                        gh[k * fdim + i] += d * fh[i];
                    }
                }
            }
            let mut dot = 0.0;
            for i in 0..fdim {
                let mut v = 0.0;
                for k in 0..self.classes {
                    v += self.scale * dl[k] * hw[k * fdim + i];
                }
                s[gr + i] = v;
                dot += v * s[hr + i];
            }
            for i in 0..fdim {
                let fhi = s[hr + i];
                s[gr + i] = (s[gr + i] - fhi * dot) / norm;
            }
        }
        for (i, l) in self.net.layers.iter().enumerate().rev() {
            match *l {
                Layer::Gap { x: xi, y } => {
                    if xi == 0 {
                        continue;
                    }
                    let (t, c) = self.net.slots[xi];
                    let (dy, dx) = two(
                        s,
                        &head(&sc.grad[y], rows * c),
                        &head(&sc.grad[xi], rows * t * c),
                    );
                    // The examples over the threads (each value its own: the same bits).
                    let _ = crate::par::for_runs(&self.par, t * c, dx, 2, |at, part| {
                        let r0 = at / (t * c).max(1);
                        for (r, dxr) in (r0..).zip(part.chunks_exact_mut((t * c).max(1))) {
                            let dyr = &dy[r * c..(r + 1) * c];
                            for dxt in dxr.chunks_exact_mut(c.max(1)) {
                                for (o, d) in dxt.iter_mut().zip(dyr) {
                                    *o += d / t as f32;
                                }
                            }
                        }
                        Ok(())
                    });
                }
                Layer::Add { a, b, y } => {
                    let n = self.n_of(y, rows);
                    for src in [a, b] {
                        if src != 0 {
                            let (dy, dx) = two(s, &head(&sc.grad[y], n), &head(&sc.grad[src], n));
                            pass::add_into(&self.kern, dy, dx);
                        }
                    }
                }
                Layer::Act { x: xi, y, f } => {
                    if xi == 0 {
                        continue;
                    }
                    let (n, gy, gx, vx) = (
                        self.n_of(y, rows),
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
                    let t = rows * self.net.slots[y].0;
                    self.affine_back(i, p, s, g, sc, rows, y);
                    // Now grad[y] holds dz.
                    if self.pr[i].w.is_some() || self.pr[i].a.is_some() {
                        self.dweight(i, p, input, s, g, sc, (t, cin, cout));
                    }
                    if xi != 0 {
                        let pk = &prep[self.packs[i].1.clone()];
                        let gx = head(&sc.grad[xi], t * cin);
                        if self.net.pw_sole_reader(xi) {
                            // The only gradient into `xi`: the GEMM writes it (onto the
                            // zeros it would be added to).
                            let (dz, dx) = two(s, &head(&sc.grad[y], t * cout), &gx);
                            self.gemm((t, cin, cout), dz, pk, dx);
                        } else {
                            let (dz, dx) = two(s, &head(&sc.grad[y], t * cout), &sc.dx);
                            let dx = &mut dx[..t * cin];
                            self.gemm((t, cin, cout), dz, pk, dx);
                            let (dx, gxv) = two(s, &head(&sc.dx, t * cin), &gx);
                            pass::add_into(&self.kern, dx, gxv);
                        }
                    }
                }
                Layer::Dw {
                    x: xi, y, g: geo, ..
                } => {
                    self.affine_back(i, p, s, g, sc, rows, y);
                    let w = self.wdw(i, p);
                    let (nx, nz) = (geo.h * geo.w * geo.c, geo.oh * geo.ow * geo.c);
                    let dzr = head(&sc.grad[y], rows * nz);
                    if let Some(rw) = self.pr[i].w.clone() {
                        let xv: &[f32] = if xi == 0 {
                            &input[..rows * nx]
                        } else {
                            &s[head(&sc.val[xi], rows * nx)]
                        };
                        pass::dw_wgrad_batch(
                            &self.par,
                            &self.kern,
                            &geo,
                            xv,
                            &s[dzr.clone()],
                            &mut g[rw],
                        );
                    }
                    if xi != 0 {
                        let (dz, dx) = two(s, &dzr, &head(&sc.grad[xi], rows * nx));
                        pass::dw_dx_batch(&self.par, &self.kern, &geo, w, dz, dx);
                    }
                }
            }
        }
    }

    /// `y = clamp(γ·z + b)` of conv layer `i` from its stored `z`, for `rows` examples.
    fn affine(&self, i: usize, p: &[f32], s: &mut [f32], sc: &Scratch, rows: usize, y: usize) {
        let (lo, hi) = Tail::clamp_bounds(&self.net.layers[i]);
        let b = self.bias(i, p);
        let n = self.n_of(y, rows);
        let (z, yv) = two(s, &head(&sc.z[i], n), &head(&sc.val[y], n));
        let gam = self.pr[i].g.clone().map_or(&[][..], |r| &p[r]);
        // Whole rows of channels per thread (each value its own: the same bits).
        let (c, kern) = (b.len().max(1), self.kern);
        let _ = crate::par::for_runs(&self.par, c, yv, 2, |at, part| {
            pass::affine(&kern, &z[at..at + part.len()], gam, b, lo, hi, part);
            Ok(())
        });
    }

    /// Turns `grad[y]` into `dz` of conv layer `i` for `rows` examples, accumulating the
    /// bias and scale gradients.
    #[allow(clippy::too_many_arguments)]
    fn affine_back(
        &self,
        i: usize,
        p: &[f32],
        s: &mut [f32],
        g: &mut [f32],
        sc: &Scratch,
        rows: usize,
        y: usize,
    ) {
        let (lo, hi) = Tail::clamp_bounds(&self.net.layers[i]);
        let c = self.bias(i, p).len();
        let n = self.n_of(y, rows);
        // The layout puts every value slot before every gradient slot, and those before
        // the products `z`.
        let (yr, gr) = (head(&sc.val[y], n), head(&sc.grad[y], n));
        let (before, rest) = s.split_at_mut(gr.start);
        let (gv, after) = rest.split_at_mut(n);
        let yv = &before[yr];
        // `z` only where a scale is trained (the layout keeps it for those alone).
        let (z, gam): (&[f32], &[f32]) = match &self.pr[i].g {
            Some(rg) => {
                let zr = head(&sc.z[i], n);
                (&after[zr.start - gr.end..zr.end - gr.end], &p[rg.clone()])
            }
            None => (&[], &[]),
        };
        let (gb, gg): (&mut [f32], &mut [f32]) = match (&self.pr[i].b, &self.pr[i].g) {
            (Some(rb), Some(rg)) => two_mut(g, rb, rg),
            (Some(rb), None) => (&mut g[rb.clone()], &mut []),
            (None, Some(rg)) => (&mut [], &mut g[rg.clone()]),
            (None, None) => (&mut [], &mut []),
        };
        pass::affine_back(
            (&self.par, &self.kern),
            (c, gv),
            (yv, z, gam),
            (gb, gg),
            (lo, hi),
        );
    }

    /// The input `x` of a 1×1 layer reading slot `xi` and its output gradient `dz` in
    /// slot `y`, over `t` tokens, from the value and gradient slots `pre` holds.
    fn x_dz<'a>(
        input: &'a [f32],
        pre: &'a [f32],
        sc: &Scratch,
        (xi, y): (usize, usize),
        (t, cin, cout): (usize, usize, usize),
    ) -> (&'a [f32], &'a [f32]) {
        let x = if xi == 0 {
            &input[..t * cin]
        } else {
            &pre[head(&sc.val[xi], t * cin)]
        };
        (x, &pre[head(&sc.grad[y], t * cout)])
    }

    /// Weight gradient of 1×1 layer `i` from `x` and `dz = grad[y]` over `t` tokens (the
    /// batch's): the full `dW`, or its projections onto the low-rank factors.
    #[allow(clippy::too_many_arguments)]
    fn dweight(
        &self,
        i: usize,
        p: &[f32],
        input: &[f32],
        s: &mut [f32],
        g: &mut [f32],
        sc: &Scratch,
        (t, cin, cout): (usize, usize, usize),
    ) {
        let Layer::Pw { x: xi, y, .. } = self.net.layers[i] else {
            return;
        };
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
            // t·cin·cout), each product a GEMM.
            let k = self.lora_scale();
            let (am, bm) = (&p[ra.clone()], &p[rb.clone()]);
            let (pre, post) = s.split_at_mut(sc.xt.start);
            let (x, dz) = Tail::x_dz(input, pre, sc, (xi, y), (t, cin, cout));
            let (xr, post) = post.split_at_mut(sc.xt.len());
            let (zr, post) = post.split_at_mut(sc.zpack.len());
            let dr = &mut post[..sc.dw.len()];
            let (zb, xr) = xr.split_at_mut(t * rank);
            let (xa, xr) = xr.split_at_mut(t * rank);
            let (xtr, xat) = xr.split_at_mut(cin * t);
            let (btp, zr) = zr.split_at_mut(pack::packed_f32_len(cout, rank));
            let (ap, zr) = zr.split_at_mut(pack::packed_f32_len(cin, rank));
            let (zbp, dzp) = zr.split_at_mut(pack::packed_f32_len(t, rank));
            let (da, db) = dr.split_at_mut(cin * rank);
            // The factors' packings, xᵀ and dz packed over the threads (copies: any split
            // gives the same bits), then the two products they feed.
            let kern = self.kern;
            let dzp = &mut dzp[..pack::packed_f32_len(t, cout)];
            let mut jobs = prep_jobs(kern, (t, cin, cout), x, &mut xtr[..cin * t], dz, dzp);
            jobs.push(alloc::boxed::Box::new(|| {
                kops::pack_f32_t(&kern, bm, rank, cout, btp);
                Ok(())
            }));
            jobs.push(alloc::boxed::Box::new(|| {
                pack::pack_f32(am, cin, rank, ap);
                Ok(())
            }));
            let _ = self.par.each(jobs, |f| f());
            self.gemm((t, rank, cout), dz, btp, zb);
            self.gemm((t, rank, cin), x, ap, xa);
            let xat = &mut xat[..rank * t];
            let jobs: Vec<Job> = alloc::vec![
                alloc::boxed::Box::new(|| {
                    pack::pack_f32(zb, t, rank, zbp);
                    Ok(())
                }),
                alloc::boxed::Box::new(|| Ok(kops::transpose_f32(&kern, xa, t, rank, 0, xat)?)),
            ];
            let _ = self.par.each(jobs, |f| f());
            self.gemm((cin, rank, t), xtr, zbp, da);
            self.gemm((rank, cout, t), xat, dzp, &mut db[..rank * cout]);
            g[ra.clone()]
                .iter_mut()
                .zip(&*da)
                .for_each(|(o, v)| *o += k * v);
            g[rb.clone()]
                .iter_mut()
                .zip(&*db)
                .for_each(|(o, v)| *o += k * v);
            return;
        }
        // xᵀ into `xt` and dz packed into `zpack` over the threads, then dW = xᵀ·dz into
        // `dw`.
        {
            let (pre, post) = s.split_at_mut(sc.xt.start);
            let (x, dz) = Tail::x_dz(input, pre, sc, (xi, y), (t, cin, cout));
            let (xt, post) = post.split_at_mut(sc.xt.len());
            let zp = &mut post[..pack::packed_f32_len(t, cout)];
            let jobs = prep_jobs(self.kern, (t, cin, cout), x, &mut xt[..t * cin], dz, zp);
            let _ = self.par.each(jobs, |f| f());
        }
        {
            let (hd, rest) = s.split_at_mut(sc.zpack.start);
            let xt = &hd[sc.xt.start..sc.xt.start + cin * t];
            let (zp, rest) = rest.split_at_mut(sc.zpack.len());
            let dw = &mut rest[sc.dw.start - sc.zpack.end..][..cin * cout];
            self.gemm((cin, cout, t), xt, &zp[..pack::packed_f32_len(t, cout)], dw);
        }
        let dw = &s[sc.dw.start..sc.dw.start + cin * cout];
        if let Some(rw) = &self.pr[i].w {
            pass::add_into(&self.kern, dw, &mut g[rw.clone()]);
        }
    }
}

/// `x` (`t × cin`) transposed into `xt` and `dz` (`t × cout`) packed into `zp`, each in
/// two halves: jobs for the threads (copies: any split gives the same bits).
fn prep_jobs<'a>(
    kern: edgetune_kernels::Kernels,
    (t, cin, cout): (usize, usize, usize),
    x: &'a [f32],
    xt: &'a mut [f32],
    dz: &'a [f32],
    zp: &'a mut [f32],
) -> Vec<Job<'a>> {
    let (ch, panels) = (cin / 2, cout.div_ceil(pack::F32_NR) / 2);
    let (xt0, xt1) = xt.split_at_mut(ch * t);
    let (zp0, zp1) = zp.split_at_mut(panels * t * pack::F32_NR);
    alloc::vec![
        alloc::boxed::Box::new(move || Ok(kops::transpose_f32(&kern, x, t, cin, 0, xt0)?)),
        alloc::boxed::Box::new(move || Ok(kops::transpose_f32(&kern, x, t, cin, ch, xt1)?)),
        alloc::boxed::Box::new(move || {
            pack::pack_f32_panels(dz, t, cout, 0, zp0);
            Ok(())
        }),
        alloc::boxed::Box::new(move || {
            pack::pack_f32_panels(dz, t, cout, panels, zp1);
            Ok(())
        }),
    ]
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

    /// A batch through `forward_batch` / `backward_batch` (staged rows) gives the logits
    /// and summed gradient of the examples one at a time.
    fn batch_equals_per_example(variant: Variant) {
        let t = Tail::new(Arc::new(net()), variant, 3);
        let mut rng = Rng::new(11);
        let mut p = alloc::vec![0.0; t.n_params()];
        t.init(&mut rng, &mut p);
        p.iter_mut().for_each(|v| *v += 0.2 * (rng.f32() - 0.5));
        t.prepare(&p);
        let labels = [0, 2, 1, 1];
        let xs: Vec<Vec<f32>> = labels
            .iter()
            .map(|_| (0..48).map(|_| rng.f32() * 2.0 - 1.0).collect())
            .collect();
        let k = 3;
        let mut g1 = alloc::vec![0.0; t.n_params()];
        let mut z1 = Vec::new();
        let mut s = alloc::vec![0.0; t.scratch_len()];
        for (x, &l) in xs.iter().zip(&labels) {
            let (mut z, mut d) = ([0.0; 3], [0.0; 3]);
            t.forward(&p, &[x], &mut s, &mut z);
            softmax_ce(&z, l, 0.1, &mut d);
            t.backward(&p, &[x], &mut s, &d, &mut g1);
            z1.extend_from_slice(&z);
        }
        let sl = t.stage_len();
        let nb = labels.len();
        let mut xb = alloc::vec![0.0; nb * sl];
        for (r, x) in xs.iter().enumerate() {
            t.stage(&[x], &mut xb[r * sl..][..sl]);
        }
        // Scratch for a larger batch than the one run.
        let mut s = alloc::vec![f32::NAN; t.batch_scratch_len(nb + 2)];
        let (mut z2, mut d2) = (alloc::vec![0.0; nb * k], alloc::vec![0.0; nb * k]);
        t.forward_batch(&p, &xb, nb, &mut s, &mut z2);
        for (r, &l) in labels.iter().enumerate() {
            softmax_ce(&z2[r * k..][..k], l, 0.1, &mut d2[r * k..][..k]);
        }
        let mut g2 = alloc::vec![0.0; t.n_params()];
        t.backward_batch(&p, &xb, nb, &mut s, &d2, &mut g2);
        // Full `dW` sums the batch's tokens in one GEMM reduction instead of example by
        // example: equal within rounding.
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{variant:?} {what} {i}: {x} vs {y}"
                );
            }
        };
        close(&z2, &z1, "logit");
        close(&g2, &g1, "gradient");
        assert!(g1[..t.head.start].iter().any(|v| v.abs() > 1e-4));
    }

    #[test]
    fn full_tail_batch_equals_per_example() {
        batch_equals_per_example(Variant::Full);
    }

    #[test]
    fn bias_tail_batch_equals_per_example() {
        batch_equals_per_example(Variant::Bias);
    }

    #[test]
    fn lora_tail_batch_equals_per_example() {
        batch_equals_per_example(Variant::Lora { rank: 2 });
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
