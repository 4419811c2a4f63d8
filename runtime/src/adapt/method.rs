//! The adaptation methods behind one interface: fit on the tap cache, score an example
//! from its taps.

use super::cache::{NamedTap, TapCache, TapShape};
use super::heads::{Ladder, Query};
use super::linear::{train_linear_with, widen_classes, LinearConfig, LinearHead};
use super::ncm::Ncm;
use super::tail::{Tail, TailNet, Variant};
use super::train::{self, Head, Progress, TrainConfig};
use super::unlabeled::{soft_kmeans, softmax, Unlabeled, UnlabeledConfig};
use super::Support;
use crate::error::{Error, Result};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Training defaults per method. The tail methods take mini-batches of 10: a step through
/// the tail costs as much as a backbone pass per example.
fn tail_defaults(kind: Kind) -> TrainConfig {
    let mut c = TrainConfig::default();
    if kind.is_tail() {
        c.steps = 150;
        c.batch = 10;
        c.lr = 3e-3;
        c.warmup = 10;
    }
    c
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ncm,
    Linear,
    Moment,
    Ladder,
    Query,
    /// The backbone's last blocks after a cut tap, every weight trained.
    Tail,
    /// The tail's biases and per-channel scales only (after TinyTL).
    Bias,
    /// Low-rank updates of the tail's 1×1 convolutions.
    Lora,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Ncm,
        Kind::Linear,
        Kind::Moment,
        Kind::Ladder,
        Kind::Query,
        Kind::Tail,
        Kind::Bias,
        Kind::Lora,
    ];

    /// Methods that tune a copy of the backbone's tail (they need the plan).
    pub fn is_tail(self) -> bool {
        matches!(self, Kind::Tail | Kind::Bias | Kind::Lora)
    }

    /// Methods that learn from unlabeled examples too ([`fit_semi`]).
    pub fn uses_unlabeled(self) -> bool {
        matches!(self, Kind::Ncm | Kind::Linear | Kind::Moment)
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ncm => "ncm",
            Kind::Linear => "linear",
            Kind::Moment => "moment",
            Kind::Ladder => "ladder",
            Kind::Query => "query",
            Kind::Tail => "tail",
            Kind::Bias => "bias",
            Kind::Lora => "lora",
        }
    }
}

/// How to fit a method; `Default` holds the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub kind: Kind,
    /// Ladder: side width = widest tap / `reduction`.
    pub reduction: usize,
    /// Query: learned query tokens per tap.
    pub queries: usize,
    pub linear: LinearConfig,
    pub train: TrainConfig,
    /// Tail methods: rank of the low-rank updates.
    pub rank: usize,
    /// Tail methods: learning-rate multiplier of the tail's own weights (the classifier
    /// takes the base rate).
    pub body_lr: f32,
    /// Tail methods: the float copy of the plan after the cut ([`Spec::bind_tail`]).
    pub tail: Option<Arc<TailNet>>,
    /// How unlabeled examples are used, when a fit has some ([`fit_semi`]).
    pub unlabeled: UnlabeledConfig,
}

impl Spec {
    pub fn new(kind: Kind) -> Spec {
        Spec {
            kind,
            reduction: 16,
            queries: 4,
            linear: LinearConfig::default(),
            train: tail_defaults(kind),
            rank: 4,
            // Chosen on held-out support shots, never the query set
            // (tools/select_defaults.sh; BENCHMARKS.md): 0.3 beat 0.1 for `tail`, 1 beat
            // 0.1 for `bias` (0.720 vs 0.700), 0.1 beat 1 for `lora` (0.720 vs 0.700).
            body_lr: match kind {
                Kind::Tail => 0.3,
                Kind::Bias => 1.0,
                _ => 0.1,
            },
            tail: None,
            unlabeled: UnlabeledConfig::default(),
        }
    }

    /// Builds the tail of `plan` after the tap `cut`, for the tail methods.
    pub fn bind_tail(mut self, plan: &crate::plan::Plan, cut: &str) -> Result<Spec> {
        self.tail = Some(Arc::new(TailNet::from_plan(plan, cut)?));
        Ok(self)
    }

    pub(crate) fn variant(&self) -> Variant {
        match self.kind {
            Kind::Bias => Variant::Bias,
            Kind::Lora => Variant::Lora {
                rank: self.rank.max(1),
            },
            _ => Variant::Full,
        }
    }

