//! The trainer of the side heads: full-batch or mini-batch passes over the tap cache,
//! softmax cross-entropy with label smoothing, AdamW or SGD with momentum, cosine
//! schedule with warm-up, early stop on a held-out split of the support set. Every
//! buffer is allocated before the first step; a step allocates nothing.

use super::cache::TapCache;
use super::linear::cosine_lr;
use super::nn::softmax_ce;
use super::rng::Rng;
use crate::error::{Error, Result};
use crate::exec::{all_finite, widened};
use alloc::vec::Vec;
use edgetune_kernels::Kernels;

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
    /// The threads the head's passes use; the optimiser's step spreads over them too.
    fn par(&self) -> crate::par::Par {
        crate::par::Par::single()
    }
    fn lr_scales(&self, _out: &mut [f32]) -> bool {
        false
    }
    /// The head, when other threads may share it: the per-example loop then splits each
    /// batch into [`EXAMPLE_GROUPS`] fixed groups, each summing its own gradient, over the
    /// threads of [`par`](Self::par) (the groups, not the threads, fix the arithmetic).
    fn shared(&self) -> Option<&(dyn Head + Sync)> {
        None
    }
    /// Called whenever the parameters changed, before the next `forward`.
    fn prepare(&self, _p: &[f32]) {}
    /// Length of a parameter-free summary of one example's taps (0: the head trains one
    /// example at a time). A head with a summary trains a whole batch per call: the
    /// trainer stages every example once, before the first step, gathers each batch's
    /// summaries into one row-major matrix, and the head runs its layers as GEMMs.
    fn stage_len(&self) -> usize {
        0
    }
    /// Writes the summary of taps `x` into `out` (`stage_len` values).
    fn stage(&self, _x: &[&[f32]], _out: &mut [f32]) {}
    /// Scratch for a batch of `rows` (the per-row slots and the batch's shared buffers).
    fn batch_scratch_len(&self, rows: usize) -> usize {
        rows * self.scratch_len()
    }
    /// Logits of the `rows` summaries in `xb` (row-major, `stage_len` each) into
    /// `logits` (`classes` per row), keeping what the backward needs in `s`
    /// (`batch_scratch_len(rows)` values). Only called when `stage_len() > 0`.
    fn forward_batch(
        &self,
        _p: &[f32],
        _xb: &[f32],
        _rows: usize,
        _s: &mut [f32],
        _logits: &mut [f32],
    ) {
    }
    /// Accumulates the batch's gradient into `g`, after `forward_batch` on the same `s`.
    fn backward_batch(
        &self,
        _p: &[f32],
        _xb: &[f32],
        _rows: usize,
        _s: &mut [f32],
        _dlogits: &[f32],
        _g: &mut [f32],
    ) {
    }
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
    /// Start from these parameters instead of a fresh initialisation (a warm start; the
    /// random draws are the same either way).
    pub init: Option<Vec<f32>>,
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
            init: None,
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
    // A batched head also holds every example's summary, a gathered copy of a batch,
    // and scratch, logits and logit gradients for a batch: `cfg.batch` examples (every
    // one for 0) or the held-out split (one per class), whichever is larger.
    let (scratch, staged) = if head.stage_len() > 0 {
        let n = cache.len();
        let rows = match cfg.batch {
            0 => n,
            b => b.max(if cfg.holdout { head.classes() } else { 0 }).min(n),
        };
        (
            head.batch_scratch_len(rows) + rows * 2 * head.classes(),
            (n + rows) * head.stage_len(),
        )
    } else {
        // A shared head's groups each hold a scratch, decoded taps, logits and (past
        // the first) a gradient.
        let groups = example_groups(head, cfg.batch, cache.len());
        (
            groups * (head.scratch_len() + 2 * head.classes() + taps) + (groups - 1) * p,
            0,
        )
    };
    let taps = if head.stage_len() > 0 { taps } else { 0 };
    cache.bytes()
        + head.fixed_bytes()
        + 4 * ((copies + 1) * p + scratch + taps + staged)
        + 8 * cache.len()
}

/// Groups a batch of a [`Head::shared`] head is split into (see there).
pub const EXAMPLE_GROUPS: usize = 4;

