//! Plans compiled for a batch of images: the generated blocks of mobile networks
//! (convolutions dense, depthwise, grouped and transposed, average and global pooling,
//! padding, concatenation, upsampling, in QDQ, QOperator and int8-activation forms) and
//! the float convolutions, compiled with a batch of several inputs and run once, against
//! onnxruntime's outputs on the same inputs (models/golden/ops) and against the batch-1
//! plan run on each input alone, which must give the same bits; and EfficientNet-Lite0
//! on a batch of RGB camera frames, on one and two threads.
#![cfg(feature = "onnx")]

use edgetune::import::{import_path, ImportOptions};
use edgetune::kernels::Kernels;
use edgetune::npy::read_npy;
use edgetune::par::Par;
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::Executor;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/golden/ops")).to_path_buf()
}

fn compile(
    path: &Path,
    inputs: Vec<(String, Vec<usize>)>,
) -> edgetune::error::Result<Plan<'static>> {
    let opts = ImportOptions {
        inputs,
        ..Default::default()
    };
    let parts = import_path(path, &opts)?;
    Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes()))
}

/// Output 0 of `plan` on `x` (the whole input of the plan), with `threads` threads.
fn run(plan: &Plan, x: &[f32], threads: usize) -> Vec<f32> {
    let mut exec = Executor::new(plan, Kernels::detect(), 1 << 26).unwrap();
    exec.set_par(Par::new(threads).unwrap());
    exec.run(&[x]).unwrap();
    let t = plan.outputs[0].tensor;
    let mut out = vec![0.0; plan.tensors[t as usize].len()];
    exec.tensor_f32(t, &mut out).unwrap();
    out
}

/// Checks a batched plan of `model` (first input `name`, one input of `shape` per image)
/// on `n` inputs `x` against onnxruntime's outputs `y` (worst difference in units of
/// `tol`, returned) and the batch-1 plan on each input (bit for bit).
fn check(
    model: &Path,
    name: &str,
    shape: &[usize],
    x: &[f32],
    y: &[f32],
    n: usize,
) -> Result<f32, String> {
    let stem = model.file_stem().unwrap().to_string_lossy().to_string();
    let with = |b: usize| {
        let mut s = vec![b];
        s.extend_from_slice(shape);
        vec![(name.to_string(), s)]
    };
    let batched = compile(model, with(n)).map_err(|e| format!("{stem}: batch {n}: {e}"))?;
    let single = compile(model, with(1)).map_err(|e| format!("{stem}: batch 1: {e}"))?;
    let (xl, yl) = (x.len() / n, y.len() / n);
    let all = run(&batched, x, 1);
    if all.len() != y.len() {
        return Err(format!(
            "{stem}: {} outputs for {} expected",
            all.len(),
            y.len()
        ));
    }
    for i in 0..n {
        let one = run(&single, &x[i * xl..][..xl], 1);
        if one[..] != all[i * yl..][..yl] {
            return Err(format!(
                "{stem}: image {i} of the batch differs from a batch of one"
            ));
        }
    }
    let (lo, hi) = y
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let step = (hi - lo).max(1e-6) / 255.0;
    let worst = all
        .iter()
        .zip(y)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs() / step));
    let convs = batched
        .ops
        .iter()
        .filter(|o| {
            use edgetune::plan::Op;
            matches!(
                o,
                Op::ConvI8 { .. }
                    | Op::DwI8 { .. }
                    | Op::ConvF32 { .. }
                    | Op::GroupConvF32 { .. }
                    | Op::GapU8 { .. }
                    | Op::MaxPoolU8 { .. }
            )
        })
        .count();
    eprintln!("{stem}: batch of {n}: worst difference to onnxruntime {worst:.2} output steps; {convs} convolution or pooling ops; each image equal to a batch of one");
    Ok(worst)
}

