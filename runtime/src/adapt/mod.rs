//! On-device adaptation: few-shot heads trained on features the frozen backbone produced.
//! Everything here is no_std + alloc.

pub mod cache;
mod file;
pub mod heads;
mod linear;
pub mod method;
mod ncm;
pub mod nn;
pub mod rng;
pub mod tail;
pub mod train;
pub mod unlabeled;

pub use file::Adapter;
pub use linear::{linear_memory, train_linear, LinearConfig, LinearHead};
pub use method::{fit, fit_from, fit_memory, fit_semi, Kind, Method, Spec};
pub use ncm::Ncm;
pub use unlabeled::{Unlabeled, UnlabeledConfig};

use alloc::vec::Vec;

/// L2-normalises each row of `x` (`dim` columns) in place; zero rows stay zero.
pub fn l2_normalise(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim) {
        let n = libm::sqrtf(row.iter().map(|v| v * v).sum::<f32>());
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Support features, one row per example, with labels in `0..classes`.
pub struct Support<'a> {
    pub x: &'a [f32],
    pub y: &'a [usize],
    pub dim: usize,
    pub classes: usize,
}

impl Support<'_> {
    pub fn check(&self) -> crate::Result<()> {
        use crate::Error;
        if self.dim == 0 || self.x.len() != self.y.len() * self.dim {
            return Err(Error::ShapeMismatch {
                op: "support".into(),
                expected: alloc::vec![self.y.len(), self.dim],
                got: alloc::vec![self.x.len()],
            });
        }
        if self.y.is_empty() || self.classes < 2 {
            return Err(Error::Invalid {
                what: "need examples of at least two classes".into(),
            });
        }
        let mut seen: Vec<bool> = alloc::vec![false; self.classes];
        for &l in self.y {
            if l >= self.classes {
                return Err(Error::Invalid {
                    what: alloc::format!("label {l} out of range ({} classes)", self.classes),
                });
            }
            seen[l] = true;
        }
        if let Some(c) = seen.iter().position(|s| !s) {
            return Err(Error::Invalid {
                what: alloc::format!("class {c} has no examples"),
            });
        }
        if self.x.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "support features".into(),
            });
        }
        Ok(())
    }
}
