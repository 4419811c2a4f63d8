//! Few-shot evaluation as library code: episodes drawn with a seed, every method fitted on
//! the same support sets and scored on the same queries; folds of the support set alone
//! for choosing settings (the query set is never read then).

use super::auto::AutoConfig;
use super::cache::{Batcher, Reduce};
use super::options::Options;
use super::prep::{Prep, Sample};
use crate::adapt::cache::{CacheFormat, NamedTap, TapCache, TapShape};
use crate::adapt::rng::Rng;
use crate::adapt::{self, Adapter, Kind, Method, Unlabeled};
use crate::features::TapReader;
use crate::plan::{Plan, DEFAULT_ARENA_LIMIT};
use crate::{Error, Executor, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn io_err(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        detail: e.to_string(),
    }
}

/// `DIR/<class>/*`: class names (sorted) and (file, label) pairs.
pub fn class_folders(dir: &Path) -> Result<(Vec<String>, Vec<(PathBuf, usize)>)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let (mut names, mut files) = (vec![], vec![]);
    for d in dirs {
        let mut f: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| io_err(&d, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        f.sort();
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if f.is_empty() {
            return Err(Error::Invalid {
                what: format!("class folder '{name}' is empty"),
            });
        }
        files.extend(f.into_iter().map(|p| (p, names.len())));
        names.push(name);
    }
    if names.len() < 2 {
        return Err(Error::Invalid {
            what: format!(
                "{} needs at least two class folders, found {}",
                dir.display(),
                names.len()
            ),
        });
    }
    Ok((names, files))
}

fn tap_indices(cache: &TapCache, names: &[String]) -> Result<Vec<usize>> {
    names.iter().map(|n| cache.tap_index(n)).collect()
}

fn tap_dims(cache: &TapCache, sel: &[usize]) -> Vec<NamedTap> {
    sel.iter()
        .map(|&i| (cache.names[i].clone(), cache.taps[i]))
        .collect()
}

/// Result of one method over the episodes.
#[derive(Clone, Debug)]
pub struct MethodResult {
    pub kind: Kind,
    /// Fitted with the episode's unlabeled examples too.
    pub unlabeled: bool,
    pub acc: Vec<f64>,
    /// Tail methods: accuracy of the same tail re-quantised to int8.
    pub acc_int8: Vec<f64>,
    pub train_s: f64,
    pub peak: usize,
    pub params: usize,
    pub adapter_bytes: usize,
    /// The automatic choice (`--method auto`): what it picked in each episode and why
    /// (then `kind` is meaningless).
    pub auto: Option<Vec<String>>,
}

impl MethodResult {
    /// The method's name, `+unlabeled` when it learned from unlabeled examples too.
    pub fn label(&self) -> String {
        if self.auto.is_some() {
            "auto".to_string()
        } else if self.unlabeled {
            format!("{}+unlabeled", self.kind.name())
        } else {
            self.kind.name().to_string()
        }
    }
}

pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len().max(1) as f64;
    (m, var.sqrt())
}

