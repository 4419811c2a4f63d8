//! The bad-input corpus: every case names the typed error it must give, and no case may
//! allocate more than its stated bound (peak live heap during the case, measured by a
//! counting allocator): 16 MiB plus twice the size of the input it was handed.
#![cfg(feature = "onnx")]

use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::{self, Adapter, Kind, Spec};
use edgetune::import::{import_bytes, ImportOptions};
use edgetune::plan::{fnv64, Plan};
use edgetune::{kernels::Kernels, Error, Executor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), SeqCst) + l.size();
        PEAK.fetch_max(now, SeqCst);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), SeqCst);
        // SAFETY: `p` came from `alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const PLAN: &[u8] = include_bytes!("../../fuzz/seed/tiny.etm");
const NCM: &[u8] = include_bytes!("../../fuzz/corpus/adapter_load/ncm.eta");
const LINEAR: &[u8] = include_bytes!("../../fuzz/corpus/adapter_load/linear.eta");
const QUERY: &[u8] = include_bytes!("../../fuzz/corpus/adapter_load/query.eta");
const ONNX: &[u8] = include_bytes!("../../models/efficientnet_lite0_int8.onnx");
const FLOAT_ONNX: &[u8] = include_bytes!("../../fuzz/corpus/onnx_import/float_conv_gemm.onnx");
const SEQ_ONNX: &[u8] = include_bytes!("../../fuzz/corpus/onnx_import/seq_dynq.onnx");

/// `b` with every `from` replaced by `to` (same length: the protobuf stays valid).
fn replace(b: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut v = b.to_vec();
    let mut hit = false;
    for i in 0..v.len().saturating_sub(from.len() - 1) {
        if &v[i..i + from.len()] == from {
            v[i..i + to.len()].copy_from_slice(to);
            hit = true;
        }
    }
    assert!(hit, "{:?} not found", String::from_utf8_lossy(from));
    v
}

/// The small sequence model (gather over a 10-row table), compiled, on token ids `ids`.
fn run_seq(ids: &[f32]) -> Result<(), Error> {
    let bytes = import_bytes(SEQ_ONNX, &ImportOptions::default())?.to_bytes();
    let plan = Plan::from_bytes(&bytes)?;
    let mut e = Executor::new(&plan, Kernels::detect(), 1 << 20)?;
    e.run(&[ids])
}

type Check = fn(&Error) -> bool;
type Case = Box<dyn Fn() -> Result<(), Error>>;

fn plan_hash() -> [u8; 16] {
    Plan::from_bytes(PLAN).unwrap().hash()
}

fn with_plan_checksum(mut b: Vec<u8>) -> Vec<u8> {
    let s = fnv64(0xcbf2_9ce4_8422_2325, &b[64..]);
    b[40..48].copy_from_slice(&s.to_le_bytes());
    b
}

fn with_adapter_checksum(mut b: Vec<u8>) -> Vec<u8> {
    let len = (b.len() - 48) as u64;
    b[8..16].copy_from_slice(&len.to_le_bytes());
    let s = fnv64(0xcbf2_9ce4_8422_2325, &b[48..]);
    b[16..24].copy_from_slice(&s.to_le_bytes());
    b
}

fn set(mut b: Vec<u8>, at: usize, v: &[u8]) -> Vec<u8> {
    b[at..at + v.len()].copy_from_slice(v);
    b
}

fn load_plan(b: &[u8]) -> Result<(), Error> {
    let p = Plan::from_bytes(b)?;
    Executor::new(&p, Kernels::detect(), 64 << 20).map(|_| ())
}

fn load_adapter(b: &[u8]) -> Result<(), Error> {
    let p = Plan::from_bytes(PLAN)?;
    let mut a = Adapter::from_bytes(b, &p.hash())?;
    a.bind(&p)
}

fn run_input(x: &[f32]) -> Result<(), Error> {
    let p = Plan::from_bytes(PLAN)?;
    let mut e = Executor::new(&p, Kernels::detect(), 64 << 20)?;
    e.run(&[x])
}

