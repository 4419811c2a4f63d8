//! Threads change nothing: every bundled backbone (int8 convolutions, depthwise, int8
//! GEMMs of many rows and of one, the dynamic-int8 MatMuls and float ops of the text
//! encoder) gives the same bytes in every output and tap on 1, 2 and 3 threads, for
//! inputs the models take.
#![cfg(all(feature = "onnx", feature = "files"))]

use edgetune::exec::Executor;
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::kernels::Kernels;
use edgetune::par::Par;
use edgetune::plan::{AlignedBytes, Plan, DEFAULT_ARENA_LIMIT};
use std::path::Path;

mod common;

fn inputs(plan: &Plan, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    plan.inputs
        .iter()
        .map(|p| {
            let n = plan.tensors[p.tensor as usize].len();
            (0..n)
                .map(|i| match p.name.as_str() {
                    "input_ids" => (next() % 30000) as f32,
                    "attention_mask" => (i < n - 17) as u32 as f32,
                    "token_type_ids" => 0.0,
                    _ => next() as f32 / (1u64 << 31) as f32 - 1.0,
                })
                .collect()
        })
        .collect()
}

/// The bytes of each output and tap.
type Outputs = Vec<Vec<u8>>;

/// The outputs and taps of `runs` runs, and the ops run as stripes.
fn outputs(
    plan: &Plan,
    par: Par,
    feeds: &[Vec<f32>],
    runs: usize,
) -> (Vec<Outputs>, Vec<(usize, usize)>) {
    let mut exec = Executor::new(plan, Kernels::detect(), DEFAULT_ARENA_LIMIT).unwrap();
    exec.set_par(par);
    let refs: Vec<&[f32]> = feeds.iter().map(|v| v.as_slice()).collect();
    let all = (0..runs)
        .map(|_| {
            exec.run(&refs).unwrap();
            plan.outputs
                .iter()
                .chain(&plan.taps)
                .map(|p| exec.tensor_bytes(p.tensor).to_vec())
                .collect()
        })
        .collect();
    (all, exec.stripes())
}

#[test]
fn bundled_backbones_are_bit_identical_on_any_thread_count() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for model in [
        "efficientnet_lite0_int8.onnx",
        "oww_embedding_int8.onnx",
        "minilm_l6_int8.onnx",
        "tiny_cnn_fmnist04_int8.onnx",
    ] {
        let opts = ImportOptions {
            taps: Taps::Blocks,
            ..Default::default()
        };
        let parts = import_path(&root.join("models").join(model), &opts).unwrap();
        let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
        let feeds = inputs(&plan, 3);
        let (one, _) = outputs(&plan, Par::single(), &feeds, 1);
        let one = &one[0];
        assert!(
            one.iter().any(|o| o.iter().any(|&b| b != 0)),
            "{model}: all zero"
        );
        for t in [2, 3] {
            // Several runs: threads that run ahead of each other inside a stripe would
            // show as a run that differs.
            let (many, stripes) = outputs(&plan, Par::new(t).unwrap(), &feeds, 8);
            for (n, run) in many.iter().enumerate() {
                for (k, (a, b)) in one.iter().zip(run).enumerate() {
                    assert!(
                        a == b,
                        "{model}: output/tap {k} differs on {t} threads, run {n}"
                    );
                }
            }
            let striped: usize = stripes.iter().map(|s| s.1).sum();
            println!(
                "{model}, {t} threads: {striped} ops in {} stripes",
                stripes.len()
            );
            // EfficientNet: every op from the stem convolution to the last 1×1
            // convolution; openWakeWord: its convolutions, tables and max pools.
            let want: Option<&[(usize, usize)]> = match model {
                "efficientnet_lite0_int8.onnx" => Some(&[(1, 58)]),
                "oww_embedding_int8.onnx" => Some(&[(1, 48)]),
                _ => None,
            };
            if let Some(want) = want {
                assert_eq!(stripes, want, "{model} on {t} threads");
            }
        }
        println!(
            "{model}: {} outputs and taps identical on 1, 2, 3 threads",
            one.len()
        );
    }
}

/// The bundled EfficientNet-Lite0 int8 imported with a tap per block and its RGB 224×224
/// preprocessing, as plan bytes.
fn effnet_blocks() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let opts = ImportOptions {
        taps: Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    import_path(&root.join("models/efficientnet_lite0_int8.onnx"), &opts)
        .unwrap()
        .to_bytes()
}