    pub fn seed(mut self, seed: u64) -> Spec {
        self.linear.seed = seed;
        self.train.seed = seed;
        self
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Ncm(Ncm),
    Linear(LinearHead),
    /// A linear probe on per-channel mean and standard deviation over a tap's tokens.
    Moment(LinearHead),
    Ladder {
        taps: Vec<TapShape>,
        width: usize,
        classes: usize,
        params: Vec<f32>,
    },
    Query {
        taps: Vec<TapShape>,
        queries: usize,
        classes: usize,
        params: Vec<f32>,
    },
    /// A tuned tail; `tail` is `None` until the adapter is bound to its plan.
    Tail {
        kind: Kind,
        rank: usize,
        classes: usize,
        params: Vec<f32>,
        tail: Option<Box<Tail>>,
    },
}

/// Mean over tokens of a `tokens × dim` tap.
pub fn pooled(x: &[f32], d: TapShape, out: &mut [f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(d.dim) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out.iter_mut().for_each(|o| *o /= d.tokens as f32);
}

/// Two tokens `μ + σ` and `μ − σ` per channel of a `tokens × dim` tap (`out` holds
/// `2 · dim`): their mean is `μ` and their standard deviation `σ`, so [`moments`] of the
/// pair equals [`moments`] of the whole map. What the tap cache keeps for the moment probe.
pub fn moments_pair(x: &[f32], d: TapShape, out: &mut [f32]) {
    let (mu, sd) = out.split_at_mut(d.dim);
    mean_sd(x, d, mu, sd);
    for (m, s) in mu.iter_mut().zip(sd.iter_mut()) {
        (*m, *s) = (*m + *s, *m - *s);
    }
}

/// Per-channel mean and (population) standard deviation over a tap's tokens.
fn mean_sd(x: &[f32], d: TapShape, mu: &mut [f32], sd: &mut [f32]) {
    pooled(x, d, mu);
    sd.fill(0.0);
    for row in x.chunks_exact(d.dim) {
        for c in 0..d.dim {
            let e = row[c] - mu[c];
            sd[c] += e * e;
        }
    }
    sd.iter_mut()
        .for_each(|v| *v = libm::sqrtf(*v / d.tokens as f32));
}

/// First- and second-order statistics of a tap: `[μ/‖μ‖, σ/‖σ‖]/√2` per channel.
pub fn moments(x: &[f32], d: TapShape, out: &mut [f32]) {
    let (mu, sd) = out.split_at_mut(d.dim);
    mean_sd(x, d, mu, sd);
    for half in [mu, sd] {
        let n = libm::sqrtf(half.iter().map(|v| v * v).sum::<f32>()) * core::f32::consts::SQRT_2;
        if n > 0.0 {
            half.iter_mut().for_each(|v| *v /= n);
        }
    }
}

impl Method {
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    pub fn kind(&self) -> Kind {
        match self {
            Method::Ncm(_) => Kind::Ncm,
            Method::Linear(_) => Kind::Linear,
            Method::Moment(_) => Kind::Moment,
            Method::Ladder { .. } => Kind::Ladder,
            Method::Query { .. } => Kind::Query,
            Method::Tail { kind, .. } => *kind,
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            Method::Ncm(n) => n.classes(),
            Method::Linear(l) | Method::Moment(l) => l.classes,
            Method::Ladder { classes, .. }
            | Method::Query { classes, .. }
            | Method::Tail { classes, .. } => *classes,
        }
    }

    /// Trainable parameters.
    pub fn params(&self) -> usize {
        match self {
            Method::Ncm(n) => n.dim * n.classes(),
            Method::Linear(l) | Method::Moment(l) => l.w.len() + l.b.len(),
            Method::Ladder { params, .. }
            | Method::Query { params, .. }
            | Method::Tail { params, .. } => params.len(),
        }
    }

    /// Class scores of several examples (`taps[i]` in the adapter's tap order), `out`
    /// row after row of [`classes`](Self::classes) each: per example the numbers
    /// [`scores`](Self::scores) gives, a tail's examples taken through its layers together.
    pub fn scores_batch(
        &self,
        taps: &[&[&[f32]]],
        dims: &[TapShape],
        out: &mut [f32],
    ) -> Result<()> {
        let k = self.classes();
        if out.len() < taps.len() * k {
            return Err(Error::ShapeMismatch {
                op: "scores".into(),
                expected: alloc::vec![taps.len() * k],
                got: alloc::vec![out.len()],
            });
        }
        if let (
            Method::Tail {
                tail: Some(t),
                params,
                ..
            },
            2..,
        ) = (self, taps.len())
        {
            let mut xb = Vec::new();
            for x in taps {
                self.check_taps(x, dims)?;
                xb.extend_from_slice(x[t.tap]);
            }
            t.logits_batch(params, &xb, taps.len(), &mut out[..taps.len() * k]);
            return Ok(());
        }
        for (x, o) in taps.iter().zip(out.chunks_mut(k)) {
            self.scores(x, dims, o)?;
        }
        Ok(())
    }

    /// Class scores of one example from its taps (in the adapter's tap order).
    pub fn scores(&self, taps: &[&[f32]], dims: &[TapShape], out: &mut [f32]) -> Result<()> {
        self.check_taps(taps, dims)?;
        if out.len() < self.classes() {
            return Err(Error::ShapeMismatch {
                op: "scores".into(),
                expected: alloc::vec![self.classes()],
                got: alloc::vec![out.len()],
            });
        }
        self.scores_unchecked(taps, dims, out)
    }

    /// Refuses taps of other sizes or widths than the method's.
    fn check_taps(&self, taps: &[&[f32]], dims: &[TapShape]) -> Result<()> {
        let need = match self {
            Method::Ladder { taps: t, .. } | Method::Query { taps: t, .. } => t.len(),
            _ => 1,
        };
        if taps.len() < need
            || dims.len() < need
            || taps
                .iter()
                .zip(dims)
                .any(|(t, d)| t.len() != d.tokens * d.dim)
        {
            return Err(Error::ShapeMismatch {
                op: alloc::format!("{} adapter", self.name()),
                expected: dims.iter().map(|d| d.tokens * d.dim).collect(),
                got: taps.iter().map(|t| t.len()).collect(),
            });
        }
        // The tap widths the method was trained on.
        let width_ok = match self {
            Method::Ncm(n) => dims[0].dim == n.dim,
            Method::Linear(l) => dims[0].dim == l.dim,
            Method::Moment(l) => 2 * dims[0].dim == l.dim,
            // The ladder pools each tap, so only the widths must match (it is trained
            // on pooled taps and served on whole ones).
            Method::Ladder { taps: t, .. } => {
                dims[..t.len()].iter().zip(t).all(|(a, b)| a.dim == b.dim)
            }
            Method::Query { taps: t, .. } => dims[..t.len()] == t[..],
            Method::Tail { tail, .. } => tail.as_ref().is_none_or(|t| dims[0] == t.net.cut_dims()),
        };
        if !width_ok {
            return Err(Error::ShapeMismatch {
                op: alloc::format!("{} adapter taps", self.name()),
                expected: alloc::vec![],
                got: dims.iter().map(|d| d.dim).collect(),
            });
        }
        Ok(())
    }

    fn scores_unchecked(&self, taps: &[&[f32]], dims: &[TapShape], out: &mut [f32]) -> Result<()> {
        match self {
            Method::Ncm(n) => {
                let mut f = alloc::vec![0.0; dims[0].dim];
                pooled(taps[0], dims[0], &mut f);
                n.scores(&f, out)
            }
            Method::Linear(l) => {
                let mut f = alloc::vec![0.0; dims[0].dim];
                pooled(taps[0], dims[0], &mut f);
                l.logits(&f, out)
            }
            Method::Moment(l) => {
                let mut f = alloc::vec![0.0; 2 * dims[0].dim];
                moments(taps[0], dims[0], &mut f);
                l.logits(&f, out)
            }
            Method::Ladder {
                taps: t,
                width,
                classes,
                params,
            } => {
                // Token counts come from the caller (a pooled or a full tap).
                let h = Ladder::new(
                    dims[..t.len()].to_vec(),
                    (0..t.len()).collect(),
                    *width,
                    *classes,
                );
                train::predict(&h, params, taps, out);
            }
            Method::Query {
                taps: t,
                queries,
                classes,
                params,
            } => {
                let h = Query::new(t.clone(), (0..t.len()).collect(), *queries, *classes);
                train::predict(&h, params, taps, out);
            }
            Method::Tail { tail, params, .. } => {
                let t = tail.as_ref().ok_or_else(|| Error::Invalid {
                    what: "tail adapter is not bound to its plan (Adapter::bind)".into(),
                })?;
                let mut s = alloc::vec![0.0f32; t.scratch_len()];
                t.forward(params, taps, &mut s, out);
            }
        }
        Ok(())
    }
}

impl Method {
    /// Forgets class `label` without training: its prototype, classifier column or row
    /// goes, every other parameter stays, and later labels move down by one. The scores
    /// of the remaining classes are the ones the method gave before (a cosine or linear
    /// score per class does not depend on the other classes). Refused when fewer than two
    /// classes would remain, and for a tail not bound to its plan.
    pub fn drop_class(&mut self, label: usize) -> Result<()> {
        let k = self.classes();
        if label >= k || k < 3 {
            return Err(Error::Invalid {
                what: alloc::format!(
                    "{}: cannot drop class {label} of {k} (two must remain)",
                    self.name()
                ),
            });
        }
        match self {
            Method::Ncm(n) => n.remove_class(label),
            Method::Linear(h) | Method::Moment(h) => {
                h.w = narrow_cols(&h.w, k, label);
                h.b.remove(label);
                h.classes -= 1;
            }
            Method::Ladder {
                taps,
                width,
                classes,
                params,
            } => {
                let sel: Vec<usize> = (0..taps.len()).collect();
                let n1 = Ladder::new(taps.clone(), sel.clone(), *width, k - 1).n_params();
                let n0 = Ladder::new(taps.clone(), sel, *width, k).n_params();
                *params = narrow_head(params, k, label, n0 - n1)?;
                *classes -= 1;
            }
            Method::Query {
                taps,
                queries,
                classes,
                params,
            } => {
                let sel: Vec<usize> = (0..taps.len()).collect();
                let n1 = Query::new(taps.clone(), sel.clone(), *queries, k - 1).n_params();
                let n0 = Query::new(taps.clone(), sel, *queries, k).n_params();
                *params = narrow_head(params, k, label, n0 - n1)?;
                *classes -= 1;
            }
            Method::Tail {
                classes,
                params,
                tail,
                ..
            } => {
                let t = tail.as_ref().ok_or_else(|| Error::Invalid {
                    what: "tail adapter is not bound to its plan (Adapter::bind)".into(),
                })?;
                let (body, fdim) = (t.body_len(), t.net.feature_dim());
                if params.len() != body + k * fdim {
                    return Err(Error::ShapeMismatch {
                        op: "tail classifier".into(),
                        expected: alloc::vec![body + k * fdim],
                        got: alloc::vec![params.len()],
                    });
                }
                let mut t1 = Tail::new(t.net.clone(), t.variant, k - 1);
                t1.scale = t.scale;
                t1.body_lr = t.body_lr;
                params.drain(body + label * fdim..body + (label + 1) * fdim);
                t1.prepare(params);
                *tail = Some(Box::new(t1));
                *classes -= 1;
            }
        }
        Ok(())
    }
}

/// `w[rows][k]` without column `c`.
fn narrow_cols(w: &[f32], k: usize, c: usize) -> Vec<f32> {
    w.chunks_exact(k)
        .flat_map(|r| r[..c].iter().chain(&r[c + 1..]))
        .copied()
        .collect()
}

/// The parameters of a head whose classifier (weights `[rows][k]` then biases) is its
/// last block, without class `c`; `per_class` is what one class holds (`rows + 1`). The
/// reverse of [`widen_head`].
fn narrow_head(old: &[f32], k: usize, c: usize, per_class: usize) -> Result<Vec<f32>> {
    let prefix = old
        .len()
        .checked_sub(per_class * k)
        .filter(|_| per_class >= 1)
        .ok_or_else(|| Error::ShapeMismatch {
            op: "classifier".into(),
            expected: alloc::vec![per_class * k],
            got: alloc::vec![old.len()],
        })?;
    let rows = per_class - 1;
    let (w, b) = old[prefix..].split_at(rows * k);
    let mut out = Vec::with_capacity(old.len() - per_class);
    out.extend_from_slice(&old[..prefix]);
    out.extend(narrow_cols(w, k, c));
    out.extend(narrow_cols(b, k, c));
    Ok(out)
}

/// Rows of one cached tap for the examples `idx`, reduced by `f` to `width` values each.
fn rows(
    cache: &TapCache,
    tap: usize,
    idx: &[usize],
    width: usize,
    f: fn(&[f32], TapShape, &mut [f32]),
) -> Vec<f32> {
    let d = cache.taps[tap];
    let mut buf = alloc::vec![0.0; d.len()];
    let mut out = alloc::vec![0.0; idx.len() * width];
    for (r, &i) in idx.iter().enumerate() {
        cache.read(i, tap, &mut buf);
        f(&buf, d, &mut out[r * width..][..width]);
    }
    out
}

fn finite(x: &[f32]) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "unlabeled features".into(),
        });
    }
    Ok(())
}