/// Few-shot episodes: `ways` classes drawn at random, `shots` support examples each, the
/// rest of those classes as queries. Every method sees the same episodes. With
/// `unlabeled` > 0, that many further examples of each class (neither support nor query)
/// are the episode's unlabeled examples, and each method that learns from them
/// ([`Kind::uses_unlabeled`]) is reported twice on the same queries: without them and
/// with them (`MethodResult::unlabeled`).
#[allow(clippy::too_many_arguments)]
pub fn episodes(
    plan: &Plan,
    images: &[(Sample, usize)],
    classes: usize,
    kinds: &[Kind],
    ways: usize,
    shots: usize,
    n_episodes: u64,
    seed: u64,
    opts: &Options,
    select_folds: usize,
    unlabeled: usize,
    auto: Option<&AutoConfig>,
    export: Option<&Path>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<MethodResult>, f64)> {
    if ways < 2 || ways > classes {
        return Err(Error::Invalid {
            what: format!("--ways {ways}: the data has {classes} classes"),
        });
    }
    let prep = super::prep::prep_of(plan)?;
    // One cache over every image with the union of the taps the methods read.
    let mut all: Vec<String> = vec![];
    let auto_kinds = auto.map_or(vec![], |a| a.candidates.clone());
    for &k in kinds.iter().chain(&auto_kinds) {
        for t in opts.taps_for(plan, k) {
            if !all.contains(&t) {
                all.push(t);
            }
        }
    }
    let (cache, src, per) = cache_all(plan, &prep, images, &all, opts, seed, progress)?;
    let by_class: Vec<Vec<usize>> = (0..classes)
        .map(|c| (0..images.len()).filter(|&i| images[i].1 == c).collect())
        .collect();
    if let Some(c) = by_class.iter().position(|v| v.len() <= shots + unlabeled) {
        return Err(Error::Invalid {
            what: format!(
                "class {c} has {} examples; {shots} shots and {unlabeled} unlabeled need more",
                by_class[c].len()
            ),
        });
    }
    let mut res: Vec<MethodResult> = kinds
        .iter()
        .flat_map(|&kind| {
            let both = unlabeled > 0 && kind.uses_unlabeled();
            [(kind, false)]
                .into_iter()
                .chain(both.then_some((kind, true)))
        })
        .map(|(kind, unlabeled)| MethodResult {
            kind,
            unlabeled,
            acc: vec![],
            acc_int8: vec![],
            train_s: 0.0,
            peak: 0,
            params: 0,
            adapter_bytes: 0,
            auto: None,
        })
        .collect();
    if auto.is_some() {
        if select_folds > 0 {
            return Err(Error::Invalid {
                what: "auto chooses on folds of the support set itself: not with --select-folds"
                    .into(),
            });
        }
        res.push(MethodResult {
            kind: Kind::Ncm,
            unlabeled: false,
            acc: vec![],
            acc_int8: vec![],
            train_s: 0.0,
            peak: 0,
            params: 0,
            adapter_bytes: 0,
            auto: Some(vec![]),
        });
    }
    // Rows of the cache per source image (the original first, then its views).
    let mut rows_of: Vec<Vec<usize>> = vec![vec![]; images.len()];
    for (r, &i) in src.iter().enumerate() {
        rows_of[i].push(r);
    }
    let folds = select_folds.min(shots);
    if folds > 0 && shots < 2 {
        return Err(Error::Invalid {
            what: "--select-folds needs at least 2 shots (one is held out)".into(),
        });
    }
    let runs = n_episodes * folds.max(1) as u64;
    // One run: every method fitted and scored on one episode (and fold), into a copy of
    // the empty results.
    let template = res.clone();
    let one_run = |run: u64| -> Result<Vec<MethodResult>> {
        let mut res = template.clone();
        let mut bufs: Vec<Vec<f32>> = cache.taps.iter().map(|t| vec![0.0; t.len()]).collect();
        let par = crate::par::Par::new(0)?;
        let (e, fold) = (run / folds.max(1) as u64, run as usize % folds.max(1));
        let d = draw(
            &by_class,
            classes,
            ways,
            shots,
            unlabeled,
            seed.wrapping_add(e),
        )?;
        let (mut sup, mut query, mut groups) = (vec![], vec![], vec![]);
        let unl: Vec<usize> = d.unlabeled.iter().map(|&i| rows_of[i][0]).collect();
        // The unlabeled examples' augmented views, each example's in turn (exported only).
        let unl_views: Vec<usize> = d
            .unlabeled
            .iter()
            .flat_map(|&i| rows_of[i][1..].iter().copied())
            .collect();
        for (j, &(i, w)) in d.support.iter().enumerate() {
            if folds > 0 {
                // Selection: the held-out shot is the only "query"; the real query set
                // is never read.
                if d.shot[j] == fold {
                    query.push((rows_of[i][0], w));
                    continue;
                }
            }
            sup.extend(rows_of[i].iter().map(|&r| (r, w)));
            groups.extend(rows_of[i].iter().map(|_| i));
        }
        if folds == 0 {
            query.extend(d.query.iter().map(|&(i, w)| (rows_of[i][0], w)));
        }
        // Episode labels are 0..ways: relabel a copy of the support rows.
        let mut ep = TapCache::new(cache.format, cache.named());
        ep.reserve(sup.len());
        for &(r, w) in &sup {
            for (t, b) in bufs.iter_mut().enumerate() {
                cache.read(r, t, b);
            }
            let v: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
            ep.push(&v, w)?;
        }
        let idx: Vec<usize> = (0..ep.len()).collect();
        if let Some(dir) = export {
            let rows = (&query[..], &unl[..], &unl_views[..]);
            export_episode(dir, plan, opts, kinds, &all, &ep, &cache, rows, e)?;
        }
        for m in res.iter_mut() {
            if let (Some(cfg), Some(choices)) = (auto, m.auto.as_mut()) {
                let u = (unlabeled > 0).then_some(Unlabeled {
                    cache: &cache,
                    idx: &unl,
                });
                let t = Instant::now();
                let ch = super::auto::choose(
                    plan,
                    opts,
                    &ep,
                    &groups,
                    ways,
                    u,
                    cfg,
                    seed.wrapping_add(e),
                    plan.arena_bytes(),
                )?;
                // The pick, trained on the whole support set, scores the queries.
                let mut fitted = vec![];
                for c in &ch.pick {
                    fitted.push(super::auto::fit_cand(
                        plan,
                        opts,
                        c,
                        &ep,
                        &idx,
                        ways,
                        u,
                        seed.wrapping_add(e),
                    )?);
                }
                m.train_s += t.elapsed().as_secs_f64();
                let mut parts = vec![vec![0.0f32; ways]; fitted.len()];
                let mut scores = vec![0.0; ways];
                let mut tb: Vec<Vec<f32>> = vec![vec![]; cache.taps.len()];
                let mut ok = 0;
                for &(r, w) in &query {
                    for ((mth, sel), p) in fitted.iter().zip(parts.iter_mut()) {
                        super::auto::score_row(mth, &cache, sel, r, &mut tb, p)?;
                    }
                    let v: Vec<&[f32]> = parts.iter().map(|p| &p[..]).collect();
                    if v.len() == 1 {
                        scores.copy_from_slice(v[0]);
                    } else {
                        super::auto::ensemble_scores(&v, &mut scores);
                    }
                    ok += (adapt::argmax(&scores) == w) as usize;
                }
                m.acc.push(ok as f64 / query.len() as f64);
                let picked: Vec<&super::auto::Trial> = ch
                    .trials
                    .iter()
                    .filter(|t| ch.pick.contains(&t.cand))
                    .collect();
                m.peak = m.peak.max(picked.iter().map(|t| t.peak).max().unwrap_or(0));
                m.params = fitted.iter().map(|f| f.0.params()).sum();
                m.adapter_bytes = fitted
                    .into_iter()
                    .map(|(mth, sel)| {
                        Adapter::new(
                            plan,
                            tap_dims(&ep, &sel),
                            (0..ways).map(|w| w.to_string()).collect(),
                            vec![],
                            mth,
                        )
                        .to_bytes()
                        .len()
                    })
                    .sum();
                choices.push(format!("episode {e}: {}", ch.why()));
                continue;
            }
            let names = opts.taps_for(plan, m.kind);
            let sel = tap_indices(&ep, &names)?;
            let spec = opts.spec(plan, m.kind, seed.wrapping_add(e))?;
            let u = m.unlabeled.then_some(Unlabeled {
                cache: &cache,
                idx: &unl,
            });
            // The unlabeled examples' cached taps, beside the support set's.
            let unl_bytes = if m.unlabeled {
                let named = sel
                    .iter()
                    .map(|&s| (ep.names[s].clone(), ep.taps[s]))
                    .collect();
                unl.len() * TapCache::new(ep.format, named).bytes_per_example()
            } else {
                0
            };
            m.peak = m
                .peak
                .max(adapt::fit_memory(&spec, &ep, &sel, ep.len(), ways) + unl_bytes);
            let t = Instant::now();
            let method = adapt::fit_semi(&spec, &ep, &sel, &idx, ways, None, u, &mut |_| true)?;
            m.train_s += t.elapsed().as_secs_f64();
            m.params = method.params();
            let a = Adapter::new(
                plan,
                tap_dims(&ep, &sel),
                (0..ways).map(|w| w.to_string()).collect(),
                vec![],
                method,
            );
            m.adapter_bytes = a.to_bytes().len();
            let dims: Vec<TapShape> = a.taps.iter().map(|t| t.1).collect();
            let ok = score_queries(&a.method, &cache, &sel, &dims, &query, ways)?;
            m.acc.push(ok as f64 / query.len() as f64);
            if let Method::Tail {
                tail: Some(t),
                params,
                ..
            } = &a.method
            {
                let cut = plan.tap(&names[0]).ok_or_else(|| Error::Invalid {
                    what: format!("no tap {}", names[0]),
                })?;
                let q = crate::plan::Q8 {
                    scale: cut.scale,
                    zero: cut.zero,
                };
                let calib: Vec<Vec<f32>> = (0..ep.len())
                    .map(|i| {
                        let mut v = vec![0.0; ep.taps[sel[0]].len()];
                        ep.read(i, sel[0], &mut v);
                        v
                    })
                    .collect();
                let views: Vec<&[f32]> = calib.iter().map(|v| &v[..]).collect();
                let tq = crate::adapt::tail::TailQ::new(t, params, &views, q)?;
                // The queries in one part per thread (each scored alone, so any split
                // gives the same count).
                let ok = std::sync::atomic::AtomicUsize::new(0);
                let parts: Vec<&[(usize, usize)]> = query
                    .chunks(query.len().div_ceil(par.threads()).max(1))
                    .collect();
                par.each(parts, |part| {
                    let mut x = vec![0.0; cache.taps[sel[0]].len()];
                    let mut scores = vec![0.0; ways];
                    let mut n = 0;
                    for &(r, w) in part {
                        cache.read(r, sel[0], &mut x);
                        tq.scores(&x, &mut scores)?;
                        n += (adapt::argmax(&scores) == w) as usize;
                    }
                    ok.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                })?;
                let ok = ok.into_inner();
                m.acc_int8.push(ok as f64 / query.len() as f64);
            }
        }
        Ok(res)
    };
    let (workers, inner) = episode_threads(runs, export.is_some());
    let done: Vec<Result<Vec<MethodResult>>> = if workers <= 1 {
        (0..runs).map(one_run).collect()
    } else {
        // Runs side by side, each worker taking the next, its ops on `inner` threads;
        // every run's numbers are those it gives alone (any thread count gives the same
        // bits).
        let next = std::sync::atomic::AtomicU64::new(0);
        let slots: Vec<std::sync::Mutex<Option<Result<Vec<MethodResult>>>>> =
            (0..runs).map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|sc| {
            for _ in 0..workers {
                sc.spawn(|| {
                    crate::par::set_thread_default(inner);
                    loop {
                        let r = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if r >= runs {
                            break;
                        }
                        let out = one_run(r);
                        *slots[r as usize].lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
                    }
                });
            }
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_else(|| {
                        Err(Error::Invalid {
                            what: "an episode did not run".into(),
                        })
                    })
            })
            .collect()
    };
    // The runs' results in run order, as one run after another leaves them.
    for run in done {
        for (m, r) in res.iter_mut().zip(run?) {
            m.acc.extend(r.acc);
            m.acc_int8.extend(r.acc_int8);
            m.train_s += r.train_s;
            m.peak = m.peak.max(r.peak);
            m.params = r.params;
            m.adapter_bytes = r.adapter_bytes;
            if let (Some(all), Some(mine)) = (m.auto.as_mut(), r.auto) {
                all.extend(mine);
            }
        }
    }
    for m in res.iter_mut() {
        m.train_s /= runs as f64;
    }
    Ok((res, per))
}

