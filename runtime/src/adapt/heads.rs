//! The side heads trained beside the frozen backbone.
//!
//! * [`Ladder`] — a ladder side network (after Ladder Side-Tuning, UniPT and Hierarchical
//!   Side-Tuning): each tap is pooled and down-projected to a narrow side width, learned
//!   per-channel gates mix each ladder rung into the side stream, a head sits on top.
//! * [`Query`] — a query head (after Visual Query Tuning): a few learned query tokens per
//!   tap attend over that tap's tokens; their outputs, concatenated, feed a linear
//!   classifier.
//!
//! Both read `x[sel[j]]` for their tap `j`: the caller passes every cached tap.

use super::cache::TapShape;
use super::nn;
use super::rng::Rng;
use super::train::Head;
use crate::kernels::ops as kops;
use crate::kernels::{pack, Act, Kernels};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ops::Range;

struct Alloc(usize);
impl Alloc {
    fn take(&mut self, n: usize) -> Range<usize> {
        let r = self.0..self.0 + n;
        self.0 += n;
        r
    }
}

fn normal(rng: &mut Rng, p: &mut [f32], std: f32) {
    for v in p.iter_mut() {
        // Sum of uniforms: cheap, deterministic, close enough to a normal for init.
        let u: f32 = (0..4).map(|_| rng.f32()).sum::<f32>() - 2.0;
        *v = u * std * 1.732;
    }
}

fn mean_tokens(x: &[f32], d: TapShape, out: &mut [f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(d.dim) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    let inv = 1.0 / d.tokens as f32;
    out.iter_mut().for_each(|o| *o *= inv);
}

struct Rung {
    down_w: Range<usize>,
    down_b: Range<usize>,
    ln_g: Range<usize>,
    ln_b: Range<usize>,
    // Side layer and gate; absent on the first rung.
    side_w: Range<usize>,
    side_b: Range<usize>,
    gate: Range<usize>,
    // Scratch: pooled input, pre-norm, normalised (xhat), post-norm, z, side pre-act,
    // side output h, stream s, and the rstd of the norm.
    pooled: Range<usize>,
    u: Range<usize>,
    xhat: Range<usize>,
    n: Range<usize>,
    z: Range<usize>,
    v: Range<usize>,
    h: Range<usize>,
    s: Range<usize>,
    rstd: usize,
}

/// Ladder side network; see the module docs.
pub struct Ladder {
    pub taps: Vec<TapShape>,
    pub sel: Vec<usize>,
    pub width: usize,
    pub classes: usize,
    rungs: Vec<Rung>,
    out_g: Range<usize>,
    out_b: Range<usize>,
    head_w: Range<usize>,
    head_b: Range<usize>,
    out_xhat: Range<usize>,
    out_n: Range<usize>,
    out_rstd: usize,
    // Backward scratch.
    ds: Range<usize>,
    dtmp: Range<usize>,
    dtmp2: Range<usize>,
    np: usize,
    ns: usize,
    /// The batched path's GEMM kernels and each rung's down-projection, packed by
    /// `prepare` after every step.
    kern: Kernels,
    prep: RefCell<Vec<f32>>,
    wpack: Vec<Range<usize>>,
    dmax: usize,
}

impl Ladder {
    /// `width` is the side stream's width: the largest tap width over the reduction factor.
    pub fn new(taps: Vec<TapShape>, sel: Vec<usize>, width: usize, classes: usize) -> Ladder {
        let (mut p, mut s) = (Alloc(0), Alloc(0));
        let w = width;
        let rungs = taps
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let side = if i == 0 { 0 } else { 1 };
                Rung {
                    down_w: p.take(t.dim * w),
                    down_b: p.take(w),
                    ln_g: p.take(w),
                    ln_b: p.take(w),
                    side_w: p.take(side * w * w),
                    side_b: p.take(side * w),
                    gate: p.take(side * w),
                    pooled: s.take(t.dim),
                    u: s.take(w),
                    xhat: s.take(w),
                    n: s.take(w),
                    z: s.take(w),
                    v: s.take(w),
                    h: s.take(w),
                    s: s.take(w),
                    rstd: s.take(1).start,
                }
            })
            .collect();
        let out_g = p.take(w);
        let out_b = p.take(w);
        let head_w = p.take(w * classes);
        let head_b = p.take(classes);
        let out_xhat = s.take(w);
        let out_n = s.take(w);
        let out_rstd = s.take(1).start;
        let ds = s.take(w);
        let dtmp = s.take(w);
        let dtmp2 = s.take(w);
        let mut pk = Alloc(0);
        let wpack = taps
            .iter()
            .map(|t| pk.take(pack::packed_f32_len(t.dim, w)))
            .collect();
        let dmax = taps.iter().map(|t| t.dim).max().unwrap_or(0);
        Ladder {
            taps,
            sel,
            width,
            classes,
            rungs,
            out_g,
            out_b,
            head_w,
            head_b,
            out_xhat,
            out_n,
            out_rstd,
            ds,
            dtmp,
            dtmp2,
            np: p.0,
            ns: s.0,
            kern: Kernels::detect(),
            prep: RefCell::new(alloc::vec![0.0; pk.0]),
            wpack,
            dmax,
        }
    }
}

