//! ONNX importer on mutated protobufs; a model that imports must also load and run.
#![no_main]
use edgetune::import::{import_bytes, ImportOptions};
use edgetune::plan::Plan;
use edgetune::{kernels::Kernels, Executor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parts) = import_bytes(data, &ImportOptions::default()) else { return };
    let bytes = parts.to_bytes();
    let plan = Plan::from_bytes(&bytes).expect("an imported plan loads");
    if plan.macs() > 500_000_000 {
        return;
    }
    let Ok(mut exec) = Executor::new(&plan, Kernels::detect(), 64 << 20) else { return };
    let inputs: Vec<Vec<f32>> = plan
        .inputs
        .iter()
        .map(|p| vec![0.5; plan.tensors[p.tensor as usize].len().min(1 << 24)])
        .collect();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let _ = exec.run(&refs);
});