/// How [`episodes`] runs `runs` episodes (and folds) on the default thread count: as
/// `(workers, threads)`, that many runs side by side with their ops on that many threads
/// each. Training times are per run on those threads. Exports run one at a time.
pub fn episode_threads(runs: u64, export: bool) -> (usize, usize) {
    let threads = crate::par::default_threads().max(1);
    let workers = if export {
        1
    } else {
        (threads as u64).min(runs).max(1) as usize
    };
    (workers, (threads / workers).max(1))
}

/// Queries (cache row, label) that `method` labels right, scored [`QUERY_BATCH`] at a
/// time (a tail takes them through its layers together).
fn score_queries(
    method: &Method,
    cache: &TapCache,
    sel: &[usize],
    dims: &[TapShape],
    query: &[(usize, usize)],
    ways: usize,
) -> Result<usize> {
    let mut bufs: Vec<Vec<Vec<f32>>> = (0..QUERY_BATCH.min(query.len()))
        .map(|_| {
            sel.iter()
                .map(|&s| vec![0.0; cache.taps[s].len()])
                .collect()
        })
        .collect();
    let mut scores = vec![0.0; QUERY_BATCH * ways];
    let mut ok = 0;
    for chunk in query.chunks(QUERY_BATCH) {
        for (&(r, _), b) in chunk.iter().zip(bufs.iter_mut()) {
            for (&s, v) in sel.iter().zip(b.iter_mut()) {
                cache.read(r, s, v);
            }
        }
        let views: Vec<Vec<&[f32]>> = bufs[..chunk.len()]
            .iter()
            .map(|b| b.iter().map(|v| &v[..]).collect())
            .collect();
        let refs: Vec<&[&[f32]]> = views.iter().map(|v| &v[..]).collect();
        method.scores_batch(&refs, dims, &mut scores)?;
        for (&(_, w), sc) in chunk.iter().zip(scores.chunks(ways)) {
            ok += (adapt::argmax(sc) == w) as usize;
        }
    }
    Ok(ok)
}