/// Self-training of a probe `head` fitted on `s`: unlabeled rows `xu` (raw features of
/// `s.dim` values) whose softmax probability of the predicted class passes the threshold
/// take that class as their label, for good (the most confident `per_class` of each
/// class per round), and the probe is refitted on the support set and every
/// pseudo-labelled row; at most `rounds` times, until a round labels nothing.
fn self_train(
    mut head: LinearHead,
    s: &Support,
    xu: &[f32],
    spec: &Spec,
    init: Option<&LinearHead>,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<LinearHead> {
    let (d, k) = (s.dim, s.classes);
    let m = xu.len() / d;
    let mut label: Vec<Option<usize>> = alloc::vec![None; m];
    let mut p = alloc::vec![0.0f32; k];
    let (mut x, mut y) = (s.x.to_vec(), s.y.to_vec());
    let cap = match spec.unlabeled.per_class {
        0 => m,
        c => c,
    };
    for _ in 0..spec.unlabeled.rounds {
        // (confidence, row, class) of the rows not yet labelled that pass the threshold.
        let mut cand: Vec<(f32, usize, usize)> = Vec::new();
        for (u, _) in label.iter().enumerate().filter(|(_, l)| l.is_none()) {
            let row = &xu[u * d..][..d];
            head.logits(row, &mut p);
            softmax(&mut p);
            let c = super::argmax(&p);
            if p[c] > spec.unlabeled.threshold {
                cand.push((p[c], u, c));
            }
        }
        // Most confident first (ties: the earlier row), at most `cap` per class.
        cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut taken = alloc::vec![0usize; k];
        let mut added = 0;
        for &(_, u, c) in &cand {
            if taken[c] < cap {
                taken[c] += 1;
                label[u] = Some(c);
                x.extend_from_slice(&xu[u * d..][..d]);
                y.push(c);
                added += 1;
            }
        }
        if added == 0 {
            break;
        }
        let all = Support {
            x: &x,
            y: &y,
            dim: d,
            classes: k,
        };
        head = train_linear_with(&all, &spec.linear, init, progress)?.0;
    }
    Ok(head)
}

/// Shapes of the cached taps `sel`, as the heads see them.
fn cache_dims(cache: &TapCache, sel: &[usize]) -> Vec<TapShape> {
    sel.iter().map(|&i| cache.taps[i]).collect()
}

/// A fresh initialisation of `h` with the trained parameters of the same head over its
/// first `k0` classes copied in; `None` when the layouts do not correspond.
fn warm_init<H: Head>(h: &H, old: &[f32], k0: usize, spec: &Spec) -> Option<Vec<f32>> {
    let mut p = alloc::vec![0.0; h.n_params()];
    h.init(
        &mut super::rng::Rng::new(spec.train.seed ^ 0x5741_524d),
        &mut p,
    );
    widen_head(old, k0, &mut p, h.classes())?;
    Some(p)
}

/// Bytes a fit will hold at its peak, before anything is allocated.
pub fn fit_memory(spec: &Spec, cache: &TapCache, sel: &[usize], n: usize, classes: usize) -> usize {
    let dims = cache_dims(cache, sel);
    let d0 = dims.first().map_or(0, |d| d.dim);
    match spec.kind {
        Kind::Ncm => cache.bytes() + 4 * (d0 * classes + 2 * d0),
        Kind::Linear => cache.bytes() + super::linear_memory(n, d0, classes),
        Kind::Moment => cache.bytes() + super::linear_memory(n, 2 * d0, classes),
        Kind::Ladder => {
            train::train_memory(&ladder_head(spec, &dims, sel, classes), cache, &spec.train)
        }
        Kind::Query => train::train_memory(
            &Query::new(dims, sel.to_vec(), spec.queries, classes),
            cache,
            &spec.train,
        ),
        Kind::Tail | Kind::Bias | Kind::Lora => match &spec.tail {
            Some(net) => {
                let t = Tail::new(net.clone(), spec.variant(), classes);
                train::train_memory(&t, cache, &spec.train)
            }
            None => cache.bytes(),
        },
    }
}

fn ladder_head(spec: &Spec, dims: &[TapShape], sel: &[usize], classes: usize) -> Ladder {
    let widest = dims.iter().map(|d| d.dim).max().unwrap_or(1);
    // A side stream narrower than 16 leaves the layer norms too little to normalise.
    let width = (widest / spec.reduction.max(1)).max(16);
    Ladder::new(dims.to_vec(), sel.to_vec(), width, classes)
}

/// Fits a method on examples `idx` of the cache, reading the cached taps `sel` (one for
/// ncm, linear and moment; any number for ladder and query).
pub fn fit(
    spec: &Spec,
    cache: &TapCache,
    sel: &[usize],
    idx: &[usize],
    classes: usize,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Method> {
    fit_from(spec, cache, sel, idx, classes, None, progress)
}

/// The parameters of a head whose classifier (weights `[rows][classes]` then biases) is
/// its last block, grown from `k0` to `k1` classes: everything trained in `old` is kept,
/// the new classes' columns keep the fresh values already in `new`.
fn widen_head(old: &[f32], k0: usize, new: &mut [f32], k1: usize) -> Option<()> {
    if k1 < k0 || k0 == 0 {
        return None;
    }
    if k1 == k0 {
        (old.len() == new.len()).then(|| new.copy_from_slice(old))?;
        return Some(());
    }
    let grown = new.len().checked_sub(old.len())?;
    if grown % (k1 - k0) != 0 {
        return None;
    }
    let rows = (grown / (k1 - k0)).checked_sub(1)?;
    let prefix = old.len().checked_sub((rows + 1) * k0)?;
    new[..prefix].copy_from_slice(&old[..prefix]);
    let (w0, b0) = old[prefix..].split_at(rows * k0);
    let (w1, b1) = new[prefix..].split_at_mut(rows * k1);
    widen_classes(w0, b0, k0, w1, b1, k1);
    Some(())
}

/// [`fit`], warm-started from `prev` when it is the same method on the same taps with
/// the first classes of this fit (a class was added): `linear` and `moment` start from
/// its weights (new classes at zero), `ladder` and `query` from all its parameters (new
/// classes freshly initialised), the tail methods from the trained tail and classifier
/// rows (new classes' rows from prototypes through the trained tail). `ncm` has nothing
/// to train; a `prev` that does not fit starts from scratch.
pub fn fit_from(
    spec: &Spec,
    cache: &TapCache,
    sel: &[usize],
    idx: &[usize],
    classes: usize,
    prev: Option<&Method>,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Method> {
    fit_semi(spec, cache, sel, idx, classes, prev, None, progress)
}

/// [`fit_from`] that also learns from unlabeled examples `unl` (same taps as `cache`):
/// `ncm` refines its prototypes by soft k-means over them, `linear` and `moment` self-train
/// (each round labels the unlabeled examples the probe is confident of, above
/// `spec.unlabeled.threshold`, at most `per_class` new ones per class, and refits on the
/// support set and those; a pseudo-label once given is kept; it stops when a round labels
/// nothing new). Other methods refuse
/// unlabeled examples. With none it is [`fit_from`].
#[allow(clippy::too_many_arguments)]
pub fn fit_semi(
    spec: &Spec,
    cache: &TapCache,
    sel: &[usize],
    idx: &[usize],
    classes: usize,
    prev: Option<&Method>,
    unl: Option<Unlabeled>,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Method> {
    let unl = unl.filter(|u| !u.idx.is_empty());
    if let Some(u) = unl {
        if !spec.kind.uses_unlabeled() {
            return Err(Error::Invalid {
                what: alloc::format!(
                    "{} does not learn from unlabeled examples (ncm, linear and moment do)",
                    spec.kind.name()
                ),
            });
        }
        if u.cache.taps != cache.taps {
            return Err(Error::ShapeMismatch {
                op: "unlabeled examples' taps".into(),
                expected: cache.taps.iter().map(|t| t.len()).collect(),
                got: u.cache.taps.iter().map(|t| t.len()).collect(),
            });
        }
        if let Some(&i) = u.idx.iter().find(|&&i| i >= u.cache.len()) {
            return Err(Error::Invalid {
                what: alloc::format!("unlabeled row {i} of a cache of {} rows", u.cache.len()),
            });
        }
    }
    if sel.is_empty() || sel.len() > 16 || sel.iter().any(|&s| s >= cache.taps.len()) {
        return Err(Error::Invalid {
            what: alloc::format!(
                "{}: needs 1 to 16 cached taps, got {:?}",
                spec.kind.name(),
                sel
            ),
        });
    }
    if matches!(spec.kind, Kind::Ncm | Kind::Linear | Kind::Moment) && sel.len() != 1 {
        return Err(Error::Invalid {
            what: alloc::format!("{} reads exactly one tap", spec.kind.name()),
        });
    }
    let dims = cache_dims(cache, sel);
    let y: Vec<usize> = idx.iter().map(|&i| cache.labels[i]).collect();
    let d0 = dims[0].dim;
    let support = |x: &[f32], dim| -> Result<()> {
        Support {
            x,
            y: &y,
            dim,
            classes,
        }
        .check()
    };
    match spec.kind {
        Kind::Ncm => {
            let x = rows(cache, sel[0], idx, d0, pooled);
            support(&x, d0)?;
            let mut n = Ncm::new(d0);
            for (r, &c) in y.iter().enumerate() {
                n.enrol(c, &x[r * d0..][..d0]);
            }
            if let Some(u) = unl {
                let mut xu = rows(u.cache, sel[0], u.idx, d0, pooled);
                finite(&xu)?;
                super::l2_normalise(&mut xu, d0);
                let cfg = &spec.unlabeled;
                let flat: Vec<f32> = n.sums.concat();
                let refined = soft_kmeans(&flat, &xu, d0, classes, cfg.scale, cfg.iters);
                for (s, r) in n.sums.iter_mut().zip(refined.chunks_exact(d0)) {
                    s.copy_from_slice(r);
                }
            }
            // Nothing is trained: one report, which can still cancel.
            if !progress(&Progress {
                step: 0,
                steps: 0,
                loss: f32::NAN,
                accuracy: f32::NAN,
            }) {
                return Err(Error::Cancelled { step: 0 });
            }
            Ok(Method::Ncm(n))
        }
        Kind::Linear | Kind::Moment => {
            let (f, w): (fn(&[f32], TapShape, &mut [f32]), usize) = if spec.kind == Kind::Linear {
                (pooled, d0)
            } else {
                (moments, 2 * d0)
            };
            let x = rows(cache, sel[0], idx, w, f);
            let s = Support {
                x: &x,
                y: &y,
                dim: w,
                classes,
            };
            let init = match prev {
                Some(Method::Linear(h)) if spec.kind == Kind::Linear => Some(h),
                Some(Method::Moment(h)) if spec.kind == Kind::Moment => Some(h),
                _ => None,
            }
            .filter(|h| h.dim == w && h.classes <= classes);
            let (mut head, _) = train_linear_with(&s, &spec.linear, init, progress)?;
            if let Some(u) = unl {
                let xu = rows(u.cache, sel[0], u.idx, w, f);
                finite(&xu)?;
                head = self_train(head, &s, &xu, spec, init, progress)?;
            }
            Ok(if spec.kind == Kind::Linear {
                Method::Linear(head)
            } else {
                Method::Moment(head)
            })
        }
        Kind::Ladder => {
            // The ladder reads pooled taps only: pool once into a small cache instead of
            // decoding every token of every tap at every step.
            let pooled_taps: Vec<NamedTap> = sel
                .iter()
                .map(|&s| (cache.names[s].clone(), TapShape::new(1, cache.taps[s].dim)))
                .collect();
            let mut pc = TapCache::new(cache.format, pooled_taps);
            pc.reserve(idx.len());
            let mut bufs: Vec<Vec<f32>> = sel
                .iter()
                .map(|&s| alloc::vec![0.0; cache.taps[s].len()])
                .collect();
            let mut outs: Vec<Vec<f32>> = dims.iter().map(|d| alloc::vec![0.0; d.dim]).collect();
            for &i in idx {
                for (j, &s) in sel.iter().enumerate() {
                    cache.read(i, s, &mut bufs[j]);
                    pooled(&bufs[j], dims[j], &mut outs[j]);
                }
                let v: Vec<&[f32]> = outs.iter().map(|o| &o[..]).collect();
                pc.push(&v, cache.labels[i])?;
            }
            let one: Vec<TapShape> = dims
                .iter()
                .map(|d| TapShape {
                    tokens: 1,
                    dim: d.dim,
                })
                .collect();
            let h = ladder_head(spec, &one, &(0..sel.len()).collect::<Vec<_>>(), classes);
            let pidx: Vec<usize> = (0..idx.len()).collect();
            let warm = match prev {
                Some(Method::Ladder {
                    taps,
                    width,
                    classes: k0,
                    params,
                }) if *taps == dims && *width == h.width => warm_init(&h, params, *k0, spec),
                _ => None,
            };
            let cfg = TrainConfig {
                init: warm,
                ..spec.train.clone()
            };
            let (params, _) = train::train(&h, &pc, &pidx, &cfg, progress)?;
            Ok(Method::Ladder {
                taps: dims,
                width: h.width,
                classes,
                params,
            })
        }
        Kind::Tail | Kind::Bias | Kind::Lora => {
            let net = spec.tail.clone().ok_or_else(|| Error::Invalid {
                what: alloc::format!(
                    "{} needs the plan's tail (Spec::bind_tail)",
                    spec.kind.name()
                ),
            })?;
            let cut = net.cut_dims();
            if sel.len() != 1 || dims[0] != cut {
                return Err(Error::ShapeMismatch {
                    op: alloc::format!("{} cut '{}'", spec.kind.name(), net.cut),
                    expected: alloc::vec![cut.tokens, cut.dim],
                    got: alloc::vec![dims[0].tokens, dims[0].dim],
                });
            }
            let mut t = Tail::new(net, spec.variant(), classes);
            t.body_lr = spec.body_lr;
            t.tap = sel[0];
            let cfg = TrainConfig {
                init: tail_start(&mut t, spec, prev, cache, idx)?,
                ..spec.train.clone()
            };
            let (params, _) = train::train(&t, cache, idx, &cfg, progress)?;
            t.tap = 0;
            t.prepare(&params);
            Ok(Method::Tail {
                kind: spec.kind,
                rank: spec.rank,
                classes,
                params,
                tail: Some(Box::new(t)),
            })
        }
        Kind::Query => {
            let h = Query::new(dims.clone(), sel.to_vec(), spec.queries, classes);
            let warm = match prev {
                Some(Method::Query {
                    taps,
                    queries,
                    classes: k0,
                    params,
                }) if *taps == dims && *queries == spec.queries => warm_init(&h, params, *k0, spec),
                _ => None,
            };
            let cfg = TrainConfig {
                init: warm,
                ..spec.train.clone()
            };
            let (params, _) = train::train(&h, cache, idx, &cfg, progress)?;
            Ok(Method::Query {
                taps: dims,
                queries: spec.queries,
                classes,
                params,
            })
        }
    }
}

/// The parameters of a tail trained before that a fit of `t` can start from: the same
/// method (and rank) over the first of its classes, so its list is `t`'s body followed by
/// the classifier rows of those classes.
fn tail_prev<'a>(t: &Tail, spec: &Spec, prev: Option<&'a Method>) -> Option<&'a [f32]> {
    match prev {
        Some(Method::Tail {
            kind,
            rank,
            classes: k0,
            params,
            ..
        }) if *kind == spec.kind
            && (*kind != Kind::Lora || *rank == spec.rank)
            && *k0 >= 1
            && *k0 <= t.classes
            && params.len() == t.body_len() + k0 * t.net.feature_dim() =>
        {
            Some(params)
        }
        _ => None,
    }
}

/// Sets the prototypes of `t` and returns the parameters a warm fit starts from (`None`:
/// from scratch, when `prev` is no tail `t` can continue).
fn tail_start(
    t: &mut Tail,
    spec: &Spec,
    prev: Option<&Method>,
    cache: &TapCache,
    idx: &[usize],
) -> Result<Option<Vec<f32>>> {
    let old = tail_prev(t, spec, prev);
    let body = old.map(|o| &o[..t.body_len()]);
    t.proto = tail_prototypes(t, body, cache, idx, t.classes)?;
    Ok(old.map(|o| tail_warm_init(t, o, spec)))
}

/// A fresh initialisation of `t` (the classifier from its prototypes) with the trained
/// list `old` copied over its beginning: the whole body and the rows of the old classes
/// are kept, the new classes' rows are their prototypes.
fn tail_warm_init(t: &Tail, old: &[f32], spec: &Spec) -> Vec<f32> {
    let mut p = alloc::vec![0.0; t.n_params()];
    t.init(
        &mut super::rng::Rng::new(spec.train.seed ^ 0x5741_524d),
        &mut p,
    );
    p[..old.len()].copy_from_slice(old);
    p
}

/// Unit-norm class means of the tail's pooled features over the support set: the cosine
/// classifier starts as nearest-class-mean. The tail is the frozen one, or `body` (the
/// parameters of a tail trained before) for a warm start.
fn tail_prototypes(
    t: &Tail,
    body: Option<&[f32]>,
    cache: &TapCache,
    idx: &[usize],
    classes: usize,
) -> Result<Vec<f32>> {
    let fdim = t.net.feature_dim();
    let mut rng = super::rng::Rng::new(0);
    let mut p = alloc::vec![0.0; t.n_params()];
    t.init(&mut rng, &mut p);
    if let Some(b) = body {
        p[..b.len()].copy_from_slice(b);
    }
    t.prepare(&p);
    let mut s = alloc::vec![0.0; t.scratch_len()];
    let mut x: Vec<Vec<f32>> = cache
        .taps
        .iter()
        .map(|c| alloc::vec![0.0; c.len()])
        .collect();
    let mut logits = alloc::vec![0.0; classes];
    let mut proto = alloc::vec![0.0; classes * fdim];
    for &i in idx {
        for (j, b) in x.iter_mut().enumerate() {
            cache.read(i, j, b);
        }
        let v: Vec<&[f32]> = x.iter().map(|b| &b[..]).collect();
        t.forward(&p, &v, &mut s, &mut logits);
        let f = t.features(&s);
        let row = &mut proto[cache.labels[i] * fdim..][..fdim];
        row.iter_mut().zip(f).for_each(|(o, v)| *o += v);
    }
    super::l2_normalise(&mut proto, fdim);
    if proto.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "tail features of the support set".into(),
        });
    }
    Ok(proto)
}