/// Disjoint mutable views of one scratch buffer.
fn parts<'a, const N: usize>(s: &'a mut [f32], r: [&Range<usize>; N]) -> [&'a mut [f32]; N] {
    for i in 0..N {
        assert!(r[i].end <= s.len(), "scratch range out of bounds");
        for j in 0..i {
            assert!(
                r[i].end <= r[j].start
                    || r[j].end <= r[i].start
                    || r[i].is_empty()
                    || r[j].is_empty(),
                "scratch ranges overlap"
            );
        }
    }
    let base = s.as_mut_ptr();
    // SAFETY: every range lies inside `s` and the ranges are pairwise disjoint (both
    // asserted above), so the slices never alias and live no longer than `s`'s borrow.
    core::array::from_fn(|i| unsafe {
        core::slice::from_raw_parts_mut(base.add(r[i].start), r[i].len())
    })
}

/// `y = x·W + bias` for `rows` scratch slots (stride `ns`; x at `xo`, `din` values; y at
/// `yo`): the batched form of [`nn::linear`], same sums in the same order, reading each
/// row of `W` once for the whole batch.
#[allow(clippy::too_many_arguments)]
fn linear_rows(
    s: &mut [f32],
    ns: usize,
    rows: usize,
    xo: usize,
    din: usize,
    w: &[f32],
    bias: &[f32],
    yo: usize,
) {
    let o = bias.len();
    for b in 0..rows {
        s[b * ns + yo..][..o].copy_from_slice(bias);
    }
    for i in 0..din {
        let wr = &w[i * o..][..o];
        for b in 0..rows {
            let xv = s[b * ns + xo + i];
            let y = &mut s[b * ns + yo..][..o];
            y.iter_mut().zip(wr).for_each(|(y, w)| *y += xv * w);
        }
    }
}

/// Backward of [`linear_rows`] (dy at `dyo`, `o` values; dx to `dxo` when given), the
/// batched form of [`nn::linear_back`] accumulating over rows in order.
#[allow(clippy::too_many_arguments)]
fn linear_rows_back(
    s: &mut [f32],
    ns: usize,
    rows: usize,
    (xo, din): (usize, usize),
    w: &[f32],
    (dyo, o): (usize, usize),
    gw: &mut [f32],
    gb: &mut [f32],
    dxo: Option<usize>,
) {
    for i in 0..din {
        let g = &mut gw[i * o..][..o];
        for b in 0..rows {
            let xv = s[b * ns + xo + i];
            let dy = &s[b * ns + dyo..][..o];
            g.iter_mut().zip(dy).for_each(|(g, d)| *g += xv * d);
        }
    }
    for b in 0..rows {
        gb.iter_mut()
            .zip(&s[b * ns + dyo..][..o])
            .for_each(|(g, d)| *g += d);
    }
    if let Some(dxo) = dxo {
        for b in 0..rows {
            for i in 0..din {
                let v = nn::dot(&w[i * o..][..o], &s[b * ns + dyo..][..o]);
                s[b * ns + dxo + i] = v;
            }
        }
    }
}

impl Head for Ladder {
    fn classes(&self) -> usize {
        self.classes
    }
    fn n_params(&self) -> usize {
        self.np
    }
    fn scratch_len(&self) -> usize {
        self.ns
    }