/// Queries read from the cache and scored together by [`score_queries`].
const QUERY_BATCH: usize = 20;

/// One episode's draw: examples as indices into the data, with their episode label
/// `0..ways`.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    /// The classes drawn, in episode-label order.
    pub classes: Vec<usize>,
    /// Support examples, class by class.
    pub support: Vec<(usize, usize)>,
    /// The support example's shot number within its class (the fold that holds it out).
    pub shot: Vec<usize>,
    pub query: Vec<(usize, usize)>,
    /// Unlabeled examples (their labels are not given to anything).
    pub unlabeled: Vec<usize>,
}

/// Draws an episode: `ways` of the classes, `shots` support examples and `unlabeled`
/// unlabeled ones of each, the rest of those classes as queries. `by_class[c]` lists
/// the data's examples of class `c`; the draw depends only on these and `seed`.
pub fn draw(
    by_class: &[Vec<usize>],
    classes: usize,
    ways: usize,
    shots: usize,
    unlabeled: usize,
    seed: u64,
) -> Result<Draw> {
    if ways > classes || by_class.len() < classes {
        return Err(Error::Invalid {
            what: format!("{ways} ways of {classes} classes"),
        });
    }
    let mut rng = Rng::new(seed);
    let mut cls: Vec<usize> = (0..classes).collect();
    rng.shuffle(&mut cls);
    cls.truncate(ways);
    cls.sort();
    let mut d = Draw {
        classes: cls.clone(),
        support: vec![],
        shot: vec![],
        query: vec![],
        unlabeled: vec![],
    };
    for (w, &c) in cls.iter().enumerate() {
        let mut idx = by_class[c].clone();
        if idx.len() <= shots + unlabeled {
            return Err(Error::Invalid {
                what: format!(
                    "class {c} has {} examples; {shots} shots and {unlabeled} unlabeled need more",
                    idx.len()
                ),
            });
        }
        rng.shuffle(&mut idx);
        for (j, &i) in idx[..shots].iter().enumerate() {
            d.support.push((i, w));
            d.shot.push(j);
        }
        d.unlabeled
            .extend_from_slice(&idx[shots..shots + unlabeled]);
        d.query
            .extend(idx[shots + unlabeled..].iter().map(|&i| (i, w)));
    }
    Ok(d)
}

