//! The CLI's adaptation commands: adapt, predict, eval, demo.

use crate::inputs::{Prep, Sample};
use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::heads::TapDims;
use edgetune::adapt::rng::Rng;
use edgetune::adapt::train::{Optimizer, Progress};
use edgetune::adapt::Method;
use edgetune::adapt::{self, Adapter, Kind, Spec};
use edgetune::features::{default_taps, TapReader};
use edgetune::plan::{Plan, DEFAULT_ARENA_LIMIT};
use edgetune::{Error, Executor, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One decoded example: pixels (grey or RGB), width, height, channels.
pub struct Image {
    pub px: Vec<u8>,
    pub w: usize,
    pub h: usize,
    pub c: usize,
}

/// Options shared by adapt, eval and demo.
#[derive(Clone, Debug)]
pub struct FitOpts {
    pub taps: Option<Vec<String>>,
    pub cache: CacheFormat,
    /// `--cache` was given (otherwise `adapt` picks per method).
    pub cache_set: bool,
    pub augment: usize,
    pub steps: Option<usize>,
    pub optimizer: Optimizer,
    pub holdout: bool,
    pub reduction: usize,
    pub queries: usize,
    pub rank: usize,
    pub export: Option<PathBuf>,
    pub select_folds: usize,
    pub lr: Option<f32>,
    pub batch: Option<usize>,
    pub c: Option<f32>,
    pub body_lr: Option<f32>,
}

impl Default for FitOpts {
    fn default() -> Self {
        FitOpts {
            taps: None,
            cache: CacheFormat::F16,
            cache_set: false,
            augment: 0,
            steps: None,
            optimizer: Optimizer::AdamW,
            holdout: false,
            reduction: 16,
            queries: 4,
            rank: 4,
            export: None,
            select_folds: 0,
            lr: None,
            batch: None,
            c: None,
            body_lr: None,
        }
    }
}

impl FitOpts {
    /// The method's spec; the tail methods also get the plan's tail after their cut.
    pub fn spec(&self, plan: &Plan, kind: Kind, seed: u64) -> Result<Spec> {
        let mut s = Spec::new(kind).seed(seed);
        s.reduction = self.reduction;
        s.queries = self.queries;
        s.rank = self.rank;
        s.train.optimizer = self.optimizer;
        if let Optimizer::Sgd { .. } = self.optimizer {
            s.train.lr = 0.05;
        }
        s.train.holdout = self.holdout;
        if let Some(n) = self.steps {
            s.train.steps = n;
            s.linear.steps = n;
        }
        if let Some(lr) = self.lr {
            s.train.lr = lr;
            s.linear.lr = lr;
        }
        if let Some(b) = self.batch {
            s.train.batch = b;
        }
        if let Some(c) = self.c {
            s.linear.c = c;
        }
        if let Some(b) = self.body_lr {
            s.body_lr = b;
        }
        if kind.is_tail() {
            s = s.bind_tail(plan, &self.taps_for(plan, kind)[0])?;
        }
        Ok(s)
    }

    fn taps_for(&self, plan: &Plan, kind: Kind) -> Vec<String> {
        match &self.taps {
            Some(t) if matches!(kind, Kind::Ladder | Kind::Query) => t.clone(),
            Some(t) => t[..1].to_vec(),
            None => default_taps(plan, kind),
        }
    }
}

fn io_err(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        detail: e.to_string(),
    }
}

pub fn load_image(path: &Path) -> Result<Image> {
    let img = image::open(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        detail: format!("unreadable image: {e}"),
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Image {
        px: rgb.into_raw(),
        w: w as usize,
        h: h as usize,
        c: 3,
    })
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

/// Augmented view `v` (1-based) of an image: mirror on odd views, a shift of up to
/// 1/14 of the size chosen by the seed.
fn view(img: &Image, v: usize, rng: &mut Rng) -> Image {
    let (w, h, c) = (img.w, img.h, img.c);
    let max = (w.min(h) / 14).max(1) as i64;
    let dx = (rng.below(2 * max as usize + 1) as i64) - max;
    let dy = (rng.below(2 * max as usize + 1) as i64) - max;
    let flip = v % 2 == 1;
    let mut px = vec![0u8; img.px.len()];
    for y in 0..h {
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x } as i64 - dx;
            let sy = y as i64 - dy;
            let sx = sx.clamp(0, w as i64 - 1) as usize;
            let sy = sy.clamp(0, h as i64 - 1) as usize;
            px[(y * w + x) * c..][..c].copy_from_slice(&img.px[(sy * w + sx) * c..][..c]);
        }
    }
    Image { px, w, h, c }
}

