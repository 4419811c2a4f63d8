//! The trainer of the side heads: full-batch or mini-batch passes over the tap cache,
//! softmax cross-entropy with label smoothing, AdamW or SGD with momentum, cosine
//! schedule with warm-up, early stop on a held-out split of the support set. Every
//! buffer is allocated before the first step; a step allocates nothing.

use super::cache::TapCache;
use super::linear::cosine_lr;
use super::nn::softmax_ce;
use super::rng::Rng;
use crate::error::{Error, Result};
use alloc::vec::Vec;

/// A trainable head over the cached taps of one example. Parameters live in one flat
/// vector so that the optimiser and the adapter file treat every head alike.
pub trait Head {
    fn classes(&self) -> usize;
    fn n_params(&self) -> usize;
    /// f32 scratch one example needs for forward and backward.
    fn scratch_len(&self) -> usize;
    fn init(&self, rng: &mut Rng, p: &mut [f32]);
    /// Logits of one example; keeps what the backward needs in `s`.
    fn forward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], logits: &mut [f32]);
    /// Accumulates the gradient of the loss into `g`, after `forward` on the same `s`.
    fn backward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], dlogits: &[f32], g: &mut [f32]);
    /// Bytes the head holds outside parameters and scratch (frozen weights, packings).
    fn fixed_bytes(&self) -> usize {
        0
    }
    /// Per-parameter learning-rate multipliers; `false` leaves every one at 1.
    fn lr_scales(&self, _out: &mut [f32]) -> bool {
        false
    }
    /// Called whenever the parameters changed, before the next `forward`.
    fn prepare(&self, _p: &[f32]) {}
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    AdamW,
    Sgd { momentum: f32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    pub steps: usize,
    pub lr: f32,
    pub warmup: usize,
    pub weight_decay: f32,
    pub label_smoothing: f32,
    /// Examples per step; 0 = the whole support set.
    pub batch: usize,
    /// Hold one example per class out (when every class has two or more) and keep the
    /// parameters with the lowest held-out loss; stop after `patience` checks without
    /// improvement.
    pub holdout: bool,
    pub patience: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: Optimizer::AdamW,
            steps: 200,
            lr: 3e-3,
            warmup: 10,
            weight_decay: 1e-2,
            label_smoothing: 0.1,
            batch: 0,
            holdout: false,
            patience: 5,
            seed: 0,
        }
    }
}

/// What the progress callback sees after each step.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    /// Training accuracy of the step's batch.
    pub accuracy: f32,
}

#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    pub steps_run: usize,
    pub final_loss: f32,
    /// Step of the kept parameters when a held-out split was used.
    pub best_step: Option<usize>,
    pub holdout_accuracy: Option<f32>,
}

/// Bytes training holds at its peak, computed before anything is allocated: the cache,
/// parameters with gradients and two optimiser moments (and a best copy with a held-out
/// split), the per-example scratch and decoded taps, logits.
pub fn train_memory<H: Head>(head: &H, cache: &TapCache, cfg: &TrainConfig) -> usize {
    let p = head.n_params();
    let copies = 4 + cfg.holdout as usize;
    let taps: usize = cache.taps.iter().map(|t| t.len()).sum();
    cache.bytes()
        + head.fixed_bytes()
        + 4 * ((copies + 1) * p + head.scratch_len() + taps + 2 * head.classes())
        + 8 * cache.len()
}

/// Optimiser state over a flat parameter vector (every trainer in `adapt` uses it).
pub(crate) struct Opt {
    kind: Optimizer,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Per-parameter learning-rate multipliers (empty: all 1).
    pub(crate) scale: Vec<f32>,
    t: i32,
}

impl Opt {
    pub(crate) fn new(kind: Optimizer, n: usize) -> Opt {
        let v = match kind {
            Optimizer::AdamW => alloc::vec![0.0; n],
            Optimizer::Sgd { .. } => Vec::new(),
        };
        Opt {
            kind,
            m: alloc::vec![0.0; n],
            v,
            scale: Vec::new(),
            t: 0,
        }
    }

    pub(crate) fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32, wd: f32) {
        self.t += 1;
        match self.kind {
            Optimizer::AdamW => {
                const B1: f32 = 0.9;
                const B2: f32 = 0.999;
                let c1 = 1.0 - libm::powf(B1, self.t as f32);
                let c2 = 1.0 - libm::powf(B2, self.t as f32);
                for i in 0..p.len() {
                    self.m[i] = B1 * self.m[i] + (1.0 - B1) * g[i];
                    self.v[i] = B2 * self.v[i] + (1.0 - B2) * g[i] * g[i];
                    let upd = (self.m[i] / c1) / (libm::sqrtf(self.v[i] / c2) + 1e-8);
                    let lr = lr * self.scale.get(i).copied().unwrap_or(1.0);
                    p[i] -= lr * (upd + wd * p[i]);
                }
            }
            Optimizer::Sgd { momentum } => {
                for i in 0..p.len() {
                    self.m[i] = momentum * self.m[i] + g[i] + wd * p[i];
                    p[i] -= lr * self.scale.get(i).copied().unwrap_or(1.0) * self.m[i];
                }
            }
        }
    }
}

/// Decodes every tap of example `i` from the cache into `bufs`.
fn load(cache: &TapCache, i: usize, bufs: &mut [Vec<f32>]) {
    for (t, b) in bufs.iter_mut().enumerate() {
        cache.read(i, t, b);
    }
}