/// Groups of the per-example loop for `head` with batch size `batch` (0: all) over `n`
/// examples.
fn example_groups<H: Head>(head: &H, batch: usize, n: usize) -> usize {
    let b = if batch == 0 { n } else { batch.min(n) };
    if head.shared().is_some() {
        EXAMPLE_GROUPS.min(b).max(1)
    } else {
        1
    }
}

/// One group's buffers in the per-example loop.
struct Group {
    s: Vec<f32>,
    bufs: Vec<Vec<f32>>,
    logits: Vec<f32>,
    dl: Vec<f32>,
    g: Vec<f32>,
    loss: f32,
    correct: usize,
}

/// The correctly rounded square root: std's (which vectorises) where there is std,
/// libm's (also correctly rounded, so the same bits) on a device.
#[inline(always)]
fn sqrt(x: f32) -> f32 {
    #[cfg(feature = "std")]
    return x.sqrt();
    #[cfg(not(feature = "std"))]
    return libm::sqrtf(x);
}

/// Optimiser state over a flat parameter vector (every trainer in `adapt` uses it).
pub(crate) struct Opt {
    kind: Optimizer,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Per-parameter learning-rate multipliers (empty: all 1).
    pub(crate) scale: Vec<f32>,
    t: i32,
    kern: Kernels,
    /// Threads the step spreads over (each value's update is its own: the same bits).
    pub(crate) par: crate::par::Par,
}

const B1: f32 = 0.9;
const B2: f32 = 0.999;

/// AdamW's constants of one step: the learning rate, the decoupled weight decay, the
/// bias corrections `1 - β^t`, and the factor the summed gradient is taken at.
#[derive(Clone, Copy)]
struct AdamStep {
    lr: f32,
    wd: f32,
    c1: f32,
    c2: f32,
    inv: f32,
}

#[inline(always)]
fn adam1(p: &mut f32, m: &mut f32, v: &mut f32, g: f32, lr: f32, k: AdamStep) {
    let g = g * k.inv;
    *m = B1 * *m + (1.0 - B1) * g;
    *v = B2 * *v + (1.0 - B2) * g * g;
    let upd = (*m / k.c1) / (sqrt(*v / k.c2) + 1e-8);
    *p -= lr * (upd + k.wd * *p);
}

// Zipped slices and one loop per case keep the bodies free of bounds checks and
// branches, so they vectorise.
#[inline(always)]
fn adam_body(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: AdamStep) {
    for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
        adam1(p, m, v, g, k.lr, k);
    }
}

#[inline(always)]
fn adam_scaled_body(
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    s: &[f32],
    k: AdamStep,
) {
    for ((((p, m), v), &g), &s) in p.iter_mut().zip(m).zip(v).zip(g).zip(s) {
        adam1(p, m, v, g, k.lr * s, k);
    }
}

