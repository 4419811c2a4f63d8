//! Fitting options and the per-method defaults, in one place: which taps a method reads,
//! what the cache keeps of them and in which precision, and the method's [`Spec`].

use super::cache::Reduce;
use crate::adapt::cache::CacheFormat;
use crate::adapt::train::Optimizer;
use crate::adapt::{Kind, Spec};
use crate::features::default_taps;
use crate::plan::Plan;
use crate::Result;

/// How a trained tail (`tail`, `bias`, `lora`) is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Serve {
    /// The float copy of the tail that was trained.
    #[default]
    Float,
    /// The trained tail re-quantised to int8 (activation ranges from the support set).
    Int8,
}

impl Serve {
    pub fn parse(s: &str) -> Option<Serve> {
        match s {
            "float" | "f32" => Some(Serve::Float),
            "int8" | "i8" => Some(Serve::Int8),
            _ => None,
        }
    }
}

/// Options of enrolment and fitting; `Default` holds the documented defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// Taps to read (`None`: the method's defaults, [`default_taps`]).
    pub taps: Option<Vec<String>>,
    /// Cache precision (`None`: the method's default, [`Options::cache_for`]).
    pub cache: Option<CacheFormat>,
    /// Augmented views of each image, cached beside it.
    pub augment: usize,
    pub steps: Option<usize>,
    pub optimizer: Optimizer,
    pub holdout: bool,
    pub reduction: usize,
    pub queries: usize,
    pub rank: usize,
    pub lr: Option<f32>,
    pub batch: Option<usize>,
    pub c: Option<f32>,
    pub body_lr: Option<f32>,
    pub serve: Serve,
    /// Refuse to fit when the training peak would pass this many bytes.
    pub max_memory: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            taps: None,
            cache: None,
            augment: 0,
            steps: None,
            optimizer: Optimizer::AdamW,
            holdout: false,
            reduction: 16,
            queries: 4,
            rank: 4,
            lr: None,
            batch: None,
            c: None,
            body_lr: None,
            serve: Serve::Float,
            max_memory: None,
        }
    }
}

impl Options {
    /// The method's spec; the tail methods also get the plan's tail after their cut.
    pub fn spec(&self, plan: &Plan, kind: Kind, seed: u64) -> Result<Spec> {
        let mut s = Spec::new(kind).seed(seed);
        s.reduction = self.reduction;
        s.queries = self.queries;
        s.rank = self.rank;
        s.train.optimizer = self.optimizer;
        if let Optimizer::Sgd { .. } = self.optimizer {
            s.train.lr = 0.05;
        }
        s.train.holdout = self.holdout;
        if let Some(n) = self.steps {
            s.train.steps = n;
            s.linear.steps = n;
        }
        if let Some(lr) = self.lr {
            s.train.lr = lr;
            s.linear.lr = lr;
        }
        if let Some(b) = self.batch {
            s.train.batch = b;
        }
        if let Some(c) = self.c {
            s.linear.c = c;
        }
        if let Some(b) = self.body_lr {
            s.body_lr = b;
        }
        if kind.is_tail() {
            s = s.bind_tail(plan, &self.taps_for(plan, kind)[0])?;
        }
        Ok(s)
    }

    /// The taps `kind` reads: the ones asked for (the first only, for the methods that
    /// read one), else the method's defaults on this plan.
    pub fn taps_for(&self, plan: &Plan, kind: Kind) -> Vec<String> {
        match &self.taps {
            Some(t) if matches!(kind, Kind::Ladder | Kind::Query) => t.clone(),
            Some(t) => t[..1.min(t.len())].to_vec(),
            None => default_taps(plan, kind),
        }
    }

    /// The cache precision for `kind`: as asked, else int8 for the query head (it caches
    /// every token of two taps: same accuracy on the demo's episodes at a quarter of f32)
    /// and f16 for the rest.
    pub fn cache_for(&self, kind: Kind) -> CacheFormat {
        self.cache.unwrap_or(if kind == Kind::Query {
            CacheFormat::I8
        } else {
            CacheFormat::F16
        })
    }

    /// What the cache keeps of each tap for `kind`.
    pub fn reduce_for(&self, kind: Kind) -> Reduce {
        Reduce::of(kind)
    }

    /// Steps a fit of `kind` runs (its progress reports count to this).
    pub fn steps_for(&self, spec: &Spec) -> usize {
        if matches!(spec.kind, Kind::Linear | Kind::Moment) {
            spec.linear.steps
        } else if spec.kind == Kind::Ncm {
            0
        } else {
            spec.train.steps
        }
    }
}
