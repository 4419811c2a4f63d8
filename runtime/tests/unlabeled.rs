//! Learning from unlabeled examples (`adapt::fit_semi`): ncm's prototypes are the soft
//! k-means refinement computed here independently, in f64; the probes' self-training
//! pseudo-labels only what passes the threshold; methods that do not learn from
//! unlabeled examples, and unlabeled taps of another layout, get typed errors.

use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::rng::Rng;
use edgetune::adapt::{self, Kind, Method, Spec, Unlabeled};
use edgetune::Error;

const TOKENS: usize = 4;
const DIM: usize = 6;

/// `n_per` examples of each of 3 classes (a random direction per class, noise, a
/// per-token ramp); labels of the rows are their classes.
fn cache(n_per: usize, seed: u64) -> TapCache {
    let mut c = TapCache::new(
        CacheFormat::F16,
        vec![("t".into(), TapShape::new(TOKENS, DIM))],
    );
    let mut r = Rng::new(99);
    let dirs: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..DIM).map(|_| r.f32() * 2.0 - 1.0).collect())
        .collect();
    let mut r = Rng::new(seed);
    for i in 0..3 * n_per {
        let l = i % 3;
        let x: Vec<f32> = (0..TOKENS * DIM)
            .map(|j| dirs[l][j % DIM] + 1.2 * (r.f32() - 0.5) + 0.1 * (j / DIM) as f32)
            .collect();
        c.push(&[&x[..]], l).unwrap();
    }
    c
}

/// Pooled, unit-norm rows of the cache, in f64.
fn unit_rows(c: &TapCache, idx: &[usize]) -> Vec<Vec<f64>> {
    let mut buf = vec![0.0; TOKENS * DIM];
    idx.iter()
        .map(|&i| {
            c.read(i, 0, &mut buf);
            let mut v = [0.0f64; DIM];
            for row in buf.chunks(DIM) {
                v.iter_mut().zip(row).for_each(|(o, &x)| *o += x as f64);
            }
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect()
        })
        .collect()
}

