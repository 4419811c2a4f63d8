//! ReduceMean as global average pooling in a QDQ graph (the dynamo exporter's form, left in
//! float by onnxruntime's quantiser) against onnxruntime on 20 inputs
//! (models/golden/reducemean_*, written by tools/make_reducemean.py); the form that does
//! not lower (keepdims = 0) is a typed error naming the op and the node.
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
    for name in ["hw", "neg"] {
        let parts = import_path(
            &root().join(format!("models/golden/reducemean_{name}.onnx")),
            &ImportOptions::default(),
        )
        .unwrap();
        let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
        assert!(
            plan.ops.iter().any(|o| matches!(o, Op::GapU8 { .. })),
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
fn reduce_mean_without_kept_axes_is_refused_by_name() {
    let path = root().join("models/golden/reducemean_flat.onnx");
    match import_path(&path, &ImportOptions::default()) {
        Err(Error::UnsupportedOp { op, .. }) => assert_eq!(op, "ReduceMean"),
        Err(e) => panic!("expected ReduceMean to be refused, got {e}"),
        Ok(_) => panic!("keepdims = 0 should not lower"),
    }
    let bytes = std::fs::read(&path).unwrap();
    let found = check(&bytes, &ImportOptions::default()).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].op.as_str(), found[0].node.as_str()),
        ("ReduceMean", "pool")
    );
    assert!(found[0].why.contains("keepdims"), "{}", found[0].why);
}
