//! The Cortex-M firmware (targets/cortex-m) under `qemu-system-arm -machine mps2-an386`:
//! it must pass its own checks, and its ncm and linear predictions on the held-out
//! examples must be identical to the same episode run here on the host.
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
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", root().display()));
    let o = Command::new(env!("CARGO"))
        .args(["run", "--release", "-q"])
        .current_dir(&fw)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "firmware failed");
    assert!(text.contains("firmware: PASS"));
    for (kind, preds) in host {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("predictions {}:", kind.name())))
            .unwrap_or_else(|| panic!("no {} predictions printed", kind.name()));
        let fw_preds: Vec<usize> = line
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(fw_preds, preds, "{}: firmware and host differ", kind.name());
    }
}