/// Writes episode `e`'s support, query and unlabeled taps
/// (`e{e}_{support|query|unlabeled}_t{j}.npy`, tap `j` of `taps.txt`), the unlabeled
/// examples' augmented views with `--augment` (`e{e}_unlabeled_views_t{j}.npy`, each
/// example's views in turn) and labels, and once the frozen tail of each tail method's cut.
#[allow(clippy::too_many_arguments)]
fn export_episode(
    dir: &Path,
    plan: &Plan,
    opts: &Options,
    kinds: &[Kind],
    names: &[String],
    ep: &TapCache,
    cache: &TapCache,
    (query, unl, unl_views): (&[(usize, usize)], &[usize], &[usize]),
    e: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|x| io_err(dir, x))?;
    let mut list = String::new();
    for (j, n) in names.iter().enumerate() {
        let t = &cache.taps[j];
        list += &format!("t{j} {} {} {n}\n", t.tokens, t.dim);
        for (part, c, rows) in [
            ("support", ep, (0..ep.len()).collect::<Vec<_>>()),
            ("query", cache, query.iter().map(|q| q.0).collect()),
            ("unlabeled", cache, unl.to_vec()),
            ("unlabeled_views", cache, unl_views.to_vec()),
        ] {
            if part.starts_with("unlabeled") && rows.is_empty() {
                continue;
            }
            let mut v = vec![0.0; rows.len() * t.len()];
            for (k, &r) in rows.iter().enumerate() {
                c.read(r, j, &mut v[k * t.len()..][..t.len()]);
            }
            let p = dir.join(format!("e{e}_{part}_t{j}.npy"));
            crate::npy::write_npy(&p, &[rows.len(), t.tokens, t.dim], &v)?;
        }
    }
    let ys: Vec<f32> = ep.labels.iter().map(|&l| l as f32).collect();
    crate::npy::write_npy(&dir.join(format!("e{e}_support_y.npy")), &[ys.len()], &ys)?;
    let yq: Vec<f32> = query.iter().map(|q| q.1 as f32).collect();
    crate::npy::write_npy(&dir.join(format!("e{e}_query_y.npy")), &[yq.len()], &yq)?;
    for &k in kinds {
        let t = opts.taps_for(plan, k);
        list += &format!("method {} {}\n", k.name(), t.join(","));
    }
    std::fs::write(dir.join("taps.txt"), list).map_err(|x| io_err(dir, x))?;
    if let Some(&k) = kinds.iter().find(|k| k.is_tail()) {
        let net = crate::adapt::tail::TailNet::from_plan(plan, &opts.taps_for(plan, k)[0])?;
        let mut desc = format!("cut {} {}\n", net.slots[0].0, net.slots[0].1);
        for l in &net.layers {
            desc += &format!("{l:?}\n");
        }
        std::fs::write(dir.join("tail.txt"), desc).map_err(|x| io_err(dir, x))?;
        crate::npy::write_npy(
            &dir.join("tail_frozen.npy"),
            &[net.frozen.len()],
            &net.frozen,
        )?;
    }
    Ok(())
}

