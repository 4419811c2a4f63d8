//! Int8 re-quantisation of a trained tail for serving.

use super::net::{unsupported, Layer};
use super::train::Tail;
use crate::adapt::train::Head;
use crate::error::{Error, Result};
use alloc::vec::Vec;
use edgetune_kernels::ops::{I8Dst, I8Quant};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::{ops as kops, pack, Kernels};

/// A trained tail re-quantised to int8 for serving: per-output-channel symmetric weights,
/// activation ranges calibrated on the support set, run on the int8 kernels; the cosine
/// classifier stays in float.
pub struct TailQ {
    layers: Vec<QLayer>,
    slots: Vec<(usize, usize)>,
    q: Vec<Q8>,
    features: usize,
    head: Vec<f32>,
    classes: usize,
    scale: f32,
    kern: Kernels,
}

type Q8 = edgetune_kernels::elementwise::Q8;

enum QLayer {
    Pw {
        x: usize,
        y: usize,
        geom: ConvGeom,
        w: Vec<i8>,
        colsum: Vec<i32>,
        bias: Vec<i32>,
        mult: Vec<f32>,
    },
    Dw {
        x: usize,
        y: usize,
        geom: ConvGeom,
        w: Vec<i16>,
        bias: Vec<i32>,
        mult: Vec<f32>,
    },
    Add {
        a: usize,
        b: usize,
        y: usize,
    },
    Gap {
        x: usize,
        y: usize,
    },
}

fn range_q(lo: f32, hi: f32) -> Q8 {
    let (lo, hi) = (lo.min(0.0), hi.max(lo + 1e-6).max(1e-6));
    let scale = (hi - lo) / 255.0;
    Q8 {
        scale,
        zero: libm::roundf(-lo / scale).clamp(0.0, 255.0) as i32,
    }
}

