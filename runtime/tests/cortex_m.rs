//! The Cortex-M firmware (targets/cortex-m) under `qemu-system-arm -machine mps2-an386`,
//! its defmt log decoded here by defmt-print (targets/cortex-m/run.sh): it must pass its
//! own checks, allocate nothing on the heap while it infers, and its predictions on the
//! held-out examples (the backbone's own classes, and the ncm and linear heads it trains)
//! must be identical to the same episode run here on the host. Both builds run: with
//! training (the default) and inference only (`--no-default-features`), which has no heap
//! at all: it reads the plan's tables in place and its allocator refuses every request.
#![cfg(feature = "onnx")]

use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::{self, Kind, Spec};
use edgetune::features::FeatureExtractor;
use edgetune::import::{import_path, ImportOptions};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::preprocess::ImagePrep;
use edgetune::{kernels::Kernels, Executor};
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The episode the firmware's build script writes: classes 5-9, 5 support and 20 query
/// images each, in file order.
/// (label, pixels) examples.
type Examples = Vec<(usize, Vec<u8>)>;

fn episode() -> (Examples, Examples) {
    let px = std::fs::read(root().join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb = std::fs::read(root().join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    let (mut sup, mut qry) = (vec![], vec![]);
    let mut seen = [0usize; 10];
    for (i, &l) in lb[8..].iter().enumerate() {
        if l < 5 {
            continue;
        }
        let k = seen[l as usize];
        seen[l as usize] += 1;
        let rec = ((l - 5) as usize, px[16 + i * 784..][..784].to_vec());
        if k < 5 {
            sup.push(rec);
        } else if k < 25 {
            qry.push(rec);
        }
    }
    (sup, qry)
}

/// The backbone's own class (argmax of its `logits` output) for each held-out example.
fn host_backbone(plan: &Plan) -> Vec<usize> {
    let prep = ImagePrep::parse(plan.meta("preprocess").unwrap()).unwrap();
    let mut exec = Executor::new(plan, Kernels::detect(), 1 << 20).unwrap();
    let id = plan
        .outputs
        .iter()
        .find(|p| p.name == "logits")
        .unwrap()
        .tensor;
    let mut logits = vec![0.0; plan.tensors[id as usize].len()];
    let mut input = vec![];
    episode()
        .1
        .iter()
        .map(|(_, px)| {
            prep.apply(px, 28, 28, 1, &mut input);
            exec.run(&[&input]).unwrap();
            exec.tensor_f32(id, &mut logits).unwrap();
            adapt::argmax(&logits)
        })
        .collect()
}

fn host_predictions(plan: &Plan) -> Vec<(Kind, Vec<usize>)> {
    let prep = ImagePrep::parse(plan.meta("preprocess").unwrap()).unwrap();
    let exec = Executor::new(plan, Kernels::detect(), 1 << 20).unwrap();
    let mut fx = FeatureExtractor::new(exec, "features").unwrap();
    let dim = fx.dim;
    let (sup, qry) = episode();
    let mut cache = TapCache::new(
        CacheFormat::F16,
        vec![("features".into(), TapShape::new(1, dim))],
    );
    let (mut input, mut f) = (vec![], vec![0.0; dim]);
    for (l, px) in &sup {
        prep.apply(px, 28, 28, 1, &mut input);
        fx.features(&input, &mut f).unwrap();
        cache.push(&[&f], *l).unwrap();
    }
    let idx: Vec<usize> = (0..sup.len()).collect();
    let dims = [TapShape { tokens: 1, dim }];
    let mut out = vec![];
    for kind in [Kind::Ncm, Kind::Linear] {
        let m = adapt::fit(&Spec::new(kind), &cache, &[0], &idx, 5, &mut |_| true).unwrap();
        let mut preds = vec![];
        let mut sc = [0.0; 5];
        for (_, px) in &qry {
            prep.apply(px, 28, 28, 1, &mut input);
            fx.features(&input, &mut f).unwrap();
            m.scores(&[&f], &dims, &mut sc).unwrap();
            preds.push(adapt::argmax(&sc));
        }
        out.push((kind, preds));
    }
    out
}

#[test]
fn firmware_matches_the_host_on_the_same_episode() {
    let fw = root().join("targets/cortex-m");
    let etm = std::fs::read(fw.join("assets/tiny_cnn.etm")).unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&etm)).unwrap();
    // The committed plan is what `edgetune compile models/tiny_cnn_fmnist04_int8.onnx
    // --preprocess image:28:127:128:1` (run from the repo root) makes of the committed model.
    let src = "models/tiny_cnn_fmnist04_int8.onnx";
    let opts = ImportOptions {
        meta: vec![
            ("source".into(), src.into()),
            ("preprocess".into(), "image:28:127:128:1".into()),
        ],
        ..Default::default()
    };
    let fresh = import_path(&root().join(src), &opts).unwrap();
    let fresh = Plan::from_owned(AlignedBytes::from_slice(&fresh.to_bytes())).unwrap();
    assert_eq!(
        plan.hash(),
        fresh.hash(),
        "assets/tiny_cnn.etm is stale: see targets/README.md"
    );
    let host = host_predictions(&plan);
    let backbone = host_backbone(&plan);

    if Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIP firmware run: qemu-system-arm is not installed (apt install qemu-system-arm)"
        );
        return;
    }
    let Some(defmt_print) = defmt_print() else {
        eprintln!(
            "SKIP firmware run: defmt-print is not installed (./.ci/run installs it into the tools cache)"
        );
        return;
    };
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", root().display()));
    for train in [true, false] {
        let mut args = vec!["run", "--release", "-q"];
        if !train {
            args.push("--no-default-features");
        }
        let o = Command::new(env!("CARGO"))
            .args(&args)
            .current_dir(&fw)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("DEFMT_PRINT", &defmt_print)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let build = if train {
            "with training"
        } else {
            "inference only"
        };
        eprintln!(
            "--- firmware {build}: cargo {}, defmt log decoded by defmt-print:\n{text}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "firmware ({build}) failed");
        let lines: Vec<&str> = text.lines().collect();
        let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
        assert!(has("INFO  firmware: PASS"), "{build}: no PASS line");
        // The runtime's own log point, through the firmware's defmt logger.
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("INFO  plan loaded: ") && l.ends_with("(in place)")),
            "{build}: no plan-loaded line from the runtime, or the plan was copied"
        );
        assert!(
            has(&format!(
                "INFO  inference: {} held-out examples, 0 heap allocations",
                backbone.len()
            )),
            "{build}: inference allocated on the heap"
        );
        assert_eq!(
            predictions(&lines, "backbone"),
            backbone,
            "{build}: backbone classes differ from the host's"
        );
        // A plan of another version is refused with its static text, heap or none.
        assert!(
            has("INFO  bad input: plan of another version -> bad plan: a newer version than this runtime reads (version 1)"),
            "{build}: the plan of another version was not refused as expected"
        );
        if train {
            assert!(has("INFO  linear head: step 300/300, loss "));
            for (kind, preds) in &host {
                assert_eq!(
                    &predictions(&lines, kind.name()),
                    preds,
                    "{}: firmware and host differ",
                    kind.name()
                );
            }
        } else {
            assert!(
                !has("INFO  predictions ncm"),
                "the inference-only build trained"
            );
            assert!(
                has("INFO  heap: none"),
                "the inference-only build has a heap"
            );
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("INFO  memory: ") && l.contains(", heap 0 B (")),
                "the inference-only build reports a heap"
            );
        }
    }
}

/// The classes of a decoded `INFO  predictions NAME: [a, b, ...]` line.
fn predictions(lines: &[&str], name: &str) -> Vec<usize> {
    let line = lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("INFO  predictions {name}: ")))
        .unwrap_or_else(|| panic!("no {name} predictions printed"));
    line.trim_matches(['[', ']'])
        .split(", ")
        .map(|v| v.parse().unwrap())
        .collect()
}

/// defmt-print: `DEFMT_PRINT`, else on PATH, else in the tools cache `.ci/run` fills.
fn defmt_print() -> Option<String> {
    let works = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let cache = std::env::var("EDGETUNE_TOOLS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/edgetune-tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    [
        std::env::var("DEFMT_PRINT").ok(),
        Some("defmt-print".to_string()),
        Some(format!("{cache}/bin/defmt-print")),
    ]
    .into_iter()
    .flatten()
    .find(|p| works(p))
}
