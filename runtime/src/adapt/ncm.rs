//! Nearest class mean: prototypes of L2-normalised features, scored by cosine.
//! Enrolling or dropping a class touches only that class.

use super::l2_normalise;
use alloc::vec::Vec;

#[derive(Clone, Debug, PartialEq)]
pub struct Ncm {
    pub dim: usize,
    /// Sum of normalised features per class, and the count.
    pub sums: Vec<Vec<f32>>,
    pub counts: Vec<u32>,
}

impl Ncm {
    pub fn new(dim: usize) -> Ncm {
        Ncm {
            dim,
            sums: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Adds one example (raw features) to class `c`, creating classes as needed.
    pub fn enrol(&mut self, c: usize, feat: &[f32]) {
        while self.sums.len() <= c {
            self.sums.push(alloc::vec![0.0; self.dim]);
            self.counts.push(0);
        }
        let mut f = feat.to_vec();
        l2_normalise(&mut f, self.dim);
        self.sums[c].iter_mut().zip(&f).for_each(|(s, v)| *s += v);
        self.counts[c] += 1;
    }

    /// Forgets class `c`; other classes keep their prototypes.
    pub fn drop_class(&mut self, c: usize) {
        if c < self.sums.len() {
            self.sums[c].iter_mut().for_each(|v| *v = 0.0);
            self.counts[c] = 0;
        }
    }

    /// Removes class `c`: later classes move down by one, keeping their prototypes.
    pub fn remove_class(&mut self, c: usize) {
        if c < self.sums.len() {
            self.sums.remove(c);
            self.counts.remove(c);
        }
    }

    pub fn classes(&self) -> usize {
        self.sums.len()
    }

    /// Cosine similarity to each class prototype (empty classes score -inf).
    pub fn scores(&self, feat: &[f32], out: &mut [f32]) {
        let fnorm = libm::sqrtf(feat.iter().map(|v| v * v).sum::<f32>()).max(f32::MIN_POSITIVE);
        for (c, o) in out.iter_mut().enumerate().take(self.sums.len()) {
            if self.counts[c] == 0 {
                *o = f32::NEG_INFINITY;
                continue;
            }
            let s = &self.sums[c];
            let pn = libm::sqrtf(s.iter().map(|v| v * v).sum::<f32>()).max(f32::MIN_POSITIVE);
            *o = s.iter().zip(feat).map(|(a, b)| a * b).sum::<f32>() / (pn * fnorm);
        }
    }
}