widened!(adam(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: AdamStep) => adam_body);
widened!(adam_scaled(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &[f32], k: AdamStep) => adam_scaled_body);

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
            kern: Kernels::detect(),
            par: crate::par::Par::single(),
        }
    }

    pub(crate) fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32, wd: f32) {
        self.step_scaled(p, g, 1.0, lr, wd);
    }

    /// One step from the gradient `g · inv` (`inv` = 1 / the batch size for a summed
    /// gradient; multiplying by it here saves a pass over `g`).
    pub(crate) fn step_scaled(&mut self, p: &mut [f32], g: &[f32], inv: f32, lr: f32, wd: f32) {
        self.t += 1;
        match self.kind {
            Optimizer::AdamW => {
                let k = AdamStep {
                    lr,
                    wd,
                    c1: 1.0 - libm::powf(B1, self.t as f32),
                    c2: 1.0 - libm::powf(B2, self.t as f32),
                    inv,
                };
                let (kern, n) = (&self.kern, p.len());
                let scaled = self.scale.len() == n;
                let parts = self.par.parts(n / 64, n);
                if parts <= 1 {
                    if scaled {
                        adam_scaled(kern, p, &mut self.m, &mut self.v, g, &self.scale, k);
                    } else {
                        adam(kern, p, &mut self.m, &mut self.v, g, k);
                    }
                    return;
                }
                // Runs of whole 64-value units, one per thread.
                let cuts: Vec<usize> = crate::par::runs(n / 64, parts)
                    .map(|r| if r.end == n / 64 { n } else { r.end * 64 })
                    .collect();
                let mut jobs = Vec::with_capacity(parts);
                let (mut p, mut m, mut v, mut g, mut sc) =
                    (p, &mut self.m[..n], &mut self.v[..n], g, &self.scale[..]);
                let mut at = 0;
                for &end in &cuts {
                    let len = end - at;
                    let (p0, p1) = p.split_at_mut(len);
                    let (m0, m1) = m.split_at_mut(len);
                    let (v0, v1) = v.split_at_mut(len);
                    let (g0, g1) = g.split_at(len);
                    let (s0, s1) = sc.split_at(if scaled { len } else { 0 });
                    jobs.push((p0, m0, v0, g0, s0));
                    (p, m, v, g, sc, at) = (p1, m1, v1, g1, s1, end);
                }
                let _ = self.par.each(jobs, |(p, m, v, g, s)| {
                    if scaled {
                        adam_scaled(kern, p, m, v, g, s, k);
                    } else {
                        adam(kern, p, m, v, g, k);
                    }
                    Ok(())
                });
            }
            Optimizer::Sgd { momentum } => {
                for i in 0..p.len() {
                    self.m[i] = momentum * self.m[i] + g[i] * inv + wd * p[i];
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

/// What both training loops do once a step's summed gradient is in `g`: the divergence
/// check, the optimiser step on the schedule, the report and progress, and early
/// stopping on the held-out loss.
struct Stepper<'a> {
    cfg: &'a TrainConfig,
    opt: Opt,
    report: TrainReport,
    /// Parameters with the lowest held-out loss (empty without a held-out split).
    best: Vec<f32>,
    best_loss: f32,
    stale: usize,
    check_every: usize,
}

impl<'a> Stepper<'a> {
    fn new(cfg: &'a TrainConfig, opt: Opt, best: Vec<f32>) -> Stepper<'a> {
        Stepper {
            cfg,
            opt,
            report: TrainReport::default(),
            best,
            best_loss: f32::INFINITY,
            stale: 0,
            check_every: (cfg.steps / 20).max(1),
        }
    }

    /// Applies step `step` (0-based) from the gradient summed over `batch` examples.
    #[allow(clippy::too_many_arguments)]
    fn apply<H: Head>(
        &mut self,
        head: &H,
        step: usize,
        p: &mut [f32],
        g: &mut [f32],
        loss_sum: f32,
        correct: usize,
        batch: usize,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<()> {
        let loss = loss_sum / batch as f32;
        if !loss.is_finite() || !all_finite(&self.opt.kern, g) {
            crate::logging::warning!("training: loss {} at step {}, diverged", loss, step);
            return Err(Error::Diverged { step, loss });
        }
        let steps = self.cfg.steps;
        if step == 0 || (step + 1).is_multiple_of(steps.div_ceil(4)) || step + 1 == steps {
            crate::logging::info!("training: step {}/{}, loss {}", step + 1, steps, loss);
        }
        let cfg = self.cfg;
        let lr = cosine_lr(cfg.lr, step, cfg.warmup, cfg.steps);
        let inv = 1.0 / batch as f32;
        self.opt.step_scaled(p, g, inv, lr, cfg.weight_decay);
        head.prepare(p);
        self.report.steps_run = step + 1;
        self.report.final_loss = loss;
        let prog = Progress {
            step: step + 1,
            steps: cfg.steps,
            loss,
            accuracy: correct as f32 / batch as f32,
        };
        if !progress(&prog) {
            return Err(Error::Cancelled { step: step + 1 });
        }
        Ok(())
    }

    /// Whether the held-out split is checked after step `step`.
    fn check_due(&self, step: usize) -> bool {
        !self.best.is_empty()
            && ((step + 1).is_multiple_of(self.check_every) || step + 1 == self.cfg.steps)
    }

    /// Records a held-out check (mean loss, accuracy); `true` when training should stop.
    fn held_out(&mut self, step: usize, p: &[f32], loss: f32, accuracy: f32) -> bool {
        if loss < self.best_loss {
            self.best_loss = loss;
            self.best.copy_from_slice(p);
            self.report.best_step = Some(step + 1);
            self.report.holdout_accuracy = Some(accuracy);
            self.stale = 0;
            false
        } else {
            self.stale += 1;
            self.stale >= self.cfg.patience
        }
    }

    /// The parameters to keep: the best held-out ones when there is a split.
    fn finish(self, p: Vec<f32>) -> (Vec<f32>, TrainReport) {
        let p = if self.best.is_empty() { p } else { self.best };
        (p, self.report)
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
    if let Some(init) = &cfg.init {
        if init.len() != np {
            return Err(Error::ShapeMismatch {
                op: "warm start".into(),
                expected: alloc::vec![np],
                got: alloc::vec![init.len()],
            });
        }
        p.copy_from_slice(init);
    }
    let mut g = alloc::vec![0.0f32; np];
    let best = if use_holdout { p.clone() } else { Vec::new() };
    let mut opt = Opt::new(cfg.optimizer, np);
    opt.par = head.par();
    let mut scales = alloc::vec![1.0f32; np];
    if head.lr_scales(&mut scales) {
        opt.scale = scales;
    }
    head.prepare(&p);
    if head.stage_len() > 0 {
        let ctx = Batched {
            head,
            cache,
            cfg,
            batch,
        };
        return ctx.run(p, g, best, opt, train_idx, val_idx, rng, progress);
    }
    let bufs: Vec<Vec<f32>> = cache
        .taps
        .iter()
        .map(|t| alloc::vec![0.0; t.len()])
        .collect();
    let groups = example_groups(head, cfg.batch, n);
    let mut work: Vec<Group> = Vec::with_capacity(groups);
    for j in 0..groups {
        work.push(Group {
            s: alloc::vec![0.0; head.scratch_len()],
            bufs: bufs.clone(),
            logits: alloc::vec![0.0; k],
            dl: alloc::vec![0.0; k],
            // Group 0 sums into the step's gradient.
            g: if j == 0 {
                core::mem::take(&mut g)
            } else {
                alloc::vec![0.0; np]
            },
            loss: 0.0,
            correct: 0,
        });
    }
    drop(bufs);
    let par = opt.par.clone();
    let size = batch.div_ceil(groups);
    let mut ex = Vec::with_capacity(batch);
    let mut cursor = 0;
    let mut st = Stepper::new(cfg, opt, best);
    for step in 0..cfg.steps {
        ex.clear();
        for _ in 0..batch {
            if cursor == 0 && batch < n {
                rng.shuffle(&mut train_idx);
            }
            ex.push(train_idx[cursor]);
            cursor = (cursor + 1) % n;
        }
        let run = |h: &dyn Head, ids: &[usize], gr: &mut Group| {
            gr.g.fill(0.0);
            (gr.loss, gr.correct) = (0.0, 0);
            for &i in ids {
                load(cache, i, &mut gr.bufs);
                let x: heapless::Vec<&[f32], 16> = gr.bufs.iter().map(|b| &b[..]).collect();
                h.forward(&p, &x, &mut gr.s, &mut gr.logits);
                let label = cache.labels[i];
                gr.correct += (super::argmax(&gr.logits) == label) as usize;
                gr.loss += softmax_ce(&gr.logits, label, cfg.label_smoothing, &mut gr.dl);
                h.backward(&p, &x, &mut gr.s, &gr.dl, &mut gr.g);
            }
        };
        match head.shared() {
            Some(sh) if groups > 1 => {
                let parts: Vec<(&[usize], &mut Group)> =
                    ex.chunks(size).zip(work.iter_mut()).collect();
                par.each(parts, |(ids, gr)| {
                    run(sh, ids, gr);
                    Ok(())
                })?;
            }
            _ => run(head, &ex, &mut work[0]),
        }
        // The groups' gradients, losses and counts, added in group order.
        let (first, rest) = work.split_at_mut(1);
        let w0 = &mut first[0];
        let (mut loss, mut correct) = (w0.loss, w0.correct);
        for gr in &rest[..ex.len().div_ceil(size) - 1] {
            for (a, b) in w0.g.iter_mut().zip(&gr.g) {
                *a += b;
            }
            loss += gr.loss;
            correct += gr.correct;
        }
        let (g, s, bufs, logits, dl) = (
            &mut w0.g,
            &mut w0.s,
            &mut w0.bufs,
            &mut w0.logits,
            &mut w0.dl,
        );
        st.apply(head, step, &mut p, g, loss, correct, batch, progress)?;
        if st.check_due(step) {
            let (mut vl, mut vc) = (0.0f32, 0usize);
            for &i in &val_idx {
                load(cache, i, bufs);
                let x: heapless::Vec<&[f32], 16> = bufs.iter().map(|b| &b[..]).collect();
                head.forward(&p, &x, s, logits);
                vc += (super::argmax(logits) == cache.labels[i]) as usize;
                vl += softmax_ce(logits, cache.labels[i], 0.0, dl);
            }
            let nv = val_idx.len() as f32;
            if st.held_out(step, &p, vl / nv, vc as f32 / nv) {
                break;
            }
        }
    }
    Ok(st.finish(p))
}

/// The training loop of a head with a per-example summary ([`Head::stage_len`]): the
/// same schedule, batches and held-out checks as the per-example loop, and the same
/// arithmetic in the same order, so both give the same parameters.
struct Batched<'a, H: Head> {
    head: &'a H,
    cache: &'a TapCache,
    cfg: &'a TrainConfig,
    batch: usize,
}

impl<H: Head> Batched<'_, H> {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        mut p: Vec<f32>,
        mut g: Vec<f32>,
        best: Vec<f32>,
        opt: Opt,
        mut train_idx: Vec<usize>,
        val_idx: Vec<usize>,
        mut rng: Rng,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<(Vec<f32>, TrainReport)> {
        let (head, cache, cfg, batch) = (self.head, self.cache, self.cfg, self.batch);
        let (k, sl) = (head.classes(), head.stage_len());
        // Stage every example once: its row in `staged` is its position in `order`.
        let order: Vec<usize> = train_idx.iter().chain(&val_idx).copied().collect();
        let mut staged = alloc::vec![0.0f32; order.len() * sl];
        let mut bufs: Vec<Vec<f32>> = cache
            .taps
            .iter()
            .map(|t| alloc::vec![0.0; t.len()])
            .collect();
        for (r, &i) in order.iter().enumerate() {
            load(cache, i, &mut bufs);
            let x: heapless::Vec<&[f32], 16> = bufs.iter().map(|b| &b[..]).collect();
            head.stage(&x, &mut staged[r * sl..][..sl]);
        }
        drop(bufs);
        let row_of = |i: usize| order.iter().position(|&j| j == i).unwrap_or(0);
        // Train examples are rows 0..n, held-out ones follow.
        let n = train_idx.len();
        let mut train_rows: Vec<usize> = (0..n).collect();
        let val_rows: Vec<usize> = (n..order.len()).collect();
        let slots = batch.max(val_rows.len());
        let mut s = alloc::vec![0.0f32; head.batch_scratch_len(slots)];
        let mut xb = alloc::vec![0.0f32; slots * sl];
        let (mut logits, mut dl) = (
            alloc::vec![0.0f32; slots * k],
            alloc::vec![0.0f32; slots * k],
        );
        let mut rows = Vec::with_capacity(batch);
        let mut cursor = 0;
        let mut st = Stepper::new(cfg, opt, best);
        for step in 0..cfg.steps {
            g.fill(0.0);
            rows.clear();
            for _ in 0..batch {
                if cursor == 0 && batch < n {
                    // Shuffle the cache indices as the per-example loop does, then map.
                    rng.shuffle(&mut train_idx);
                    for (r, &i) in train_rows.iter_mut().zip(&train_idx) {
                        *r = row_of(i);
                    }
                }
                rows.push(train_rows[cursor]);
                cursor = (cursor + 1) % n;
            }
            for (b, &r) in rows.iter().enumerate() {
                xb[b * sl..][..sl].copy_from_slice(&staged[r * sl..][..sl]);
            }
            let nb = rows.len();
            head.forward_batch(&p, &xb[..nb * sl], nb, &mut s, &mut logits);
            let (mut loss, mut correct) = (0.0f32, 0usize);
            for (b, &r) in rows.iter().enumerate() {
                let z = &logits[b * k..][..k];
                let label = cache.labels[order[r]];
                correct += (super::argmax(z) == label) as usize;
                loss += softmax_ce(z, label, cfg.label_smoothing, &mut dl[b * k..][..k]);
            }
            head.backward_batch(&p, &xb[..nb * sl], nb, &mut s, &dl, &mut g);
            st.apply(head, step, &mut p, &mut g, loss, correct, batch, progress)?;
            if st.check_due(step) {
                let nv = val_rows.len();
                xb[..nv * sl].copy_from_slice(&staged[n * sl..][..nv * sl]);
                head.forward_batch(&p, &xb[..nv * sl], nv, &mut s, &mut logits);
                let (mut vl, mut vc) = (0.0f32, 0usize);
                for (b, &r) in val_rows.iter().enumerate() {
                    let z = &logits[b * k..][..k];
                    let label = cache.labels[order[r]];
                    vc += (super::argmax(z) == label) as usize;
                    vl += softmax_ce(z, label, 0.0, &mut dl[b * k..][..k]);
                }
                if st.held_out(step, &p, vl / nv as f32, vc as f32 / nv as f32) {
                    break;
                }
            }
        }
        Ok(st.finish(p))
    }
}

/// Logits of one example with trained parameters.
pub fn predict<H: Head>(head: &H, p: &[f32], taps: &[&[f32]], logits: &mut [f32]) {
    head.prepare(p);
    let mut s = alloc::vec![0.0f32; head.scratch_len()];
    head.forward(p, taps, &mut s, logits);
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// The optimiser step and the finiteness check compiled for each x86 tier the CPU
    /// has give the plain loops' results, bit for bit, with and without per-parameter
    /// scales; the check finds one infinity or NaN anywhere.
    #[test]
    fn widened_optimiser_matches_the_plain_loops() {
        let (plain, tiers) = crate::exec::widened_tiers("widened optimiser");
        let n = 1037;
        let val = |f: f32| -> Vec<f32> { (0..n).map(|i| libm::sinf(i as f32 * f)).collect() };
        let (g, s) = (val(1.37), val(0.29));
        let run = |kern: Kernels, scaled: bool| {
            let mut o = Opt::new(Optimizer::AdamW, n);
            o.kern = kern;
            if scaled {
                o.scale = s.clone();
            }
            let mut p = val(0.71);
            for t in 0..3 {
                o.step_scaled(&mut p, &g, 0.25, 0.01 * (t + 1) as f32, 0.05);
            }
            (p, o.m, o.v)
        };
        for scaled in [false, true] {
            let want = run(plain, scaled);
            // An independent statement of the update for the first step of parameter 5.
            let g5 = g[5] * 0.25;
            let (m5, v5) = (0.1 * g5, 0.001 * g5 * g5);
            let upd = (m5 / 0.1) / ((v5 / 0.001f32).sqrt() + 1e-8);
            let lr = 0.01 * if scaled { s[5] } else { 1.0 };
            let mut o = Opt::new(Optimizer::AdamW, n);
            if scaled {
                o.scale = s.clone();
            }
            let mut p = val(0.71);
            let p5 = p[5];
            o.step_scaled(&mut p, &g, 0.25, 0.01, 0.05);
            assert!((p[5] - (p5 - lr * (upd + 0.05 * p5))).abs() < 1e-7);
            for k in &tiers {
                assert!(run(*k, scaled) == want, "{:?} scaled={scaled}", k.ew.tier);
            }
            // Spread over threads: each value's update is its own, the same bits.
            for t in [2, 3] {
                let mut o = Opt::new(Optimizer::AdamW, n);
                o.kern = plain;
                o.par = crate::par::Par::new(t).unwrap();
                if scaled {
                    o.scale = s.clone();
                }
                let mut p = val(0.71);
                for t in 0..3 {
                    o.step_scaled(&mut p, &g, 0.25, 0.01 * (t + 1) as f32, 0.05);
                }
                assert!((p, o.m, o.v) == want, "{t} threads, scaled={scaled}");
            }
        }
        let mut x = val(0.5);
        for k in tiers.iter().chain([&plain]) {
            assert!(all_finite(k, &x));
            for (i, bad) in [(0, f32::INFINITY), (n - 1, f32::NAN), (517, -f32::INFINITY)] {
                let keep = x[i];
                x[i] = bad;
                assert!(!all_finite(k, &x), "{:?} at {i}", k.ew.tier);
                x[i] = keep;
            }
            x[3] = f32::MAX;
            assert!(all_finite(k, &x));
        }
    }
}