#[test]
fn quantised_blocks_run_as_one_batch() {
    let (xs, x) = read_npy(&dir().join("x.npy")).unwrap();
    let n = xs[0];
    assert!(n >= 4, "the inputs hold {n} images");
    let mut models: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    assert!(models.len() >= 30, "expected the 30 generated models");
    let mut failed = vec![];
    for m in &models {
        let stem = m.file_stem().unwrap().to_str().unwrap();
        if stem.starts_with("tokens_") {
            // Its Reshape to the constant [1, 8, 64] holds batch 1 in the model itself (as
            // onnxruntime finds too): the batched import must refuse it, and say why.
            let mut s = vec![n];
            s.extend_from_slice(&xs[1..]);
            match compile(m, vec![("x".into(), s)]) {
                Err(e) => eprintln!("SKIP {stem}: a Reshape constant fixes batch 1; refused: {e}"),
                Ok(_) => failed.push(format!("{stem}: imported with batch {n}")),
            }
            continue;
        }
        let (_, y) = read_npy(&dir().join(format!("{stem}_y.npy"))).unwrap();
        match check(m, "x", &xs[1..], &x, &y, n) {
            Ok(w) if w <= 2.0 => {}
            Ok(w) => failed.push(format!("{stem}: {w:.2} output steps from onnxruntime")),
            Err(e) => failed.push(e),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn float_convolutions_run_as_one_batch() {
    let f32dir = dir().join("f32");
    let mut failed = vec![];
    // A strided 1-D convolution (an STFT), a grouped 2-D one, a transposed one.
    for stem in ["conv1d_stft", "conv2d_grouped", "deconv"] {
        let (xs, x) = read_npy(&f32dir.join(format!("{stem}_x.npy"))).unwrap();
        let (_, y) = read_npy(&f32dir.join(format!("{stem}_y.npy"))).unwrap();
        // Inputs as [n, 1, ...]: one batch-1 input each.
        let m = f32dir.join(format!("{stem}.onnx"));
        match check(&m, "x", &xs[2..], &x, &y, xs[0]) {
            // onnxruntime's outputs are float: in units of the largest output instead.
            Ok(w) => {
                let (lo, hi) = y
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let scale = y.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
                let rel = w * (hi - lo).max(1e-6) / 255.0 / scale;
                if rel > 1e-4 {
                    failed.push(format!(
                        "{stem}: {rel:.2e} of the largest output from onnxruntime"
                    ));
                }
            }
            Err(e) => failed.push(e),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The bundled EfficientNet-Lite0 with its block taps and image preprocessing.
#[cfg(feature = "files")]
fn effnet_parts(inputs: Vec<(String, Vec<usize>)>) -> edgetune::plan::PlanParts {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let opts = ImportOptions {
        inputs,
        taps: edgetune::import::Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    import_path(&root.join("models/efficientnet_lite0_int8.onnx"), &opts).unwrap()
}

/// Every row of every tap of a cache, in f32.
#[cfg(feature = "files")]
fn cache_rows(c: &edgetune::adapt::cache::TapCache) -> Vec<Vec<f32>> {
    (0..c.len())
        .flat_map(|r| {
            (0..c.taps.len()).map(move |j| {
                let mut v = vec![0.0; c.taps[j].len()];
                c.read(r, j, &mut v);
                v
            })
        })
        .collect()
}

/// EfficientNet-Lite0 int8 compiled for a batch of 4 and run on 4 RGB photos at once, on
/// one thread and on two: every output and tap of each photo equals, byte for byte, the
/// batch-1 plan's on that photo alone (the batch-1 plan matches onnxruntime in
/// tests/effnet_golden.rs).
#[cfg(feature = "files")]
#[test]
fn efficientnet_runs_a_batch_of_rgb_photos() {
    use edgetune::session::prep_of;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let parts = effnet_parts(vec![]);
    let single = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let port = &single.inputs[0];
    let mut shape = single.tensors[port.tensor as usize].logical_shape();
    assert_eq!(shape[0], 1);
    let n = 4;
    shape[0] = n;
    let parts = effnet_parts(vec![(port.name.clone(), shape)]);
    let batched = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let mut prep = prep_of(&single).unwrap();
    let mut x = vec![];
    for (class, i) in [("cat", 0), ("coffee", 1), ("rocket", 2), ("cat", 3)] {
        let s = prep
            .load(&root.join(format!("examples/data/photos/{class}/{i}.jpg")))
            .unwrap();
        let mut t = vec![];
        prep.inputs(&s, 0, &mut t).unwrap();
        x.push(t.remove(0));
    }
    let read = |plan: &Plan, threads: usize, input: &[f32]| -> Vec<Vec<u8>> {
        let mut exec = Executor::new(plan, Kernels::detect(), 1 << 28).unwrap();
        exec.set_par(Par::new(threads).unwrap());
        exec.run(&[input]).unwrap();
        plan.outputs
            .iter()
            .chain(&plan.taps)
            .map(|p| exec.tensor_bytes(p.tensor).to_vec())
            .collect()
    };
    let ones: Vec<Vec<Vec<u8>>> = x.iter().map(|xi| read(&single, 1, xi)).collect();
    let all: Vec<f32> = x.concat();
    for threads in [1, 2] {
        let got = read(&batched, threads, &all);
        assert_eq!(got.len(), ones[0].len());
        for (k, t) in got.iter().enumerate() {
            let per = ones[0][k].len();
            assert_eq!(
                t.len(),
                per * n,
                "output or tap {k}: size of a batch of {n}"
            );
            for (i, one) in ones.iter().enumerate() {
                assert!(
                    t[i * per..][..per] == one[k][..],
                    "output or tap {k}, photo {i}, {threads} threads: differs from batch 1"
                );
            }
        }
    }
    // The photos differ, so equal slices are not equal by accident.
    assert!(ones[0][0] != ones[1][0]);
    eprintln!(
        "EfficientNet-Lite0, batch of {n} RGB photos: {} outputs and taps equal to batch 1 on 1 and 2 threads",
        ones[0].len()
    );
}

/// Evaluation caches every example once, the examples shared out over the threads (one
/// executor each): the cache, with two augmented views of each photo, is the same on 1, 2
/// and 3 threads, and the same as the sequential filler's, row for row.
#[cfg(feature = "files")]
#[test]
fn cache_of_many_examples_is_the_same_on_any_thread_count() {
    use edgetune::adapt::cache::TapCache;
    use edgetune::features::TapReader;
    use edgetune::session::cache::{Filler, Reduce};
    use edgetune::session::eval::cache_all;
    use edgetune::session::{prep_of, Options};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plan =
        Plan::from_owned(AlignedBytes::from_slice(&effnet_parts(vec![]).to_bytes())).unwrap();
    let mut prep = prep_of(&plan).unwrap();
    let mut examples = vec![];
    for (label, class) in ["cat", "coffee", "rocket"].iter().enumerate() {
        for i in 0..3 {
            let p = root.join(format!("examples/data/photos/{class}/{i}.jpg"));
            examples.push((prep.load(&p).unwrap(), label));
        }
    }
    let taps: Vec<String> = plan
        .taps
        .iter()
        .rev()
        .take(2)
        .map(|p| p.name.clone())
        .collect();
    // With 2 views, rounds of several views per thread; with none, 9 examples leave a
    // last round of one, where a thread has no job.
    for augment in [2, 0] {
        let o = Options {
            augment,
            ..Default::default()
        };
        // The sequential filler on one executor.
        let exec = Executor::new(&plan, Kernels::detect(), 1 << 28).unwrap();
        let mut rd = TapReader::new(exec, &taps).unwrap();
        let mut fill = Filler::new(&mut rd, Reduce::Full, o.augment, 7);
        let mut want = TapCache::new(
            o.cache.unwrap_or(edgetune::adapt::cache::CacheFormat::F16),
            fill.shapes(),
        );
        for (s, l) in &examples {
            fill.push(&prep, s, *l, &mut want).unwrap();
        }
        assert_eq!(want.len(), examples.len() * (1 + augment));
        for threads in [1, 2, 3] {
            edgetune::par::set_default_threads(threads);
            let (got, src, _) =
                cache_all(&plan, &prep, &examples, &taps, &o, 7, &mut |_, _| {}).unwrap();
            edgetune::par::set_default_threads(0);
            assert_eq!(
                got.labels, want.labels,
                "augment {augment}, {threads} threads: labels"
            );
            let expect_src: Vec<usize> = (0..examples.len())
                .flat_map(|i| [i; 3].into_iter().take(1 + augment))
                .collect();
            assert_eq!(
                src, expect_src,
                "augment {augment}, {threads} threads: source examples"
            );
            assert!(
                cache_rows(&got) == cache_rows(&want),
                "augment {augment}, {threads} threads: cached taps differ"
            );
        }
    }
    eprintln!(
        "cache of 9 photos with 2 views each and with none: equal on 1, 2 and 3 threads and to the sequential filler"
    );
}

/// `Session::enrol_batch` runs the examples one per thread and caches them in order: on
/// two threads, with two augmented views each, the cache and the fitted adapter equal
/// those of `enrol` on each example in turn on one thread. A batch holding an input that
/// is not finite is refused whole: nothing of it is enrolled, not even its new class.
#[cfg(feature = "files")]
#[test]
fn enrol_batch_equals_enrolling_one_at_a_time() {
    use edgetune::adapt::Kind;
    use edgetune::session::Session;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plan = effnet_parts(vec![]).to_bytes();
    let session = |threads: usize| {
        let mut s = Session::from_bytes(&plan).unwrap();
        s.set_threads(threads).unwrap();
        s.opts.augment = 2;
        s.set_method(Kind::Linear).unwrap();
        s.opts.steps = Some(20);
        s
    };
    let photos: Vec<(PathBuf, &str)> = ["cat", "coffee", "rocket"]
        .iter()
        .flat_map(|c| {
            let root = &root;
            (0..3).map(move |i| (root.join(format!("examples/data/photos/{c}/{i}.jpg")), *c))
        })
        .collect();
    let mut one = session(1);
    for (p, c) in &photos {
        let x = one.load(p).unwrap();
        one.enrol(x, c).unwrap();
    }
    let mut two = session(2);
    let items: Vec<_> = photos
        .iter()
        .map(|(p, c)| (two.load(p).unwrap(), *c))
        .collect();
    two.enrol_batch(items).unwrap();
    assert_eq!(two.cached(), photos.len() * 3);
    assert_eq!(one.cache().labels, two.cache().labels);
    assert!(
        cache_rows(one.cache()) == cache_rows(two.cache()),
        "cached taps differ"
    );
    one.fit(&mut |_| true).unwrap();
    two.fit(&mut |_| true).unwrap();
    assert!(one.adapter().unwrap().to_bytes() == two.adapter().unwrap().to_bytes());

    // A batch with a NaN input: refused, and the session as it was.
    let len = two.plan().tensors[two.plan().inputs[0].tensor as usize].len();
    let good = two.load(&photos[0].0).unwrap();
    let bad = two.tensors(vec![vec![f32::NAN; len]]).unwrap();
    let before = (two.cached(), two.examples(), two.classes().to_vec());
    let e = two
        .enrol_batch(vec![(good, "cat"), (bad, "new class")])
        .unwrap_err();
    assert!(matches!(e, edgetune::Error::NonFinite { .. }), "{e}");
    assert_eq!(
        (two.cached(), two.examples(), two.classes().to_vec()),
        before
    );
    eprintln!("enrol_batch on 2 threads: {} cached rows and the adapter equal to enrol on 1; a NaN batch refused whole ({e})", photos.len() * 3);
}
