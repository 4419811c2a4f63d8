//! Learning from unlabeled examples of the enrolled classes (the photos a device sees
//! without a label): soft k-means refinement of the class prototypes for `ncm`, and
//! self-training with confidence-thresholded pseudo-labels for the linear probes
//! (`linear`, `moment`). The unlabeled examples are cached taps like the support set's,
//! in a [`TapCache`] of the same layout and precision.

use super::cache::TapCache;
use alloc::vec::Vec;

/// Unlabeled rows `idx` of `cache` (their labels are not read). The cache holds the
/// same taps, in the same order, as the support set's.
#[derive(Clone, Copy)]
pub struct Unlabeled<'a> {
    pub cache: &'a TapCache,
    pub idx: &'a [usize],
}

/// How the methods use unlabeled examples; `Default` holds the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct UnlabeledConfig {
    /// `ncm`: soft k-means iterations (0 keeps the support prototypes).
    pub iters: usize,
    /// `ncm`: scale of the cosine similarities in the soft assignments (an inverse
    /// temperature).
    pub scale: f32,
    /// `linear`, `moment`: an unlabeled example takes the predicted class as its label
    /// once the probe's softmax probability of it is above this.
    pub threshold: f32,
    /// `linear`, `moment`: at most this many new pseudo-labels per class and round, the
    /// most confident first (0: no cap). Without it, the probe's first mistakes are
    /// learned and make it surer of the next ones.
    pub per_class: usize,
    /// `linear`, `moment`: rounds of pseudo-labelling and refitting at most.
    pub rounds: usize,
}

impl Default for UnlabeledConfig {
    fn default() -> Self {
        UnlabeledConfig {
            iters: 10,
            scale: 20.0,
            threshold: 0.3,
            per_class: 3,
            rounds: 5,
        }
    }
}

/// Soft k-means in cosine space over unit-norm rows. `sums` holds per class the sum of
/// the unit-norm support features (`k × dim`), `unl` the unit-norm unlabeled features
/// (`m × dim`). Each iteration assigns every unlabeled row softly to the classes,
/// `r[u][c] = softmax_c(scale · cos(x_u, p_c))`, with `p_c` the direction of the class's
/// current sum, and recomputes each sum as the support's plus `Σ_u r[u][c] · x_u`.
/// Returns the refined sums (the support's when `iters` is 0 or there is no row).
pub fn soft_kmeans(
    sums: &[f32],
    unl: &[f32],
    dim: usize,
    k: usize,
    scale: f32,
    iters: usize,
) -> Vec<f32> {
    let mut cur = sums.to_vec();
    if dim == 0 || unl.is_empty() {
        return cur;
    }
    let m = unl.len() / dim;
    let mut proto = alloc::vec![0.0f32; k * dim];
    let mut r = alloc::vec![0.0f32; k];
    for _ in 0..iters {
        proto.copy_from_slice(&cur);
        super::l2_normalise(&mut proto, dim);
        cur.copy_from_slice(sums);
        for u in 0..m {
            let x = &unl[u * dim..][..dim];
            for (c, rc) in r.iter_mut().enumerate() {
                let p = &proto[c * dim..][..dim];
                *rc = scale * p.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
            }
            let top = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            r.iter_mut().for_each(|v| *v = libm::expf(*v - top));
            let z: f32 = r.iter().sum();
            for (c, &rc) in r.iter().enumerate() {
                let w = rc / z;
                cur[c * dim..][..dim]
                    .iter_mut()
                    .zip(x)
                    .for_each(|(s, v)| *s += w * v);
            }
        }
    }
    cur
}

