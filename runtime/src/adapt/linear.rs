//! Linear probe: softmax regression on L2-normalised features, trained full batch with
//! AdamW and a cosine schedule. The gradient is hand-written and checked against finite
//! differences in the tests.

use super::train::{Opt, Optimizer, Progress};
use super::{l2_normalise, Support};
use crate::error::{Error, Result};
use alloc::vec::Vec;

#[derive(Clone, Debug, PartialEq)]
pub struct LinearConfig {
    pub steps: usize,
    pub lr: f32,
    pub warmup: usize,
    /// Coupled L2 penalty `l2/2·‖W‖²` per example; the default `1/(C·n)` with C = 10
    /// is the objective of logistic regression with C = 10.
    pub c: f32,
    /// Decoupled AdamW weight decay.
    pub weight_decay: f32,
    pub label_smoothing: f32,
    pub seed: u64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            steps: 300,
            lr: 0.1,
            warmup: 10,
            c: 10.0,
            weight_decay: 0.0,
            label_smoothing: 0.0,
            seed: 0,
        }
    }
}

/// Weights `w[dim][classes]` and bias of a trained probe.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearHead {
    pub dim: usize,
    pub classes: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl LinearHead {
    /// Logits of raw features (normalised here, as in training).
    pub fn logits(&self, feat: &[f32], out: &mut [f32]) {
        let n = libm::sqrtf(feat.iter().map(|v| v * v).sum::<f32>()).max(f32::MIN_POSITIVE);
        out[..self.classes].copy_from_slice(&self.b);
        for (i, &x) in feat.iter().enumerate() {
            let x = x / n;
            let row = &self.w[i * self.classes..][..self.classes];
            out.iter_mut().zip(row).for_each(|(o, w)| *o += x * w);
        }
    }
}

/// Copies a classifier over `k0` classes (`w[rows][k0]`, `b[k0]`) into the first `k0`
/// columns of one over `k1 >= k0` classes; the other columns keep what they hold.
pub fn widen_classes(w0: &[f32], b0: &[f32], k0: usize, w1: &mut [f32], b1: &mut [f32], k1: usize) {
    for (r0, r1) in w0
        .chunks_exact(k0.max(1))
        .zip(w1.chunks_exact_mut(k1.max(1)))
    {
        r1[..k0].copy_from_slice(r0);
    }
    b1[..k0].copy_from_slice(b0);
}

/// Mean softmax cross-entropy (with label smoothing) plus the L2 penalty, and its
/// gradient into `gw`, `gb`. `logits` is scratch of `n·classes`.
#[allow(clippy::too_many_arguments)]
pub fn loss_grad(
    x: &[f32],
    y: &[usize],
    head: &LinearHead,
    l2: f32,
    smooth: f32,
    logits: &mut [f32],
    gw: &mut [f32],
    gb: &mut [f32],
) -> f32 {
    let (d, k, n) = (head.dim, head.classes, y.len());
    gw.fill(0.0);
    gb.fill(0.0);
    let mut loss = 0.0;
    for (i, &label) in y.iter().enumerate() {
        let z = &mut logits[i * k..][..k];
        z.copy_from_slice(&head.b);
        let xi = &x[i * d..][..d];
        for (j, &xv) in xi.iter().enumerate() {
            let row = &head.w[j * k..][..k];
            z.iter_mut().zip(row).for_each(|(o, w)| *o += xv * w);
        }
        let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let s: f32 = z.iter().map(|v| libm::expf(v - m)).sum();
        let lse = m + libm::logf(s);
        for (c, zc) in z.iter_mut().enumerate() {
            let t = if c == label {
                1.0 - smooth + smooth / k as f32
            } else {
                smooth / k as f32
            };
            loss -= t * (*zc - lse);
            // dL/dz = softmax - target, averaged over the batch.
            *zc = (libm::expf(*zc - lse) - t) / n as f32;
        }
        for (j, &xv) in xi.iter().enumerate() {
            let g = &mut gw[j * k..][..k];
            g.iter_mut().zip(z.iter()).for_each(|(g, dz)| *g += xv * dz);
        }
        gb.iter_mut().zip(z.iter()).for_each(|(g, dz)| *g += dz);
    }
    let mut reg = 0.0;
    for (g, w) in gw.iter_mut().zip(&head.w) {
        *g += l2 * w;
        reg += w * w;
    }
    loss / n as f32 + 0.5 * l2 * reg
}

