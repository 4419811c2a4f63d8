//! Every crash the fuzzers found (fuzz/regressions/<target>/), replayed the way its fuzz
//! target runs it: it must now give a typed error or a clean run, never a panic. Tests
//! run with overflow checks on, like the fuzz builds.

use edgetune::adapt::Adapter;
use edgetune::plan::{fnv64, AlignedBytes, Plan, PlanView};
use edgetune::{kernels::Kernels, Executor};
use std::path::Path;

fn cases(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions")).join(target);
    // A missing folder is an empty one: every replay test asserts it found cases.
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
    // The in-place loader gives the same verdict, the same error text, on aligned bytes.
    let a = AlignedBytes::from_slice(data);
    let owned = Plan::from_bytes(a.as_ref())
        .map(drop)
        .map_err(|e| e.to_string());
    let view = PlanView::from_bytes(a.as_ref())
        .map(drop)
        .map_err(|e| e.to_string());
    assert_eq!(owned, view);
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

/// fuzz/fuzz_targets/adapter_load.rs: load, score and round-trip.
fn adapter_case(data: &[u8], hash: &[u8; 16]) {
    let Ok(a) = Adapter::from_bytes(data, hash) else {
        return;
    };
    let dims: Vec<_> = a.taps.iter().map(|t| t.1).collect();
    if dims.iter().map(|d| d.tokens * d.dim).sum::<usize>() > 1 << 22 {
        return;
    }
    let taps: Vec<Vec<f32>> = dims.iter().map(|d| vec![0.25; d.tokens * d.dim]).collect();
    let refs: Vec<&[f32]> = taps.iter().map(|v| v.as_slice()).collect();
    let mut out = vec![0.0; a.method.classes()];
    let _ = a.method.scores(&refs, &dims, &mut out);
    // A loaded adapter writes back to the bytes it came from.
    assert_eq!(Adapter::from_bytes(&a.to_bytes(), hash).as_ref(), Ok(&a));
}

#[test]
fn adapter_load_regressions() {
    let all = cases("adapter_load");
    assert!(!all.is_empty());
    for (name, data) in all {
        eprintln!("{name}");
        // As the fuzz target: raw, then with length and checksum repaired and the plan
        // hash taken from the file.
        adapter_case(&data, &[0; 16]);
        if data.len() >= 48 {
            let mut fixed = data.clone();
            let len = (fixed.len() - 48) as u64;
            fixed[8..16].copy_from_slice(&len.to_le_bytes());
            let sum = fnv64(0xcbf2_9ce4_8422_2325, &fixed[48..]);
            fixed[16..24].copy_from_slice(&sum.to_le_bytes());
            let mut hash = [0u8; 16];
            hash.copy_from_slice(&fixed[24..40]);
            adapter_case(&fixed, &hash);
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
            // A model that imports gives a plan that loads (as the fuzz target checks).
            let bytes = parts.to_bytes();
            if let Err(e) = Plan::from_bytes(&bytes) {
                panic!("{name}: the imported plan does not load: {e}");
            }
            plan_case(&bytes);
        }
    }
}
