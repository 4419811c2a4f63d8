//! Dropping a class from a trained session without training (`Session::remove_class`,
//! `Method::drop_class`), on a fitted and on a loaded adapter, and int8 serving of the
//! tail methods, on the bundled RGB photos.
#![cfg(all(feature = "onnx", feature = "files"))]

use edgetune::adapt::Kind;
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::session::{Sample, Serve, Session};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn plan() -> &'static [u8] {
    static PLAN: OnceLock<Vec<u8>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let opts = ImportOptions {
            taps: Taps::Blocks,
            meta: vec![("preprocess".into(), "image:224:127:128".into())],
            ..Default::default()
        };
        import_path(&root().join("models/efficientnet_lite0_int8.onnx"), &opts)
            .unwrap()
            .to_bytes()
    })
}

fn session(kind: Kind) -> Session {
    let mut s = Session::from_bytes(plan()).unwrap();
    s.set_method(kind).unwrap();
    s
}

fn photo(s: &mut Session, class: &str, i: usize) -> Sample {
    s.load(&root().join(format!("examples/data/photos/{class}/{i}.jpg")))
        .unwrap()
}

const CLASSES: [&str; 4] = ["astronaut", "cat", "coffee", "rocket"];

/// A session of `kind` fitted on photos 0-2 of the first `k` classes.
fn fitted(kind: Kind, k: usize, serve: Serve) -> Session {
    let mut s = session(kind);
    s.opts.serve = serve;
    if kind != Kind::Ncm {
        s.opts.steps = Some(60);
    }
    s.set_seed(7);
    for name in &CLASSES[..k] {
        for i in 0..3 {
            let p = photo(&mut s, name, i);
            s.enrol(p, name).unwrap();
        }
    }
    s.fit(&mut |_| true).unwrap();
    s
}

/// Held-out photos 3 and 4 of every class.
fn held(s: &mut Session) -> Vec<Sample> {
    let mut v = vec![];
    for name in &CLASSES {
        for i in 3..5 {
            v.push(photo(s, name, i));
        }
    }
    v
}

fn scores(s: &mut Session, xs: &[Sample]) -> Vec<Vec<f32>> {
    xs.iter()
        .map(|x| {
            let mut v = vec![];
            s.scores(x, &mut v).unwrap();
            v
        })
        .collect()
}

fn top1(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

/// After dropping label `l`: the session's top-1 is the argmax of the old scores with
/// column `l` removed, and the other classes' scores are the old ones.
fn check_dropped(what: &str, s: &mut Session, xs: &[Sample], old: &[Vec<f32>], l: usize) {
    let new = scores(s, xs);
    let mut agree = 0;
    for (n, o) in new.iter().zip(old) {
        let mut rest = o.clone();
        rest.remove(l);
        assert_eq!(n.len(), rest.len(), "{what}");
        for (a, b) in n.iter().zip(&rest) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}: score {a} vs {b} before"
            );
        }
        assert_eq!(top1(n), top1(&rest), "{what}: {n:?} vs {rest:?}");
        agree += 1;
    }
    println!(
        "{what}: top-1 = argmax of the old scores without class {l} on {agree}/{} held-out photos",
        xs.len()
    );
}