    fn init(&self, rng: &mut Rng, p: &mut [f32]) {
        for (r, t) in self.rungs.iter().zip(&self.taps) {
            normal(
                rng,
                &mut p[r.down_w.clone()],
                1.0 / libm::sqrtf(t.dim as f32),
            );
            p[r.ln_g.clone()].fill(1.0);
            normal(
                rng,
                &mut p[r.side_w.clone()],
                1.0 / libm::sqrtf(self.width as f32),
            );
        }
        p[self.out_g.clone()].fill(1.0);
    }

    fn forward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], logits: &mut [f32]) {
        let none = 0..0;
        for (i, r) in self.rungs.iter().enumerate() {
            let prev = if i == 0 { &none } else { &self.rungs[i - 1].s };
            let [pooled, u, xhat, n, z, v, h, st, sp] = parts(
                s,
                [&r.pooled, &r.u, &r.xhat, &r.n, &r.z, &r.v, &r.h, &r.s, prev],
            );
            mean_tokens(x[self.sel[i]], self.taps[i], pooled);
            nn::linear(pooled, &p[r.down_w.clone()], &p[r.down_b.clone()], u);
            let g = (&p[r.ln_g.clone()], &p[r.ln_b.clone()]);
            let rstd = nn::layer_norm(u, Some(g), xhat, n);
            nn::gelu(n, z);
            if i == 0 {
                st.copy_from_slice(z);
            } else {
                nn::linear(sp, &p[r.side_w.clone()], &p[r.side_b.clone()], v);
                nn::gelu(v, h);
                nn::gate(&p[r.gate.clone()], z, h, st);
            }
            s[r.rstd] = rstd;
        }
        let last = &self.rungs[self.rungs.len() - 1].s;
        let [st, xhat, n] = parts(s, [last, &self.out_xhat, &self.out_n]);
        let g = (&p[self.out_g.clone()], &p[self.out_b.clone()]);
        let rstd = nn::layer_norm(st, Some(g), xhat, n);
        nn::linear(n, &p[self.head_w.clone()], &p[self.head_b.clone()], logits);
        s[self.out_rstd] = rstd;
    }

    fn backward(&self, p: &[f32], _x: &[&[f32]], s: &mut [f32], dl: &[f32], g: &mut [f32]) {
        let rstd = s[self.out_rstd];
        let [xhat, n, ds, dt] = parts(s, [&self.out_xhat, &self.out_n, &self.ds, &self.dtmp]);
        {
            let [gw, gb] = parts(g, [&self.head_w, &self.head_b]);
            nn::linear_back(n, &p[self.head_w.clone()], dl, gw, gb, Some(dt));
            let [gg, gbeta] = parts(g, [&self.out_g, &self.out_b]);
            nn::layer_norm_back(
                xhat,
                rstd,
                Some((&p[self.out_g.clone()], gg, gbeta)),
                dt,
                ds,
            );
        }
        let none = 0..0;
        for i in (0..self.rungs.len()).rev() {
            let r = &self.rungs[i];
            let prev = if i == 0 { &none } else { &self.rungs[i - 1].s };
            let rstd = s[r.rstd];
            // ds carries the stream's gradient down the ladder; dtmp and dtmp2 are temporaries.
            let [pooled, xhat, n, z, v, h, sp, ds, dz, dh] = parts(
                s,
                [
                    &r.pooled,
                    &r.xhat,
                    &r.n,
                    &r.z,
                    &r.v,
                    &r.h,
                    prev,
                    &self.ds,
                    &self.dtmp,
                    &self.dtmp2,
                ],
            );
            if i == 0 {
                dz.copy_from_slice(ds);
            } else {
                {
                    let [ga] = parts(g, [&r.gate]);
                    nn::gate_back(&p[r.gate.clone()], z, h, ds, ga, dz, dh);
                }
                // dh → dv (into h's gradient slot via ds, which is free now).
                nn::gelu_back(v, dh, ds);
                let [gw, gb] = parts(g, [&r.side_w, &r.side_b]);
                nn::linear_back(sp, &p[r.side_w.clone()], ds, gw, gb, Some(dh));
            }
            // dz → dn (into ds), then through the norm (into dz), then the projection.
            let dn = ds;
            nn::gelu_back(n, dz, dn);
            {
                let [gg, gb] = parts(g, [&r.ln_g, &r.ln_b]);
                nn::layer_norm_back(xhat, rstd, Some((&p[r.ln_g.clone()], gg, gb)), dn, dz);
            }
            let [gw, gb] = parts(g, [&r.down_w, &r.down_b]);
            nn::linear_back(pooled, &p[r.down_w.clone()], dz, gw, gb, None);
            // The stream's gradient for the rung below was left in dh.
            if i > 0 {
                dn.copy_from_slice(dh);
            }
        }
    }

    fn stage_len(&self) -> usize {
        self.taps.iter().map(|t| t.dim).sum()
    }

    fn stage(&self, x: &[&[f32]], out: &mut [f32]) {
        let mut off = 0;
        for (i, t) in self.taps.iter().enumerate() {
            mean_tokens(x[self.sel[i]], *t, &mut out[off..][..t.dim]);
            off += t.dim;
        }
    }

    fn fixed_bytes(&self) -> usize {
        4 * self.prep.borrow().len()
    }

    fn prepare(&self, p: &[f32]) {
        let mut prep = self.prep.borrow_mut();
        for ((r, t), pr) in self.rungs.iter().zip(&self.taps).zip(&self.wpack) {
            pack::pack_f32(
                &p[r.down_w.clone()],
                t.dim,
                self.width,
                &mut prep[pr.clone()],
            );
        }
    }

    fn batch_scratch_len(&self, rows: usize) -> usize {
        let w = self.width;
        // Slots, then Xᵀ of one rung, dZ gathered, dZ packed, and dW of one rung.
        rows * self.ns + self.dmax * rows + rows * w + pack::packed_f32_len(rows, w) + self.dmax * w
    }

    fn forward_batch(&self, p: &[f32], xb: &[f32], nb: usize, s: &mut [f32], logits: &mut [f32]) {
        let (ns, sl, k) = (self.ns, self.stage_len(), self.classes);
        let prep = self.prep.borrow();
        let mut off = 0;
        for (i, r) in self.rungs.iter().enumerate() {
            let dim = self.taps[i].dim;
            // u = X·W + b for the whole batch on the GEMM kernel; the sizes come from
            // `new` and `batch_scratch_len`, so an error here is a bug in this file.
            kops::gemm_f32(
                &self.kern,
                (nb, self.width, dim),
                &xb[off..],
                sl,
                &prep[self.wpack[i].clone()],
                Some(&p[r.down_b.clone()]),
                &mut s[r.u.start..],
                ns,
                Act::None,
            )
            .unwrap_or_else(|e| panic!("ladder down-projection gemm: {e}"));
            off += dim;
            if i > 0 {
                let prev = self.rungs[i - 1].s.start;
                let (sw, sb) = (&p[r.side_w.clone()], &p[r.side_b.clone()]);
                linear_rows(s, ns, nb, prev, self.width, sw, sb, r.v.start);
            }
            let g = (&p[r.ln_g.clone()], &p[r.ln_b.clone()]);
            for b in 0..nb {
                let slot = &mut s[b * ns..][..ns];
                let [u, xhat, n, z, v, h, st] =
                    parts(slot, [&r.u, &r.xhat, &r.n, &r.z, &r.v, &r.h, &r.s]);
                let rstd = nn::layer_norm(u, Some(g), xhat, n);
                nn::gelu(n, z);
                if i == 0 {
                    st.copy_from_slice(z);
                } else {
                    nn::gelu(v, h);
                    nn::gate(&p[r.gate.clone()], z, h, st);
                }
                slot[r.rstd] = rstd;
            }
        }
        let last = &self.rungs[self.rungs.len() - 1].s;
        let g = (&p[self.out_g.clone()], &p[self.out_b.clone()]);
        for b in 0..nb {
            let slot = &mut s[b * ns..][..ns];
            let [st, xhat, n] = parts(slot, [last, &self.out_xhat, &self.out_n]);
            let rstd = nn::layer_norm(st, Some(g), xhat, n);
            slot[self.out_rstd] = rstd;
        }
        let (hw, hb) = (&p[self.head_w.clone()], &p[self.head_b.clone()]);
        for b in 0..nb {
            logits[b * k..][..k].copy_from_slice(hb);
        }
        for i in 0..self.width {
            let wr = &hw[i * k..][..k];
            for b in 0..nb {
                let xv = s[b * ns + self.out_n.start + i];
                let z = &mut logits[b * k..][..k];
                z.iter_mut().zip(wr).for_each(|(z, w)| *z += xv * w);
            }
        }
    }

    fn backward_batch(
        &self,
        p: &[f32],
        xb: &[f32],
        nb: usize,
        s: &mut [f32],
        dl: &[f32],
        g: &mut [f32],
    ) {
        let (ns, k, w) = (self.ns, self.classes, self.width);
        // Head: gW += nᵀ·dl, gb += dl, dt = W·dl per row.
        {
            let [gw, gb] = parts(g, [&self.head_w, &self.head_b]);
            for i in 0..w {
                let gr = &mut gw[i * k..][..k];
                for b in 0..nb {
                    let xv = s[b * ns + self.out_n.start + i];
                    gr.iter_mut()
                        .zip(&dl[b * k..][..k])
                        .for_each(|(g, d)| *g += xv * d);
                }
            }
            for b in 0..nb {
                gb.iter_mut()
                    .zip(&dl[b * k..][..k])
                    .for_each(|(g, d)| *g += d);
            }
            let hw = &p[self.head_w.clone()];
            for b in 0..nb {
                for i in 0..w {
                    s[b * ns + self.dtmp.start + i] = nn::dot(&hw[i * k..][..k], &dl[b * k..][..k]);
                }
            }
        }
        for b in 0..nb {
            let slot = &mut s[b * ns..][..ns];
            let rstd = slot[self.out_rstd];
            let [xhat, ds, dt] = parts(slot, [&self.out_xhat, &self.ds, &self.dtmp]);
            let [gg, gbeta] = parts(g, [&self.out_g, &self.out_b]);
            nn::layer_norm_back(
                xhat,
                rstd,
                Some((&p[self.out_g.clone()], gg, gbeta)),
                dt,
                ds,
            );
        }
        let none = 0..0;
        for i in (0..self.rungs.len()).rev() {
            let r = &self.rungs[i];
            let prev = if i == 0 { &none } else { &self.rungs[i - 1].s };
            for b in 0..nb {
                let slot = &mut s[b * ns..][..ns];
                let [z, v, h, ds, dz, dh] =
                    parts(slot, [&r.z, &r.v, &r.h, &self.ds, &self.dtmp, &self.dtmp2]);
                if i == 0 {
                    dz.copy_from_slice(ds);
                } else {
                    let [ga] = parts(g, [&r.gate]);
                    nn::gate_back(&p[r.gate.clone()], z, h, ds, ga, dz, dh);
                    nn::gelu_back(v, dh, ds);
                }
            }
            if i > 0 {
                let [gw, gb] = parts(g, [&r.side_w, &r.side_b]);
                let sw = &p[r.side_w.clone()];
                let dx = Some(self.dtmp2.start);
                linear_rows_back(
                    s,
                    ns,
                    nb,
                    (prev.start, w),
                    sw,
                    (self.ds.start, w),
                    gw,
                    gb,
                    dx,
                );
            }
            for b in 0..nb {
                let slot = &mut s[b * ns..][..ns];
                let rstd = slot[r.rstd];
                let [xhat, n, ds, dz] = parts(slot, [&r.xhat, &r.n, &self.ds, &self.dtmp]);
                nn::gelu_back(n, dz, ds);
                let [gg, gb] = parts(g, [&r.ln_g, &r.ln_b]);
                nn::layer_norm_back(xhat, rstd, Some((&p[r.ln_g.clone()], gg, gb)), ds, dz);
            }
            // dW = Xᵀ·dZ on the GEMM kernel: Xᵀ and dZ gathered after the slots.
            let dim = self.taps[i].dim;
            let off: usize = self.taps[..i].iter().map(|t| t.dim).sum();
            let sl = self.stage_len();
            let (slots, rest) = s.split_at_mut(nb * ns);
            let (xt, rest) = rest.split_at_mut(self.dmax * nb);
            let (zc, rest) = rest.split_at_mut(nb * w);
            let (zp, dwt) = rest.split_at_mut(pack::packed_f32_len(nb, w));
            for b in 0..nb {
                for c in 0..dim {
                    xt[c * nb + b] = xb[b * sl + off + c];
                }
                zc[b * w..][..w].copy_from_slice(&slots[b * ns + self.dtmp.start..][..w]);
            }
            pack::pack_f32(zc, nb, w, zp);
            kops::gemm_f32(
                &self.kern,
                (dim, w, nb),
                xt,
                nb,
                zp,
                None,
                dwt,
                w,
                Act::None,
            )
            .unwrap_or_else(|e| panic!("ladder weight-gradient gemm: {e}"));
            let [gw, gb] = parts(g, [&r.down_w, &r.down_b]);
            gw.iter_mut()
                .zip(&dwt[..dim * w])
                .for_each(|(g, d)| *g += d);
            for b in 0..nb {
                gb.iter_mut()
                    .zip(&slots[b * ns + self.dtmp.start..][..w])
                    .for_each(|(g, d)| *g += d);
            }
            if i > 0 {
                for b in 0..nb {
                    let slot = &mut s[b * ns..][..ns];
                    let [ds, dh] = parts(slot, [&self.ds, &self.dtmp2]);
                    ds.copy_from_slice(dh);
                }
            }
        }
    }
}