/// Trains `head` on the examples `idx` of the cache. `progress` is called after every
/// step; returning `false` cancels training.
pub fn train<H: Head>(
    head: &H,
    cache: &TapCache,
    idx: &[usize],
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<(Vec<f32>, TrainReport)> {
    let k = head.classes();
    if cache.taps.len() > 16 {
        return Err(Error::Invalid {
            what: alloc::format!(
                "{} cached taps; the trainer reads at most 16",
                cache.taps.len()
            ),
        });
    }
    if idx.is_empty() || cfg.steps == 0 {
        return Err(Error::Invalid {
            what: "nothing to train on (no examples or zero steps)".into(),
        });
    }
    let mut per_class = alloc::vec![0usize; k];
    for &i in idx {
        let l = cache.labels[i];
        if l >= k {
            return Err(Error::Invalid {
                what: alloc::format!("label {l} out of range ({k} classes)"),
            });
        }
        per_class[l] += 1;
    }
    if let Some(c) = per_class.iter().position(|&n| n == 0) {
        return Err(Error::Invalid {
            what: alloc::format!("class {c} has no examples"),
        });
    }
    let mut rng = Rng::new(cfg.seed);
    // Held-out split: the first shuffled example of each class.
    let use_holdout = cfg.holdout && per_class.iter().all(|&n| n >= 2);
    let mut order: Vec<usize> = idx.to_vec();
    rng.shuffle(&mut order);
    let (mut train_idx, mut val_idx) = (Vec::with_capacity(order.len()), Vec::new());
    let mut held = alloc::vec![false; k];
    for &i in &order {
        let l = cache.labels[i];
        if use_holdout && !held[l] {
            held[l] = true;
            val_idx.push(i);
        } else {
            train_idx.push(i);
        }
    }
    let n = train_idx.len();
    let batch = if cfg.batch == 0 { n } else { cfg.batch.min(n) };

    let np = head.n_params();
    let mut p = alloc::vec![0.0f32; np];
    head.init(&mut rng, &mut p);
    let mut g = alloc::vec![0.0f32; np];
    let mut best = if use_holdout { p.clone() } else { Vec::new() };
    let mut opt = Opt::new(cfg.optimizer, np);
    let mut scales = alloc::vec![1.0f32; np];
    if head.lr_scales(&mut scales) {
        opt.scale = scales;
    }
    head.prepare(&p);
    let mut s = alloc::vec![0.0f32; head.scratch_len()];
    let mut bufs: Vec<Vec<f32>> = cache
        .taps
        .iter()
        .map(|t| alloc::vec![0.0; t.len()])
        .collect();
    let (mut logits, mut dl) = (alloc::vec![0.0f32; k], alloc::vec![0.0f32; k]);
    let mut cursor = 0;
    let mut report = TrainReport::default();
    let (mut best_loss, mut stale) = (f32::INFINITY, 0);
    let check_every = (cfg.steps / 20).max(1);

    for step in 0..cfg.steps {
        g.fill(0.0);
        let (mut loss, mut correct) = (0.0f32, 0usize);
        for _ in 0..batch {
            if cursor == 0 && batch < n {
                rng.shuffle(&mut train_idx);
            }
            let i = train_idx[cursor];
            cursor = (cursor + 1) % n;
            load(cache, i, &mut bufs);
            let x: heapless::Vec<&[f32], 16> = bufs.iter().map(|b| &b[..]).collect();
            head.forward(&p, &x, &mut s, &mut logits);
            let label = cache.labels[i];
            correct += (super::argmax(&logits) == label) as usize;
            loss += softmax_ce(&logits, label, cfg.label_smoothing, &mut dl);
            head.backward(&p, &x, &mut s, &dl, &mut g);
        }
        loss /= batch as f32;
        if !loss.is_finite() || g.iter().any(|v| !v.is_finite()) {
            return Err(Error::Diverged { step, loss });
        }
        let inv = 1.0 / batch as f32;
        g.iter_mut().for_each(|v| *v *= inv);
        let lr = cosine_lr(cfg.lr, step, cfg.warmup, cfg.steps);
        opt.step(&mut p, &g, lr, cfg.weight_decay);
        head.prepare(&p);
        report.steps_run = step + 1;
        report.final_loss = loss;
        let prog = Progress {
            step: step + 1,
            steps: cfg.steps,
            loss,
            accuracy: correct as f32 / batch as f32,
        };
        if !progress(&prog) {
            return Err(Error::Cancelled { step: step + 1 });
        }
        if use_holdout && ((step + 1) % check_every == 0 || step + 1 == cfg.steps) {
            let (mut vl, mut vc) = (0.0f32, 0usize);
            for &i in &val_idx {
                load(cache, i, &mut bufs);
                let x: heapless::Vec<&[f32], 16> = bufs.iter().map(|b| &b[..]).collect();
                head.forward(&p, &x, &mut s, &mut logits);
                vc += (super::argmax(&logits) == cache.labels[i]) as usize;
                vl += softmax_ce(&logits, cache.labels[i], 0.0, &mut dl);
            }
            vl /= val_idx.len() as f32;
            if vl < best_loss {
                best_loss = vl;
                best.copy_from_slice(&p);
                report.best_step = Some(step + 1);
                report.holdout_accuracy = Some(vc as f32 / val_idx.len() as f32);
                stale = 0;
            } else {
                stale += 1;
                if stale >= cfg.patience {
                    break;
                }
            }
        }
    }
    if use_holdout {
        p = best;
    }
    Ok((p, report))
}

/// Logits of one example with trained parameters.
pub fn predict<H: Head>(head: &H, p: &[f32], taps: &[&[f32]], logits: &mut [f32]) {
    head.prepare(p);
    let mut s = alloc::vec![0.0f32; head.scratch_len()];
    head.forward(p, taps, &mut s, logits);
}