#[test]
fn removing_a_class_keeps_the_other_classes_scores() {
    for kind in Kind::ALL {
        let mut s = fitted(kind, 4, Serve::Float);
        let xs = held(&mut s);
        let old = scores(&mut s, &xs);
        let bytes = s.adapter().unwrap().to_bytes();
        s.remove_class("coffee").unwrap();
        assert_eq!(s.classes(), ["astronaut", "cat", "rocket"]);
        let a = s.adapter().expect("the adapter is kept");
        assert_eq!(a.classes, ["astronaut", "cat", "rocket"]);
        assert_eq!(a.method.classes(), 3);
        check_dropped(&format!("{kind:?} fitted"), &mut s, &xs, &old, 2);
        // The adapter written after the drop reads back the same.
        let mut back = session(Kind::Ncm);
        back.load_adapter_bytes(&s.adapter().unwrap().to_bytes())
            .unwrap();
        assert_eq!(scores(&mut back, &xs), scores(&mut s, &xs), "{kind:?}");

        // A loaded adapter (no enrolled examples): remove works without training; adding
        // a class to a trained method is refused and leaves the adapter as it was.
        let mut s = session(Kind::Ncm);
        s.load_adapter_bytes(&bytes).unwrap();
        assert_eq!(s.method(), kind);
        if kind != Kind::Ncm {
            let extra = vec![photo(&mut s, "cat", 0)];
            let e = s.add_class("kitten", extra).unwrap_err().to_string();
            assert!(e.contains("no enrolled examples"), "{kind:?}: {e}");
            assert_eq!(s.adapter().unwrap().classes, CLASSES);
            assert_eq!(s.classes(), CLASSES);
            assert_eq!(scores(&mut s, &xs), old, "{kind:?}: adapter changed");
        }
        s.remove_class("coffee").unwrap();
        check_dropped(&format!("{kind:?} loaded"), &mut s, &xs, &old, 2);
        // Down to two classes, then one: a one-class adapter is dropped.
        s.remove_class("astronaut").unwrap();
        assert_eq!(s.adapter().unwrap().classes, ["cat", "rocket"]);
        s.remove_class("cat").unwrap();
        assert!(s.adapter().is_none());
    }
}

/// ncm adds a class to a loaded adapter from the new class's examples alone, and scores
/// as an ncm fitted on all four classes.
#[test]
fn ncm_adds_a_class_to_a_loaded_adapter() {
    let mut s3 = fitted(Kind::Ncm, 3, Serve::Float);
    let bytes = s3.adapter().unwrap().to_bytes();
    let mut s = session(Kind::Linear);
    s.load_adapter_bytes(&bytes).unwrap();
    let xs: Vec<Sample> = (0..3).map(|i| photo(&mut s3, "rocket", i)).collect();
    s.add_class("rocket", xs).unwrap();
    assert_eq!(s.adapter().unwrap().classes, CLASSES);
    let mut s4 = fitted(Kind::Ncm, 4, Serve::Float);
    let held = held(&mut s4);
    let (a, b) = (scores(&mut s, &held), scores(&mut s4, &held));
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() < 1e-6, "{u} vs {v}");
        }
    }
}

/// A tail adapter served int8 (re-quantised, activation ranges from the support set)
/// predicts the held-out photos as the float tail trained the same way does, and keeps
/// doing so after save/load and after a class is dropped (the int8 tail rebuilt from the
/// stored ranges).
#[test]
fn int8_tails_give_the_float_top1() {
    let dir = std::env::temp_dir().join(format!("edgetune-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for kind in [Kind::Tail, Kind::Bias, Kind::Lora] {
        let mut f = fitted(kind, 4, Serve::Float);
        let mut q = fitted(kind, 4, Serve::Int8);
        assert!(!f.serves_int8() && q.serves_int8());
        let xs = held(&mut q);
        let (sf, sq) = (scores(&mut f, &xs), scores(&mut q, &xs));
        let same = sf
            .iter()
            .zip(&sq)
            .filter(|(a, b)| top1(a) == top1(b))
            .count();
        let worst = sf
            .iter()
            .zip(&sq)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(u, v)| (u - v).abs()))
            .fold(0.0f32, f32::max);
        let right = sq
            .iter()
            .enumerate()
            .filter(|(i, v)| top1(v) == i / 2)
            .count();
        println!(
            "{kind:?}: int8 top-1 = float top-1 on {same}/{}; largest score difference {worst:.4}; int8 right on {right}/{}",
            xs.len(),
            xs.len()
        );
        assert_eq!(same, xs.len(), "{kind:?}");
        let path = dir.join(format!("{}.eta", kind.name()));
        q.save(&path).unwrap();
        let mut l = session(Kind::Ncm);
        l.load_adapter(&path).unwrap();
        assert!(l.serves_int8(), "{kind:?}: loaded as float");
        assert_eq!(scores(&mut l, &xs), sq, "{kind:?}: int8 scores after load");
        l.remove_class("coffee").unwrap();
        assert!(l.serves_int8());
        check_dropped(&format!("{kind:?} int8 loaded"), &mut l, &xs, &sq, 2);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
