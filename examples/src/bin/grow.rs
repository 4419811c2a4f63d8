//! Growing an image classifier on the device, one class at a time, while it keeps serving.
//!
//! EfficientNet-Lite0 int8 and the bundled Fashion-MNIST sample: start with 3 classes
//! from 5 shots each, then add the other 7 one by one. Two library `Session`s share the
//! work: one serves with `ncm` (a new class is served at once: enrolling is an average),
//! the other retrains a `ladder` adapter over three spatial taps in a background thread
//! (progress bar), warm-started from the adapter it had (`Session::fit_warm`; `--cold`
//! trains each from scratch), while the main thread keeps answering requests. After each
//! addition the program prints the accuracy on every class seen so far and on the first
//! three (what the old classes forget). Finally it saves the adapter, reloads it in a
//! fresh process and checks the predictions are identical.
//!
//! usage: grow [--queries N] [--steps N] [--cold]   (N query images per class, default 20)
//!        grow --predict ADAPTER.eta --queries N     (the fresh process)

use edgetune::adapt::Kind;
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::session::{Image, Options, Sample, Session};
use edgetune::{kernels::Kernels, Error, Result};
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

/// The backbone compiled with its taps and its preprocessing declared.
fn plan_bytes() -> Result<Vec<u8>> {
    let opts = ImportOptions {
        taps: Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    Ok(import_path(&root().join("models/efficientnet_lite0_int8.onnx"), &opts)?.to_bytes())
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

/// A grey 28×28 picture as the session takes it (the plan's preprocessing resizes it).
fn picture(pixels: &[u8], i: usize) -> Sample {
    Sample::Image(Image {
        px: pixels[i * 784..][..784].to_vec(),
        w: 28,
        h: 28,
        c: 1,
    })
}

/// The best class of `s` (labels are the classes in the order they were enrolled).
fn best(session: &mut Session, s: &Sample) -> Result<usize> {
    Ok(session.predict(s, 1)?[0].0)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let q: usize = arg(&args, "--queries")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    if let Some(path) = arg(&args, "--predict") {
        return predict_fresh(&path, q);
    }
    let cold = args.iter().any(|a| a == "--cold");
    let opts = Options {
        steps: arg(&args, "--steps").and_then(|s| s.parse().ok()),
        ..Default::default()
    };
    let bytes = plan_bytes()?;
    let mut serve = Session::from_bytes(&bytes)?;
    serve.set_method(Kind::Ncm)?;
    let mut learn = Session::with_options(
        edgetune::Plan::from_owned(edgetune::plan::AlignedBytes::from_slice(&bytes))?,
        opts,
    )?;
    learn.set_method(Kind::Ladder)?;
    let (pixels, labels) = data()?;
    let (shots, queries) = split(&labels, q);
    println!(
        "EfficientNet-Lite0 int8 on {:?}; ladder reads {} taps, each retraining {}",
        Kernels::detect().describe(),
        learn.taps().len(),
        if cold {
            "from scratch"
        } else {
            "warm-started from the last adapter"
        }
    );

    // Requests: (image, class) in class order.
    let order: Vec<(usize, usize)> = queries
        .iter()
        .enumerate()
        .flat_map(|(c, qs)| qs.iter().map(move |&i| (i, c)))
        .collect();
    let accuracy = |s: &mut Session, seen: usize, only: usize| -> Result<f64> {
        let (mut ok, mut n) = (0, 0);
        for &(i, c) in order.iter().filter(|r| r.1 < only.min(seen)) {
            ok += (best(s, &picture(&pixels, i))? == c) as usize;
            n += 1;
        }
        Ok(ok as f64 / n.max(1) as f64)
    };

    let mut rows = vec![];
    println!("\nclasses     method  all seen  first 3   served during training");
    for seen in FIRST..=10 {
        // The new class(es): 5 shots each, enrolled in both sessions.
        let new = if seen == FIRST {
            0..FIRST
        } else {
            seen - 1..seen
        };
        for c in new {
            let examples: Vec<Sample> = shots[c].iter().map(|&i| picture(&pixels, i)).collect();
            if seen == FIRST {
                for s in examples.iter().cloned() {
                    serve.enrol(s, NAMES[c])?;
                }
            } else {
                // Served at once: ncm's refit is an average.
                serve.add_class(NAMES[c], examples.clone())?;
            }
            for s in examples {
                learn.enrol(s, NAMES[c])?;
            }
        }
        if seen == FIRST {
            serve.fit(&mut |_| true)?;
        }

        // Retrain the ladder in the background; serve with ncm meanwhile.
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("  retraining ladder {bar:30} {pos}/{len} loss {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let done = AtomicBool::new(false);
        let t = Instant::now();
        let (fitted, served) = std::thread::scope(|s| -> Result<_> {
            let learn = &mut learn;
            let job = s.spawn(|| {
                let mut report = |p: &edgetune::adapt::train::Progress| {
                    bar.set_length(p.steps as u64);
                    bar.set_position(p.step as u64);
                    bar.set_message(format!("{:.3}", p.loss));
                    true
                };
                let r = if cold {
                    learn.fit(&mut report)
                } else {
                    learn.fit_warm(&mut report)
                };
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
                best(&mut serve, &picture(&pixels, i))?;
                served += 1;
            }
            let fitted = job.join().map_err(|_| Error::Invalid {
                what: "training thread panicked".into(),
            })??;
            Ok((fitted, served))
        })?;
        bar.finish_and_clear();
        let secs = t.elapsed().as_secs_f64();
        let a_ncm = (
            accuracy(&mut serve, seen, seen)?,
            accuracy(&mut serve, seen, FIRST)?,
        );
        let a_lad = (
            accuracy(&mut learn, seen, seen)?,
            accuracy(&mut learn, seen, FIRST)?,
        );
        rows.push((a_ncm, a_lad));
        let name = if seen == FIRST {
            format!("{}", FIRST)
        } else {
            format!("+{}", NAMES[seen - 1])
        };
        println!("{name:<12}ncm     {:.3}     {:.3}", a_ncm.0, a_ncm.1);
        println!(
            "{:<12}ladder  {:.3}     {:.3}     {served} requests answered by ncm in {secs:.1} s ({} steps)",
            "", a_lad.0, a_lad.1, fitted.steps
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

    // Save, reload in a fresh process, compare.
    let path = std::env::temp_dir().join(format!("edgetune-grow-{}.eta", std::process::id()));
    learn.save(&path)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut mine = vec![];
    for &(i, _) in &order {
        mine.push(best(&mut learn, &picture(&pixels, i))?);
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
        "adapter exported ({size} bytes), reloaded in a fresh process: {same}/{} predictions identical{}",
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
    let mut s = Session::from_bytes(&plan_bytes()?)?;
    s.load_adapter(std::path::Path::new(path))?;
    let (pixels, labels) = data()?;
    let (_, queries) = split(&labels, q);
    let mut out = String::new();
    for qs in &queries {
        for &i in qs {
            out += &format!("{} ", best(&mut s, &picture(&pixels, i))?);
        }
    }
    println!("{out}");
    Ok(())
}