/// Training accuracy from what [`loss_grad`] leaves in its scratch: `(p − t)/n` per
/// class, so the probabilities `p` are recovered with the targets `t`.
fn accuracy(dz: &[f32], y: &[usize], k: usize, smooth: f32) -> f32 {
    let n = y.len();
    let off = smooth / k as f32;
    let ok = y
        .iter()
        .enumerate()
        .filter(|&(i, &label)| {
            let p = |c: usize| {
                dz[i * k + c] * n as f32 + off + if c == label { 1.0 - smooth } else { 0.0 }
            };
            (0..k).all(|c| c == label || p(c) < p(label))
        })
        .count();
    ok as f32 / n.max(1) as f32
}

/// Learning rate at `step`: linear warm-up then cosine decay to zero.
pub fn cosine_lr(base: f32, step: usize, warmup: usize, total: usize) -> f32 {
    if step < warmup {
        return base * (step + 1) as f32 / warmup as f32;
    }
    let t = (step - warmup) as f32 / (total - warmup).max(1) as f32;
    0.5 * base * (1.0 + libm::cosf(core::f32::consts::PI * t))
}

/// Bytes training will hold at its peak (features, parameters, gradients, optimiser
/// state, logits), computed before any allocation.
pub fn linear_memory(n: usize, dim: usize, classes: usize) -> usize {
    let params = dim * classes + classes;
    4 * (n * dim + 4 * params + n * classes)
}

/// Trains the probe. All buffers are allocated once before the first step.
pub fn train_linear(s: &Support, cfg: &LinearConfig) -> Result<(LinearHead, f32)> {
    train_linear_from(s, cfg, None)
}

/// [`train_linear`] from `init` (a warm start: a probe trained on the first classes,
/// the new classes' weights starting at zero) instead of all zeros.
pub fn train_linear_from(
    s: &Support,
    cfg: &LinearConfig,
    init: Option<&LinearHead>,
) -> Result<(LinearHead, f32)> {
    train_linear_with(s, cfg, init, &mut |_| true)
}

