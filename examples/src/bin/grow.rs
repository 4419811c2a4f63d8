//! Growing an image classifier on the device, one class at a time, while it keeps serving.
//!
//! EfficientNet-Lite0 int8 and the bundled Fashion-MNIST sample: start with 3 classes
//! from 5 shots each, then add the other 7 one by one. Each new class is served at once
//! by `ncm` (enrolling is an average); a `ladder` adapter over three spatial taps is
//! retrained in a background thread (progress bar) while the main thread keeps answering
//! requests with what it has, and replaces `ncm` when done. After each addition the
//! program prints the accuracy on every class seen so far and on the first three (what
//! the old classes forget). Finally it exports the adapter, reloads it in a fresh process
//! and checks the predictions are identical.
//!
//! usage: grow [--queries N] [--steps N]      (N query images per class, default 20)
//!        grow --predict ADAPTER.eta --queries N   (the fresh process)

use edgetune::adapt::cache::TapShape;
use edgetune::adapt::cache::{CacheFormat, TapCache};
use edgetune::adapt::{self, Adapter, Kind, Method, Spec};
use edgetune::features::{default_taps, TapReader};
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::plan::{AlignedBytes, Plan, DEFAULT_ARENA_LIMIT};
use edgetune::preprocess::ImagePrep;
use edgetune::{kernels::Kernels, Error, Executor, Result};
use edgetune_examples::{arg, root};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

const SHOTS: usize = 5;
const FIRST: usize = 3;
const NAMES: [&str; 10] = [
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn plan() -> Result<Plan<'static>> {
    let opts = ImportOptions {
        taps: Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    let parts = import_path(&root().join("models/efficientnet_lite0_int8.onnx"), &opts)?;
    Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes()))
}

/// The bundled sample: 28×28 pixels and labels.
fn data() -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |name: &str| {
        let p = root().join("examples/data").join(name);
        std::fs::read(&p).map_err(|e| Error::Io {
            path: p.display().to_string(),
            detail: e.to_string(),
        })
    };
    let (img, lab) = (
        read("fashion_mnist_600-images.idx")?,
        read("fashion_mnist_600-labels.idx")?,
    );
    if img.len() < 16 || lab.len() < 8 || img.len() - 16 != (lab.len() - 8) * 784 {
        return Err(Error::BadFile {
            what: "idx",
            detail: "bundled Fashion-MNIST sample is truncated".into(),
        });
    }
    Ok((img[16..].to_vec(), lab[8..].to_vec()))
}

/// Per class, the first 5 images are the user's shots and the next `q` are requests.
fn split(labels: &[u8], q: usize) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let (mut shots, mut queries) = (vec![vec![]; 10], vec![vec![]; 10]);
    for (i, &l) in labels.iter().enumerate() {
        let c = l as usize;
        if shots[c].len() < SHOTS {
            shots[c].push(i);
        } else if queries[c].len() < q {
            queries[c].push(i);
        }
    }
    (shots, queries)
}

struct Device<'p> {
    reader: TapReader<'p, 'static>,
    prep: ImagePrep,
    bufs: Vec<Vec<f32>>,
    input: Vec<f32>,
}