#[cfg(test)]
mod pair_tests {
    use super::*;
    use crate::adapt::rng::Rng;

    /// The moment probe's features of the two cached tokens equal those of the whole map.
    #[test]
    fn moment_pair_keeps_the_statistics() {
        let mut rng = Rng::new(3);
        for (tokens, dim) in [(49, 16), (1, 8), (196, 40)] {
            let x: Vec<f32> = (0..tokens * dim).map(|_| rng.f32() * 6.0 - 2.0).collect();
            let d = TapShape { tokens, dim };
            let mut pair = alloc::vec![0.0; 2 * dim];
            moments_pair(&x, d, &mut pair);
            let (mut full, mut from_pair) = (alloc::vec![0.0; 2 * dim], alloc::vec![0.0; 2 * dim]);
            moments(&x, d, &mut full);
            moments(&pair, TapShape { tokens: 2, dim }, &mut from_pair);
            for (a, b) in full.iter().zip(&from_pair) {
                assert!((a - b).abs() < 1e-5, "{tokens}x{dim}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn widening_keeps_every_trained_parameter() {
        // A head with a 5-value prefix and a classifier over 3 rows: 2 classes -> 4.
        let (rows, k0, k1, prefix) = (3, 2, 4, 5);
        let old: Vec<f32> = (0..prefix + (rows + 1) * k0)
            .map(|i| i as f32 + 1.0)
            .collect();
        let mut new = vec![-7.0; prefix + (rows + 1) * k1];
        widen_head(&old, k0, &mut new, k1).unwrap();
        assert_eq!(&new[..prefix], &old[..prefix]);
        for r in 0..rows {
            assert_eq!(&new[prefix + r * k1..][..k0], &old[prefix + r * k0..][..k0]);
            assert_eq!(&new[prefix + r * k1 + k0..][..k1 - k0], &[-7.0, -7.0]);
        }
        assert_eq!(&new[prefix + rows * k1..][..k0], &old[prefix + rows * k0..]);
        assert_eq!(&new[prefix + rows * k1 + k0..], &[-7.0, -7.0]);
        // Fewer classes, or a size that is no such growth, is refused.
        assert!(widen_head(&new, k1, &mut old.clone(), k0).is_none());
        assert!(widen_head(&old, k0, &mut vec![0.0; new.len() + 1], k1).is_none());
    }

    #[test]
    fn a_warm_linear_fit_starts_from_the_old_classes() {
        use crate::adapt::linear::train_linear_from;
        let (d, k0, k1) = (4, 2, 3);
        let x: Vec<f32> = (0..6 * d).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let y = [0, 1, 2, 0, 1, 2];
        let s = Support {
            x: &x,
            y: &y,
            dim: d,
            classes: k1,
        };
        let old = LinearHead {
            dim: d,
            classes: k0,
            w: (0..d * k0).map(|i| i as f32 * 0.1).collect(),
            b: vec![0.5, -0.5],
        };
        let cfg = LinearConfig {
            steps: 0,
            ..Default::default()
        };
        let (h, _) = train_linear_from(&s, &cfg, Some(&old)).unwrap();
        for r in 0..d {
            assert_eq!(&h.w[r * k1..][..k0], &old.w[r * k0..][..k0]);
            assert_eq!(h.w[r * k1 + 2], 0.0);
        }
        assert_eq!(h.b, vec![0.5, -0.5, 0.0]);
        let wide = LinearHead {
            dim: d + 1,
            ..old.clone()
        };
        assert!(train_linear_from(&s, &cfg, Some(&wide)).is_err());
    }
}

#[cfg(test)]
mod tail_warm_tests {
    use super::*;
    use crate::adapt::cache::CacheFormat;
    use crate::adapt::rng::Rng;
    use crate::adapt::tail::Layer;

    /// cut (4 tokens × 3) → 1×1 3→6 ReLU6 → 1×1 6→5 → pool.
    fn net() -> TailNet {
        let mut r = Rng::new(11);
        let frozen: Vec<f32> = (0..18 + 6 + 30 + 5).map(|_| r.f32() * 1.6 - 0.8).collect();
        let inf = f32::INFINITY;
        TailNet {
            cut: "cut".into(),
            layers: alloc::vec![
                Layer::Pw {
                    x: 0,
                    y: 1,
                    cin: 3,
                    cout: 6,
                    w: 0,
                    b: 18,
                    lo: 0.0,
                    hi: 6.0
                },
                Layer::Pw {
                    x: 1,
                    y: 2,
                    cin: 6,
                    cout: 5,
                    w: 24,
                    b: 54,
                    lo: -inf,
                    hi: inf
                },
                Layer::Gap { x: 2, y: 3 },
            ],
            slots: alloc::vec![(4, 3), (4, 6), (4, 5), (1, 5)],
            frozen,
            features: 3,
        }
    }

    /// Three rows per class around a class centre, classes `0..k`.
    fn cache(k: usize) -> TapCache {
        let mut c = TapCache::new(
            CacheFormat::F16,
            alloc::vec![("cut".into(), TapShape::new(4, 3))],
        );
        let mut r = Rng::new(4);
        for class in 0..k {
            let centre: Vec<f32> = (0..12).map(|_| r.f32() * 2.0 - 0.5).collect();
            for _ in 0..3 {
                let x: Vec<f32> = centre.iter().map(|v| v + 0.2 * r.f32()).collect();
                c.push(&[&x[..]], class).unwrap();
            }
        }
        c
    }

    /// The warm start of a tail fit keeps every parameter trained before (the tail's
    /// body and the old classes' rows), and the new class's row is the unit-norm mean of
    /// its features through the trained tail, computed here with a separate forward pass.
    #[test]
    fn a_warm_tail_start_keeps_the_trained_parameters() {
        for kind in [Kind::Tail, Kind::Bias, Kind::Lora] {
            let mut spec = Spec::new(kind).seed(3);
            spec.tail = Some(Arc::new(net()));
            spec.train.steps = 40;
            spec.train.batch = 0;
            spec.train.lr = 3e-2;
            let c2 = cache(2);
            let idx2: Vec<usize> = (0..c2.len()).collect();
            let old = fit(&spec, &c2, &[0], &idx2, 2, &mut |_| true).unwrap();
            let Method::Tail {
                params: ref op,
                tail: Some(ref ot),
                ..
            } = old
            else {
                panic!("{kind:?}: not a tail")
            };
            let c3 = cache(3);
            let idx3: Vec<usize> = (0..c3.len()).collect();
            let mut t = Tail::new(spec.tail.clone().unwrap(), spec.variant(), 3);
            let p = tail_start(&mut t, &spec, Some(&old), &c3, &idx3)
                .unwrap()
                .expect("a warm start");
            let body = t.body_len();
            let fdim = t.net.feature_dim();
            assert_eq!(body, ot.body_len(), "{kind:?}");
            assert_eq!(p.len(), body + 3 * fdim);
            // Bit for bit: the body and the two old rows.
            assert!(
                p[..op.len()]
                    .iter()
                    .zip(op)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kind:?}: a trained parameter changed"
            );
            // The body did train: it is not the frozen initialisation.
            let mut fresh = alloc::vec![0.0; t.n_params()];
            t.init(&mut Rng::new(0), &mut fresh);
            let moved = fresh[..body]
                .iter()
                .zip(&op[..body])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(moved > 1e-4, "{kind:?}: the body did not train ({moved})");
            // Oracle of the new row: the old two-class tail's features of class 2.
            ot.prepare(op);
            let mut s = alloc::vec![0.0; ot.scratch_len()];
            let (mut logits, mut buf) = (alloc::vec![0.0; 2], alloc::vec![0.0; 12]);
            let mut mean = alloc::vec![0.0f32; fdim];
            for i in 6..9 {
                c3.read(i, 0, &mut buf);
                ot.forward(op, &[&buf[..]], &mut s, &mut logits);
                mean.iter_mut()
                    .zip(ot.features(&s))
                    .for_each(|(m, f)| *m += f);
            }
            let n = libm::sqrtf(mean.iter().map(|v| v * v).sum::<f32>());
            for (a, m) in p[body + 2 * fdim..].iter().zip(&mean) {
                assert!(
                    (a - m / n).abs() < 1e-5,
                    "{kind:?}: new row {a} vs {}",
                    m / n
                );
            }
            // Another kind starts from scratch.
            let mut other = spec.clone();
            other.kind = if kind == Kind::Tail {
                Kind::Bias
            } else {
                Kind::Tail
            };
            let mut t2 = Tail::new(spec.tail.clone().unwrap(), other.variant(), 3);
            assert!(tail_start(&mut t2, &other, Some(&old), &c3, &idx3)
                .unwrap()
                .is_none());
        }
    }
}
