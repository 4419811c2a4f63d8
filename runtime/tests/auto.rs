//! The automatic method choice (`session::auto`): its held-out accuracy and log-loss
//! are the leave-one-shot-out ones computed here by hand; it picks the candidate or
//! ensemble with the lowest log-loss; in `eval` its choices do not change when every
//! query image is replaced by noise (it never reads them) while the accuracy it is scored
//! with does; a `Session` adopts the pick; budgets and too few examples give typed
//! errors.

use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::rng::Rng;
use edgetune::adapt::Kind;
use edgetune::import::{import_path, ImportOptions};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::session::auto::{choose, AutoConfig};
use edgetune::session::eval::{draw, episodes};
use edgetune::session::{Image, Options, Sample, Session};
use edgetune::Error;
use std::path::Path;

mod common;
use common::fashion;

const TOKENS: usize = 3;
const DIM: usize = 8;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The tiny Fashion-MNIST CNN with its grey 28×28 preprocessing.
fn tiny_plan() -> Plan<'static> {
    let opts = ImportOptions {
        meta: vec![("preprocess".into(), "image:28:127:128:1".into())],
        ..Default::default()
    };
    let parts = import_path(&root().join("models/tiny_cnn_fmnist04_int8.onnx"), &opts).unwrap();
    Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap()
}

/// `shots` examples of each of 3 classes whose means are close: a random direction per
/// class plus wide noise and a per-token ramp.
fn cache(shots: usize) -> TapCache {
    let mut c = TapCache::new(
        CacheFormat::F16,
        vec![("t".into(), TapShape::new(TOKENS, DIM))],
    );
    let mut r = Rng::new(7);
    let dirs: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..DIM).map(|_| r.f32() * 2.0 - 1.0).collect())
        .collect();
    for s in 0..shots {
        for (l, d) in dirs.iter().enumerate() {
            let x: Vec<f32> = (0..TOKENS * DIM)
                .map(|j| {
                    d[j % DIM] + 8.0 * (r.f32() - 0.5) + 0.2 * (j / DIM) as f32 + 0.01 * s as f32
                })
                .collect();
            c.push(&[&x[..]], l).unwrap();
        }
    }
    c
}

/// Leave-one-shot-out accuracy of the nearest class mean, by hand in f64: prototypes are
/// sums of unit-norm pooled features, scored by cosine.
fn ncm_folds_by_hand(c: &TapCache, groups: &[usize], folds: usize) -> f64 {
    ncm_scores_by_hand(c, groups, folds).0
}

/// [`ncm_folds_by_hand`] and each held-out example's cosines with its true class, fold
/// by fold.
fn ncm_scores_by_hand(
    c: &TapCache,
    groups: &[usize],
    folds: usize,
) -> (f64, Vec<([f64; 3], usize)>) {
    let mut buf = vec![0.0; TOKENS * DIM];
    let unit: Vec<Vec<f64>> = (0..c.len())
        .map(|i| {
            c.read(i, 0, &mut buf);
            let mut v = [0.0f64; DIM];
            for row in buf.chunks(DIM) {
                v.iter_mut().zip(row).for_each(|(o, &x)| *o += x as f64);
            }
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect()
        })
        .collect();
    // Each class's examples in order.
    let mut per: Vec<Vec<usize>> = vec![vec![]; 3];
    for (r, &g) in groups.iter().enumerate() {
        if !per[c.labels[r]].contains(&g) {
            per[c.labels[r]].push(g);
        }
    }
    let (mut ok, mut n) = (0, 0);
    let mut held = vec![];
    for f in 0..folds {
        let out: Vec<usize> = per.iter().map(|v| v[f]).collect();
        let mut proto = vec![vec![0.0f64; DIM]; 3];
        for r in 0..c.len() {
            if !out.contains(&groups[r]) {
                proto[c.labels[r]]
                    .iter_mut()
                    .zip(&unit[r])
                    .for_each(|(p, x)| *p += x);
            }
        }
        for (cl, &g) in out.iter().enumerate() {
            let r = groups.iter().position(|&x| x == g).unwrap();
            let cos: Vec<f64> = proto
                .iter()
                .map(|p| {
                    let pn = p.iter().map(|x| x * x).sum::<f64>().sqrt();
                    p.iter().zip(&unit[r]).map(|(a, b)| a * b).sum::<f64>() / pn
                })
                .collect();
            let best = (0..3).max_by(|&a, &b| cos[a].total_cmp(&cos[b])).unwrap();
            ok += (best == cl) as usize;
            n += 1;
            held.push(([cos[0], cos[1], cos[2]], cl));
        }
    }
    (ok as f64 / n as f64, held)
}

