//! Plan and adapter files: round trips and the typed errors of bad input.

use edgetune::adapt::cache::TapShape;
use edgetune::adapt::{Adapter, Method, Ncm};
use edgetune::exec::plan_arena;
use edgetune::plan::{DType, Op, Plan, PlanParts, Port, TensorInfo, Q8};
use edgetune::{Error, Executor};

fn tiny_plan() -> Vec<u8> {
    let t = |name: &str, dtype, shape: Vec<usize>| TensorInfo {
        name: name.into(),
        dtype,
        shape,
        nhwc: false,
        scale: 0.5,
        zero: 3,
        offset: 0,
    };
    let mut tensors = vec![
        t("x", DType::F32, vec![1, 4]),
        t("q", DType::U8, vec![1, 4]),
        t("y", DType::F32, vec![1, 4]),
    ];
    let q = Q8 {
        scale: 0.5,
        zero: 3,
    };
    let ops = vec![
        Op::Quantize {
            x: 0,
            y: 1,
            q,
            to_nhwc: false,
        },
        Op::Dequantize {
            x: 1,
            y: 2,
            q,
            to_nchw: false,
        },
    ];
    let arena_bytes = plan_arena(&mut tensors, &ops, &[0], &[2]);
    let parts = PlanParts {
        tensors,
        ops,
        inputs: vec![Port {
            name: "data:0".into(),
            tensor: 0,
        }],
        outputs: vec![Port {
            name: "out/1".into(),
            tensor: 2,
        }],
        taps: vec![],
        meta: vec![],
        blob: vec![],
        arena_bytes,
    };
    parts.to_bytes()
}

#[test]
fn plan_round_trip_runs_quantise_dequantise() {
    let bytes = tiny_plan();
    let plan = Plan::from_bytes(&bytes).unwrap();
    let mut ex = Executor::new(&plan, edgetune::kernels::Kernels::detect(), 1 << 20).unwrap();
    ex.run(&[&[0.0, 1.0, -1.6, 200.0]]).unwrap();
    let mut out = [0.0f32; 4];
    ex.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
    // q = clamp(round_even(x/0.5) + 3, 0, 255); y = (q-3)·0.5
    assert_eq!(out, [0.0, 1.0, -1.5, 126.0]);
}

#[test]
fn bad_plans_give_typed_errors() {
    let good = tiny_plan();
    let bad_file = |b: &[u8]| {
        matches!(
            Plan::from_bytes(b),
            Err(Error::BadFile { what: "plan", .. })
        )
    };
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(bad_file(&magic));
    let mut version = good.clone();
    version[4] = 9;
    assert!(bad_file(&version));
    assert!(bad_file(&good[..good.len() - 1]));
    assert!(bad_file(&good[..10]));
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(bad_file(&flipped));
    // An absurd arena is refused before any allocation.
    let plan = Plan::from_bytes(&good).unwrap();
    assert!(matches!(
        Executor::new(&plan, edgetune::kernels::Kernels::detect(), 16),
        Err(Error::ArenaTooLarge { .. })
    ));
}

#[test]
fn wrong_inputs_give_typed_errors() {
    let bytes = tiny_plan();
    let plan = Plan::from_bytes(&bytes).unwrap();
    let mut ex = Executor::new(&plan, edgetune::kernels::Kernels::detect(), 1 << 20).unwrap();
    assert!(matches!(
        ex.run(&[&[0.0; 3]]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ex.run(&[&[0.0, f32::NAN, 0.0, 0.0]]),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn adapter_round_trip_and_refusals() {
    let mut ncm = Ncm::new(3);
    ncm.enrol(0, &[1.0, 0.0, 0.0]);
    ncm.enrol(1, &[0.0, 2.0, 0.0]);
    let a = Adapter {
        plan_hash: [7; 16],
        taps: vec![("features".into(), TapShape { tokens: 1, dim: 3 })],
        classes: vec!["a".into(), "b".into()],
        hyper: vec![("k".into(), "v".into())],
        method: Method::Ncm(ncm),
    };
    let bytes = a.to_bytes();
    assert_eq!(Adapter::from_bytes(&bytes, &[7; 16]).unwrap(), a);
    assert!(matches!(
        Adapter::from_bytes(&bytes, &[8; 16]),
        Err(Error::PlanMismatch { .. })
    ));
    for cut in [0, 10, 47, bytes.len() - 1] {
        assert!(
            matches!(
                Adapter::from_bytes(&bytes[..cut], &[7; 16]),
                Err(Error::BadFile { .. })
            ),
            "cut {cut}"
        );
    }
    let mut flipped = bytes.clone();
    flipped[60] ^= 0x40;
    assert!(matches!(
        Adapter::from_bytes(&flipped, &[7; 16]),
        Err(Error::BadFile { .. })
    ));
}

#[test]
fn adapter_save_is_atomic_and_loads() {
    let dir = std::env::temp_dir().join(format!("edgetune-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("user.eta");
    let mut ncm = Ncm::new(2);
    ncm.enrol(0, &[1.0, 0.0]);
    ncm.enrol(1, &[0.0, 1.0]);
    let a = Adapter {
        plan_hash: [1; 16],
        taps: vec![("f".into(), TapShape { tokens: 1, dim: 2 })],
        classes: vec!["x".into(), "y".into()],
        hyper: vec![],
        method: Method::Ncm(ncm),
    };
    a.save(&path).unwrap();
    assert_eq!(Adapter::load(&path, &[1; 16]).unwrap(), a);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "user.eta")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}