/// Training reads the tap cache through the same GEMMs: a `tail`, `bias`, `lora` or
/// `query` adapter trained with one thread and with two or three (the process default,
/// which the trainers take) is the same file, byte for byte, on RGB photos.
#[test]
fn training_is_bit_identical_on_any_thread_count() {
    use edgetune::adapt::Kind;
    use edgetune::session::Session;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plan = effnet_blocks();
    let train = |threads: usize, kind: Kind| {
        edgetune::par::set_default_threads(threads);
        let mut s = Session::from_bytes(&plan).unwrap();
        assert_eq!(s.threads(), threads);
        s.set_method(kind).unwrap();
        s.opts.steps = Some(12);
        for class in ["cat", "coffee", "rocket"] {
            for i in 0..3 {
                let p = s
                    .load(&root.join(format!("examples/data/photos/{class}/{i}.jpg")))
                    .unwrap();
                s.enrol(p, class).unwrap();
            }
        }
        s.fit(&mut |_| true).unwrap();
        let p = s
            .load(&root.join("examples/data/photos/cat/4.jpg"))
            .unwrap();
        let mut scores = vec![];
        s.scores(&p, &mut scores).unwrap();
        (s.adapter().unwrap().to_bytes(), scores)
    };
    // `tail`, `bias` and `lora` through the batched GEMMs and passes; `query` through the
    // per-example loop, whose batch splits into fixed groups over the threads.
    for kind in [Kind::Tail, Kind::Bias, Kind::Lora, Kind::Query] {
        let one = train(1, kind);
        for threads in [2, 3] {
            let other = train(threads, kind);
            assert!(
                one.0 == other.0,
                "{kind:?}: adapters differ on {threads} threads"
            );
            assert_eq!(
                one.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                other.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{kind:?}: scores differ on {threads} threads"
            );
        }
        println!(
            "{kind:?} adapter ({} bytes) and scores identical on 1, 2 and 3 threads",
            one.0.len()
        );
    }
    edgetune::par::set_default_threads(0);
}

/// Episodes side by side, each on its share of the threads, give every episode the
/// numbers it gets alone on one thread: accuracies (float and int8), sizes and peaks, in
/// episode order, for a per-example head, a batched tail and the prototypes.
#[test]
fn episodes_side_by_side_match_one_after_another() {
    use edgetune::adapt::Kind;
    use edgetune::session::eval::{episode_threads, episodes};
    use edgetune::session::{Options, Sample};
    let plan = Plan::from_owned(AlignedBytes::from_slice(&effnet_blocks())).unwrap();
    // The first 9 images of each class.
    let mut seen = [0; 10];
    let data: Vec<(Sample, usize)> = common::fashion()
        .into_iter()
        .filter(|(_, l)| {
            seen[*l] += 1;
            seen[*l] <= 9
        })
        .collect();
    let o = Options {
        steps: Some(4),
        ..Default::default()
    };
    let kinds = [Kind::Ncm, Kind::Query, Kind::Bias];
    // This thread's default only: other tests set the process's.
    let run = |threads: usize| {
        edgetune::par::set_thread_default(threads);
        let (res, _) = episodes(
            &plan,
            &data,
            10,
            &kinds,
            4,
            3,
            3,
            0,
            &o,
            0,
            0,
            None,
            None,
            &mut |_, _| {},
        )
        .unwrap();
        let side = episode_threads(3, false);
        edgetune::par::set_thread_default(0);
        (res, side)
    };
    let (one, side) = run(1);
    assert_eq!(side, (1, 1));
    assert!(one.iter().all(|m| m.acc.len() == 3));
    assert_eq!(one[2].acc_int8.len(), 3);
    for threads in [2, 3] {
        let (other, side) = run(threads);
        assert_eq!(
            side,
            (threads, 1),
            "{threads} threads: episodes side by side"
        );
        for (a, b) in one.iter().zip(&other) {
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a.acc),
                bits(&b.acc),
                "{:?} on {threads} threads",
                a.kind
            );
            assert_eq!(bits(&a.acc_int8), bits(&b.acc_int8), "{:?} int8", a.kind);
            assert_eq!(
                (a.params, a.adapter_bytes, a.peak),
                (b.params, b.adapter_bytes, b.peak),
                "{:?}",
                a.kind
            );
        }
    }
    println!(
        "3 episodes on 1, 2 and 3 threads: the same accuracies {:?}",
        one.iter()
            .map(|m| (m.kind, m.acc.clone()))
            .collect::<Vec<_>>()
    );
}