#[test]
fn ncm_prototypes_are_the_soft_kmeans_refinement() {
    let (sup, unl) = (cache(2, 1), cache(30, 2));
    let idx: Vec<usize> = (0..sup.len()).collect();
    let uidx: Vec<usize> = (0..unl.len()).collect();
    let spec = Spec::new(Kind::Ncm);
    let u = Unlabeled {
        cache: &unl,
        idx: &uidx,
    };
    let m = adapt::fit_semi(&spec, &sup, &[0], &idx, 3, None, Some(u), &mut |_| true).unwrap();
    let Method::Ncm(n) = m else { panic!("not ncm") };
    // The oracle: support sums, then `iters` rounds of softmax(scale·cos) assignments.
    let xs = unit_rows(&sup, &idx);
    let xu = unit_rows(&unl, &uidx);
    let mut base = vec![vec![0.0f64; DIM]; 3];
    for (x, &l) in xs.iter().zip(&sup.labels) {
        base[l].iter_mut().zip(x).for_each(|(s, v)| *s += v);
    }
    let mut cur = base.clone();
    let cfg = &spec.unlabeled;
    for _ in 0..cfg.iters {
        let p: Vec<Vec<f64>> = cur
            .iter()
            .map(|s| {
                let n = s.iter().map(|v| v * v).sum::<f64>().sqrt();
                s.iter().map(|v| v / n).collect()
            })
            .collect();
        let mut next = base.clone();
        for x in &xu {
            let e: Vec<f64> = p
                .iter()
                .map(|q| {
                    (cfg.scale as f64 * q.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()).exp()
                })
                .collect();
            let z: f64 = e.iter().sum();
            for c in 0..3 {
                next[c]
                    .iter_mut()
                    .zip(x)
                    .for_each(|(s, v)| *s += e[c] / z * v);
            }
        }
        cur = next;
    }
    for (c, want) in cur.iter().enumerate() {
        for (j, &b) in want.iter().enumerate() {
            let a = n.sums[c][j] as f64;
            assert!(
                (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                "class {c}[{j}]: {a} vs {b}"
            );
        }
    }
    // The unlabeled examples moved the prototypes.
    let plain = adapt::fit(&spec, &sup, &[0], &idx, 3, &mut |_| true).unwrap();
    assert_ne!(plain, Method::Ncm(n));
}

#[test]
fn self_training_labels_only_what_passes_the_threshold() {
    let (sup, unl) = (cache(2, 3), cache(40, 4));
    let idx: Vec<usize> = (0..sup.len()).collect();
    let uidx: Vec<usize> = (0..unl.len()).collect();
    for kind in [Kind::Linear, Kind::Moment] {
        let mut spec = Spec::new(kind).seed(5);
        let u = Some(Unlabeled {
            cache: &unl,
            idx: &uidx,
        });
        let plain = adapt::fit(&spec, &sup, &[0], &idx, 3, &mut |_| true).unwrap();
        // A probability never passes 1: nothing is pseudo-labelled, the fit is the plain one.
        spec.unlabeled.threshold = 1.0;
        let none = adapt::fit_semi(&spec, &sup, &[0], &idx, 3, None, u, &mut |_| true).unwrap();
        assert_eq!(none, plain, "{kind:?}");
        // With pseudo-labels the probe is refitted: more fits report progress.
        spec.unlabeled.threshold = 0.0;
        let mut fits = 0;
        let semi = adapt::fit_semi(&spec, &sup, &[0], &idx, 3, None, u, &mut |p| {
            fits += (p.step == 1) as usize;
            true
        })
        .unwrap();
        assert!(fits > 1, "{kind:?}: {fits} fit(s)");
        assert_ne!(semi, plain, "{kind:?}");
        // Self-training on clean clusters helps (or keeps) accuracy on fresh examples.
        let test = cache(50, 6);
        let acc = |m: &Method| {
            let mut buf = vec![0.0; TOKENS * DIM];
            let mut s = vec![0.0; 3];
            let dims = [TapShape::new(TOKENS, DIM)];
            (0..test.len())
                .filter(|&i| {
                    test.read(i, 0, &mut buf);
                    m.scores(&[&buf[..]], &dims, &mut s).unwrap();
                    adapt::argmax(&s) == test.labels[i]
                })
                .count() as f64
                / test.len() as f64
        };
        assert!(
            acc(&semi) >= acc(&plain) - 0.02,
            "{kind:?}: {} vs {}",
            acc(&semi),
            acc(&plain)
        );
    }
}

#[test]
fn unlabeled_examples_are_refused_where_they_cannot_be_used() {
    let (sup, unl) = (cache(3, 1), cache(3, 2));
    let idx: Vec<usize> = (0..sup.len()).collect();
    let uidx: Vec<usize> = (0..unl.len()).collect();
    let u = Some(Unlabeled {
        cache: &unl,
        idx: &uidx,
    });
    let r = adapt::fit_semi(
        &Spec::new(Kind::Ladder),
        &sup,
        &[0],
        &idx,
        3,
        None,
        u,
        &mut |_| true,
    );
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    // Unlabeled taps of another shape.
    let other = TapCache::new(CacheFormat::F16, vec![("t".into(), TapShape::new(2, DIM))]);
    let r = adapt::fit_semi(
        &Spec::new(Kind::Ncm),
        &sup,
        &[0],
        &idx,
        3,
        None,
        Some(Unlabeled {
            cache: &other,
            idx: &[],
        }),
        &mut |_| true,
    );
    // No rows: nothing to check, a plain fit.
    assert!(r.is_ok());
    let r = adapt::fit_semi(
        &Spec::new(Kind::Ncm),
        &sup,
        &[0],
        &idx,
        3,
        None,
        Some(Unlabeled {
            cache: &other,
            idx: &[0],
        }),
        &mut |_| true,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    // A row past the end of the unlabeled cache.
    let r = adapt::fit_semi(
        &Spec::new(Kind::Ncm),
        &sup,
        &[0],
        &idx,
        3,
        None,
        Some(Unlabeled {
            cache: &unl,
            idx: &[unl.len()],
        }),
        &mut |_| true,
    );
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
}
