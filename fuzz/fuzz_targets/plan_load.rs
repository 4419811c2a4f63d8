//! `.etm` loader: raw bytes, then the same bytes with the checksum repaired so mutations
//! reach the metadata parser and the executor's checks. The in-place loader (`PlanView`)
//! must give the same verdict, the same error text, on the same 64-aligned bytes.
#![no_main]
use edgetune::plan::{fnv64, AlignedBytes, Plan, PlanView};
use edgetune::{kernels::Kernels, Executor};
use libfuzzer_sys::fuzz_target;

fn try_run(data: &[u8]) {
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
    // A plan may ask for any amount of compute; the caller bounds it (here 5·10^7).
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

fuzz_target!(|data: &[u8]| {
    try_run(data);
    if data.len() >= 64 {
        let mut fixed = data.to_vec();
        let sum = fnv64(0xcbf2_9ce4_8422_2325, &fixed[64..]);
        fixed[40..48].copy_from_slice(&sum.to_le_bytes());
        try_run(&fixed);
    }
});