/// Softmax probabilities of `logits` in place.
pub(crate) fn softmax(logits: &mut [f32]) {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    logits.iter_mut().for_each(|v| *v = libm::expf(*v - top));
    let z: f32 = logits.iter().sum();
    logits.iter_mut().for_each(|v| *v /= z);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rng::Rng;

    fn unit(v: &mut [f32], dim: usize) {
        crate::adapt::l2_normalise(v, dim);
    }

    /// The straightforward reference: f64, one loop per formula, prototypes recomputed
    /// from scratch every iteration.
    fn reference(sums: &[f32], unl: &[f32], dim: usize, k: usize, s: f64, it: usize) -> Vec<f64> {
        let m = unl.len() / dim;
        let support: Vec<Vec<f64>> = (0..k)
            .map(|c| sums[c * dim..][..dim].iter().map(|&v| v as f64).collect())
            .collect();
        let mut cur = support.clone();
        for _ in 0..it {
            let protos: Vec<Vec<f64>> = cur
                .iter()
                .map(|p| {
                    let n = p.iter().map(|v| v * v).sum::<f64>().sqrt();
                    p.iter().map(|v| v / n).collect()
                })
                .collect();
            let mut next = support.clone();
            for u in 0..m {
                let x: Vec<f64> = unl[u * dim..][..dim].iter().map(|&v| v as f64).collect();
                let e: Vec<f64> = protos
                    .iter()
                    .map(|p| (s * p.iter().zip(&x).map(|(a, b)| a * b).sum::<f64>()).exp())
                    .collect();
                let z: f64 = e.iter().sum();
                for c in 0..k {
                    for j in 0..dim {
                        next[c][j] += e[c] / z * x[j];
                    }
                }
            }
            cur = next;
        }
        cur.into_iter().flatten().collect()
    }

    #[test]
    fn soft_kmeans_matches_the_reference() {
        let mut rng = Rng::new(7);
        for (k, dim, m, it, scale) in [
            (3, 5, 12, 1, 10.0),
            (4, 16, 40, 10, 20.0),
            (2, 3, 1, 3, 5.0),
        ] {
            let mut sums = alloc::vec![0.0f32; k * dim];
            for c in 0..k {
                for _ in 0..3 {
                    let mut x: Vec<f32> = (0..dim).map(|_| rng.f32() - 0.5).collect();
                    unit(&mut x, dim);
                    sums[c * dim..][..dim]
                        .iter_mut()
                        .zip(&x)
                        .for_each(|(s, v)| *s += v);
                }
            }
            let mut unl: Vec<f32> = (0..m * dim).map(|_| rng.f32() - 0.5).collect();
            unit(&mut unl, dim);
            let ours = soft_kmeans(&sums, &unl, dim, k, scale, it);
            let theirs = reference(&sums, &unl, dim, k, scale as f64, it);
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((*a as f64 - b).abs() < 1e-4, "k{k} d{dim}: {a} vs {b}");
            }
            // Each unlabeled row adds exactly one unit of mass over the classes.
            let mass = |v: &[f64]| v.iter().sum::<f64>();
            let added: f64 = mass(&theirs) - sums.iter().map(|&v| v as f64).sum::<f64>();
            let unl_sum: f64 = unl.iter().map(|&v| v as f64).sum();
            assert!((added - unl_sum).abs() < 1e-6 * (1.0 + unl_sum.abs()));
        }
        // No iteration, or no row: the support's sums.
        let s = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(soft_kmeans(&s, &[0.6, 0.8], 2, 2, 10.0, 0), s.to_vec());
        assert_eq!(soft_kmeans(&s, &[], 2, 2, 10.0, 5), s.to_vec());
    }

    /// Two well-separated clusters whose support examples sit off-centre: the refined
    /// prototypes move to the clusters' centres.
    #[test]
    fn soft_kmeans_moves_prototypes_to_the_clusters() {
        let dim = 2;
        // Support: one example each, 30° off the true centres (0° and 90°).
        let a = core::f32::consts::PI / 6.0;
        let sums = [libm::cosf(a), libm::sinf(a), libm::sinf(a), libm::cosf(a)];
        let mut unl = vec![];
        for i in 0..20 {
            let t = (i as f32 - 9.5) * 0.01;
            unl.extend([libm::cosf(t), libm::sinf(t)]);
            let t = core::f32::consts::FRAC_PI_2 + t;
            unl.extend([libm::cosf(t), libm::sinf(t)]);
        }
        let r = soft_kmeans(&sums, &unl, dim, 2, 20.0, 10);
        let angle = |c: usize| libm::atan2f(r[c * 2 + 1], r[c * 2]);
        assert!(angle(0).abs() < 0.05, "{}", angle(0));
        assert!((angle(1) - core::f32::consts::FRAC_PI_2).abs() < 0.05);
    }
}
