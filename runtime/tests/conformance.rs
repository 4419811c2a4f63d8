//! ONNX backend node tests (Debian `libonnx-testdata`, ONNX 1.12) for every op of the
//! importer's registry (`edgetune::import::registry::supported_ops`), through import →
//! plan → executor, checked against the test's expected outputs (`output_*.pb`). A test
//! folder belongs to the op of its model's single node (an `_expanded` folder to the op
//! of its unexpanded twin). Each counts as passed, failed (imported, then a wrong result
//! or a run-time error) or skipped (the importer refuses the form with a typed error,
//! e.g. a convolution outside QDQ; every skip is printed with its reason). Failures fail
//! the test, and so does a registered op none of whose node tests passes unless
//! `NO_PASSING_TEST` says why.
#![cfg(feature = "onnx")]

use edgetune::import::registry::{is_supported, supported_ops};
use edgetune::import::{import_bytes, parse, read_tensor, ImportOptions};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::{kernels::Kernels, Error, Executor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NODE: &str = "/usr/share/libonnx-testdata/data/node";

/// Registered ops that have node tests of which none passes, and why that is expected.
const NO_PASSING_TEST: &[(&str, &str)] = &[
    (
        "If",
        "the node tests' only input is the condition: fixed as a constant, the outputs are \
         constants, which a plan does not output; tests/float_ops.rs (nested If on the \
         input's shape) and the silero-vad corpus model (--constant sr=16000) check it",
    ),
    (
        "Size",
        "folds to a constant at compile time; the node tests output it, and a plan's outputs \
         are run-time tensors",
    ),
    (
        "Shape",
        "folds to a constant at compile time; the node tests output it, and a plan's outputs \
         are run-time tensors",
    ),
    (
        "Range",
        "folds when its inputs are constants; the node tests take graph inputs",
    ),
    (
        "ConstantOfShape",
        "folds to a constant; the node tests output it, and a plan's outputs are run-time tensors",
    ),
    (
        "QuantizeLinear",
        "scale and zero point are graph inputs; QDQ lowering reads them as constants",
    ),
    (
        "DequantizeLinear",
        "scale and zero point are graph inputs; QDQ lowering reads them as constants",
    ),
    (
        "DynamicQuantizeLinear",
        "the tests output the codes; it lowers only as the input of MatMulInteger",
    ),
    (
        "MatMulInteger",
        "A is a graph input, not the codes of a DynamicQuantizeLinear",
    ),
    (
        "QLinearConv",
        "scales are graph inputs; the rewrite to QDQ needs them as initializers",
    ),
    (
        "QLinearMatMul",
        "scales are graph inputs; the rewrite to QDQ needs them as initializers",
    ),
    (
        "Constant",
        "its one test outputs the constant itself, which a plan does not",
    ),
    (
        "Cast",
        "every test casts from or to f64, f16, bf16 or strings (plans hold f32) or feeds NaN",
    ),
    (
        "IsNaN",
        "its one test feeds NaN, which the executor refuses as input; the MiniLM models of \
         the corpus run it after Softmax (tools/corpus)",
    ),
];

enum Outcome {
    Pass,
    /// Passed with the graph inputs after the first fixed as constants (weights, shapes,
    /// axes and scales a real model holds as initializers).
    PassConst,
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

/// The test as it is; where it does not import, again with every graph input after the
/// first fixed to its test value as a constant.
fn run_case(dir: &Path) -> Outcome {
    match run_with(dir, false) {
        Outcome::Skip(why) => match run_with(dir, true) {
            Outcome::Pass => Outcome::PassConst,
            Outcome::Skip(again) if again == "no inputs to fix" => Outcome::Skip(why),
            Outcome::Skip(again) => Outcome::Skip(format!("{why}; with constant inputs: {again}")),
            other => other,
        },
        other => other,
    }
}

fn run_with(dir: &Path, fix: bool) -> Outcome {
    let model = match std::fs::read(dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return Outcome::Skip(format!("unreadable: {e}")),
    };
    let all: Vec<Vec<f32>> = match pbs(dir, "input")
        .iter()
        .map(|p| read_tensor(&std::fs::read(p).unwrap_or_default()).map(|t| t.1))
        .collect()
    {
        Ok(v) => v,
        Err(e) => return Outcome::Skip(format!("input data: {e}")),
    };
    let mut opts = ImportOptions::default();
    if fix {
        let Some(graph) = parse(&model).ok().and_then(|m| m.graph) else {
            return Outcome::Skip("unparsable".into());
        };
        let names: Vec<String> = graph
            .input
            .iter()
            .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
            .map(|i| i.name.clone())
            .collect();
        if names.len() < 2 || names.len() != all.len() {
            return Outcome::Skip("no inputs to fix".into());
        }
        opts.constants = names.into_iter().zip(all.clone()).skip(1).collect();
    }
    let parts = match import_bytes(&model, &opts) {
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
    let inputs: Vec<Vec<f32>> = if fix { all[..1].to_vec() } else { all };
    // The executor refuses such inputs by design (`Error::NonFinite`).
    if inputs.iter().flatten().any(|v| !v.is_finite()) {
        return Outcome::Skip("an input holds NaN or infinity, which the executor refuses".into());
    }
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

/// The `(domain, op)` a node-test folder exercises: the single node of its model, or for
/// an `_expanded` folder (the op's function body) that of the folder without the suffix.
fn op_of(root: &Path, dir: &str) -> Option<(String, String)> {
    let bytes = std::fs::read(root.join(dir).join("model.onnx")).ok()?;
    let model = parse(&bytes).ok()?;
    match model.graph?.node.as_slice() {
        [n] => Some((n.domain.clone(), n.op_type.clone())),
        _ => op_of(root, dir.strip_suffix("_expanded")?),
    }
}

#[derive(Default)]
struct Tally {
    passed: Vec<String>,
    /// Of `passed`, those run with the inputs after the first as constants.
    fixed: usize,
    failed: Vec<String>,
    skipped: Vec<String>,
}

#[test]
fn onnx_node_tests_of_registered_ops() {
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
    // Registered op → its node-test folders.
    let mut tests: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for d in &dirs {
        let Some((domain, op)) = op_of(root, d) else {
            continue;
        };
        let domain = if domain.is_empty() {
            "ai.onnx"
        } else {
            &domain
        };
        if let Some((dm, o, _)) = supported_ops().find(|(dm, o, _)| *dm == domain && *o == op) {
            assert!(is_supported(dm, o));
            tests.entry((dm, o)).or_default().push(d);
        }
    }
    let (mut tallies, mut tested): (Vec<(&str, Tally)>, Vec<&str>) = (vec![], vec![]);
    for (domain, op, _) in supported_ops() {
        let mut t = Tally::default();
        for d in tests.get(&(domain, op)).into_iter().flatten() {
            match run_case(&root.join(d)) {
                Outcome::Pass => t.passed.push(d.to_string()),
                Outcome::PassConst => {
                    t.passed.push(d.to_string());
                    t.fixed += 1;
                }
                Outcome::Fail(why) => t.failed.push(format!("{d}: {why}")),
                Outcome::Skip(why) => t.skipped.push(format!(
                    "{d}: {}",
                    why.chars().take(200).collect::<String>()
                )),
            }
        }
        let run = t.passed.len() + t.failed.len() + t.skipped.len();
        eprintln!(
            "{op:<22} run {run:>3}  passed {:>3} ({:>2} with constant inputs)  failed {:>2}  skipped {:>3}",
            t.passed.len(),
            t.fixed,
            t.failed.len(),
            t.skipped.len()
        );
        for s in &t.skipped {
            eprintln!("    SKIP {s}");
        }
        for f in &t.failed {
            eprintln!("    FAIL {f}");
        }
        if t.passed.len() + t.failed.len() + t.skipped.len() > 0 {
            tested.push(op);
        }
        tallies.push((op, t));
    }
    let count = |f: fn(&Tally) -> usize| tallies.iter().map(|(_, t)| f(t)).sum::<usize>();
    let (pass, fail, skip) = (
        count(|t| t.passed.len()),
        count(|t| t.failed.len()),
        count(|t| t.skipped.len()),
    );
    eprintln!("total: passed {pass}, failed {fail}, skipped {skip}");
    let untested: Vec<&str> = tallies
        .iter()
        .filter(|(op, _)| !tested.contains(op))
        .map(|(op, _)| *op)
        .collect();
    eprintln!("registered ops without node tests here: {untested:?}");
    assert!(fail == 0, "{fail} node tests failed");
    assert!(pass >= 40, "only {pass} node tests passed");
    for (op, t) in &tallies {
        let listed = NO_PASSING_TEST.iter().find(|(o, _)| o == op);
        let tested = tested.contains(op);
        match (tested && t.passed.is_empty(), listed) {
            (true, None) => panic!(
                "{op} has {} node tests and none passes: fix the lowering or add it to \
                 NO_PASSING_TEST with the reason",
                t.skipped.len()
            ),
            (false, Some(_)) => panic!(
                "{op} is in NO_PASSING_TEST but {}: remove it from the list",
                if tested {
                    "some of its node tests pass"
                } else {
                    "has no node tests"
                }
            ),
            _ => {}
        }
    }
    for (op, why) in NO_PASSING_TEST {
        eprintln!("no passing node test, as expected: {op}: {why}");
        assert!(
            tallies.iter().any(|(o, _)| o == op),
            "NO_PASSING_TEST names {op}, which is not registered"
        );
    }
}

/// `ImportOptions::constants` fixes a graph input to a value: the plan no longer takes it,
/// and its result matches the node test's; a constant for a name the model lacks, or
/// with the wrong number of values, is a typed error.
#[test]
fn constant_inputs_fold_and_leave_the_plan_inputs() {
    let dir = Path::new(NODE).join("test_reshape_reordered_all_dims");
    assert!(
        dir.exists(),
        "{NODE} is missing: apt-get install libonnx-testdata"
    );
    let model = std::fs::read(dir.join("model.onnx")).unwrap();
    let (_, shape) =
        read_tensor(&std::fs::read(dir.join("test_data_set_0/input_1.pb")).unwrap()).unwrap();
    assert!(matches!(
        import_bytes(&model, &ImportOptions::default()),
        Err(Error::UnsupportedOp { .. })
    ));
    let graph = parse(&model).unwrap().graph.unwrap();
    let name = graph.input[1].name.clone();
    let opts = |c: Vec<(String, Vec<f32>)>| ImportOptions {
        constants: c,
        ..Default::default()
    };
    let parts = import_bytes(&model, &opts(vec![(name.clone(), shape.clone())])).unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    assert_eq!(plan.inputs.len(), 1);
    assert!(matches!(run_case(&dir), Outcome::PassConst));
    assert!(matches!(
        import_bytes(&model, &opts(vec![("no_such_input".into(), shape.clone())])),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        import_bytes(&model, &opts(vec![(name, vec![1.0; shape.len() + 1])])),
        Err(Error::ShapeMismatch { .. })
    ));
}
