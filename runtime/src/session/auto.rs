//! Choosing the method, and its key hyper-parameters, on the support set alone.
//!
//! Leave-one-shot-out folds: fold `f` holds out the `f`-th example of every class (its
//! original, and its augmented views leave the training rows with it), trains each
//! candidate on the other examples and scores the held-out ones. Each candidate, and each
//! ensemble of the two and three most accurate candidates that read the same cached taps
//! (their class scores standardised per example and summed), is scored by its held-out
//! log-loss: the mean of −log softmax(a·s)[true class] over the held-out examples, at
//! the scale `a` of its scores that makes it lowest (a cosine and a logit have scales of
//! their own). The lowest log-loss wins; a tie goes to the earlier, cheaper candidate.
//! Counting held-out examples right cannot tell most candidates apart with 5 shots (25
//! to 50 held-out examples, many candidates within one or two of each other); the
//! log-loss also weighs how sure each candidate is of the right class. The query set is
//! not an argument of [`choose`]: nothing it could read depends on it.
//!
//! Candidates, in order: each method asked for; `linear` and `moment` with C = 1, 10
//! and 100 (unless C is fixed in the options); and, when unlabeled examples are given,
//! the methods that learn from them ([`Kind::uses_unlabeled`]) with them too. A time
//! budget stops a candidate whose first fold shows that its folds and the final fit
//! would not end within it; a memory budget skips a candidate whose training peak is
//! over it. Both are reported per candidate.

use super::options::Options;
use crate::adapt::cache::{CacheFormat, NamedTap, TapCache, TapShape};
use crate::adapt::{self, Kind, Method, Unlabeled};
use crate::plan::Plan;
use crate::{Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use std::time::Instant;

/// What [`choose`] may try, and within what.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoConfig {
    /// Methods to choose from (default: all).
    pub candidates: Vec<Kind>,
    /// Held-out folds (at most the fewest examples of a class; default 5).
    pub folds: usize,
    /// Wall seconds for choosing (all folds of all candidates) and the final fit.
    pub budget_s: Option<f64>,
    /// Training peak a candidate may need, in bytes (cache, arena, training state).
    pub max_memory: Option<usize>,
    /// Whether ensembles of the best candidates are candidates too.
    pub ensembles: bool,
}

impl Default for AutoConfig {
    fn default() -> Self {
        AutoConfig {
            candidates: Kind::ALL.to_vec(),
            folds: 5,
            budget_s: None,
            max_memory: None,
            ensembles: true,
        }
    }
}

/// One candidate: a method, its C (linear and moment probes) and whether it learns from
/// the unlabeled examples.
#[derive(Clone, Debug, PartialEq)]
pub struct Cand {
    pub kind: Kind,
    pub c: Option<f32>,
    pub unlabeled: bool,
}

impl Cand {
    pub fn label(&self) -> String {
        let mut s = self.kind.name().to_string();
        if let Some(c) = self.c {
            s += &format!(" C={c}");
        }
        if self.unlabeled {
            s += "+unlabeled";
        }
        s
    }

    /// `opts` with this candidate's settings.
    pub fn options(&self, opts: &Options) -> Options {
        let mut o = opts.clone();
        if self.c.is_some() {
            o.c = self.c;
        }
        o
    }

    /// What the candidate caches: taps, their reduction and precision. Candidates with
    /// the same layout can be served from one cache, so only they form ensembles.
    fn layout(&self, plan: &Plan, opts: &Options) -> (Vec<String>, super::Reduce, CacheFormat) {
        (
            opts.taps_for(plan, self.kind),
            opts.reduce_for(self.kind),
            opts.cache_for(self.kind),
        )
    }
}

/// One candidate's outcome on the folds.
#[derive(Clone, Debug)]
pub struct Trial {
    pub cand: Cand,
    /// Held-out accuracy over every fold; `None` when it was not tried to the end.
    pub acc: Option<f64>,
    /// Held-out log-loss over every fold at the scale of its scores that fits them best
    /// (see [`held_out_nll`]); `None` when it was not tried to the end.
    pub nll: Option<f64>,
    /// Seconds its folds took.
    pub secs: f64,
    /// Its training peak on the whole support set, in bytes.
    pub peak: usize,
    /// Why it was skipped or stopped, if it was.
    pub note: String,
}

