//! ReduceMean as global average pooling in a QDQ graph (the dynamo exporter's form, left in
//! float by onnxruntime's quantiser) against onnxruntime on 20 inputs
//! (models/golden/reducemean_*, written by tools/make_reducemean.py): with kept axes as
//! int8 pooling, without them (keepdims = 0) in float on the dequantised map.
#![cfg(feature = "onnx")]

use edgetune::import::{check, import_path, ImportOptions};
use edgetune::kernels::Kernels;
use edgetune::npy::read_npy;
use edgetune::plan::{AlignedBytes, Op, Plan};
use edgetune::{Error, Executor};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

#[test]
fn spatial_reduce_mean_matches_onnxruntime() {
    let (shape, x) = read_npy(&root().join("models/golden/reducemean_x.npy")).unwrap();
    let xl = x.len() / shape[0];
    for name in ["hw", "neg", "flat"] {
        let parts = import_path(
            &root().join(format!("models/golden/reducemean_{name}.onnx")),
            &ImportOptions::default(),
        )
        .unwrap();
        let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
        // Kept axes: int8 pooling; dropped axes: the float kernels.
        assert_eq!(
            plan.ops.iter().any(|o| matches!(o, Op::GapU8 { .. })),
            name != "flat",
            "{name}"
        );
        let (_, y) =
            read_npy(&root().join(format!("models/golden/reducemean_{name}_y.npy"))).unwrap();
        let yl = y.len() / shape[0];
        let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
        let mut out = vec![0.0; yl];
        let mut worst = 0.0f32;
        for i in 0..shape[0] {
            exec.run(&[&x[i * xl..][..xl]]).unwrap();
            exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
            for (a, b) in out.iter().zip(&y[i * yl..][..yl]) {
                // Output steps of the pooled map's quantisation (scale 0.01).
                worst = worst.max((a - b).abs() / 0.01);
            }
        }
        eprintln!(
            "reducemean_{name}: worst difference {worst:.2} output steps over {} inputs",
            shape[0]
        );
        assert!(worst <= 1.01, "{name}: {worst} steps");
    }
}

#[test]
fn every_node_of_the_reduce_mean_models_imports() {
    for name in ["hw", "neg", "flat"] {
        let bytes =
            std::fs::read(root().join(format!("models/golden/reducemean_{name}.onnx"))).unwrap();
        let found = check(&bytes, &ImportOptions::default()).unwrap();
        assert!(found.is_empty(), "{name}: {found:?}");
    }
    // A malformed file is still a typed error.
    assert!(matches!(
        check(b"not onnx", &ImportOptions::default()),
        Err(Error::Malformed { .. }) | Err(Error::Invalid { .. })
    ));
}
