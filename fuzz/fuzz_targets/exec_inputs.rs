//! The executor on the real EfficientNet-Lite0 plan with arbitrary input values
//! (NaN, infinities, huge and tiny floats, wrong lengths).
#![no_main]
use edgetune::import::{import_bytes, ImportOptions};
use edgetune::plan::Plan;
use edgetune::{kernels::Kernels, Error, Executor};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static PLAN: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let bytes = PLAN.get_or_init(|| {
        let onnx = include_bytes!("../../models/efficientnet_lite0_int8.onnx");
        import_bytes(onnx, &ImportOptions::default()).unwrap().to_bytes()
    });
    let plan = Plan::from_bytes(bytes).unwrap();
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 30).unwrap();
    let n = plan.tensors[plan.inputs[0].tensor as usize].len();
    // Tile the fuzz bytes over the input; the first byte picks a wrong length sometimes.
    let floats: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let len = match data.first() {
        Some(&b) if b % 16 == 0 => floats.len(),
        _ => n,
    };
    let input: Vec<f32> = (0..len)
        .map(|i| floats.get(i % floats.len().max(1)).copied().unwrap_or(0.0))
        .collect();
    match exec.run(&[&input]) {
        Ok(()) => {
            assert!(input.iter().all(|x| x.is_finite()) && len == n);
            let mut out = vec![0.0; plan.tensors[plan.outputs[0].tensor as usize].len()];
            exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
            assert!(out.iter().all(|x| x.is_finite()));
        }
        Err(Error::NonFinite { .. }) => assert!(input.iter().any(|x| !x.is_finite())),
        Err(Error::ShapeMismatch { .. }) => assert_ne!(len, n),
        Err(e) => panic!("unexpected error {e}"),
    }
});
