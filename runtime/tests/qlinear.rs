//! QOperator-form models (QLinearConv, QLinearMatMul with scales as initializers, as
//! onnxruntime's quantiser writes them) against onnxruntime on 20 inputs each
//! (models/golden/qlinear_*, written by tools/make_qlinear.py).
#![cfg(feature = "onnx")]

use edgetune::import::{import_path, ImportOptions};
use edgetune::kernels::{dispatch::Cpu, registry::Tier, Kernels};
use edgetune::npy::read_npy;
use edgetune::plan::{AlignedBytes, Op, Plan};
use edgetune::Executor;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

/// Runs `name` on every golden input with every tier this CPU has; returns the largest
/// difference from onnxruntime in output quantisation steps.
fn check(name: &str, step: f32, want_ops: &[&str]) {
    let parts = import_path(
        &root().join(format!("models/golden/qlinear_{name}.onnx")),
        &ImportOptions::default(),
    )
    .unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let ops: Vec<&str> = plan.ops.iter().map(Op::name).collect();
    for w in want_ops {
        assert!(ops.contains(w), "{name}: {w} not in {ops:?}");
    }
    let (shape, x) = read_npy(&root().join(format!("models/golden/qlinear_{name}_x.npy"))).unwrap();
    let (yshape, y) =
        read_npy(&root().join(format!("models/golden/qlinear_{name}_y.npy"))).unwrap();
    let (n, xl, yl) = (shape[0], x.len() / shape[0], y.len() / yshape[0]);
    assert!(n >= 20);
    let cpu = Cpu::detect();
    let mut out = vec![0.0; yl];
    for tier in Tier::ALL {
        let kern = Kernels::select(&cpu, Some(tier));
        if kern.i8_gemm.tier != tier {
            continue;
        }
        let mut exec = Executor::new(&plan, kern, 1 << 24).unwrap();
        let (mut worst, mut exact) = (0.0f32, 0usize);
        for i in 0..n {
            exec.run(&[&x[i * xl..][..xl]]).unwrap();
            exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
            for (a, b) in out.iter().zip(&y[i * yl..][..yl]) {
                let d = (a - b).abs() / step;
                worst = worst.max(d);
                exact += (d < 0.01) as usize;
            }
        }
        eprintln!(
            "qlinear_{name} [{tier:?}]: {n} inputs, max |Δ| {worst:.2} steps, {exact}/{} values identical",
            n * yl
        );
        // onnxruntime requantises in float; a value on a rounding boundary may land one
        // step away. Nothing further.
        assert!(worst <= 1.01, "{name} [{tier:?}]: {worst} steps");
        assert!(exact * 100 >= n * yl * 95, "{name}: only {exact} exact");
    }
}

#[test]
fn qlinearconv_matches_onnxruntime() {
    check("conv", 0.04, &["ConvI8", "DepthwiseI8"]);
}

#[test]
fn qlinearmatmul_matches_onnxruntime() {
    check("matmul", 0.08, &["ConvI8"]);
}