/// The lowest mean −log softmax(a·s)[class] over a ∈ [e^-6, e^8] on a grid of 14 001
/// points in log a, in f64.
fn nll_by_grid(held: &[([f64; 3], usize)]) -> f64 {
    (0..=14_000)
        .map(|i| {
            let a = (-6.0 + i as f64 * 1e-3).exp();
            held.iter()
                .map(|(s, c)| {
                    let m = s.iter().fold(f64::MIN, |m, &x| m.max(a * x));
                    m + s.iter().map(|&x| (a * x - m).exp()).sum::<f64>().ln() - a * s[*c]
                })
                .sum::<f64>()
                / held.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn tap_opts() -> Options {
    Options {
        taps: Some(vec!["t".into()]),
        ..Default::default()
    }
}

#[test]
fn held_out_accuracy_is_leave_one_shot_out_and_the_best_is_picked() {
    let plan = tiny_plan();
    let c = cache(5);
    // Every row its own example; then every example with an augmented view (its rows
    // must leave the training set together, which the by-hand folds also do).
    let groups: Vec<usize> = (0..c.len()).collect();
    let cfg = AutoConfig {
        candidates: vec![Kind::Ncm, Kind::Linear],
        folds: 4,
        ensembles: true,
        ..Default::default()
    };
    let ch = choose(&plan, &tap_opts(), &c, &groups, 3, None, &cfg, 0, 0).unwrap();
    assert_eq!(ch.folds, 4);
    assert_eq!(ch.held_out, 12);
    let ncm = ch.trials.iter().find(|t| t.cand.kind == Kind::Ncm).unwrap();
    let want = ncm_folds_by_hand(&c, &groups, 4);
    // Not a trivial task: some held-out examples are missed.
    assert!(want < 1.0 && want > 0.3, "{want}");
    assert_eq!(ncm.acc, Some(want), "ncm's held-out accuracy");
    // ncm, then linear with C = 1, 10, 100.
    let labels: Vec<String> = ch.trials.iter().map(|t| t.cand.label()).collect();
    assert_eq!(labels, ["ncm", "linear C=1", "linear C=10", "linear C=100"]);
    // ncm's held-out log-loss at its best scale: a grid search in f64 over its cosines
    // by hand.
    let (_, held) = ncm_scores_by_hand(&c, &groups, 4);
    let want_nll = nll_by_grid(&held);
    let got_nll = ncm.nll.unwrap();
    assert!(
        (got_nll - want_nll).abs() < 1e-4 * want_nll.max(1e-3),
        "ncm held-out log-loss {got_nll} against {want_nll} by hand"
    );
    assert!(
        !ch.ensembles.is_empty(),
        "ncm and linear read the same taps"
    );
    // The pick has the lowest log-loss of every candidate and ensemble, and is the
    // first with it.
    let all: Vec<(Vec<usize>, f64, f64)> = ch
        .trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((vec![i], t.acc?, t.nll?)))
        .chain(
            ch.ensembles
                .iter()
                .map(|e| (e.members.clone(), e.acc, e.nll)),
        )
        .collect();
    assert_eq!(all.len(), 4 + ch.ensembles.len());
    let lowest = all.iter().map(|a| a.2).fold(f64::INFINITY, f64::min);
    let first = all.iter().find(|a| a.2 == lowest).unwrap();
    assert_eq!(ch.nll, lowest, "{}", ch.why());
    assert_eq!(ch.acc, first.1, "{}", ch.why());
    let names: Vec<_> = first.0.iter().map(|&i| ch.trials[i].cand.clone()).collect();
    assert_eq!(ch.pick, names, "{}", ch.why());
    // Candidates do differ in log-loss (the choice is not decided by the order alone).
    assert!(all.iter().any(|a| a.2 > lowest + 1e-3), "{}", ch.why());
    // Pairs of rows from one example: the same folds hold out both.
    let mut c2 = TapCache::new(c.format, c.named());
    let mut g2 = vec![];
    let mut buf = vec![0.0; TOKENS * DIM];
    for r in 0..c.len() {
        c.read(r, 0, &mut buf);
        for _ in 0..2 {
            c2.push(&[&buf[..]], c.labels[r]).unwrap();
            g2.push(r);
        }
    }
    let ch2 = choose(&plan, &tap_opts(), &c2, &g2, 3, None, &cfg, 0, 0).unwrap();
    assert_eq!(ch2.held_out, 12);
    let ncm2 = ch2
        .trials
        .iter()
        .find(|t| t.cand.kind == Kind::Ncm)
        .unwrap();
    // Duplicated rows double every prototype sum: the same predictions.
    assert_eq!(ncm2.acc, Some(ncm_folds_by_hand(&c2, &g2, 4)));
    assert_eq!(ncm2.acc, Some(want));
}

#[test]
fn budgets_and_too_few_examples_are_typed_errors() {
    let plan = tiny_plan();
    let c = cache(3);
    let groups: Vec<usize> = (0..c.len()).collect();
    let tight = AutoConfig {
        candidates: vec![Kind::Ncm, Kind::Linear],
        max_memory: Some(1),
        ..Default::default()
    };
    match choose(&plan, &tap_opts(), &c, &groups, 3, None, &tight, 0, 0) {
        Err(Error::Invalid { what }) => assert!(what.contains("budget"), "{what}"),
        other => panic!("expected a budget error, got {:?}", other.map(|c| c.why())),
    }
    let spent = AutoConfig {
        candidates: vec![Kind::Ncm],
        budget_s: Some(1e-12),
        ..Default::default()
    };
    match choose(&plan, &tap_opts(), &c, &groups, 3, None, &spent, 0, 0) {
        Err(Error::Invalid { what }) => assert!(what.contains("budget"), "{what}"),
        other => panic!("expected a budget error, got {:?}", other.map(|c| c.why())),
    }
    // One example of class 0 (each class needs one to train on and one to hold out).
    let mut one = TapCache::new(c.format, c.named());
    let mut buf = vec![0.0; TOKENS * DIM];
    let mut g = vec![];
    for r in 0..c.len() {
        if c.labels[r] == 0 && r > 2 {
            continue;
        }
        c.read(r, 0, &mut buf);
        one.push(&[&buf[..]], c.labels[r]).unwrap();
        g.push(r);
    }
    let cfg = AutoConfig::default();
    match choose(&plan, &tap_opts(), &one, &g, 3, None, &cfg, 0, 0) {
        Err(Error::Invalid { what }) => assert!(what.contains("at least 2"), "{what}"),
        other => panic!(
            "expected too few examples, got {:?}",
            other.map(|c| c.why())
        ),
    }
    assert!(choose(&plan, &tap_opts(), &c, &groups[1..], 3, None, &cfg, 0, 0).is_err());
}

/// The choice line without its time.
fn untimed(s: &str) -> String {
    s.rsplit_once("; ")
        .map_or(s.to_string(), |(a, _)| a.to_string())
}

#[test]
fn eval_choices_never_read_the_query_set() {
    let plan = tiny_plan();
    let data = fashion();
    let cfg = AutoConfig {
        candidates: vec![Kind::Ncm, Kind::Linear, Kind::Moment],
        folds: 2,
        ..Default::default()
    };
    let opts = Options::default();
    let by_class: Vec<Vec<usize>> = (0..10)
        .map(|c| (0..data.len()).filter(|&i| data[i].1 == c).collect())
        .collect();
    let mut noise = Rng::new(5);
    for seed in [0u64, 1] {
        let run = |d: &[(Sample, usize)]| {
            let (res, _) = episodes(
                &plan,
                d,
                10,
                &[],
                5,
                3,
                1,
                seed,
                &opts,
                0,
                0,
                Some(&cfg),
                None,
                &mut |_, _| {},
            )
            .unwrap();
            assert_eq!(res.len(), 1);
            let choices = res[0].auto.clone().unwrap();
            assert_eq!(choices.len(), 1);
            (untimed(&choices[0]), res[0].acc[0])
        };
        let (chose, acc) = run(&data);
        // Every query image of this episode becomes noise; support untouched.
        let d = draw(&by_class, 10, 5, 3, 0, seed).unwrap();
        let mut poisoned = data.clone();
        for &(i, _) in &d.query {
            let px: Vec<u8> = (0..784).map(|_| (noise.f32() * 255.0) as u8).collect();
            poisoned[i].0 = Sample::Image(Image {
                px,
                w: 28,
                h: 28,
                c: 1,
            });
        }
        let (chose2, acc2) = run(&poisoned);
        assert_eq!(
            chose, chose2,
            "episode seed {seed}: the choice read the query set"
        );
        assert!(
            acc > acc2 + 0.1,
            "episode seed {seed}: noise queries should score worse ({acc} vs {acc2})"
        );
    }
}

#[test]
fn a_session_adopts_the_pick() {
    let data = fashion();
    let mut s = Session::new(tiny_plan()).unwrap();
    // Three classes, four examples each.
    let mut n = [0usize; 3];
    for (x, l) in &data {
        if *l < 3 && n[*l] < 4 {
            n[*l] += 1;
            s.enrol(x.clone(), &format!("c{l}")).unwrap();
        }
    }
    let cfg = AutoConfig {
        candidates: vec![Kind::Ncm, Kind::Moment],
        folds: 2,
        ..Default::default()
    };
    let ch = s.choose_method(&cfg).unwrap();
    assert_eq!(ch.pick.len(), 1, "an adapter holds one head");
    assert_eq!(s.method(), ch.pick[0].kind, "{}", ch.why());
    let best = ch
        .trials
        .iter()
        .filter_map(|t| t.acc)
        .fold(f64::MIN, f64::max);
    assert_eq!(ch.acc, best);
    s.fit(&mut |_| true).unwrap();
    assert_eq!(s.adapter().unwrap().method.kind(), ch.pick[0].kind);
    if let Some(c) = ch.pick[0].c {
        assert_eq!(s.opts.c, Some(c));
    }
    // One class with a single example: refused, and the session is unchanged.
    let mut t = Session::new(tiny_plan()).unwrap();
    t.enrol(data[0].0.clone(), "a").unwrap();
    let other = data.iter().find(|d| d.1 != data[0].1).unwrap();
    t.enrol(other.0.clone(), "b").unwrap();
    t.enrol(other.0.clone(), "b").unwrap();
    assert!(matches!(t.choose_method(&cfg), Err(Error::Invalid { .. })));
    assert_eq!(t.method(), Kind::Linear);
}