/// What the tap cache keeps of each tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Every token (the methods that attend over or train on the whole map).
    Full,
    /// The mean token (the ladder reads pooled taps only).
    Mean,
    /// Two tokens `μ ± σ` per channel: their mean is `μ` and their standard deviation `σ`,
    /// so the moment probe's statistics of the cached pair equal those of the whole map.
    Moments,
}

impl Reduce {
    pub fn of(kind: Kind) -> Reduce {
        match kind {
            Kind::Ladder => Reduce::Mean,
            Kind::Moment => Reduce::Moments,
            _ => Reduce::Full,
        }
    }

    fn tokens(self, full: usize) -> usize {
        match self {
            Reduce::Full => full,
            Reduce::Mean => 1,
            Reduce::Moments => 2,
        }
    }

    fn apply(self, x: &[f32], d: TapDims, out: &mut [f32]) {
        match self {
            Reduce::Full => out.copy_from_slice(x),
            Reduce::Mean => adapt::method::pooled(x, d, out),
            Reduce::Moments => {
                let (mu, sd) = out.split_at_mut(d.dim);
                adapt::method::pooled(x, d, mu);
                sd.fill(0.0);
                for row in x.chunks_exact(d.dim) {
                    for c in 0..d.dim {
                        let e = row[c] - mu[c];
                        sd[c] += e * e;
                    }
                }
                for (m, s) in mu.iter_mut().zip(sd.iter_mut()) {
                    let sigma = (*s / d.tokens as f32).sqrt();
                    (*m, *s) = (*m + sigma, *m - sigma);
                }
            }
        }
    }
}