/// One cache of every example (and `opts.augment` views of each) with the taps `taps`,
/// whole; returns it, the source example of each row and the backbone's seconds per row.
pub fn cache_all(
    plan: &Plan,
    prep: &Prep,
    examples: &[(Sample, usize)],
    taps: &[String],
    opts: &Options,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(TapCache, Vec<usize>, f64)> {
    // One executor per thread, each example on one of them.
    let par = crate::par::Par::new(0)?;
    let mut readers = Vec::with_capacity(par.threads());
    for _ in 0..par.threads() {
        let exec = Executor::new(plan, crate::kernels::Kernels::detect(), DEFAULT_ARENA_LIMIT)?;
        readers.push(TapReader::new(exec, taps)?.with_context(prep.context()));
    }
    let mut fill = Batcher::new(readers, par, Reduce::Full, opts.augment, seed);
    let mut cache = TapCache::new(opts.cache.unwrap_or(CacheFormat::F16), fill.shapes());
    let total = examples.len() * (1 + opts.augment);
    cache.reserve(total);
    let mut src = Vec::with_capacity(total);
    let t = Instant::now();
    fill.push_all(prep, examples, &mut cache, &mut |i, rows| {
        src.extend(std::iter::repeat_n(i, rows));
        progress(src.len(), total);
    })?;
    Ok((cache, src, t.elapsed().as_secs_f64() / total.max(1) as f64))
}
