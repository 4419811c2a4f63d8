//! Every crash the fuzzers found (fuzz/regressions/<target>/), replayed the way its fuzz
//! target runs it: it must now give a typed error or a clean run, never a panic. Tests
//! run with overflow checks on, like the fuzz builds.

use edgetune::adapt::Adapter;
use edgetune::plan::{fnv64, Plan};
use edgetune::{kernels::Kernels, Executor};
use std::path::Path;

fn cases(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions")).join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut v: Vec<_> = rd
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

fn plan_case(data: &[u8]) {
    let Ok(plan) = Plan::from_bytes(data) else {
        return;
    };
    // A plan may ask for any amount of compute; the caller bounds it (as the fuzz target).
    if plan.macs() > 50_000_000 {
        return;
    }
    let Ok(mut exec) = Executor::new(&plan, Kernels::detect(), 16 << 20) else {
        return;
    };
    let inputs: Vec<Vec<f32>> = plan
        .inputs
        .iter()
        .map(|p| vec![0.5; plan.tensors[p.tensor as usize].len().min(1 << 22)])
        .collect();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let _ = exec.run(&refs);
}

#[test]
fn plan_load_regressions() {
    let all = cases("plan_load");
    assert!(!all.is_empty());
    for (name, data) in all {
        eprintln!("{name}");
        plan_case(&data);
        if data.len() >= 64 {
            let mut fixed = data.clone();
            let sum = fnv64(0xcbf2_9ce4_8422_2325, &fixed[64..]);
            fixed[40..48].copy_from_slice(&sum.to_le_bytes());
            plan_case(&fixed);
        }
    }
}

#[test]
fn adapter_load_regressions() {
    for (name, data) in cases("adapter_load") {
        eprintln!("{name}");
        if data.len() >= 40 {
            let mut hash = [0u8; 16];
            hash.copy_from_slice(&data[24..40]);
            let _ = Adapter::from_bytes(&data, &hash);
        }
    }
}

#[cfg(feature = "onnx")]
#[test]
fn onnx_import_regressions() {
    use edgetune::import::{import_bytes, ImportOptions};
    let all = cases("onnx_import");
    assert!(!all.is_empty());
    for (name, data) in all {
        eprintln!("{name}");
        if let Ok(parts) = import_bytes(&data, &ImportOptions::default()) {
            plan_case(&parts.to_bytes());
        }
    }
}