fn fit(kind: Kind, rows: &[(Vec<f32>, usize)], classes: usize) -> Result<(), Error> {
    let mut c = TapCache::new(CacheFormat::F16, vec![("t".into(), TapShape::new(2, 4))]);
    for (x, l) in rows {
        c.push(&[x], *l)?;
    }
    let idx: Vec<usize> = (0..c.len()).collect();
    let mut s = Spec::new(kind);
    s.train.steps = 5;
    adapt::fit(&s, &c, &[0], &idx, classes, &mut |_| true).map(|_| ())
}

#[test]
fn every_bad_input_gives_its_typed_error_within_the_memory_bound() {
    let bad_file: Check = |e| matches!(e, Error::BadFile { .. });
    let malformed: Check = |e| matches!(e, Error::Malformed { .. });
    let unsupported: Check = |e| matches!(e, Error::UnsupportedOp { .. } | Error::Malformed { .. });
    let nonfinite: Check = |e| matches!(e, Error::NonFinite { .. });
    let shape: Check = |e| matches!(e, Error::ShapeMismatch { .. });
    let invalid: Check = |e| matches!(e, Error::Invalid { .. });
    let mismatch: Check = |e| matches!(e, Error::PlanMismatch { .. });
    let arena: Check = |e| matches!(e, Error::ArenaTooLarge { .. });
    let n_in = Plan::from_bytes(PLAN).unwrap().tensors[0].len();
    let good_row = |l| (vec![0.5f32; 8], l);

    let mut flipped_plan = PLAN.to_vec();
    let mid = flipped_plan.len() / 2;
    flipped_plan[mid] ^= 0x10;
    let mut flipped_ad = LINEAR.to_vec();
    let last = flipped_ad.len() - 3;
    flipped_ad[last] ^= 1;
    // The linear adapter's first weight (after taps, classes, hyper, tag, dims, count).
    let nan_weight = {
        let mut b = LINEAR.to_vec();
        let pos = b.len() - 4 * (2 * 3 + 3);
        b[pos..pos + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        with_adapter_checksum(b)
    };
    let mut other_hash = NCM.to_vec();
    other_hash[24] ^= 0xff;
    // Walk the ncm seed's body to its method tag: taps, classes, hyper-parameters.
    let tag_pos = |b: &[u8]| {
        let u = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
        let mut p = 48;
        let nt = u(p);
        p += 4;
        for _ in 0..nt {
            p += 4 + u(p) + 8;
        }
        let nc = u(p);
        p += 4;
        for _ in 0..nc {
            p += 4 + u(p);
        }
        let nh = u(p);
        p += 4;
        for _ in 0..2 * nh {
            p += 4 + u(p);
        }
        p
    };
    let ncm_tag = {
        let b = NCM.to_vec();
        let p = tag_pos(&b);
        with_adapter_checksum(set(b, p, &[99]))
    };
    let mut trailing = LINEAR.to_vec();
    trailing.extend_from_slice(&[0; 8]);
    let trailing = with_adapter_checksum(trailing);
    let zero_taps = with_adapter_checksum(set(NCM.to_vec(), 48, &0u32.to_le_bytes()));
    let many_taps = with_adapter_checksum(set(NCM.to_vec(), 48, &1000u32.to_le_bytes()));
    let huge_str = with_adapter_checksum(set(NCM.to_vec(), 52, &u32::MAX.to_le_bytes()));
    let tensors_absurd = with_plan_checksum(set(PLAN.to_vec(), 64, &u32::MAX.to_le_bytes()));
    let tensor_name_absurd =
        with_plan_checksum(set(PLAN.to_vec(), 68, &0x7fff_ffffu32.to_le_bytes()));

    let cases: Vec<(&str, usize, Case, Check)> = vec![
        ("plan: empty", 0, Box::new(|| load_plan(&[])), bad_file),
        (
            "plan: truncated header",
            10,
            Box::new(|| load_plan(&PLAN[..10])),
            bad_file,
        ),
        (
            "plan: wrong magic",
            PLAN.len(),
            Box::new(|| load_plan(&set(PLAN.to_vec(), 0, b"ONNX"))),
            bad_file,
        ),
        (
            "plan: future version",
            PLAN.len(),
            Box::new(|| load_plan(&set(PLAN.to_vec(), 4, &9u32.to_le_bytes()))),
            bad_file,
        ),
        (
            "plan: truncated body",
            PLAN.len(),
            Box::new(|| load_plan(&PLAN[..PLAN.len() / 2])),
            bad_file,
        ),
        (
            "plan: bit flip",
            PLAN.len(),
            Box::new(move || load_plan(&flipped_plan)),
            bad_file,
        ),
        (
            "plan: blob offset absurd",
            PLAN.len(),
            Box::new(|| load_plan(&set(PLAN.to_vec(), 16, &u64::MAX.to_le_bytes()))),
            bad_file,
        ),
        (
            "plan: metadata length absurd",
            PLAN.len(),
            Box::new(|| load_plan(&set(PLAN.to_vec(), 8, &u32::MAX.to_le_bytes()))),
            bad_file,
        ),
        (
            "plan: arena absurd",
            PLAN.len(),
            Box::new(|| load_plan(&set(PLAN.to_vec(), 32, &(1u64 << 60).to_le_bytes()))),
            |e| matches!(e, Error::BadFile { .. } | Error::ArenaTooLarge { .. }),
        ),
        (
            "plan: arena over the caller's limit",
            PLAN.len(),
            Box::new(|| {
                let p = Plan::from_bytes(PLAN)?;
                Executor::new(&p, Kernels::detect(), 16).map(|_| ())
            }),
            arena,
        ),
        (
            "plan: tensor count absurd",
            PLAN.len(),
            Box::new(move || load_plan(&tensors_absurd)),
            bad_file,
        ),
        (
            "plan: tensor name length absurd",
            PLAN.len(),
            Box::new(move || load_plan(&tensor_name_absurd)),
            bad_file,
        ),
        (
            "adapter: empty",
            0,
            Box::new(|| load_adapter(&[])),
            bad_file,
        ),
        (
            "adapter: wrong magic",
            NCM.len(),
            Box::new(|| load_adapter(&set(NCM.to_vec(), 0, b"ETM\0"))),
            bad_file,
        ),
        (
            "adapter: old version",
            NCM.len(),
            Box::new(|| load_adapter(&set(NCM.to_vec(), 4, &1u32.to_le_bytes()))),
            bad_file,
        ),
        (
            "adapter: truncated",
            NCM.len(),
            Box::new(|| load_adapter(&NCM[..NCM.len() - 7])),
            bad_file,
        ),
        (
            "adapter: body length lies",
            NCM.len(),
            Box::new(|| load_adapter(&set(NCM.to_vec(), 8, &(1u64 << 40).to_le_bytes()))),
            bad_file,
        ),
        (
            "adapter: bit flip",
            LINEAR.len(),
            Box::new(move || load_adapter(&flipped_ad)),
            bad_file,
        ),
        (
            "adapter: for another plan",
            NCM.len(),
            Box::new(move || load_adapter(&other_hash)),
            mismatch,
        ),
        (
            "adapter: NaN weight",
            LINEAR.len(),
            Box::new(move || load_adapter(&nan_weight)),
            nonfinite,
        ),
        (
            "adapter: unknown method",
            NCM.len(),
            Box::new(move || load_adapter(&ncm_tag)),
            bad_file,
        ),
        (
            "adapter: trailing bytes",
            LINEAR.len(),
            Box::new(move || load_adapter(&trailing)),
            bad_file,
        ),
        (
            "adapter: zero taps",
            NCM.len(),
            Box::new(move || load_adapter(&zero_taps)),
            bad_file,
        ),
        (
            "adapter: 1000 taps",
            NCM.len(),
            Box::new(move || load_adapter(&many_taps)),
            bad_file,
        ),
        (
            "adapter: string length absurd",
            NCM.len(),
            Box::new(move || load_adapter(&huge_str)),
            bad_file,
        ),
        (
            "adapter: truncated query head",
            QUERY.len(),
            Box::new(|| load_adapter(&with_adapter_checksum(QUERY[..QUERY.len() - 40].to_vec()))),
            bad_file,
        ),
        (
            "onnx: empty",
            0,
            Box::new(|| import_bytes(&[], &ImportOptions::default()).map(|_| ())),
            malformed,
        ),
        (
            "onnx: garbage",
            64,
            Box::new(|| import_bytes(&[0xff; 64], &ImportOptions::default()).map(|_| ())),
            malformed,
        ),
        (
            "onnx: truncated real model",
            ONNX.len() / 3,
            Box::new(|| {
                import_bytes(&ONNX[..ONNX.len() / 3], &ImportOptions::default()).map(|_| ())
            }),
            malformed,
        ),
        (
            "onnx: float model with an op outside the registry (Conv renamed Cosh)",
            FLOAT_ONNX.len(),
            Box::new(|| {
                import_bytes(
                    &replace(FLOAT_ONNX, b"\x04Conv", b"\x04Cosh"),
                    &ImportOptions::default(),
                )
                .map(|_| ())
            }),
            unsupported,
        ),
        (
            "onnx: sequence model with an op outside the registry (Erf renamed Tan)",
            SEQ_ONNX.len(),
            Box::new(|| {
                import_bytes(
                    &replace(SEQ_ONNX, b"\x03Erf", b"\x03Tan"),
                    &ImportOptions::default(),
                )
                .map(|_| ())
            }),
            unsupported,
        ),
        (
            "onnx: sequence model truncated",
            SEQ_ONNX.len() / 2,
            Box::new(|| {
                import_bytes(&SEQ_ONNX[..SEQ_ONNX.len() / 2], &ImportOptions::default()).map(|_| ())
            }),
            malformed,
        ),
        (
            "sequence plan: token id beyond the table",
            16,
            Box::new(|| run_seq(&[1.0, 2.0, 99.0, 3.0])),
            invalid,
        ),
        (
            "sequence plan: fractional token id",
            16,
            Box::new(|| run_seq(&[1.0, 2.5, 3.0, 4.0])),
            invalid,
        ),
        (
            "sequence plan: NaN token id",
            16,
            Box::new(|| run_seq(&[1.0, f32::NAN, 3.0, 4.0])),
            nonfinite,
        ),
        (
            "sequence plan: too few token ids",
            12,
            Box::new(|| run_seq(&[1.0, 2.0, 3.0])),
            shape,
        ),
        (
            "input: NaN",
            4 * n_in,
            Box::new(move || {
                let mut x = vec![0.1; n_in];
                x[3] = f32::NAN;
                run_input(&x)
            }),
            nonfinite,
        ),
        (
            "input: infinity",
            4 * n_in,
            Box::new(move || {
                let mut x = vec![0.1; n_in];
                x[0] = f32::INFINITY;
                run_input(&x)
            }),
            nonfinite,
        ),
        (
            "input: too short",
            4 * n_in,
            Box::new(move || run_input(&vec![0.1; n_in - 1])),
            shape,
        ),
        ("input: empty", 0, Box::new(|| run_input(&[])), shape),
        (
            "input: oversized",
            4 << 20,
            Box::new(|| run_input(&vec![0.1; 1 << 20])),
            shape,
        ),
        (
            "train: one class only",
            64,
            Box::new(move || fit(Kind::Linear, &[good_row(0), good_row(0)], 1)),
            invalid,
        ),
        (
            "train: a class with no examples",
            64,
            Box::new(move || fit(Kind::Ladder, &[good_row(0), good_row(2)], 3)),
            invalid,
        ),
        (
            "train: NaN in a cached tap",
            64,
            Box::new(|| fit(Kind::Ncm, &[(vec![f32::NAN; 8], 0), (vec![0.5; 8], 1)], 2)),
            nonfinite,
        ),
        (
            "train: tail without its plan",
            64,
            Box::new(move || fit(Kind::Tail, &[good_row(0), good_row(1)], 2)),
            invalid,
        ),
        (
            "predict: wrong tap shape",
            64,
            Box::new(|| {
                let p = Plan::from_bytes(PLAN)?;
                let a = Adapter::from_bytes(NCM, &p.hash())?;
                let d = [TapShape { tokens: 1, dim: 3 }];
                a.method.scores(&[&[0.0; 3]], &d, &mut [0.0; 8])
            }),
            shape,
        ),
    ];
    let _ = plan_hash();
    assert!(cases.len() >= 30);
    for (name, input_len, f, check) in &cases {
        let base = LIVE.load(SeqCst);
        PEAK.store(base, SeqCst);
        let r = f();
        let peak = PEAK.load(SeqCst) - base;
        match r {
            Err(e) => assert!(check(&e), "{name}: wrong error kind: {e:?}"),
            Ok(()) => panic!("{name}: accepted"),
        }
        let bound = (16 << 20) + 2 * input_len;
        assert!(
            peak <= bound,
            "{name}: allocated {peak} bytes, bound {bound}"
        );
    }
}
