//! The backbone as a feature extractor: run the plan, read one output or tap as f32.

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::plan::Plan;
use alloc::vec::Vec;

pub struct FeatureExtractor<'p, 'm> {
    pub exec: Executor<'p, 'm>,
    pub source: alloc::string::String,
    tensor: u32,
    pub dim: usize,
}

impl<'p, 'm> FeatureExtractor<'p, 'm> {
    /// Reads the output or tap called `source`.
    pub fn new(exec: Executor<'p, 'm>, source: &str) -> Result<Self> {
        let tensor = exec.port(source).ok_or_else(|| Error::Invalid {
            what: alloc::format!("plan has no output or tap named '{source}'"),
        })?;
        let dim = exec.tensor_meta(tensor).len();
        Ok(FeatureExtractor {
            tensor,
            dim,
            exec,
            source: source.into(),
        })
    }

    pub fn features(&mut self, input: &[f32], out: &mut [f32]) -> Result<()> {
        self.exec.run(&[input])?;
        self.exec.tensor_f32(self.tensor, out)
    }

    pub fn features_vec(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let mut v = alloc::vec![0.0; self.dim];
        self.features(input, &mut v)?;
        Ok(v)
    }
}

/// Runs the plan and reads several outputs or taps, each as `tokens × dim` (the last
/// physical axis is the channel: NHWC maps give one token per spatial position).
pub struct TapReader<'p, 'm> {
    pub exec: Executor<'p, 'm>,
    ids: Vec<u32>,
    /// The taps of one example. With a context of `c` runs ([`with_context`]) each is
    /// `c` runs' values one after the other, as one token.
    ///
    /// [`with_context`]: Self::with_context
    pub shapes: Vec<crate::adapt::cache::NamedTap>,
    /// Values of each tap in one run.
    pub single: Vec<usize>,
    /// Runs per example.
    pub context: usize,
}

impl<'p, 'm> TapReader<'p, 'm> {
    pub fn new(exec: Executor<'p, 'm>, names: &[alloc::string::String]) -> Result<Self> {
        let mut ids = Vec::new();
        let mut shapes = Vec::new();
        for name in names {
            let tensor = exec.port(name).ok_or_else(|| Error::Invalid {
                what: alloc::format!("plan has no output or tap named '{name}'"),
            })?;
            let t = exec.tensor_meta(tensor);
            let dim = t.shape.last().copied().unwrap_or(1).max(1);
            ids.push(tensor);
            shapes.push((
                name.clone(),
                crate::adapt::cache::TapShape::new(t.len() / dim, dim),
            ));
        }
        let single = shapes.iter().map(|s| s.1.len()).collect();
        Ok(TapReader {
            exec,
            ids,
            shapes,
            single,
            context: 1,
        })
    }

    /// Examples of `c` consecutive runs (an audio context): each tap of an example is the
    /// `c` runs' values one after the other, read as one token.
    pub fn with_context(mut self, c: usize) -> Self {
        let c = c.max(1);
        if c > 1 {
            for ((_, t), &n) in self.shapes.iter_mut().zip(&self.single) {
                *t = crate::adapt::cache::TapShape::new(1, c * n);
            }
        }
        self.context = c;
        self
    }

    /// Runs one example and writes tap `i` into `outs[i]`.
    pub fn run(&mut self, input: &[f32], outs: &mut [Vec<f32>]) -> Result<()> {
        self.run_inputs(&[input], outs)
    }

    /// [`run`](Self::run) for a plan with several inputs (in the plan's input order).
    /// Each `outs[i]` gets one run's values of tap `i` (`single[i]`).
    pub fn run_inputs(&mut self, inputs: &[&[f32]], outs: &mut [Vec<f32>]) -> Result<()> {
        self.exec.run(inputs)?;
        for ((id, &n), o) in self.ids.iter().zip(&self.single).zip(outs.iter_mut()) {
            o.resize(n, 0.0);
            self.exec.tensor_f32(*id, o)?;
        }
        Ok(())
    }
}

/// The taps a method reads by default on a plan: `features` (or the first output) for
/// ncm and linear; the last spatial tap for moment; three spatial taps spread over the
/// second half of the network for ladder; the last two spatial taps for query; the
/// third-last spatial tap as the cut of the tail methods.
pub fn default_taps(plan: &Plan, kind: crate::adapt::Kind) -> Vec<alloc::string::String> {
    use crate::adapt::Kind;
    let pooled = plan
        .outputs
        .iter()
        .find(|p| p.name == "features")
        .or(plan.outputs.first())
        .map(|p| p.name.clone())
        .into_iter()
        .collect::<Vec<_>>();
    let spatial: Vec<_> = plan
        .taps
        .iter()
        .filter(|p| {
            let t = &plan.tensors[p.tensor as usize];
            t.len() / t.shape.last().copied().unwrap_or(1).max(1) > 1
        })
        .map(|p| p.name.clone())
        .collect();
    let n = spatial.len();
    if n == 0 {
        return pooled;
    }
    match kind {
        Kind::Ncm | Kind::Linear => pooled,
        Kind::Moment => alloc::vec![spatial[n - 1].clone()],
        Kind::Ladder => {
            let mut v: Vec<_> = [n / 2, (3 * n) / 4, n - 1]
                .iter()
                .map(|&i| spatial[i].clone())
                .collect();
            v.dedup();
            v
        }
        Kind::Query => spatial[n.saturating_sub(2)..].to_vec(),
        // The cut before the last two blocks and the conv head: the third-last feature map.
        Kind::Tail | Kind::Bias | Kind::Lora => alloc::vec![spatial[n.saturating_sub(3)].clone()],
    }
}