/// Runs every image (and `augment` views of each) through the backbone once and caches
/// the taps. Returns the cache and, per cached row, the index of its source image.
pub fn build_cache(
    plan: &Plan,
    prep: &Prep,
    images: &[(Sample, usize)],
    taps: &[String],
    format: CacheFormat,
    augment: usize,
    seed: u64,
    bar: bool,
    reduce: Reduce,
) -> Result<(TapCache, Vec<usize>, f64)> {
    let exec = Executor::new(
        plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    let mut rd = TapReader::new(exec, taps)?;
    let shapes: Vec<TapShape> = rd
        .shapes
        .iter()
        .map(|t| TapShape {
            tokens: reduce.tokens(t.tokens),
            ..t.clone()
        })
        .collect();
    let mut pooled_bufs: Vec<Vec<f32>> = shapes.iter().map(|t| vec![0.0; t.len()]).collect();
    let mut cache = TapCache::new(format, shapes);
    let total = images.len() * (1 + augment);
    cache.reserve(total);
    let mut bufs: Vec<Vec<f32>> = rd.shapes.iter().map(|s| vec![0.0; s.len()]).collect();
    if augment > 0 && !prep.is_image() {
        return Err(Error::Invalid {
            what: "--augment makes views of images; this plan's inputs are not images".into(),
        });
    }
    let mut input: Vec<Vec<f32>> = Vec::new();
    let mut src = Vec::with_capacity(total);
    let mut rng = Rng::new(seed ^ 0xa5a5);
    let pb = if bar {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "backbone {bar:30} {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or(indicatif::ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    for (i, (img, label)) in images.iter().enumerate() {
        for v in 0..=augment {
            let aug;
            let im = match img {
                Sample::Image(im) if v > 0 => {
                    aug = Sample::Image(view(im, v, &mut rng));
                    &aug
                }
                _ => img,
            };
            prep.run_taps(&mut rd, im, &mut input, &mut bufs)
                .map_err(|e| match e {
                    Error::NonFinite { .. } => Error::NonFinite {
                        what: format!("input {i}"),
                    },
                    e => e,
                })?;
            if reduce != Reduce::Full {
                for ((b, o), t) in bufs.iter().zip(pooled_bufs.iter_mut()).zip(&rd.shapes) {
                    let d = TapDims {
                        tokens: t.tokens,
                        dim: t.dim,
                    };
                    reduce.apply(b, d, o);
                }
                let views: Vec<&[f32]> = pooled_bufs.iter().map(|b| &b[..]).collect();
                cache.push(&views, *label)?;
            } else {
                let views: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
                cache.push(&views, *label)?;
            }
            src.push(i);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok((cache, src, t.elapsed().as_secs_f64() / total as f64))
}

fn progress_bar(show: bool, steps: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(steps as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("train {bar:30} step {pos}/{len} {msg} eta {eta}")
            .unwrap_or(indicatif::ProgressStyle::default_bar()),
    );
    pb
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn tap_indices(cache: &TapCache, names: &[String]) -> Result<Vec<usize>> {
    names.iter().map(|n| cache.tap_index(n)).collect()
}

fn tap_dims(cache: &TapCache, sel: &[usize]) -> Vec<(String, TapDims)> {
    sel.iter()
        .map(|&i| {
            let t = &cache.taps[i];
            (
                t.name.clone(),
                TapDims {
                    tokens: t.tokens,
                    dim: t.dim,
                },
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn adapt_cmd(
    plan: &Plan,
    train: &Path,
    kind: Kind,
    opts: &FitOpts,
    seed: u64,
    max_memory: Option<usize>,
    json: bool,
    output: &Path,
) -> Result<()> {
    let mut prep = crate::inputs::prep_of(plan)?;
    // The query head caches every token of its taps: int8 unless asked otherwise.
    let opts = &FitOpts {
        cache: if kind == Kind::Query && !opts.cache_set {
            CacheFormat::I8
        } else {
            opts.cache
        },
        ..opts.clone()
    };
    let (names, files) = class_folders(train)?;
    let taps = opts.taps_for(plan, kind);
    let images = files
        .iter()
        .map(|(p, l)| Ok((prep.load(p)?, *l)))
        .collect::<Result<Vec<_>>>()?;
    // The budget is checked on the cache's exact size before the backbone runs.
    let exec = Executor::new(
        plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    let shapes = TapReader::new(exec, &taps)?.shapes;
    // The ladder reads pooled taps and the moment probe two statistics per channel:
    // cache those instead of the whole map.
    let reduce = Reduce::of(kind);
    let reader_dims: Vec<(String, TapDims)> = shapes
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TapDims {
                    tokens: t.tokens,
                    dim: t.dim,
                },
            )
        })
        .collect();
    let probe_shapes = shapes
        .into_iter()
        .map(|t| TapShape {
            tokens: reduce.tokens(t.tokens),
            ..t
        })
        .collect();
    let mut probe = TapCache::new(opts.cache, probe_shapes);
    let rows = images.len() * (1 + opts.augment);
    let spec = opts.spec(plan, kind, seed)?;
    let sel: Vec<usize> = (0..taps.len()).collect();
    let need = adapt::fit_memory(&spec, &probe, &sel, rows, names.len())
        + rows * probe.bytes_per_example()
        + plan.arena_bytes();
    probe.labels.clear();
    if !json {
        println!(
            "training peak: {need} bytes (tap cache {} + backbone arena {} + parameters, gradients, optimiser state, activations)",
            rows * probe.bytes_per_example(),
            plan.arena_bytes()
        );
    }
    if let Some(limit) = max_memory {
        if need > limit {
            return Err(Error::OverBudget { need, limit });
        }
    }
    let (cache, _, _) = build_cache(
        plan,
        &prep,
        &images,
        &taps,
        opts.cache,
        opts.augment,
        seed,
        !json,
        reduce,
    )?;
    let idx: Vec<usize> = (0..cache.len()).collect();
    let steps = if matches!(kind, Kind::Linear | Kind::Moment) {
        spec.linear.steps
    } else {
        spec.train.steps
    };
    let pb = progress_bar(!json && !matches!(kind, Kind::Ncm), steps);
    let t = Instant::now();
    let mut last = (f32::NAN, f32::NAN);
    let m = adapt::fit(
        &spec,
        &cache,
        &sel,
        &idx,
        names.len(),
        &mut |p: &Progress| {
            pb.set_position(p.step as u64);
            pb.set_message(format!("loss {:.4} acc {:.2}", p.loss, p.accuracy));
            last = (p.loss, p.accuracy);
            true
        },
    )?;
    pb.finish_and_clear();
    let train_s = t.elapsed().as_secs_f64();
    let a = Adapter {
        plan_hash: plan.hash(),
        taps: reader_dims,
        classes: names,
        hyper: vec![
            ("seed".into(), seed.to_string()),
            ("steps".into(), steps.to_string()),
            ("augment".into(), opts.augment.to_string()),
            ("cache".into(), format!("{:?}", opts.cache)),
        ],
        method: m,
    };
    a.save(output)?;
    let size = a.to_bytes().len();
    if json {
        println!(
            "{{\"method\":{},\"classes\":{},\"examples\":{},\"params\":{},\"adapter_bytes\":{size},\"train_seconds\":{train_s:.4},\"final_loss\":{},\"cache_bytes\":{},\"peak_bytes\":{need},\"output\":{}}}",
            json_str(a.method.name()),
            a.classes.len(),
            cache.len(),
            a.method.params(),
            if last.0.is_finite() { format!("{:.5}", last.0) } else { "null".into() },
            cache.bytes(),
            json_str(&output.display().to_string())
        );
    } else {
        println!(
            "{} adapter: {} classes, {} examples ({} cached, {} bytes), {} parameters, trained in {:.2} s, {} bytes -> {}",
            a.method.name(),
            a.classes.len(),
            images.len(),
            cache.len(),
            cache.bytes(),
            a.method.params(),
            train_s,
            size,
            output.display()
        );
    }
    Ok(())
}

pub fn predict_cmd(
    plan: &Plan,
    adapter: &Path,
    inputs: &[PathBuf],
    top: usize,
    json: bool,
) -> Result<()> {
    let mut prep = crate::inputs::prep_of(plan)?;
    let mut a = Adapter::load(adapter, &plan.hash())?;
    a.bind(plan)?;
    let exec = Executor::new(
        plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    let names: Vec<String> = a.taps.iter().map(|t| t.0.clone()).collect();
    let mut rd = TapReader::new(exec, &names)?;
    for (s, (n, d)) in rd.shapes.iter().zip(&a.taps) {
        if s.tokens != d.tokens || s.dim != d.dim {
            return Err(Error::ShapeMismatch {
                op: format!("adapter tap '{n}'"),
                expected: vec![d.tokens, d.dim],
                got: vec![s.tokens, s.dim],
            });
        }
    }
    let dims: Vec<TapDims> = a.taps.iter().map(|t| t.1).collect();
    let mut bufs: Vec<Vec<f32>> = rd.shapes.iter().map(|s| vec![0.0; s.len()]).collect();
    let mut scores = vec![0.0; a.classes.len()];
    let mut input = Vec::new();
    for p in inputs {
        let sample = prep.load(p)?;
        prep.run_taps(&mut rd, &sample, &mut input, &mut bufs)?;
        let views: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
        a.method.scores(&views, &dims, &mut scores)?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
        let top: Vec<usize> = order.into_iter().take(top).collect();
        if json {
            let items: Vec<String> = top
                .iter()
                .map(|&i| {
                    format!(
                        "{{\"class\":{},\"score\":{:.5}}}",
                        json_str(&a.classes[i]),
                        scores[i]
                    )
                })
                .collect();
            println!(
                "{{\"input\":{},\"top\":[{}]}}",
                json_str(&p.display().to_string()),
                items.join(",")
            );
        } else {
            let s: Vec<String> = top
                .iter()
                .map(|&i| format!("{} {:.3}", a.classes[i], scores[i]))
                .collect();
            println!("{}: {}", p.display(), s.join(", "));
        }
    }
    Ok(())
}

/// Result of one method over the episodes.
pub struct MethodResult {
    pub kind: Kind,
    pub acc: Vec<f64>,
    /// Tail methods: accuracy of the same tail re-quantised to int8.
    pub acc_int8: Vec<f64>,
    pub train_s: f64,
    pub peak: usize,
    pub params: usize,
    pub adapter_bytes: usize,
}

pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len().max(1) as f64;
    (m, var.sqrt())
}

/// Few-shot episodes: `ways` classes drawn at random, `shots` support examples each, the
/// rest of those classes as queries. Every method sees the same episodes.
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
    opts: &FitOpts,
    verbose: bool,
) -> Result<(Vec<MethodResult>, f64)> {
    if ways < 2 || ways > classes {
        return Err(Error::Invalid {
            what: format!("--ways {ways}: the data has {classes} classes"),
        });
    }
    let prep = crate::inputs::prep_of(plan)?;
    // One cache over every image with the union of the taps the methods read.
    let mut all: Vec<String> = vec![];
    for &k in kinds {
        for t in opts.taps_for(plan, k) {
            if !all.contains(&t) {
                all.push(t);
            }
        }
    }
    let (cache, src, per) = build_cache(
        plan,
        &prep,
        images,
        &all,
        opts.cache,
        opts.augment,
        seed,
        verbose,
        Reduce::Full,
    )?;
    let by_class: Vec<Vec<usize>> = (0..classes)
        .map(|c| (0..images.len()).filter(|&i| images[i].1 == c).collect())
        .collect();
    if let Some(c) = by_class.iter().position(|v| v.len() <= shots) {
        return Err(Error::Invalid {
            what: format!(
                "class {c} has {} examples; {shots} shots need more",
                by_class[c].len()
            ),
        });
    }
    let mut res: Vec<MethodResult> = kinds
        .iter()
        .map(|&kind| MethodResult {
            kind,
            acc: vec![],
            acc_int8: vec![],
            train_s: 0.0,
            peak: 0,
            params: 0,
            adapter_bytes: 0,
        })
        .collect();
    // Rows of the cache per source image (the original first, then its views).
    let mut rows_of: Vec<Vec<usize>> = vec![vec![]; images.len()];
    for (r, &i) in src.iter().enumerate() {
        rows_of[i].push(r);
    }
    let mut bufs: Vec<Vec<f32>> = cache.taps.iter().map(|t| vec![0.0; t.len()]).collect();
    let folds = opts.select_folds.min(shots);
    if folds > 0 && shots < 2 {
        return Err(Error::Invalid {
            what: "--select-folds needs at least 2 shots (one is held out)".into(),
        });
    }
    for run in 0..n_episodes * folds.max(1) as u64 {
        let (e, fold) = (run / folds.max(1) as u64, run as usize % folds.max(1));
        let mut rng = Rng::new(seed.wrapping_add(e));
        let mut cls: Vec<usize> = (0..classes).collect();
        rng.shuffle(&mut cls);
        cls.truncate(ways);
        cls.sort();
        let (mut sup, mut query) = (vec![], vec![]);
        for (w, &c) in cls.iter().enumerate() {
            let mut idx = by_class[c].clone();
            rng.shuffle(&mut idx);
            if folds > 0 {
                // Selection: the held-out shot is the only "query"; the real query set
                // (idx[shots..]) is never read.
                for (j, &i) in idx[..shots].iter().enumerate() {
                    if j == fold {
                        query.push((rows_of[i][0], w));
                    } else {
                        sup.extend(rows_of[i].iter().map(|&r| (r, w)));
                    }
                }
                continue;
            }
            for &i in &idx[..shots] {
                sup.extend(rows_of[i].iter().map(|&r| (r, w)));
            }
            query.extend(idx[shots..].iter().map(|&i| (rows_of[i][0], w)));
        }
        // Episode labels are 0..ways: relabel a copy of the support rows.
        let mut ep = TapCache::new(cache.format, cache.taps.clone());
        ep.reserve(sup.len());
        for &(r, w) in &sup {
            for (t, b) in bufs.iter_mut().enumerate() {
                cache.read(r, t, b);
            }
            let v: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
            ep.push(&v, w)?;
        }
        let idx: Vec<usize> = (0..ep.len()).collect();
        if let Some(dir) = &opts.export {
            export_episode(dir, plan, opts, kinds, &all, &ep, &cache, &query, e)?;
        }
        for m in res.iter_mut() {
            let names = opts.taps_for(plan, m.kind);
            let sel = tap_indices(&ep, &names)?;
            let spec = opts.spec(plan, m.kind, seed.wrapping_add(e))?;
            m.peak = m
                .peak
                .max(adapt::fit_memory(&spec, &ep, &sel, ep.len(), ways));
            let t = Instant::now();
            let method = adapt::fit(&spec, &ep, &sel, &idx, ways, &mut |_| true)?;
            m.train_s += t.elapsed().as_secs_f64();
            m.params = method.params();
            let a = Adapter {
                plan_hash: plan.hash(),
                taps: tap_dims(&ep, &sel),
                classes: (0..ways).map(|w| w.to_string()).collect(),
                hyper: vec![],
                method,
            };
            m.adapter_bytes = a.to_bytes().len();
            let dims: Vec<TapDims> = a.taps.iter().map(|t| t.1).collect();
            let mut scores = vec![0.0; ways];
            let mut ok = 0;
            for &(r, w) in &query {
                for &s in &sel {
                    cache.read(r, s, &mut bufs[s]);
                }
                let v: Vec<&[f32]> = sel.iter().map(|&s| &bufs[s][..]).collect();
                a.method.scores(&v, &dims, &mut scores)?;
                ok += (adapt::argmax(&scores) == w) as usize;
            }
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
                let q = edgetune::plan::Q8 {
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
                let tq = edgetune::adapt::tail::TailQ::new(t, params, &views, q)?;
                let mut ok = 0;
                for &(r, w) in &query {
                    cache.read(r, sel[0], &mut bufs[sel[0]]);
                    tq.scores(&bufs[sel[0]], &mut scores)?;
                    ok += (adapt::argmax(&scores) == w) as usize;
                }
                m.acc_int8.push(ok as f64 / query.len() as f64);
            }
        }
    }
    for m in res.iter_mut() {
        m.train_s /= (n_episodes * folds.max(1) as u64) as f64;
    }
    Ok((res, per))
}

/// Writes episode `e`'s support and query taps (`e{e}_{support|query}_t{j}.npy`, tap `j`
/// of `taps.txt`) and labels, and once the frozen tail of each tail method's cut.
#[allow(clippy::too_many_arguments)]
fn export_episode(
    dir: &Path,
    plan: &Plan,
    opts: &FitOpts,
    kinds: &[Kind],
    names: &[String],
    ep: &TapCache,
    cache: &TapCache,
    query: &[(usize, usize)],
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
        ] {
            let mut v = vec![0.0; rows.len() * t.len()];
            for (k, &r) in rows.iter().enumerate() {
                c.read(r, j, &mut v[k * t.len()..][..t.len()]);
            }
            let p = dir.join(format!("e{e}_{part}_t{j}.npy"));
            edgetune::npy::write_npy(&p, &[rows.len(), t.tokens, t.dim], &v)?;
        }
    }
    let ys: Vec<f32> = ep.labels.iter().map(|&l| l as f32).collect();
    edgetune::npy::write_npy(&dir.join(format!("e{e}_support_y.npy")), &[ys.len()], &ys)?;
    let yq: Vec<f32> = query.iter().map(|q| q.1 as f32).collect();
    edgetune::npy::write_npy(&dir.join(format!("e{e}_query_y.npy")), &[yq.len()], &yq)?;
    for &k in kinds {
        let t = opts.taps_for(plan, k);
        list += &format!("method {} {}\n", k.name(), t.join(","));
    }
    std::fs::write(dir.join("taps.txt"), list).map_err(|x| io_err(dir, x))?;
    if let Some(&k) = kinds.iter().find(|k| k.is_tail()) {
        let net = edgetune::adapt::tail::TailNet::from_plan(plan, &opts.taps_for(plan, k)[0])?;
        let mut desc = format!("cut {} {}\n", net.slots[0].0, net.slots[0].1);
        for l in &net.layers {
            desc += &format!("{l:?}\n");
        }
        std::fs::write(dir.join("tail.txt"), desc).map_err(|x| io_err(dir, x))?;
        edgetune::npy::write_npy(
            &dir.join("tail_frozen.npy"),
            &[net.frozen.len()],
            &net.frozen,
        )?;
    }
    Ok(())
}

/// Accuracy against shots per method, as an SVG line chart.
pub fn plot(path: &Path, shots: &[usize], rows: &[(Kind, Vec<f64>)]) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::Io {
        path: path.display().to_string(),
        detail: e,
    };
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let xmax = *shots.iter().max().unwrap_or(&10) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("few-shot accuracy vs shots", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..xmax + 0.5, 0.0..1.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("shots per class")
        .y_desc("query accuracy")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (k, acc)) in rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = shots
            .iter()
            .zip(acc)
            .map(|(&s, &a)| (s as f64, a))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(k.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

pub fn print_table(res: &[MethodResult], refs: &dyn Fn(Kind) -> &'static str, json: bool) {
    if json {
        let items: Vec<String> = res
            .iter()
            .map(|m| {
                let (a, s) = mean_std(&m.acc);
                format!(
                    "{{\"method\":{},\"accuracy\":{a:.4},\"std\":{s:.4},\"episodes\":{:?},\"int8_episodes\":{:?},\"train_ms\":{:.2},\"peak_bytes\":{},\"params\":{},\"adapter_bytes\":{}}}",
                    json_str(m.kind.name()),
                    m.acc,
                    m.acc_int8,
                    m.train_s * 1e3,
                    m.peak,
                    m.params,
                    m.adapter_bytes
                )
            })
            .collect();
        println!("[{}]", items.join(","));
        return;
    }
    println!("| method | accuracy (mean ± std) | reference | train time / episode | training peak | parameters | adapter |");
    println!("|---|---|---|---|---|---|---|");
    for m in res {
        let (a, s) = mean_std(&m.acc);
        println!(
            "| {} | {a:.3} ± {s:.3} | {} | {:.1} ms | {:.2} MB | {} | {:.1} KB |",
            m.kind.name(),
            refs(m.kind),
            m.train_s * 1e3,
            m.peak as f64 / 1e6,
            m.params,
            m.adapter_bytes as f64 / 1e3
        );
        if !m.acc_int8.is_empty() {
            let (a, s) = mean_std(&m.acc_int8);
            println!(
                "| {} (int8) | {a:.3} ± {s:.3} | - | (same) | - | - | - |",
                m.kind.name()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The moment probe's features of the two cached tokens equal those of the whole map.
    #[test]
    fn moment_pair_keeps_the_statistics() {
        let mut rng = Rng::new(3);
        for (tokens, dim) in [(49, 16), (1, 8), (196, 40)] {
            let x: Vec<f32> = (0..tokens * dim).map(|_| rng.f32() * 6.0 - 2.0).collect();
            let d = TapDims { tokens, dim };
            let mut pair = vec![0.0; 2 * dim];
            Reduce::Moments.apply(&x, d, &mut pair);
            let (mut full, mut from_pair) = (vec![0.0; 2 * dim], vec![0.0; 2 * dim]);
            adapt::method::moments(&x, d, &mut full);
            adapt::method::moments(&pair, TapDims { tokens: 2, dim }, &mut from_pair);
            for (a, b) in full.iter().zip(&from_pair) {
                assert!((a - b).abs() < 1e-5, "{tokens}x{dim}: {a} vs {b}");
            }
        }
    }
}