/// Per-output-channel symmetric int8 of `w` (`rows × cols`, channel = column), each column
/// scaled by `gamma` first; returns the weights and `s_w`.
fn quant_cols(w: &[f32], rows: usize, cols: usize, gamma: Option<&[f32]>) -> (Vec<i8>, Vec<f32>) {
    let g = |c: usize| gamma.map_or(1.0, |g| g[c]);
    let mut sw = alloc::vec![0.0f32; cols];
    for r in 0..rows {
        for c in 0..cols {
            sw[c] = sw[c].max((w[r * cols + c] * g(c)).abs());
        }
    }
    sw.iter_mut()
        .for_each(|s| *s = if *s > 0.0 { *s / 127.0 } else { 1.0 });
    let q = (0..rows * cols)
        .map(|i| {
            let c = i % cols;
            libm::roundf(w[i] * g(c) / sw[c]).clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, sw)
}

impl TailQ {
    /// Quantises `tail` with trained `params`, calibrating every activation on `calib`
    /// (cut-tap values of the support set). `cut_q` is the plan's quantisation of the cut.
    pub fn new(tail: &Tail, params: &[f32], calib: &[&[f32]], cut_q: Q8) -> Result<TailQ> {
        let ranges = Self::calibrate(tail, params, calib)?;
        Self::with_ranges(tail, params, &ranges, cut_q)
    }

    /// The activation range `(lo, hi)` of every tail slot over `calib` (slot 0, the cut,
    /// keeps the plan's quantisation). An adapter stores these so an int8 tail is rebuilt
    /// identically without the support set.
    pub fn calibrate(tail: &Tail, params: &[f32], calib: &[&[f32]]) -> Result<Vec<(f32, f32)>> {
        let net = &tail.net;
        tail.prepare(params);
        let mut lo = alloc::vec![f32::INFINITY; net.slots.len()];
        let mut hi = alloc::vec![f32::NEG_INFINITY; net.slots.len()];
        let mut s = alloc::vec![0.0; tail.scratch_len()];
        let mut logits = alloc::vec![0.0; tail.classes];
        for x in calib {
            let mut xs: heapless::Vec<&[f32], 16> = heapless::Vec::new();
            for _ in 0..=tail.tap {
                let _ = xs.push(x);
            }
            tail.forward(params, &xs, &mut s, &mut logits);
            for (i, r) in tail.sc.val.iter().enumerate().skip(1) {
                for &v in &s[r.clone()] {
                    lo[i] = lo[i].min(v);
                    hi[i] = hi[i].max(v);
                }
            }
        }
        if calib.is_empty() || lo.iter().skip(1).chain(&hi).any(|v| v.is_nan()) {
            return Err(Error::Invalid {
                what: "int8 tail: no calibration examples".into(),
            });
        }
        Ok(lo.into_iter().zip(hi).collect())
    }

    /// Quantises `tail` with trained `params` and the activation `ranges` of
    /// [`calibrate`](Self::calibrate).
    pub fn with_ranges(
        tail: &Tail,
        params: &[f32],
        ranges: &[(f32, f32)],
        cut_q: Q8,
    ) -> Result<TailQ> {
        let net = &tail.net;
        if ranges.len() != net.slots.len()
            || ranges
                .iter()
                .skip(1)
                .any(|r| !(r.0.is_finite() && r.1.is_finite()))
            || params.len() != tail.n_params()
        {
            return Err(Error::Invalid {
                what: alloc::format!(
                    "int8 tail: {} activation ranges for {} slots",
                    ranges.len(),
                    net.slots.len()
                ),
            });
        }
        tail.prepare(params);
        let mut q: Vec<Q8> = ranges.iter().map(|&(lo, hi)| range_q(lo, hi)).collect();
        q[0] = cut_q;
        let mut weff = alloc::vec![0.0; net.frozen.len().max(1)];
        let mut layers = Vec::new();
        for (i, l) in net.layers.iter().enumerate() {
            let gamma = tail.pr[i].g.clone().map(|r| &params[r]);
            layers.push(match *l {
                Layer::Pw {
                    x, y, cin, cout, ..
                } => {
                    let (t, _) = net.slots[y];
                    tail.weff(i, params, &mut weff[..cin * cout]);
                    let (wq, sw) = quant_cols(&weff[..cin * cout], cin, cout, gamma);
                    let mut w = alloc::vec![0i8; pack::packed_i8_len(cin, cout)];
                    let mut colsum = alloc::vec![0i32; pack::i8_cols(cout)];
                    pack::pack_i8_with(cin, cout, |k, c| wq[k * cout + c], &mut w, &mut colsum);
                    let b = tail.bias(i, params);
                    let acc: Vec<f32> = sw.iter().map(|s| s * q[x].scale).collect();
                    QLayer::Pw {
                        x,
                        y,
                        geom: ConvGeom::pointwise(t, 1, cin, cout),
                        w,
                        colsum,
                        bias: (0..cout)
                            .map(|c| libm::roundf(b[c] / acc[c]) as i32)
                            .collect(),
                        mult: acc.iter().map(|a| a / q[y].scale).collect(),
                    }
                }
                Layer::Dw { x, y, g, .. } => {
                    let taps = g.kh * g.kw;
                    let (wq, sw) = quant_cols(tail.wdw(i, params), taps, g.c, gamma);
                    let b = tail.bias(i, params);
                    let acc: Vec<f32> = sw.iter().map(|s| s * q[x].scale).collect();
                    QLayer::Dw {
                        x,
                        y,
                        geom: ConvGeom {
                            h: g.h,
                            w: g.w,
                            ic: g.c,
                            oc: g.c,
                            kh: g.kh,
                            kw: g.kw,
                            stride_h: g.stride.0,
                            stride_w: g.stride.1,
                            dil_h: 1,
                            dil_w: 1,
                            pad_top: g.pad.0,
                            pad_left: g.pad.1,
                            pad_bottom: (g.oh - 1) * g.stride.0 + g.kh
                                - g.h
                                - g.pad.0.min((g.oh - 1) * g.stride.0 + g.kh - g.h),
                            pad_right: (g.ow - 1) * g.stride.1 + g.kw
                                - g.w
                                - g.pad.1.min((g.ow - 1) * g.stride.1 + g.kw - g.w),
                            groups: g.c,
                        },
                        w: wq.iter().map(|&v| v as i16).collect(),
                        bias: (0..g.c)
                            .map(|c| libm::roundf(b[c] / acc[c]) as i32)
                            .collect(),
                        mult: acc.iter().map(|a| a / q[y].scale).collect(),
                    }
                }
                Layer::Add { a, b, y } => QLayer::Add { a, b, y },
                Layer::Gap { x, y } => QLayer::Gap { x, y },
                Layer::Act { .. } => {
                    return Err(unsupported(
                        "Act",
                        "int8 serving of a tail with float activations",
                    ))
                }
            });
        }
        Ok(TailQ {
            layers,
            slots: net.slots.clone(),
            q,
            features: net.features,
            head: params[tail.head.clone()].to_vec(),
            classes: tail.classes,
            scale: tail.scale,
            kern: Kernels::detect(),
        })
    }

    /// Class scores of one example from its cut tap.
    pub fn scores(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let n0 = self.slots[0].0 * self.slots[0].1;
        if x.len() != n0 || out.len() < self.classes {
            return Err(Error::ShapeMismatch {
                op: "int8 tail".into(),
                expected: alloc::vec![n0, self.classes],
                got: alloc::vec![x.len(), out.len()],
            });
        }
        let mut act: Vec<Vec<u8>> = self
            .slots
            .iter()
            .map(|&(t, c)| alloc::vec![0u8; t * c])
            .collect();
        let q0 = self.q[0];
        for (o, &v) in act[0].iter_mut().zip(x) {
            *o = libm::roundf(v / q0.scale + q0.zero as f32).clamp(0.0, 255.0) as u8;
        }
        for l in &self.layers {
            match l {
                QLayer::Pw {
                    x,
                    y,
                    geom,
                    w,
                    colsum,
                    bias,
                    mult,
                } => {
                    let (src, dst) = split2(&mut act, *x, *y);
                    let qi = I8Quant {
                        a_zero: self.q[*x].zero,
                        a_signed: false,
                        colsum,
                        bias: Some(bias),
                        scale: mult,
                        out: edgetune_kernels::I8Out::U8,
                        y_zero: self.q[*y].zero,
                        qmin: 0,
                        qmax: 255,
                    };
                    kops::conv_i8(&self.kern, geom, src, w, &qi, &mut [], I8Dst::U8(dst))?;
                }
                QLayer::Dw {
                    x,
                    y,
                    geom,
                    w,
                    bias,
                    mult,
                } => {
                    let (src, dst) = split2(&mut act, *x, *y);
                    kops::depthwise_i8(
                        &self.kern,
                        geom,
                        src,
                        self.q[*x].zero,
                        w,
                        Some(bias),
                        mult,
                        (self.q[*y].zero, 0, 255),
                        dst,
                    )?;
                }
                QLayer::Add { a, b, y } => {
                    let mut out = core::mem::take(&mut act[*y]);
                    edgetune_kernels::elementwise::add_u8(
                        &act[*a], self.q[*a], &act[*b], self.q[*b], &mut out, self.q[*y],
                    );
                    act[*y] = out;
                }
                QLayer::Gap { x, y } => {
                    let (t, c) = self.slots[*x];
                    let (src, dst) = split2(&mut act, *x, *y);
                    edgetune_kernels::elementwise::global_avg_pool_u8(
                        src, t, c, self.q[*x], dst, self.q[*y],
                    );
                }
            }
        }
        let qf = self.q[self.features];
        let f: Vec<f32> = act[self.features]
            .iter()
            .map(|&v| (v as i32 - qf.zero) as f32 * qf.scale)
            .collect();
        let norm = libm::sqrtf(f.iter().map(|v| v * v).sum::<f32>()) + 1e-6;
        let d = f.len();
        for (k, o) in out.iter_mut().enumerate().take(self.classes) {
            let row = &self.head[k * d..(k + 1) * d];
            *o = self.scale * row.iter().zip(&f).map(|(a, b)| a * b).sum::<f32>() / norm;
        }
        Ok(())
    }
}

/// Input slot `x` and output slot `y` (`x != y`) of the activation list.
fn split2(act: &mut [Vec<u8>], x: usize, y: usize) -> (&[u8], &mut [u8]) {
    if x < y {
        let (a, b) = act.split_at_mut(y);
        (&a[x], &mut b[0])
    } else {
        let (a, b) = act.split_at_mut(x);
        (&b[0], &mut a[y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rng::Rng;
    use crate::adapt::tail::{DwGeom, TailNet, Variant};
    use alloc::sync::Arc;

    /// cut (4×4×4) → 1×1 4→8 ReLU6 → depthwise 3×3 ReLU6 → 1×1 8→4 → + cut → 1×1 4→6
    /// ReLU6 → pool: every layer kind the int8 tail runs.
    fn net() -> TailNet {
        let mut r = Rng::new(21);
        let mut frozen = Vec::new();
        let mut take = |n: usize, scale: f32| {
            let o = frozen.len();
            frozen.extend((0..n).map(|_| (r.f32() * 2.0 - 1.0) * scale));
            o
        };
        let inf = f32::INFINITY;
        let layers = alloc::vec![
            Layer::Pw {
                x: 0,
                y: 1,
                cin: 4,
                cout: 8,
                w: take(32, 0.6),
                b: take(8, 0.3),
                lo: 0.0,
                hi: 6.0
            },
            Layer::Dw {
                x: 1,
                y: 2,
                g: DwGeom {
                    c: 8,
                    h: 4,
                    w: 4,
                    kh: 3,
                    kw: 3,
                    stride: (1, 1),
                    pad: (1, 1),
                    oh: 4,
                    ow: 4,
                },
                w: take(72, 0.4),
                b: take(8, 0.3),
                lo: 0.0,
                hi: 6.0
            },
            Layer::Pw {
                x: 2,
                y: 3,
                cin: 8,
                cout: 4,
                w: take(32, 0.5),
                b: take(4, 0.3),
                lo: -inf,
                hi: inf
            },
            Layer::Add { a: 3, b: 0, y: 4 },
            Layer::Pw {
                x: 4,
                y: 5,
                cin: 4,
                cout: 6,
                w: take(24, 0.6),
                b: take(6, 0.3),
                lo: 0.0,
                hi: 6.0
            },
            Layer::Gap { x: 5, y: 6 },
        ];
        TailNet {
            cut: "cut".into(),
            layers,
            slots: alloc::vec![(16, 4), (16, 8), (16, 8), (16, 4), (16, 4), (16, 6), (1, 6)],
            frozen,
            features: 6,
        }
    }

    /// Cut values on the cut's int8 grid (what the plan hands the tail).
    fn inputs(r: &mut Rng, n: usize, q: Q8) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                (0..64)
                    .map(|_| ((r.f32() * 120.0) as i32 - q.zero) as f32 * q.scale)
                    .collect()
            })
            .collect()
    }

    /// The re-quantised tail against the float tail it came from, on examples it was not
    /// calibrated on: the same top-1 on nearly every one, scores close.
    #[test]
    fn int8_scores_follow_the_float_tail() {
        let cut_q = Q8 {
            scale: 0.05,
            zero: 10,
        };
        let classes = 5;
        for v in [Variant::Full, Variant::Bias, Variant::Lora { rank: 2 }] {
            let t = Tail::new(Arc::new(net()), v, classes);
            let mut r = Rng::new(8);
            let mut p = alloc::vec![0.0; t.n_params()];
            t.init(&mut r, &mut p);
            // As trained: away from the initialisation, classifier rows spread out.
            p.iter_mut().for_each(|x| *x += 0.1 * (r.f32() - 0.5));
            p[t.head.clone()]
                .iter_mut()
                .for_each(|x| *x = r.f32() * 2.0 - 1.0);
            let calib = inputs(&mut r, 64, cut_q);
            let views: Vec<&[f32]> = calib.iter().map(|x| &x[..]).collect();
            let q = TailQ::new(&t, &p, &views, cut_q).unwrap();
            t.prepare(&p);
            let test = inputs(&mut r, 200, cut_q);
            let mut s = alloc::vec![0.0; t.scratch_len()];
            let (mut f, mut g) = (alloc::vec![0.0; classes], alloc::vec![0.0; classes]);
            let (mut same, mut worst) = (0, 0.0f32);
            for x in &test {
                t.forward(&p, &[&x[..]], &mut s, &mut f);
                q.scores(x, &mut g).unwrap();
                let (tf, tq) = (crate::adapt::argmax(&f), crate::adapt::argmax(&g));
                same += (tf == tq) as usize;
                let d = f
                    .iter()
                    .zip(&g)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                worst = worst.max(d);
            }
            #[cfg(feature = "std")]
            std::println!(
                "{v:?}: int8 top-1 = float top-1 on {same}/{}; largest score difference {worst:.4} (scores within ±{})",
                test.len(),
                t.scale
            );
            assert!(
                same * 100 >= test.len() * 95,
                "{v:?}: {same}/{}",
                test.len()
            );
            assert!(worst < 0.02 * t.scale, "{v:?}: {worst}");
        }
    }
}
