//! The adaptation methods behind one interface: fit on the tap cache, score an example
//! from its taps.

use super::cache::{TapCache, TapShape};
use super::heads::{Ladder, Query, TapDims};
use super::linear::{train_linear, LinearConfig, LinearHead};
use super::ncm::Ncm;
use super::train::{self, Progress, TrainConfig};
use super::Support;
use crate::error::{Error, Result};
use alloc::vec::Vec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ncm,
    Linear,
    Moment,
    Ladder,
    Query,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Ncm,
        Kind::Linear,
        Kind::Moment,
        Kind::Ladder,
        Kind::Query,
    ];

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
}

impl Spec {
    pub fn new(kind: Kind) -> Spec {
        Spec {
            kind,
            reduction: 16,
            queries: 4,
            linear: LinearConfig::default(),
            train: TrainConfig::default(),
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
        taps: Vec<TapDims>,
        width: usize,
        classes: usize,
        params: Vec<f32>,
    },
    Query {
        taps: Vec<TapDims>,
        queries: usize,
        classes: usize,
        params: Vec<f32>,
    },
}

/// Mean over tokens of a `tokens × dim` tap.
pub fn pooled(x: &[f32], d: TapDims, out: &mut [f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(d.dim) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out.iter_mut().for_each(|o| *o /= d.tokens as f32);
}

/// First- and second-order statistics of a tap: `[μ/‖μ‖, σ/‖σ‖]/√2` per channel.
pub fn moments(x: &[f32], d: TapDims, out: &mut [f32]) {
    let (mu, sd) = out.split_at_mut(d.dim);
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
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            Method::Ncm(n) => n.classes(),
            Method::Linear(l) | Method::Moment(l) => l.classes,
            Method::Ladder { classes, .. } | Method::Query { classes, .. } => *classes,
        }
    }

    /// Trainable parameters.
    pub fn params(&self) -> usize {
        match self {
            Method::Ncm(n) => n.dim * n.classes(),
            Method::Linear(l) | Method::Moment(l) => l.w.len() + l.b.len(),
            Method::Ladder { params, .. } | Method::Query { params, .. } => params.len(),
        }
    }

    /// Class scores of one example from its taps (in the adapter's tap order).
    pub fn scores(&self, taps: &[&[f32]], dims: &[TapDims], out: &mut [f32]) -> Result<()> {
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
        if out.len() < self.classes() {
            return Err(Error::ShapeMismatch {
                op: "scores".into(),
                expected: alloc::vec![self.classes()],
                got: alloc::vec![out.len()],
            });
        }
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
                let h = Ladder::new(t.clone(), (0..t.len()).collect(), *width, *classes);
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
        }
        Ok(())
    }
}

/// Rows of one cached tap for the examples `idx`, reduced by `f` to `width` values each.
fn rows(
    cache: &TapCache,
    tap: usize,
    idx: &[usize],
    width: usize,
    f: fn(&[f32], TapDims, &mut [f32]),
) -> Vec<f32> {
    let t = &cache.taps[tap];
    let d = TapDims {
        tokens: t.tokens,
        dim: t.dim,
    };
    let mut buf = alloc::vec![0.0; t.len()];
    let mut out = alloc::vec![0.0; idx.len() * width];
    for (r, &i) in idx.iter().enumerate() {
        cache.read(i, tap, &mut buf);
        f(&buf, d, &mut out[r * width..][..width]);
    }
    out
}

/// Shapes of the cached taps `sel`, as the heads see them.
fn cache_dims(cache: &TapCache, sel: &[usize]) -> Vec<TapDims> {
    sel.iter()
        .map(|&i| TapDims {
            tokens: cache.taps[i].tokens,
            dim: cache.taps[i].dim,
        })
        .collect()
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
    }
}

fn ladder_head(spec: &Spec, dims: &[TapDims], sel: &[usize], classes: usize) -> Ladder {
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
            Ok(Method::Ncm(n))
        }
        Kind::Linear | Kind::Moment => {
            let (f, w): (fn(&[f32], TapDims, &mut [f32]), usize) = if spec.kind == Kind::Linear {
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
            let (head, loss) = train_linear(&s, &spec.linear)?;
            progress(&Progress {
                step: spec.linear.steps,
                steps: spec.linear.steps,
                loss,
                accuracy: f32::NAN,
            });
            Ok(if spec.kind == Kind::Linear {
                Method::Linear(head)
            } else {
                Method::Moment(head)
            })
        }
        Kind::Ladder => {
            // The ladder reads pooled taps only: pool once into a small cache instead of
            // decoding every token of every tap at every step.
            let pooled_taps: Vec<TapShape> = sel
                .iter()
                .map(|&s| TapShape {
                    name: cache.taps[s].name.clone(),
                    tokens: 1,
                    dim: cache.taps[s].dim,
                })
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
            let one: Vec<TapDims> = dims
                .iter()
                .map(|d| TapDims {
                    tokens: 1,
                    dim: d.dim,
                })
                .collect();
            let h = ladder_head(spec, &one, &(0..sel.len()).collect::<Vec<_>>(), classes);
            let pidx: Vec<usize> = (0..idx.len()).collect();
            let (params, _) = train::train(&h, &pc, &pidx, &spec.train, progress)?;
            Ok(Method::Ladder {
                taps: dims,
                width: h.width,
                classes,
                params,
            })
        }
        Kind::Query => {
            let h = Query::new(dims.clone(), sel.to_vec(), spec.queries, classes);
            let (params, _) = train::train(&h, cache, idx, &spec.train, progress)?;
            Ok(Method::Query {
                taps: dims,
                queries: spec.queries,
                classes,
                params,
            })
        }
    }
}
