//! `PlanView` (the plan read in place, tables included, no heap) against `Plan` (the
//! tables decoded once into the heap), the parser every other test exercises: the same
//! tables, the same outputs bit for bit when the two executors run the same inputs, and
//! the same verdict (the same error text) on every truncation and on byte flips that
//! reach the table parser (the checksum repaired).

use edgetune::plan::{fnv64, AlignedBytes, Plan, PlanView, Tables};
use edgetune::preprocess::ImagePrep;
use edgetune::{kernels::Kernels, Executor};
use std::path::Path;

fn tiny_cnn() -> AlignedBytes {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../targets/cortex-m/assets/tiny_cnn.etm"
    ));
    AlignedBytes::from_slice(&std::fs::read(p).unwrap())
}

#[test]
fn view_reads_the_tables_the_owned_plan_decodes() {
    let bytes = tiny_cnn();
    let plan = Plan::from_bytes(bytes.as_ref()).unwrap();
    let view = PlanView::from_bytes(bytes.as_ref()).unwrap();
    assert_eq!(view.header, plan.header);
    assert_eq!(view.tensor_count() as usize, plan.tensors.len());
    for (id, t) in plan.tensors.iter().enumerate() {
        let m = view.tensor(id as u32);
        assert_eq!(view.tensor_name(id as u32), Some(t.name.as_str()));
        assert_eq!(
            (m.dtype, &m.shape[..], m.nhwc, m.scale, m.zero, m.offset),
            (t.dtype, &t.shape[..], t.nhwc, t.scale, t.zero, t.offset),
            "tensor {id}"
        );
        assert_eq!(m.len(), t.len());
        assert_eq!(Tables::tensor(&plan, id as u32), m);
    }
    // An id no op names reads as an empty tensor, not a panic.
    assert!(view.tensor(plan.tensors.len() as u32).is_empty());
    assert_eq!(view.tensor_name(plan.tensors.len() as u32), None);
    let ops: Vec<_> = view.ops().collect::<Result<_, _>>().unwrap();
    assert_eq!(ops, plan.ops);
    assert_eq!(view.op_count(), plan.ops.len());
    for (mine, theirs) in [
        (view.inputs().collect::<Vec<_>>(), &plan.inputs),
        (view.outputs().collect(), &plan.outputs),
        (view.taps().collect(), &plan.taps),
    ] {
        let theirs: Vec<_> = theirs.iter().map(|p| (p.name.as_str(), p.tensor)).collect();
        let mine: Vec<_> = mine.iter().map(|p| (p.name, p.tensor)).collect();
        assert_eq!(mine, theirs);
    }
    assert!(!plan.meta.is_empty());
    for (k, v) in &plan.meta {
        assert_eq!(view.meta(k), Some(v.as_str()));
    }
    assert_eq!(view.meta("no such key"), None);
    assert_eq!(view.hash(), plan.hash());
    assert_eq!(view.arena_bytes(), plan.arena_bytes());
}

#[test]
fn in_place_executor_matches_the_owned_one_bit_for_bit() {
    let bytes = tiny_cnn();
    let plan = Plan::from_bytes(bytes.as_ref()).unwrap();
    let view = PlanView::from_bytes(bytes.as_ref()).unwrap();
    let prep = ImagePrep::parse(view.meta("preprocess").unwrap()).unwrap();
    let mut owned = Executor::new(&plan, Kernels::detect(), 1 << 20).unwrap();
    let mut arena = AlignedBytes::zeroed(view.arena_bytes());
    let mut in_place = Executor::in_place(&view, Kernels::detect(), arena.as_mut()).unwrap();
    assert!(in_place.plan().is_none());
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let px = std::fs::read(root.join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let outs: Vec<u32> = plan
        .outputs
        .iter()
        .chain(&plan.taps)
        .map(|p| p.tensor)
        .collect();
    assert_eq!(in_place.port("logits"), owned.port("logits"));
    assert!(in_place.port("features").is_some());
    let (mut input, mut slice) = (vec![], vec![0.0; prep.tensor_len()]);
    for i in 0..20 {
        let image = &px[16 + i * 784..][..784];
        prep.apply(image, 28, 28, 1, &mut input);
        // The heap-free preprocessing gives the same tensor.
        assert!(prep.apply_into(image, 28, 28, 1, &mut slice));
        assert_eq!(slice, input);
        owned.run(&[&input]).unwrap();
        in_place.run(&[&slice]).unwrap();
        for &t in &outs {
            assert_eq!(
                in_place.tensor_bytes(t),
                owned.tensor_bytes(t),
                "tensor {t}"
            );
            let n = in_place.tensor_meta(t).len();
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            in_place.tensor_f32(t, &mut a).unwrap();
            owned.tensor_f32(t, &mut b).unwrap();
            assert_eq!(a, b);
        }
    }
    // Wrong input counts and sizes are typed errors on both.
    assert!(in_place.run(&[]).is_err());
    assert!(in_place.run(&[&input[1..]]).is_err());
    assert!(!prep.apply_into(&px[16..][..700], 28, 28, 1, &mut slice));
    assert!(!prep.apply_into(&px[16..][..784], 28, 28, 1, &mut slice[1..]));
}

/// The verdict of both loaders on the same 64-aligned bytes: equal, error text included.
fn same_verdict(data: &[u8]) -> bool {
    let a = AlignedBytes::from_slice(data);
    let owned = Plan::from_bytes(a.as_ref())
        .map(|_| ())
        .map_err(|e| e.to_string());
    let view = PlanView::from_bytes(a.as_ref())
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(owned, view, "{} bytes", data.len());
    owned.is_ok()
}

#[test]
fn malformed_plans_get_the_same_typed_error() {
    let good = tiny_cnn().as_ref().to_vec();
    assert!(same_verdict(&good));
    for n in 0..good.len() {
        assert!(!same_verdict(&good[..n]));
    }
    // Flips in the header and the tables, the checksum repaired so they reach the parser.
    let meta_end = 64 + u32::from_le_bytes(good[8..12].try_into().unwrap()) as usize;
    let mut accepted = 0;
    for at in (0..meta_end).filter(|&i| !(40..48).contains(&i)) {
        for bit in [0x01u8, 0x10, 0x80] {
            let mut b = good.clone();
            b[at] ^= bit;
            let sum = fnv64(0xcbf2_9ce4_8422_2325, &b[64..]);
            b[40..48].copy_from_slice(&sum.to_le_bytes());
            accepted += same_verdict(&b) as usize;
        }
    }
    // Most flips are refused; some (a scale's low bits, a name's letter) still load.
    eprintln!("{accepted} of {} flipped plans load", (meta_end - 8) * 3);
    // Not 64-aligned: the view refuses, it never copies.
    let a = AlignedBytes::from_slice(&[&[0u8][..], &good].concat());
    assert!(PlanView::from_bytes(&a.as_ref()[1..]).is_err());
    assert!(Plan::from_bytes(&a.as_ref()[1..]).is_ok());
}
