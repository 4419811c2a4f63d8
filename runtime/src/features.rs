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
        let plan: &Plan = exec.plan();
        let port = plan
            .outputs
            .iter()
            .chain(&plan.taps)
            .find(|p| p.name == source)
            .ok_or_else(|| Error::Invalid {
                what: alloc::format!("plan has no output or tap named '{source}'"),
            })?;
        let dim = plan.tensors[port.tensor as usize].len();
        Ok(FeatureExtractor {
            tensor: port.tensor,
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
