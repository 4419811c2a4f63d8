//! Determinism across kernel tiers: the same images through EfficientNet-Lite0 on every
//! tier this CPU runs, then the same seeded adapters. Int8 convolutions accumulate in
//! i32 and requantise with one rounding rule, so the backbone's features agree to the
//! bit across tiers; the adapters trained on them are then byte-identical and their
//! accuracy equal. The stated tolerance (what the test allows) is: features cosine ≥
//! 0.9999 and accuracy within 0.01 of the reference tier.
#![cfg(feature = "onnx")]

use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::{self, Adapter, Kind, Spec};
use edgetune::import::{import_path, ImportOptions};
use edgetune::kernels::{dispatch::Cpu, registry::Tier, Kernels};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::preprocess::ImagePrep;
use edgetune::Executor;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn every_tier_gives_the_same_features_adapters_and_accuracy() {
    let parts = import_path(
        &root().join("models/efficientnet_lite0_int8.onnx"),
        &ImportOptions::default(),
    )
    .unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let px = std::fs::read(root().join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb = std::fs::read(root().join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    // 3 classes × 8 images: 4 to train, 4 to test.
    let mut picked = vec![];
    let mut seen = [0; 3];
    for (i, &l) in lb[8..].iter().enumerate() {
        if l < 3 && seen[l as usize] < 8 {
            seen[l as usize] += 1;
            picked.push((i, l as usize));
        }
    }
    let prep = ImagePrep {
        size: 224,
        mean: 127.0,
        std: 128.0,
        channels: 3,
    };
    let cpu = Cpu::detect();
    let tiers: Vec<Tier> = Tier::ALL
        .into_iter()
        .filter(|&t| {
            let k = Kernels::select(&cpu, Some(t));
            // A tier the CPU lacks falls back; keep only tiers that really ran.
            k.i8_gemm.tier == t || k.dw_i8.tier == t || k.f32_gemm.tier == t
        })
        .collect();
    assert!(tiers.len() >= 2, "tiers here: {tiers:?}");
    // Features, adapter bytes and accuracies of the first tier.
    type Run = (Vec<f32>, Vec<Vec<u8>>, Vec<f64>);
    let mut first: Option<Run> = None;
    for &tier in &tiers {
        let kern = Kernels::select(&cpu, Some(tier));
        let mut exec = Executor::new(&plan, kern, 1 << 30).unwrap();
        let fo = plan.outputs[0].tensor;
        let mut feats = vec![0.0; picked.len() * 1280];
        let mut input = vec![];
        for (r, &(i, _)) in picked.iter().enumerate() {
            prep.apply(&px[16 + i * 784..][..784], 28, 28, 1, &mut input);
            exec.run(&[&input]).unwrap();
            exec.tensor_f32(fo, &mut feats[r * 1280..][..1280]).unwrap();
        }
        let mut cache = TapCache::new(
            CacheFormat::F16,
            vec![("features".into(), TapShape::new(1, 1280))],
        );
        for (r, &(_, l)) in picked.iter().enumerate() {
            cache.push(&[&feats[r * 1280..][..1280]], l).unwrap();
        }
        let train: Vec<usize> = (0..picked.len()).filter(|r| r % 8 < 4).collect();
        let (mut bytes, mut accs) = (vec![], vec![]);
        for kind in [Kind::Ncm, Kind::Linear, Kind::Moment] {
            let m = adapt::fit(
                &Spec::new(kind).seed(3),
                &cache,
                &[0],
                &train,
                3,
                &mut |_| true,
            )
            .unwrap();
            let dims = [TapShape {
                tokens: 1,
                dim: 1280,
            }];
            let mut ok = 0;
            let mut sc = [0.0; 3];
            for (r, &(_, l)) in picked.iter().enumerate().filter(|(r, _)| r % 8 >= 4) {
                m.scores(&[&feats[r * 1280..][..1280]], &dims, &mut sc)
                    .unwrap();
                ok += (adapt::argmax(&sc) == l) as usize;
            }
            accs.push(ok as f64 / 12.0);
            let a = Adapter {
                plan_hash: plan.hash(),
                taps: vec![("features".into(), dims[0])],
                classes: vec!["0".into(), "1".into(), "2".into()],
                hyper: vec![],
                method: m,
            };
            bytes.push(a.to_bytes());
        }
        match &first {
            None => first = Some((feats, bytes, accs)),
            Some((f0, b0, a0)) => {
                let dot: f64 = f0
                    .iter()
                    .zip(&feats)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let cos = dot / (n(f0) * n(&feats));
                assert!(
                    cos >= 0.9999,
                    "{tier:?}: features cosine {cos} vs the reference tier"
                );
                for (k, (a, b)) in a0.iter().zip(&accs).enumerate() {
                    assert!(
                        (a - b).abs() <= 0.01,
                        "{tier:?} method {k}: accuracy {b} vs {a}"
                    );
                }
                // Int8 paths are exact: the features and so the adapters agree to the bit.
                assert_eq!(
                    f0, &feats,
                    "{tier:?}: features differ from the reference tier"
                );
                assert_eq!(
                    b0, &bytes,
                    "{tier:?}: adapters differ from the reference tier"
                );
            }
        }
    }
}
