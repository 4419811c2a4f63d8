//! ONNX backend node tests (Debian `libonnx-testdata`, ONNX 1.12) for the ops the importer
//! claims, through import → plan → executor. Each test folder counts as passed, failed
//! (imported, then a wrong result or a run-time error) or skipped (the importer refuses
//! the form with a typed error, e.g. a convolution outside QDQ). Failures fail the test.
#![cfg(feature = "onnx")]

use edgetune::import::{import_bytes, read_tensor, ImportOptions};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::{kernels::Kernels, Error, Executor};
use std::path::{Path, PathBuf};

const NODE: &str = "/usr/share/libonnx-testdata/data/node";

/// Op → the node-test name prefixes that exercise it.
const CLAIMED: &[(&str, &[&str])] = &[
    ("Add", &["test_add"]),
    ("Sub", &["test_sub"]),
    ("Mul", &["test_mul"]),
    ("Div", &["test_div"]),
    ("Relu", &["test_relu"]),
    ("Sigmoid", &["test_sigmoid"]),
    ("Sqrt", &["test_sqrt"]),
    ("Erf", &["test_erf"]),
    ("Clip", &["test_clip"]),
    ("Softmax", &["test_softmax"]),
    ("LayerNormalization", &["test_layer_normalization"]),
    ("Transpose", &["test_transpose"]),
    ("MatMul", &["test_matmul_"]),
    ("ReduceSum", &["test_reduce_sum_"]),
    ("Reshape", &["test_reshape"]),
    ("Flatten", &["test_flatten"]),
    ("Unsqueeze", &["test_unsqueeze"]),
    ("Squeeze", &["test_squeeze"]),
    (
        "Gather",
        &[
            "test_gather_0",
            "test_gather_1",
            "test_gather_2d",
            "test_gather_negative",
        ],
    ),
    ("QuantizeLinear", &["test_quantizelinear"]),
    ("DequantizeLinear", &["test_dequantizelinear"]),
    ("DynamicQuantizeLinear", &["test_dynamicquantizelinear"]),
    ("MatMulInteger", &["test_matmulinteger"]),
    ("QLinearConv", &["test_qlinearconv"]),
    ("QLinearMatMul", &["test_qlinearmatmul"]),
    ("Conv", &["test_conv_", "test_basic_conv"]),
    ("MaxPool", &["test_maxpool_"]),
    ("GlobalAveragePool", &["test_globalaveragepool"]),
    ("BatchNormalization", &["test_batchnorm"]),
    ("LeakyRelu", &["test_leakyrelu"]),
    ("Gemm", &["test_gemm"]),
];

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

fn pbs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (0..)
        .map(|i| dir.join(format!("test_data_set_0/{prefix}_{i}.pb")))
        .take_while(|p| p.exists())
        .collect();
    v.sort();
    v
}

fn run_case(dir: &Path) -> Outcome {
    let model = match std::fs::read(dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return Outcome::Skip(format!("unreadable: {e}")),
    };
    let parts = match import_bytes(&model, &ImportOptions::default()) {
        Ok(p) => p,
        Err(
            e @ (Error::UnsupportedOp { .. }
            | Error::ShapeMismatch { .. }
            | Error::Malformed { .. }),
        ) => return Outcome::Skip(e.to_string()),
        Err(e) => return Outcome::Fail(format!("import: {e}")),
    };
    let plan = match Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("plan: {e}")),
    };
    let inputs: Vec<Vec<f32>> = match pbs(dir, "input")
        .iter()
        .map(|p| read_tensor(&std::fs::read(p).unwrap_or_default()).map(|t| t.1))
        .collect()
    {
        Ok(v) => v,
        Err(e) => return Outcome::Skip(format!("input data: {e}")),
    };
    if inputs.len() != plan.inputs.len() {
        return Outcome::Skip(format!(
            "{} inputs, plan takes {}",
            inputs.len(),
            plan.inputs.len()
        ));
    }
    let mut exec = match Executor::new(&plan, Kernels::detect(), 1 << 28) {
        Ok(e) => e,
        Err(e) => return Outcome::Fail(format!("executor: {e}")),
    };
    let refs: Vec<&[f32]> = inputs.iter().map(|v| &v[..]).collect();
    if let Err(e) = exec.run(&refs) {
        return Outcome::Fail(format!("run: {e}"));
    }
    let expected = pbs(dir, "output");
    if expected.len() != plan.outputs.len() {
        return Outcome::Skip(format!(
            "{} outputs, plan gives {}",
            expected.len(),
            plan.outputs.len()
        ));
    }
    for (p, port) in expected.iter().zip(&plan.outputs) {
        let want = match read_tensor(&std::fs::read(p).unwrap_or_default()) {
            Ok(t) => t.1,
            Err(e) => return Outcome::Skip(format!("output data: {e}")),
        };
        let mut got = vec![0.0; plan.tensors[port.tensor as usize].len()];
        if let Err(e) = exec.tensor_f32(port.tensor, &mut got) {
            return Outcome::Fail(format!("read output: {e}"));
        }
        if got.len() != want.len() {
            return Outcome::Fail(format!(
                "output has {} values, expected {}",
                got.len(),
                want.len()
            ));
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if (g - w).abs() > 1e-4 + 1e-3 * w.abs() && !(g.is_nan() && w.is_nan()) {
                return Outcome::Fail(format!("output '{}'[{i}] = {g}, expected {w}", port.name));
            }
        }
    }
    Outcome::Pass
}

#[test]
fn onnx_node_tests_of_claimed_ops() {
    let root = Path::new(NODE);
    assert!(
        root.exists(),
        "{NODE} is missing: apt-get install libonnx-testdata (.ci/run installs it)"
    );
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    dirs.sort();
    let (mut pass, mut fail, mut skip) = (0, vec![], 0);
    for (op, prefixes) in CLAIMED {
        let (mut p, mut f, mut s) = (0, 0, 0);
        let mut reasons = vec![];
        for d in dirs
            .iter()
            .filter(|d| prefixes.iter().any(|pre| d.starts_with(pre)))
        {
            match run_case(&root.join(d)) {
                Outcome::Pass => p += 1,
                Outcome::Fail(why) => {
                    f += 1;
                    fail.push(format!("{d}: {why}"));
                }
                Outcome::Skip(why) => {
                    s += 1;
                    if reasons.is_empty() {
                        reasons.push(format!(
                            "{d}: {}",
                            why.chars().take(110).collect::<String>()
                        ));
                    }
                }
            }
        }
        eprintln!(
            "{op:<22} passed {p:>3}  failed {f:>2}  skipped {s:>3}  {}",
            reasons.join("")
        );
        pass += p;
        skip += s;
    }
    eprintln!(
        "total: passed {pass}, failed {}, skipped {skip}",
        fail.len()
    );
    for f in &fail {
        eprintln!("FAILED {f}");
    }
    assert!(fail.is_empty(), "{} node tests failed", fail.len());
    assert!(pass >= 40, "only {pass} node tests passed");
}
