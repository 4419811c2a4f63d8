//! The tail methods on the real EfficientNet-Lite0 plan: the float copy reproduces the
//! int8 plan, each variant learns, adapters round-trip through `bind`, bad cuts are typed.
#![cfg(feature = "onnx")]

use edgetune::adapt::cache::TapShape;
use edgetune::adapt::cache::{CacheFormat, TapCache};
use edgetune::adapt::tail::{Tail, TailNet, Variant};
use edgetune::adapt::train::Head;
use edgetune::adapt::{self, Adapter, Kind, Spec};
use edgetune::features::TapReader;
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::preprocess::ImagePrep;
use edgetune::{kernels::Kernels, Error, Executor};
use std::path::Path;
use std::sync::Arc;

const CUT: &str = "/_blocks.14/Add_output_0";
const INSIDE: &str = "/_blocks.14/_swish/Clip_output_0_DequantizeLinear_Output";

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn plan(taps: &[&str]) -> Plan<'static> {
    let opts = ImportOptions {
        taps: Taps::Names(taps.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let parts = import_path(&root().join("models/efficientnet_lite0_int8.onnx"), &opts).unwrap();
    Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap()
}

/// Images `0..n` of the bundled Fashion-MNIST sample with labels < `classes`.
fn images(classes: u8, per: usize) -> Vec<(Vec<u8>, usize)> {
    let px = std::fs::read(root().join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb = std::fs::read(root().join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    let mut seen = vec![0; classes as usize];
    let mut out = vec![];
    for (i, &l) in lb[8..].iter().enumerate() {
        if l < classes && seen[l as usize] < per {
            seen[l as usize] += 1;
            out.push((px[16 + i * 784..][..784].to_vec(), l as usize));
        }
    }
    out
}

/// Runs every image through the plan; caches the cut tap and the `features` output.
fn cache(plan: &Plan, imgs: &[(Vec<u8>, usize)]) -> TapCache {
    let prep = ImagePrep {
        size: 224,
        mean: 127.0,
        std: 128.0,
        channels: 3,
    };
    let exec = Executor::new(plan, Kernels::detect(), 1 << 30).unwrap();
    let mut rd = TapReader::new(exec, &[CUT.to_string(), "features".to_string()]).unwrap();
    let mut c = TapCache::new(CacheFormat::F16, rd.shapes.clone());
    let (mut input, mut outs) = (vec![], vec![vec![]; 2]);
    for (px, l) in imgs {
        prep.apply(px, 28, 28, 1, &mut input);
        rd.run(&input, &mut outs).unwrap();
        let v: Vec<&[f32]> = outs.iter().map(|o| &o[..]).collect();
        c.push(&v, *l).unwrap();
    }
    c
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (n(a) * n(b))
}

#[test]
fn float_tail_reproduces_the_int8_plan_and_every_variant_learns() {
    let p = plan(&[CUT]);
    let net = Arc::new(TailNet::from_plan(&p, CUT).unwrap());
    assert_eq!(
        net.cut_dims(),
        TapShape {
            tokens: 49,
            dim: 192
        }
    );
    assert_eq!(net.feature_dim(), 1280);
    let support = images(3, 4);
    let c = cache(&p, &support);

    // Oracle: at initialisation the float copy computes the plan's own features.
    let t = Tail::new(net.clone(), Variant::Full, 3);
    let mut prm = vec![0.0; t.n_params()];
    t.init(&mut edgetune::adapt::rng::Rng::new(0), &mut prm);
    t.prepare(&prm);
    let mut s = vec![0.0; t.scratch_len()];
    let (mut x, mut f, mut z) = (vec![0.0; 49 * 192], vec![0.0; 1280], [0.0; 3]);
    for i in 0..c.len() {
        c.read(i, 0, &mut x);
        c.read(i, 1, &mut f);
        t.forward(&prm, &[&x], &mut s, &mut z);
        let cs = cosine(t.features(&s), &f);
        assert!(
            cs > 0.99,
            "example {i}: float tail vs int8 plan cosine {cs}"
        );
    }

    let query = images(3, 10);
    let qc = cache(&p, &query[..]);
    let idx: Vec<usize> = (0..c.len()).collect();
    for kind in [Kind::Tail, Kind::Bias, Kind::Lora] {
        let mut spec = Spec::new(kind).seed(1).bind_tail(&p, CUT).unwrap();
        spec.train.steps = 30;
        spec.train.batch = 0;
        let m = adapt::fit(&spec, &c, &[0], &idx, 3, &mut |_| true).unwrap();
        let dims = [net.cut_dims()];
        let mut sc = [0.0; 3];
        let mut right = 0;
        // Examples 4.. of each class were not in the support set.
        let held: Vec<usize> = (0..qc.len()).filter(|&i| i % 10 >= 4).collect();
        for &i in &held {
            qc.read(i, 0, &mut x);
            m.scores(&[&x], &dims, &mut sc).unwrap();
            right += (adapt::argmax(&sc) == qc.labels[i]) as usize;
        }
        let acc = right as f32 / held.len() as f32;
        assert!(acc > 0.6, "{kind:?}: held-out accuracy {acc}");

        // The held-out examples scored together (more than one batch of the tail's
        // evaluation): each row is, bit for bit, that example's scores alone.
        let xs: Vec<Vec<f32>> = held
            .iter()
            .map(|&i| {
                let mut v = vec![0.0; 49 * 192];
                qc.read(i, 0, &mut v);
                v
            })
            .collect();
        assert!(xs.len() > edgetune::adapt::tail::EVAL_ROWS);
        let views: Vec<[&[f32]; 1]> = xs.iter().map(|v| [&v[..]]).collect();
        let refs: Vec<&[&[f32]]> = views.iter().map(|v| &v[..]).collect();
        let mut batch = vec![0.0; 3 * xs.len()];
        m.scores_batch(&refs, &dims, &mut batch).unwrap();
        for (r, v) in xs.iter().enumerate() {
            m.scores(&[v], &dims, &mut sc).unwrap();
            assert_eq!(
                sc.map(f32::to_bits)[..],
                batch[3 * r..][..3]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()[..],
                "{kind:?}: example {r} scored in a batch"
            );
        }
        // One example of the wrong size refuses the whole batch.
        let short = [&xs[0][..100]];
        let mut bad = refs.clone();
        bad[5] = &short[..];
        assert!(matches!(
            m.scores_batch(&bad, &dims, &mut batch),
            Err(Error::ShapeMismatch { .. })
        ));

        // Round trip: an unbound tail adapter refuses to score; bound, it scores the same.
        let a = Adapter {
            plan_hash: p.hash(),
            taps: vec![(CUT.to_string(), net.cut_dims())],
            classes: vec!["a".into(), "b".into(), "c".into()],
            hyper: vec![],
            method: m.clone(),
        };
        let mut back = Adapter::from_bytes(&a.to_bytes(), &p.hash()).unwrap();
        assert!(matches!(
            back.method.scores(&[&x], &dims, &mut sc),
            Err(Error::Invalid { .. })
        ));
        back.bind(&p).unwrap();
        let (mut s1, mut s2) = ([0.0; 3], [0.0; 3]);
        m.scores(&[&x], &dims, &mut s1).unwrap();
        back.method.scores(&[&x], &dims, &mut s2).unwrap();
        assert_eq!(s1, s2, "{kind:?}: reloaded adapter scores differ");
        // The adapter holds only what the variant trains.
        let full = Tail::new(net.clone(), Variant::Full, 3).n_params();
        assert!(m.params() <= full);
        if kind != Kind::Tail {
            assert!(m.params() * 10 < full, "{kind:?}: {} params", m.params());
        }
    }
}

#[test]
fn bad_cuts_and_budgets_give_typed_errors() {
    let p = plan(&[INSIDE, CUT]);
    match Spec::new(Kind::Tail).bind_tail(&p, "no/such/tap") {
        Err(Error::Invalid { what }) => assert!(what.contains("not a tap"), "{what}"),
        r => panic!("unknown cut: {:?}", r.map(|_| ())),
    }
    // A cut inside a residual block: the block's add reads the skip from before the cut.
    match Spec::new(Kind::Tail).bind_tail(&p, INSIDE) {
        Err(Error::UnsupportedOp { op, why, .. }) => {
            assert_eq!(op, "AddU8");
            assert!(why.contains("before the cut"), "{why}");
        }
        r => panic!("cut inside a block: {:?}", r.map(|_| ())),
    }
    // An adapter bound to another plan is refused.
    let other = plan(&[CUT, INSIDE]);
    let spec = Spec::new(Kind::Bias).bind_tail(&p, CUT).unwrap();
    let c = cache(&p, &images(2, 2));
    let idx: Vec<usize> = (0..c.len()).collect();
    let mut s2 = spec.clone();
    s2.train.steps = 2;
    let m = adapt::fit(&s2, &c, &[0], &idx, 2, &mut |_| true).unwrap();
    let mut a = Adapter {
        plan_hash: p.hash(),
        taps: vec![(
            CUT.to_string(),
            TapShape {
                tokens: 49,
                dim: 192,
            },
        )],
        classes: vec!["a".into(), "b".into()],
        hyper: vec![],
        method: m,
    };
    if other.hash() != p.hash() {
        assert!(matches!(a.bind(&other), Err(Error::PlanMismatch { .. })));
    }
    a.bind(&p).unwrap();
    // The memory figure covers the frozen tail, the cache, parameters and activations.
    let need = adapt::fit_memory(&spec, &c, &[0], c.len(), 2);
    let frozen = spec.tail.as_ref().unwrap().frozen.len() * 4;
    assert!(need > frozen + c.bytes(), "need {need}, frozen {frozen}");
    // Training the tail's cut on a cache of another tap shape is refused.
    let wrong = adapt::fit(&spec, &c, &[1], &idx, 2, &mut |_| true);
    assert!(
        matches!(wrong, Err(Error::ShapeMismatch { .. })),
        "{wrong:?}"
    );
}

#[test]
fn a_cut_before_a_dense_kxk_convolution_is_refused_naming_the_op() {
    // The tiny CNN's first op after its input is a 3×3 stride-2 dense convolution.
    let opts = ImportOptions {
        taps: Taps::Names(vec!["image_DequantizeLinear_Output".into()]),
        ..Default::default()
    };
    let parts = import_path(&root().join("models/tiny_cnn_fmnist04_int8.onnx"), &opts).unwrap();
    let p = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    match Spec::new(Kind::Lora).bind_tail(&p, "image_DequantizeLinear_Output") {
        Err(Error::UnsupportedOp { op, why, .. }) => {
            assert_eq!(op, "ConvI8");
            assert!(why.contains("k×k"), "{why}");
        }
        r => panic!("dense conv in the tail: {:?}", r.map(|_| ())),
    }
}