/// An ensemble of candidates that read the same cached taps, and its held-out scores.
#[derive(Clone, Debug)]
pub struct Ensemble {
    /// Indices into [`Choice::trials`].
    pub members: Vec<usize>,
    /// Held-out accuracy.
    pub acc: f64,
    /// Held-out log-loss at its best scale.
    pub nll: f64,
}

/// What [`choose`] picked and why.
#[derive(Clone, Debug)]
pub struct Choice {
    /// One candidate, or the members of the winning ensemble.
    pub pick: Vec<Cand>,
    /// The pick's held-out accuracy.
    pub acc: f64,
    /// The pick's held-out log-loss, the lowest of all tried.
    pub nll: f64,
    pub trials: Vec<Trial>,
    /// Ensembles tried.
    pub ensembles: Vec<Ensemble>,
    pub folds: usize,
    /// Held-out examples over all folds.
    pub held_out: usize,
    /// Seconds the choice took.
    pub secs: f64,
}

impl Choice {
    /// The pick's name: one candidate's label, or `a + b` for an ensemble.
    pub fn label(&self) -> String {
        self.pick
            .iter()
            .map(|c| c.label())
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// One line: the pick, its held-out log-loss and accuracy, every candidate's and
    /// ensemble's, and the candidates that were skipped or stopped, with why.
    pub fn why(&self) -> String {
        let tried: Vec<String> = self
            .trials
            .iter()
            .filter_map(|t| {
                let (a, n) = (t.acc?, t.nll?);
                Some(format!("{} {n:.3}/{a:.3}", t.cand.label()))
            })
            .chain(self.ensembles.iter().map(|e| {
                let names: Vec<String> = e
                    .members
                    .iter()
                    .map(|&i| self.trials[i].cand.label())
                    .collect();
                format!("{} {:.3}/{:.3}", names.join(" + "), e.nll, e.acc)
            }))
            .collect();
        let mut s = format!(
            "{}: the lowest held-out log-loss (log-loss/accuracy {:.3}/{:.3} on {} held-out examples, {} folds); tried {}",
            self.label(),
            self.nll,
            self.acc,
            self.held_out,
            self.folds,
            tried.join(", ")
        );
        for t in self.trials.iter().filter(|t| !t.note.is_empty()) {
            s += &format!("; {} {}", t.cand.label(), t.note);
        }
        s + &format!("; {:.1} s", self.secs)
    }
}

/// The candidates of `cfg`, in the order they are tried.
pub fn candidates(cfg: &AutoConfig, opts: &Options, unlabeled: bool) -> Vec<Cand> {
    let mut out = vec![];
    for k in Kind::ALL.into_iter().filter(|k| cfg.candidates.contains(k)) {
        if matches!(k, Kind::Linear | Kind::Moment) && opts.c.is_none() {
            for c in [1.0, 10.0, 100.0] {
                out.push(Cand {
                    kind: k,
                    c: Some(c),
                    unlabeled: false,
                });
            }
        } else {
            out.push(Cand {
                kind: k,
                c: None,
                unlabeled: false,
            });
        }
        if unlabeled && k.uses_unlabeled() {
            out.push(Cand {
                kind: k,
                c: None,
                unlabeled: true,
            });
        }
    }
    out
}

/// Sums the class scores of an ensemble's members, each standardised over the classes
/// first (zero mean, unit deviation), so members whose scores have other scales (cosine
/// similarities, logits) weigh the same.
pub fn ensemble_scores(members: &[&[f32]], out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for s in members {
        let n = s.len().min(out.len()).max(1);
        let m = s[..n].iter().sum::<f32>() / n as f32;
        let v = s[..n].iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n as f32;
        let sd = v.sqrt();
        if sd.is_nan() || sd <= 1e-12 {
            continue;
        }
        for (o, x) in out.iter_mut().zip(&s[..n]) {
            *o += (x - m) / sd;
        }
    }
}

fn invalid(what: String) -> Error {
    Error::Invalid { what }
}

/// The training peak of `cand` on `rows` support rows (and `unl` unlabeled rows) cached
/// as the session caches them, with the backbone's `arena`.
fn peak_of(
    plan: &Plan,
    opts: &Options,
    cand: &Cand,
    spec: &adapt::Spec,
    full: &[NamedTap],
    rows: usize,
    unl: usize,
    classes: usize,
    arena: usize,
) -> usize {
    let probe = TapCache::new(
        opts.cache_for(cand.kind),
        opts.reduce_for(cand.kind).shapes(full),
    );
    let sel: Vec<usize> = (0..full.len()).collect();
    let per = probe.bytes_per_example();
    let _ = plan;
    adapt::fit_memory(spec, &probe, &sel, rows, classes)
        + (rows + if cand.unlabeled { unl } else { 0 }) * per
        + arena
}

/// Trains `cand` on the rows `idx` of `sup` (and the unlabeled examples if it uses them).
pub fn fit_cand(
    plan: &Plan,
    opts: &Options,
    cand: &Cand,
    sup: &TapCache,
    idx: &[usize],
    classes: usize,
    unl: Option<Unlabeled>,
    seed: u64,
) -> Result<(Method, Vec<usize>)> {
    let o = cand.options(opts);
    let names = o.taps_for(plan, cand.kind);
    let sel = names
        .iter()
        .map(|n| sup.tap_index(n))
        .collect::<Result<Vec<_>>>()?;
    let spec = o.spec(plan, cand.kind, seed)?;
    let u = if cand.unlabeled { unl } else { None };
    let m = adapt::fit_semi(&spec, sup, &sel, idx, classes, None, u, &mut |_| true)?;
    Ok((m, sel))
}

/// Class scores of row `r` of `cache` by `m`, which reads the taps `sel` of it.
pub fn score_row(
    m: &Method,
    cache: &TapCache,
    sel: &[usize],
    r: usize,
    bufs: &mut [Vec<f32>],
    out: &mut [f32],
) -> Result<()> {
    for (b, &s) in bufs.iter_mut().zip(sel) {
        b.resize(cache.taps[s].len(), 0.0);
        cache.read(r, s, b);
    }
    let v: Vec<&[f32]> = bufs[..sel.len()].iter().map(|b| &b[..]).collect();
    let dims: Vec<TapShape> = sel.iter().map(|&s| cache.taps[s]).collect();
    m.scores(&v, &dims, out)
}

/// Chooses among `cfg`'s candidates on the support set `sup` alone: its rows hold every
/// tap any candidate reads, whole (`Reduce::Full`), with labels `0..classes`; `groups[r]`
/// is the example row `r` was cached from (its original first, then its augmented
/// views). `unl` are unlabeled examples (in a cache of the same taps), `arena` the
/// backbone's arena bytes (counted in each candidate's peak).
#[allow(clippy::too_many_arguments)]
pub fn choose(
    plan: &Plan,
    opts: &Options,
    sup: &TapCache,
    groups: &[usize],
    classes: usize,
    unl: Option<Unlabeled>,
    cfg: &AutoConfig,
    seed: u64,
    arena: usize,
) -> Result<Choice> {
    let start = Instant::now();
    if groups.len() != sup.len() {
        return Err(invalid(format!(
            "auto: {} groups for {} cached rows",
            groups.len(),
            sup.len()
        )));
    }
    if cfg.folds == 0 {
        return Err(invalid("auto: at least one fold".into()));
    }
    // Each class's examples in the order they were cached, and each example's rows.
    let mut per_class: Vec<Vec<usize>> = vec![vec![]; classes];
    for (r, &g) in groups.iter().enumerate() {
        let c = sup.labels[r];
        if c >= classes {
            return Err(invalid(format!("auto: label {c} of {classes} classes")));
        }
        if !per_class[c].contains(&g) {
            per_class[c].push(g);
        }
    }
    if let Some((c, v)) = per_class.iter().enumerate().find(|(_, v)| v.len() < 2) {
        return Err(invalid(format!(
            "auto chooses on held-out examples: every class needs at least 2 (class {c} has {})",
            v.len()
        )));
    }
    let folds = cfg
        .folds
        .min(per_class.iter().map(|v| v.len()).min().unwrap_or(0));
    // Fold f: the originals of each class's f-th example are held out, with their views.
    let first_row = |g: usize| groups.iter().position(|&x| x == g).unwrap_or(0);
    let splits: Vec<(Vec<usize>, Vec<(usize, usize)>)> = (0..folds)
        .map(|f| {
            let out: Vec<usize> = per_class.iter().map(|v| v[f]).collect();
            let train = (0..sup.len())
                .filter(|r| !out.contains(&groups[*r]))
                .collect();
            let held = per_class
                .iter()
                .enumerate()
                .map(|(c, v)| (first_row(v[f]), c))
                .collect();
            (train, held)
        })
        .collect();
    let held_out = splits.iter().map(|s| s.1.len()).sum::<usize>();
    let full: Vec<NamedTap> = sup.named();
    let unl_rows = unl.map_or(0, |u| u.idx.len());
    let cands = candidates(cfg, opts, unl_rows > 0);
    if cands.is_empty() {
        return Err(invalid("auto: no candidate methods".into()));
    }
    let mut trials: Vec<Trial> = vec![];
    // Held-out scores per trial: fold-major, `classes` per held-out example.
    let mut scores: Vec<Vec<f32>> = vec![];
    let mut bufs: Vec<Vec<f32>> = vec![vec![]; sup.taps.len()];
    let mut out = vec![0.0f32; classes];
    for cand in cands {
        let mut t = Trial {
            cand: cand.clone(),
            acc: None,
            nll: None,
            secs: 0.0,
            peak: 0,
            note: String::new(),
        };
        let o = cand.options(opts);
        let spec = o
            .taps_for(plan, cand.kind)
            .iter()
            .map(|n| sup.tap_index(n))
            .collect::<Result<Vec<_>>>()
            .and_then(|sel| {
                let s = o.spec(plan, cand.kind, seed)?;
                let named: Vec<NamedTap> = sel.iter().map(|&i| full[i].clone()).collect();
                Ok((s, named))
            });
        let (spec, named) = match spec {
            Ok(s) => s,
            Err(e) => {
                t.note = format!("not available: {e}");
                trials.push(t);
                scores.push(vec![]);
                continue;
            }
        };
        t.peak = peak_of(
            plan,
            &o,
            &cand,
            &spec,
            &named,
            sup.len(),
            unl_rows,
            classes,
            arena,
        );
        if let Some(limit) = cfg.max_memory {
            if t.peak > limit {
                t.note = format!(
                    "skipped: training peak {} B over the {limit} B budget",
                    t.peak
                );
                trials.push(t);
                scores.push(vec![]);
                continue;
            }
        }
        if let Some(b) = cfg.budget_s {
            let now = start.elapsed().as_secs_f64();
            if now >= b {
                t.note = format!("not tried: the {b:.0} s budget was spent ({now:.1} s)");
                trials.push(t);
                scores.push(vec![]);
                continue;
            }
        }
        let mut s = Vec::with_capacity(held_out * classes);
        let mut ok = 0usize;
        let mut failed = None;
        for (f, (train, held)) in splits.iter().enumerate() {
            let t0 = Instant::now();
            let (m, sel) = match fit_cand(plan, opts, &cand, sup, train, classes, unl, seed) {
                Ok(x) => x,
                Err(e) => {
                    failed = Some(format!("failed: {e}"));
                    break;
                }
            };
            for &(r, c) in held {
                score_row(&m, sup, &sel, r, &mut bufs, &mut out)?;
                ok += (adapt::argmax(&out) == c) as usize;
                s.extend_from_slice(&out);
            }
            let dt = t0.elapsed().as_secs_f64();
            t.secs += dt;
            if let (0, Some(b)) = (f, cfg.budget_s) {
                // The other folds, then the final fit on every example (about one fold's
                // time scaled by the larger training set).
                let k = folds as f64;
                let end =
                    start.elapsed().as_secs_f64() + dt * (k - 1.0) + dt * k / (k - 1.0).max(1.0);
                if end > b && folds > 1 {
                    failed = Some(format!(
                        "stopped: one fold took {dt:.1} s, its folds and final fit would end at {end:.0} s of the {b:.0} s budget"
                    ));
                    break;
                }
            }
        }
        match failed {
            Some(n) => {
                t.note = n;
                s.clear();
            }
            None => t.acc = Some(ok as f64 / held_out as f64),
        }
        trials.push(t);
        scores.push(s);
    }
    if !trials.iter().any(|t| t.acc.is_some()) {
        let why: Vec<String> = trials
            .iter()
            .map(|t| format!("{} {}", t.cand.label(), t.note))
            .collect();
        return Err(invalid(format!(
            "auto: no candidate could be tried ({})",
            why.join("; ")
        )));
    }
    let labels: Vec<usize> = (0..held_out).map(|e| held_of(&splits, e)).collect();
    for (t, s) in trials.iter_mut().zip(&scores) {
        if t.acc.is_some() {
            t.nll = Some(held_out_nll(s, &labels, classes));
        }
    }
    let mut ensembles: Vec<Ensemble> = vec![];
    if cfg.ensembles {
        // Per layout, the best two and three candidates by held-out accuracy (ties to
        // the earlier).
        let mut layouts: Vec<((Vec<String>, super::Reduce, CacheFormat), Vec<usize>)> = vec![];
        for (i, t) in trials.iter().enumerate() {
            if t.acc.is_none() {
                continue;
            }
            let key = t.cand.layout(plan, &t.cand.options(opts));
            match layouts.iter_mut().find(|l| l.0 == key) {
                Some(l) => l.1.push(i),
                None => layouts.push((key, vec![i])),
            }
        }
        for (_, mut members) in layouts {
            let acc = |i: usize| trials[i].acc.unwrap_or(0.0);
            members.sort_by(|&a, &b| acc(b).total_cmp(&acc(a)).then(a.cmp(&b)));
            for n in 2..=3.min(members.len()) {
                let m = &members[..n];
                let mut ok = 0;
                let mut es = Vec::with_capacity(held_out * classes);
                for (e, &c) in labels.iter().enumerate() {
                    let parts: Vec<&[f32]> = m
                        .iter()
                        .map(|&i| &scores[i][e * classes..][..classes])
                        .collect();
                    ensemble_scores(&parts, &mut out);
                    ok += (adapt::argmax(&out) == c) as usize;
                    es.extend_from_slice(&out);
                }
                ensembles.push(Ensemble {
                    members: m.to_vec(),
                    acc: ok as f64 / held_out as f64,
                    nll: held_out_nll(&es, &labels, classes),
                });
            }
        }
    }
    // The lowest held-out log-loss wins, single candidates first, then ensembles; a tie
    // goes to the earlier (cheaper).
    let mut pick = vec![];
    let (mut acc, mut nll) = (0.0, f64::INFINITY);
    let singles = trials.iter().enumerate().filter_map(|(i, t)| {
        let (a, n) = (t.acc?, t.nll?);
        Some((vec![i], a, n))
    });
    let ens = ensembles.iter().map(|e| (e.members.clone(), e.acc, e.nll));
    for (m, a, n) in singles.chain(ens) {
        if pick.is_empty() || n < nll {
            (pick, acc, nll) = (m, a, n);
        }
    }
    Ok(Choice {
        pick: pick.iter().map(|&i| trials[i].cand.clone()).collect(),
        acc,
        nll,
        trials,
        ensembles,
        folds,
        held_out,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Mean negative log-likelihood of `labels` under softmax(a·scores) (`classes` scores per
/// example) with the scale `a` in [e^-6, e^8] that minimises it (the scores' own scale
/// means nothing across methods). The loss is convex in `a`, so unimodal in log a, where
/// a golden-section search finds its minimum.
pub fn held_out_nll(scores: &[f32], labels: &[usize], classes: usize) -> f64 {
    let nll = |a: f64| -> f64 {
        let mut t = 0.0;
        for (e, &c) in labels.iter().enumerate() {
            let s = &scores[e * classes..][..classes];
            let m = s.iter().fold(f64::MIN, |m, &x| m.max(a * x as f64));
            let z: f64 = s.iter().map(|&x| (a * x as f64 - m).exp()).sum();
            t += m + z.ln() - a * s[c] as f64;
        }
        t / labels.len().max(1) as f64
    };
    // Convex in a: golden-section search on log a.
    let (mut lo, mut hi) = (-6.0f64, 8.0f64);
    let g = 0.618_033_988_75;
    let (mut x1, mut x2) = (hi - g * (hi - lo), lo + g * (hi - lo));
    let (mut f1, mut f2) = (nll(x1.exp()), nll(x2.exp()));
    for _ in 0..60 {
        if f1 < f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - g * (hi - lo);
            f1 = nll(x1.exp());
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + g * (hi - lo);
            f2 = nll(x2.exp());
        }
    }
    let best = f1.min(f2);
    // NaN scores: never the lowest.
    if best.is_nan() {
        f64::INFINITY
    } else {
        best
    }
}

/// The true class of held-out example `e` (fold-major order).
fn held_of(splits: &[(Vec<usize>, Vec<(usize, usize)>)], mut e: usize) -> usize {
    for (_, h) in splits {
        if e < h.len() {
            return h[e].1;
        }
        e -= h.len();
    }
    0
}