struct QTap {
    q: Range<usize>,
    xhat: Range<usize>,
    attn: Range<usize>,
    off: usize,
}

/// Query head; see the module docs. Tokens are layer-normalised (no affine part) and
/// serve as keys and values; the queries start near uniform attention, i.e. pooling.
pub struct Query {
    pub taps: Vec<TapShape>,
    pub sel: Vec<usize>,
    pub queries: usize,
    pub classes: usize,
    qt: Vec<QTap>,
    feat: Range<usize>,
    fxhat: Range<usize>,
    fnorm: Range<usize>,
    dfn: Range<usize>,
    df: Range<usize>,
    da: Range<usize>,
    rstd: usize,
    ln_g: Range<usize>,
    ln_b: Range<usize>,
    head_w: Range<usize>,
    head_b: Range<usize>,
    np: usize,
    ns: usize,
}

impl Query {
    pub fn new(taps: Vec<TapShape>, sel: Vec<usize>, queries: usize, classes: usize) -> Query {
        let (mut p, mut s) = (Alloc(0), Alloc(0));
        let mut off = 0;
        let qt = taps
            .iter()
            .map(|t| {
                let q = QTap {
                    q: p.take(queries * t.dim),
                    xhat: s.take(t.tokens * t.dim),
                    attn: s.take(queries * t.tokens),
                    off,
                };
                off += queries * t.dim;
                q
            })
            .collect();
        let f = off;
        let maxt = taps.iter().map(|t| t.tokens).max().unwrap_or(0);
        let ln_g = p.take(f);
        let ln_b = p.take(f);
        let head_w = p.take(f * classes);
        let head_b = p.take(classes);
        Query {
            feat: s.take(f),
            fxhat: s.take(f),
            fnorm: s.take(f),
            dfn: s.take(f),
            df: s.take(f),
            da: s.take(maxt),
            rstd: s.take(1).start,
            taps,
            sel,
            queries,
            classes,
            qt,
            ln_g,
            ln_b,
            head_w,
            head_b,
            np: p.0,
            ns: s.0,
        }
    }
}