/// [`train_linear_from`] reporting each step to `progress` (loss, training accuracy);
/// returning `false` cancels ([`Error::Cancelled`]).
pub fn train_linear_with(
    s: &Support,
    cfg: &LinearConfig,
    init: Option<&LinearHead>,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<(LinearHead, f32)> {
    s.check()?;
    let (d, k, n) = (s.dim, s.classes, s.y.len());
    let mut x = s.x.to_vec();
    l2_normalise(&mut x, d);
    let mut head = LinearHead {
        dim: d,
        classes: k,
        w: alloc::vec![0.0; d * k],
        b: alloc::vec![0.0; k],
    };
    if let Some(old) = init {
        if old.dim != d || old.classes > k {
            return Err(Error::ShapeMismatch {
                op: "warm start".into(),
                expected: alloc::vec![d, k],
                got: alloc::vec![old.dim, old.classes],
            });
        }
        widen_classes(&old.w, &old.b, old.classes, &mut head.w, &mut head.b, k);
    }
    let mut gw = alloc::vec![0.0; d * k];
    let mut gb = alloc::vec![0.0; k];
    let mut logits = alloc::vec![0.0; n * k];
    let (mut ow, mut ob) = (
        Opt::new(Optimizer::AdamW, d * k),
        Opt::new(Optimizer::AdamW, k),
    );
    let l2 = 1.0 / (cfg.c * n as f32);
    let mut loss = 0.0;
    let mut last_good = head.clone();
    for step in 0..cfg.steps {
        loss = loss_grad(
            &x,
            s.y,
            &head,
            l2,
            cfg.label_smoothing,
            &mut logits,
            &mut gw,
            &mut gb,
        );
        if !loss.is_finite() {
            crate::logging::warning!("linear head: loss {} at step {}, diverged", loss, step);
            return Err(Error::Diverged { step, loss });
        }
        if step == 0 || (step + 1).is_multiple_of(cfg.steps.div_ceil(4)) || step + 1 == cfg.steps {
            crate::logging::info!(
                "linear head: step {}/{}, loss {}",
                step + 1,
                cfg.steps,
                loss
            );
        }
        last_good.w.copy_from_slice(&head.w);
        last_good.b.copy_from_slice(&head.b);
        let lr = cosine_lr(cfg.lr, step, cfg.warmup, cfg.steps);
        ow.step(&mut head.w, &gw, lr, cfg.weight_decay);
        ob.step(&mut head.b, &gb, lr, 0.0);
        let prog = Progress {
            step: step + 1,
            steps: cfg.steps,
            loss,
            accuracy: accuracy(&logits, s.y, k, cfg.label_smoothing),
        };
        if !progress(&prog) {
            return Err(Error::Cancelled { step: step + 1 });
        }
    }
    if head.w.iter().any(|v| !v.is_finite()) {
        return Err(Error::Diverged {
            step: cfg.steps,
            loss,
        });
    }
    let _ = last_good;
    Ok((head, loss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rng::Rng;

    #[test]
    fn gradient_matches_finite_differences() {
        let (d, k, n) = (7, 3, 5);
        let mut r = Rng::new(3);
        let x: Vec<f32> = (0..n * d).map(|_| r.f32() * 2.0 - 1.0).collect();
        let y: Vec<usize> = (0..n).map(|i| i % k).collect();
        let mut head = LinearHead {
            dim: d,
            classes: k,
            w: (0..d * k).map(|_| r.f32() - 0.5).collect(),
            b: (0..k).map(|_| r.f32() - 0.5).collect(),
        };
        let (mut gw, mut gb, mut lg) = (vec![0.0; d * k], vec![0.0; k], vec![0.0; n * k]);
        loss_grad(&x, &y, &head, 0.1, 0.1, &mut lg, &mut gw, &mut gb);
        // Central difference of the loss in one parameter, chosen by `param`.
        let eps = 1e-2;
        let fd = |head: &mut LinearHead, param: &dyn Fn(&mut LinearHead) -> &mut f32| {
            let loss_at = |v: f32, head: &mut LinearHead| {
                *param(head) = v;
                let (mut lg, mut gw, mut gb) = (vec![0.0; n * k], vec![0.0; d * k], vec![0.0; k]);
                loss_grad(&x, &y, head, 0.1, 0.1, &mut lg, &mut gw, &mut gb)
            };
            let v0 = *param(head);
            let (lp, lm) = (loss_at(v0 + eps, head), loss_at(v0 - eps, head));
            *param(head) = v0;
            (lp - lm) / (2.0 * eps)
        };
        for i in 0..d * k {
            let g = fd(&mut head, &|h: &mut LinearHead| &mut h.w[i]);
            assert!(
                (g - gw[i]).abs() < 2e-3,
                "w[{i}]: fd {g} analytic {}",
                gw[i]
            );
        }
        for c in 0..k {
            let g = fd(&mut head, &|h: &mut LinearHead| &mut h.b[c]);
            assert!(
                (g - gb[c]).abs() < 2e-3,
                "b[{c}]: fd {g} analytic {}",
                gb[c]
            );
        }
    }

    #[test]
    fn separable_data_is_learned_and_deterministic() {
        let (d, k) = (4, 3);
        let mut r = Rng::new(1);
        let mut x = vec![];
        let mut y = vec![];
        for i in 0..30 {
            let c = i % k;
            for j in 0..d {
                x.push(if j == c { 1.0 } else { 0.0 } + 0.1 * (r.f32() - 0.5));
            }
            y.push(c);
        }
        let s = Support {
            x: &x,
            y: &y,
            dim: d,
            classes: k,
        };
        let (h1, _) = train_linear(&s, &LinearConfig::default()).unwrap();
        let (h2, _) = train_linear(&s, &LinearConfig::default()).unwrap();
        assert_eq!(h1, h2);
        let mut out = vec![0.0; k];
        for i in 0..30 {
            h1.logits(&x[i * d..][..d], &mut out);
            assert_eq!(crate::adapt::argmax(&out), y[i]);
        }
        // Each step is reported; the training accuracy of the last step is the head's.
        let mut seen = Vec::new();
        let cfg = LinearConfig::default();
        let (h3, _) = train_linear_with(&s, &cfg, None, &mut |p| {
            seen.push(*p);
            true
        })
        .unwrap();
        assert_eq!(h3, h1);
        assert_eq!(seen.len(), cfg.steps);
        assert_eq!((seen[0].step, seen[0].steps), (1, cfg.steps));
        assert_eq!(seen.last().unwrap().accuracy, 1.0);
        // Returning false stops at that step.
        let mut n = 0;
        let r = train_linear_with(&s, &cfg, None, &mut |_| {
            n += 1;
            n < 5
        });
        assert!(matches!(r, Err(Error::Cancelled { step: 5 })), "{r:?}");
        assert_eq!(n, 5);
    }
}