impl<'p> Device<'p> {
    fn new(plan: &'p Plan<'p>, taps: &[String]) -> Result<Device<'p>> {
        let prep = plan
            .meta("preprocess")
            .and_then(ImagePrep::parse)
            .ok_or_else(|| Error::Invalid {
                what: "plan declares no preprocessing".into(),
            })?;
        let exec = Executor::new(plan, Kernels::detect(), DEFAULT_ARENA_LIMIT)?;
        let reader = TapReader::new(exec, taps)?;
        let bufs = reader.shapes.iter().map(|s| vec![0.0; s.1.len()]).collect();
        Ok(Device {
            reader,
            prep,
            bufs,
            input: vec![],
        })
    }

    fn see(&mut self, pixels: &[u8]) -> Result<()> {
        self.prep.apply(pixels, 28, 28, 1, &mut self.input);
        self.reader.run(&self.input, &mut self.bufs)
    }

    fn dims(&self) -> Vec<TapShape> {
        self.reader.shapes.iter().map(|s| s.1).collect()
    }

    /// Class (index into the classes enrolled so far) of the image last seen.
    fn predict(&self, m: &Method, sel: &[usize], classes: usize) -> Result<usize> {
        let taps: Vec<&[f32]> = sel.iter().map(|&i| &self.bufs[i][..]).collect();
        let all = self.dims();
        let dims: Vec<TapShape> = sel.iter().map(|&i| all[i]).collect();
        let mut s = vec![0.0; classes];
        m.scores(&taps, &dims, &mut s)?;
        Ok(adapt::argmax(&s))
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let q: usize = arg(&args, "--queries")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    if let Some(path) = arg(&args, "--predict") {
        return predict_fresh(&path, q);
    }
    let steps: Option<usize> = arg(&args, "--steps").and_then(|s| s.parse().ok());
    let plan = plan()?;
    let (pixels, labels) = data()?;
    let (shots, queries) = split(&labels, q);
    let img = |i: usize| &pixels[i * 784..][..784];

    // Tap 0: pooled features (ncm); taps 1..: the ladder's spatial taps.
    let ladder_taps = default_taps(&plan, Kind::Ladder);
    let mut taps = default_taps(&plan, Kind::Ncm);
    taps.extend(ladder_taps.iter().cloned());
    let (ncm_sel, ladder_sel): (Vec<usize>, Vec<usize>) = (vec![0], (1..taps.len()).collect());
    let mut dev = Device::new(&plan, &taps)?;
    let mut cache = TapCache::new(CacheFormat::F16, dev.reader.shapes.clone());
    let mut spec = Spec::new(Kind::Ladder);
    if let Some(s) = steps {
        spec.train.steps = s;
    }
    println!(
        "EfficientNet-Lite0 int8 on {:?}; ladder reads {} taps, {} steps per retraining",
        Kernels::detect().describe(),
        ladder_sel.len(),
        spec.train.steps
    );

    // Features of every request image, computed once as the device would see them.
    let mut served_feats: Vec<Vec<Vec<f32>>> = vec![];
    let mut order = vec![];
    for (c, qs) in queries.iter().enumerate() {
        for &i in qs {
            dev.see(img(i))?;
            served_feats.push(dev.bufs.clone());
            order.push((i, c));
        }
    }
    let accuracy =
        |m: &Method, sel: &[usize], seen: usize, only: usize, dev: &mut Device| -> Result<f64> {
            let (mut ok, mut n) = (0, 0);
            for ((_, c), f) in order.iter().zip(&served_feats) {
                if *c < only {
                    dev.bufs.clone_from(f);
                    ok += (dev.predict(m, sel, seen)? == *c) as usize;
                    n += 1;
                }
            }
            Ok(ok as f64 / n.max(1) as f64)
        };

    let mut ladder: Option<Method> = None;
    let mut rows = vec![];
    println!("\nclasses     method  all seen  first 3   served during training");
    for seen in FIRST..=10 {
        // Enrol the new class(es): 5 shots through the backbone into the cache.
        let new = if seen == FIRST {
            0..FIRST
        } else {
            seen - 1..seen
        };
        for c in new {
            for &i in &shots[c] {
                dev.see(img(i))?;
                let v: Vec<&[f32]> = dev.bufs.iter().map(|b| &b[..]).collect();
                cache.push(&v, c)?;
            }
        }
        let idx: Vec<usize> = (0..cache.len()).collect();
        let ncm = adapt::fit(
            &Spec::new(Kind::Ncm),
            &cache,
            &ncm_sel,
            &idx,
            seen,
            &mut |_| true,
        )?;

        // Retrain the ladder in the background; serve with ncm meanwhile.
        let bar = ProgressBar::new(spec.train.steps as u64).with_style(
            ProgressStyle::with_template("  retraining ladder {bar:30} {pos}/{len} loss {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let done = AtomicBool::new(false);
        let t = Instant::now();
        let (trained, served) = std::thread::scope(|s| -> Result<(Method, usize)> {
            let job = s.spawn(|| {
                let r = adapt::fit(&spec, &cache, &ladder_sel, &idx, seen, &mut |p| {
                    bar.set_position(p.step as u64);
                    bar.set_message(format!("{:.3}", p.loss));
                    true
                });
                done.store(true, Ordering::Release);
                r
            });
            // Requests keep coming while the ladder trains: each runs the backbone.
            let mut served = 0;
            let mut k = 0;
            while !done.load(Ordering::Acquire) {
                let (i, c) = order[k % order.len()];
                k += 1;
                if c >= seen {
                    continue;
                }
                dev.see(img(i))?;
                dev.predict(&ncm, &ncm_sel, seen)?;
                served += 1;
            }
            let m = job.join().map_err(|_| Error::Invalid {
                what: "training thread panicked".into(),
            })??;
            Ok((m, served))
        })?;
        bar.finish_and_clear();
        let secs = t.elapsed().as_secs_f64();
        ladder = Some(trained);
        let lad = ladder.as_ref().expect("just trained");
        let a_ncm = (
            accuracy(&ncm, &ncm_sel, seen, seen, &mut dev)?,
            accuracy(&ncm, &ncm_sel, seen, FIRST, &mut dev)?,
        );
        let a_lad = (
            accuracy(lad, &ladder_sel, seen, seen, &mut dev)?,
            accuracy(lad, &ladder_sel, seen, FIRST, &mut dev)?,
        );
        rows.push((a_ncm, a_lad));
        let name = if seen == FIRST {
            format!("{}", FIRST)
        } else {
            format!("+{}", NAMES[seen - 1])
        };
        println!("{name:<12}ncm     {:.3}     {:.3}", a_ncm.0, a_ncm.1);
        println!(
            "{:<12}ladder  {:.3}     {:.3}     {served} requests answered by ncm in {secs:.1} s",
            "", a_lad.0, a_lad.1
        );
    }
    if let (Some(f), Some(l)) = (rows.first(), rows.last()) {
        println!(
            "\nfirst 3 classes, from 3 to 10 classes known: ncm {:.3} -> {:.3} ({:+.3}), ladder {:.3} -> {:.3} ({:+.3})",
            f.0 .1,
            l.0 .1,
            l.0 .1 - f.0 .1,
            f.1 .1,
            l.1 .1,
            l.1 .1 - f.1 .1
        );
    }

    // Export, reload in a fresh process, compare.
    let lad = ladder.ok_or_else(|| Error::Invalid {
        what: "no adapter trained".into(),
    })?;
    let all = dev.dims();
    let adapter = Adapter {
        plan_hash: plan.hash(),
        taps: ladder_sel
            .iter()
            .map(|&i| (taps[i].clone(), all[i]))
            .collect(),
        classes: NAMES.iter().map(|s| s.to_string()).collect(),
        hyper: vec![("steps".into(), spec.train.steps.to_string())],
        method: lad,
    };
    let path = std::env::temp_dir().join(format!("edgetune-grow-{}.eta", std::process::id()));
    adapter.save(&path)?;
    let mut mine = vec![];
    for f in &served_feats {
        dev.bufs.clone_from(f);
        mine.push(dev.predict(&adapter.method, &ladder_sel, 10)?);
    }
    let out = std::process::Command::new(std::env::current_exe().map_err(|e| Error::Invalid {
        what: e.to_string(),
    })?)
    .args([
        "--predict",
        &path.display().to_string(),
        "--queries",
        &q.to_string(),
    ])
    .output()
    .map_err(|e| Error::Invalid {
        what: format!("fresh process: {e}"),
    })?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        return Err(Error::Invalid {
            what: format!(
                "fresh process failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    let theirs: Vec<usize> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let same = mine.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    println!(
        "adapter exported ({} bytes), reloaded in a fresh process: {same}/{} predictions identical{}",
        adapter.to_bytes().len(),
        mine.len(),
        if same == mine.len() && theirs.len() == mine.len() { "" } else { "  MISMATCH" }
    );
    if same != mine.len() || theirs.len() != mine.len() {
        return Err(Error::Invalid {
            what: "reloaded adapter predicts differently".into(),
        });
    }
    Ok(())
}

/// The fresh process: the plan, the adapter file, the request images; prints the classes.
fn predict_fresh(path: &str, q: usize) -> Result<()> {
    let plan = plan()?;
    let mut adapter = Adapter::load(std::path::Path::new(path), &plan.hash())?;
    adapter.bind(&plan)?;
    let names: Vec<String> = adapter.taps.iter().map(|t| t.0.clone()).collect();
    let mut dev = Device::new(&plan, &names)?;
    let sel: Vec<usize> = (0..names.len()).collect();
    let (pixels, labels) = data()?;
    let (_, queries) = split(&labels, q);
    let mut out = String::new();
    for qs in &queries {
        for &i in qs {
            dev.see(&pixels[i * 784..][..784])?;
            out += &format!(
                "{} ",
                dev.predict(&adapter.method, &sel, adapter.classes.len())?
            );
        }
    }
    println!("{out}");
    Ok(())
}
