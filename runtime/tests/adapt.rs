//! Every adaptation method on a synthetic tap cache: it learns, its adapter file round
//! trips with identical predictions, the same seed gives the same bytes, and bad input
//! gets a typed error.

use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::rng::Rng;
use edgetune::adapt::{self, Adapter, Kind, Spec};
use edgetune::Error;

const TAPS: [(usize, usize); 3] = [(9, 6), (4, 8), (1, 5)];

/// Three classes; each shifts a different random direction of every tap, plus noise.
fn cache(n_per: usize, seed: u64, fmt: CacheFormat) -> TapCache {
    let shapes = TAPS
        .iter()
        .enumerate()
        .map(|(i, &(tokens, dim))| (format!("t{i}"), TapShape::new(tokens, dim)))
        .collect();
    let mut c = TapCache::new(fmt, shapes);
    let mut r = Rng::new(seed);
    let dirs: Vec<Vec<Vec<f32>>> = (0..3)
        .map(|_| {
            TAPS.iter()
                .map(|&(_, d)| (0..d).map(|_| r.f32() * 2.0 - 1.0).collect())
                .collect()
        })
        .collect();
    for i in 0..3 * n_per {
        let label = i % 3;
        let taps: Vec<Vec<f32>> = TAPS
            .iter()
            .enumerate()
            .map(|(t, &(tokens, d))| {
                (0..tokens * d)
                    .map(|j| {
                        dirs[label][t][j % d]
                            + 0.6 * (r.f32() - 0.5)
                            + 0.3 * (j / d) as f32 / tokens as f32
                    })
                    .collect()
            })
            .collect();
        let v: Vec<&[f32]> = taps.iter().map(|t| &t[..]).collect();
        c.push(&v, label).unwrap();
    }
    c
}

fn sel(kind: Kind) -> Vec<usize> {
    match kind {
        Kind::Ncm | Kind::Linear | Kind::Moment => vec![1],
        _ => vec![0, 1, 2],
    }
}

fn adapter(c: &TapCache, kind: Kind, seed: u64, idx: &[usize]) -> Adapter {
    let s = sel(kind);
    let m = adapt::fit(&Spec::new(kind).seed(seed), c, &s, idx, 3, &mut |_| true).unwrap();
    Adapter {
        plan_hash: [3; 16],
        taps: s
            .iter()
            .map(|&i| {
                (
                    c.names[i].clone(),
                    TapShape {
                        tokens: c.taps[i].tokens,
                        dim: c.taps[i].dim,
                    },
                )
            })
            .collect(),
        classes: vec!["a".into(), "b".into(), "c".into()],
        hyper: vec![],
        method: m,
    }
}

fn accuracy(a: &Adapter, c: &TapCache, idx: &[usize]) -> f64 {
    let dims: Vec<TapShape> = a.taps.iter().map(|t| t.1).collect();
    let s: Vec<usize> = a.taps.iter().map(|t| c.tap_index(&t.0).unwrap()).collect();
    let mut bufs: Vec<Vec<f32>> = s.iter().map(|&i| vec![0.0; c.taps[i].len()]).collect();
    let mut scores = vec![0.0; 3];
    let mut ok = 0;
    for &i in idx {
        for (b, &t) in bufs.iter_mut().zip(&s) {
            c.read(i, t, b);
        }
        let v: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
        a.method.scores(&v, &dims, &mut scores).unwrap();
        ok += (adapt::argmax(&scores) == c.labels[i]) as usize;
    }
    ok as f64 / idx.len() as f64
}

#[test]
fn every_method_learns_and_round_trips() {
    for fmt in [CacheFormat::F16, CacheFormat::I8] {
        let c = cache(12, 1, fmt);
        let (train, test): (Vec<usize>, Vec<usize>) = (0..c.len()).partition(|i| i % 4 != 0);
        // The tail methods need a plan: tests/tail.rs covers them.
        for kind in Kind::ALL.into_iter().filter(|k| !k.is_tail()) {
            let a = adapter(&c, kind, 7, &train);
            let acc = accuracy(&a, &c, &test);
            assert!(acc >= 0.9, "{kind:?} {fmt:?}: held-out accuracy {acc}");
            let back = Adapter::from_bytes(&a.to_bytes(), &[3; 16]).unwrap();
            assert_eq!(back, a, "{kind:?}");
            assert_eq!(accuracy(&back, &c, &test), acc);
        }
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_weights() {
    let c = cache(6, 2, CacheFormat::F16);
    let idx: Vec<usize> = (0..c.len()).collect();
    for kind in [Kind::Linear, Kind::Ladder, Kind::Query] {
        let a = adapter(&c, kind, 5, &idx).to_bytes();
        assert_eq!(a, adapter(&c, kind, 5, &idx).to_bytes(), "{kind:?}");
        if kind != Kind::Linear {
            assert_ne!(
                a,
                adapter(&c, kind, 6, &idx).to_bytes(),
                "{kind:?}: seed ignored"
            );
        }
    }
}

#[test]
fn sgd_holdout_and_cancel() {
    let c = cache(6, 3, CacheFormat::F16);
    let idx: Vec<usize> = (0..c.len()).collect();
    let mut spec = Spec::new(Kind::Ladder).seed(1);
    spec.train.optimizer = adapt::train::Optimizer::Sgd { momentum: 0.9 };
    spec.train.lr = 0.05;
    spec.train.holdout = true;
    let mut steps = 0;
    adapt::fit(&spec, &c, &[0, 1, 2], &idx, 3, &mut |_| {
        steps += 1;
        true
    })
    .unwrap();
    assert!(steps > 0 && steps <= spec.train.steps);
    let r = adapt::fit(&spec, &c, &[0, 1, 2], &idx, 3, &mut |p| p.step < 3);
    assert!(matches!(r, Err(Error::Cancelled { step: 3 })), "{r:?}");
}

#[test]
fn diverging_loss_is_a_typed_error() {
    let c = cache(4, 4, CacheFormat::F16);
    let idx: Vec<usize> = (0..c.len()).collect();
    let mut spec = Spec::new(Kind::Query).seed(1);
    spec.train.lr = 1e30;
    spec.train.warmup = 0;
    let r = adapt::fit(&spec, &c, &[0, 1], &idx, 3, &mut |_| true);
    assert!(matches!(r, Err(Error::Diverged { .. })), "{r:?}");
}

#[test]
fn one_class_or_an_empty_class_is_refused() {
    let c = cache(4, 5, CacheFormat::F16);
    let only0: Vec<usize> = (0..c.len()).filter(|&i| c.labels[i] == 0).collect();
    let no2: Vec<usize> = (0..c.len()).filter(|&i| c.labels[i] != 2).collect();
    for kind in Kind::ALL.into_iter().filter(|k| !k.is_tail()) {
        let s = sel(kind);
        for idx in [&only0, &no2] {
            let r = adapt::fit(&Spec::new(kind), &c, &s, idx, 3, &mut |_| true);
            assert!(matches!(r, Err(Error::Invalid { .. })), "{kind:?}: {r:?}");
        }
    }
}

#[test]
fn adapter_with_wrong_tap_shapes_is_refused_at_scoring() {
    let c = cache(4, 6, CacheFormat::F16);
    let idx: Vec<usize> = (0..c.len()).collect();
    let a = adapter(&c, Kind::Ladder, 1, &idx);
    let dims: Vec<TapShape> = a.taps.iter().map(|t| t.1).collect();
    let short = vec![0.0; 3];
    let r = a
        .method
        .scores(&[&short, &short, &short], &dims, &mut [0.0; 3]);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
}