impl Head for Query {
    fn classes(&self) -> usize {
        self.classes
    }
    fn shared(&self) -> Option<&(dyn Head + Sync)> {
        Some(self)
    }
    fn par(&self) -> crate::par::Par {
        #[cfg(feature = "std")]
        return crate::par::Par::new(0).unwrap_or_default();
        #[cfg(not(feature = "std"))]
        return crate::par::Par::single();
    }
    fn n_params(&self) -> usize {
        self.np
    }
    fn scratch_len(&self) -> usize {
        self.ns
    }

    fn init(&self, rng: &mut Rng, p: &mut [f32]) {
        for q in &self.qt {
            normal(rng, &mut p[q.q.clone()], 0.3);
        }
        p[self.ln_g.clone()].fill(1.0);
    }

    fn forward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], logits: &mut [f32]) {
        for (j, q) in self.qt.iter().enumerate() {
            let d = self.taps[j];
            let o = q.off..q.off + self.queries * d.dim;
            let o = self.feat.start + o.start..self.feat.start + o.end;
            let [xhat, attn, out] = parts(s, [&q.xhat, &q.attn, &o]);
            for (src, dst) in x[self.sel[j]]
                .chunks_exact(d.dim)
                .zip(xhat.chunks_exact_mut(d.dim))
            {
                nn::layer_norm(src, None, dst, &mut []);
            }
            nn::attend(&p[q.q.clone()], xhat, d.dim, attn, out);
        }
        let [f, xhat, n] = parts(s, [&self.feat, &self.fxhat, &self.fnorm]);
        let g = (&p[self.ln_g.clone()], &p[self.ln_b.clone()]);
        let rstd = nn::layer_norm(f, Some(g), xhat, n);
        nn::linear(n, &p[self.head_w.clone()], &p[self.head_b.clone()], logits);
        s[self.rstd] = rstd;
    }

    fn backward(&self, p: &[f32], _x: &[&[f32]], s: &mut [f32], dl: &[f32], g: &mut [f32]) {
        let rstd = s[self.rstd];
        let [xhat, n, dfn, df] = parts(s, [&self.fxhat, &self.fnorm, &self.dfn, &self.df]);
        {
            let [gw, gb] = parts(g, [&self.head_w, &self.head_b]);
            nn::linear_back(n, &p[self.head_w.clone()], dl, gw, gb, Some(dfn));
            let [gg, gbeta] = parts(g, [&self.ln_g, &self.ln_b]);
            nn::layer_norm_back(
                xhat,
                rstd,
                Some((&p[self.ln_g.clone()], gg, gbeta)),
                dfn,
                df,
            );
        }
        for (j, q) in self.qt.iter().enumerate() {
            let d = self.taps[j];
            let [xt, attn, df, da] = parts(s, [&q.xhat, &q.attn, &self.df, &self.da]);
            let [gq] = parts(g, [&q.q]);
            let dout = &df[q.off..q.off + self.queries * d.dim];
            nn::attend_back(xt, d.dim, attn, dout, gq, &mut da[..d.tokens]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::nn::softmax_ce;

    /// The whole head's gradient against central differences of the loss.
    fn check_head<H: Head>(h: &H, x: &[Vec<f32>], label: usize) {
        let mut rng = Rng::new(11);
        let mut p = alloc::vec![0.0; h.n_params()];
        h.init(&mut rng, &mut p);
        // Move away from the init's symmetric points (zero head, unit norms).
        p.iter_mut().for_each(|v| *v += 0.2 * (rng.f32() - 0.5));
        let xs: Vec<&[f32]> = x.iter().map(|v| &v[..]).collect();
        let k = h.classes();
        let loss = |p: &[f32]| {
            let mut s = alloc::vec![0.0; h.scratch_len()];
            let (mut z, mut d) = (alloc::vec![0.0; k], alloc::vec![0.0; k]);
            h.forward(p, &xs, &mut s, &mut z);
            softmax_ce(&z, label, 0.1, &mut d)
        };
        let mut s = alloc::vec![0.0; h.scratch_len()];
        let (mut z, mut d) = (alloc::vec![0.0; k], alloc::vec![0.0; k]);
        h.forward(&p, &xs, &mut s, &mut z);
        softmax_ce(&z, label, 0.1, &mut d);
        let mut g = alloc::vec![0.0; h.n_params()];
        h.backward(&p, &xs, &mut s, &d, &mut g);
        let eps = 1e-2;
        let mut worst = 0.0f32;
        for i in 0..p.len() {
            let v0 = p[i];
            p[i] = v0 + eps;
            let lp = loss(&p);
            p[i] = v0 - eps;
            let lm = loss(&p);
            p[i] = v0;
            let fd = (lp - lm) / (2.0 * eps);
            let err = (fd - g[i]).abs();
            worst = worst.max(err);
            assert!(
                err < 2e-3 + 3e-2 * fd.abs(),
                "param {i}: fd {fd} analytic {}",
                g[i]
            );
        }
        assert!(g.iter().any(|v| v.abs() > 1e-4), "gradient is all zero");
    }

    fn inputs(r: &mut Rng, taps: &[TapShape]) -> Vec<Vec<f32>> {
        taps.iter()
            .map(|t| (0..t.tokens * t.dim).map(|_| r.f32() * 2.0 - 1.0).collect())
            .collect()
    }

    #[test]
    fn ladder_gradient_matches_finite_differences() {
        let taps = alloc::vec![
            TapShape { tokens: 4, dim: 6 },
            TapShape { tokens: 2, dim: 5 },
            TapShape { tokens: 1, dim: 7 },
        ];
        let mut r = Rng::new(1);
        let x = inputs(&mut r, &taps);
        // Taps passed in another order than the head reads them: `sel` maps.
        let xr = alloc::vec![x[2].clone(), x[0].clone(), x[1].clone()];
        check_head(&Ladder::new(taps, alloc::vec![1, 2, 0], 4, 3), &xr, 1);
    }

    /// The batched path (stage once, GEMMs over the batch) against the per-example path
    /// checked against finite differences above: the same logits and gradient.
    #[test]
    fn ladder_batch_equals_per_example() {
        let taps = alloc::vec![
            TapShape { tokens: 4, dim: 6 },
            TapShape { tokens: 2, dim: 5 },
            TapShape { tokens: 1, dim: 7 },
        ];
        let h = Ladder::new(taps.clone(), alloc::vec![2, 0, 1], 4, 3);
        let mut r = Rng::new(5);
        let mut p = alloc::vec![0.0; h.n_params()];
        h.init(&mut r, &mut p);
        p.iter_mut().for_each(|v| *v += 0.2 * (r.f32() - 0.5));
        let examples: Vec<Vec<Vec<f32>>> = (0..5)
            .map(|_| {
                let x = inputs(&mut r, &taps);
                alloc::vec![x[1].clone(), x[2].clone(), x[0].clone()]
            })
            .collect();
        let (k, sl) = (h.classes(), h.stage_len());
        let labels = [0, 2, 1, 1, 0];
        // Per example.
        let mut g1 = alloc::vec![0.0; h.n_params()];
        let mut z1 = Vec::new();
        for (x, &l) in examples.iter().zip(&labels) {
            let xs: Vec<&[f32]> = x.iter().map(|v| &v[..]).collect();
            let mut s = alloc::vec![0.0; h.scratch_len()];
            let (mut z, mut d) = (alloc::vec![0.0; k], alloc::vec![0.0; k]);
            h.forward(&p, &xs, &mut s, &mut z);
            softmax_ce(&z, l, 0.1, &mut d);
            h.backward(&p, &xs, &mut s, &d, &mut g1);
            z1.extend_from_slice(&z);
        }
        // Batched, rows in another order than staged.
        let mut staged = alloc::vec![0.0; examples.len() * sl];
        for (e, x) in examples.iter().enumerate() {
            let xs: Vec<&[f32]> = x.iter().map(|v| &v[..]).collect();
            h.stage(&xs, &mut staged[e * sl..][..sl]);
        }
        let nb = examples.len();
        h.prepare(&p);
        let mut s = alloc::vec![0.0; h.batch_scratch_len(nb)];
        let (mut z2, mut d2) = (alloc::vec![0.0; nb * k], alloc::vec![0.0; nb * k]);
        h.forward_batch(&p, &staged, nb, &mut s, &mut z2);
        // The GEMM sums in its own order and adds the bias last: equal within rounding.
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{what} {i}: {x} vs {y}"
                );
            }
        };
        close(&z2, &z1, "logit");
        for b in 0..nb {
            softmax_ce(&z2[b * k..][..k], labels[b], 0.1, &mut d2[b * k..][..k]);
        }
        let mut g2 = alloc::vec![0.0; h.n_params()];
        h.backward_batch(&p, &staged, nb, &mut s, &d2, &mut g2);
        close(&g2, &g1, "gradient");
        assert!(g1.iter().any(|v| v.abs() > 1e-4));
    }

    #[test]
    fn query_gradient_matches_finite_differences() {
        let taps = alloc::vec![
            TapShape { tokens: 5, dim: 4 },
            TapShape { tokens: 3, dim: 6 }
        ];
        let mut r = Rng::new(2);
        let x = inputs(&mut r, &taps);
        check_head(&Query::new(taps, alloc::vec![0, 1], 2, 3), &x, 2);
    }
}
