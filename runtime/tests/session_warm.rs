//! Adding a class to a trained session: the warm refit (`Session::fit_warm`, what
//! `add_class` does) keeps the adapter it had, runs a quarter of the steps, and predicts
//! the bundled RGB photos as well as training from scratch on the same cache.
#![cfg(feature = "onnx")]

use edgetune::adapt::Kind;
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::session::Session;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn session(kind: Kind) -> Session {
    let opts = ImportOptions {
        taps: Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    let parts = import_path(&root().join("models/efficientnet_lite0_int8.onnx"), &opts).unwrap();
    let mut s = Session::from_bytes(&parts.to_bytes()).unwrap();
    s.set_method(kind).unwrap();
    s
}

fn photo(s: &mut Session, class: &str, i: usize) -> edgetune::session::Sample {
    s.load(&root().join(format!("examples/data/photos/{class}/{i}.jpg")))
        .unwrap()
}

const CLASSES: [&str; 4] = ["astronaut", "cat", "coffee", "rocket"];

/// Held-out photos 3 and 4 of every class: how many get their class.
fn correct(s: &mut Session) -> usize {
    let mut ok = 0;
    for (c, name) in CLASSES.iter().enumerate() {
        for i in 3..5 {
            let p = photo(s, name, i);
            ok += (s.predict(&p, 1).unwrap()[0].0 == c) as usize;
        }
    }
    ok
}

fn grown(kind: Kind, warm: bool) -> (usize, usize, Vec<String>) {
    let mut s = session(kind);
    for name in &CLASSES[..3] {
        for i in 0..3 {
            let p = photo(&mut s, name, i);
            s.enrol(p, name).unwrap();
        }
    }
    let first = s.fit(&mut |_| true).unwrap();
    for i in 0..3 {
        let p = photo(&mut s, CLASSES[3], i);
        s.enrol(p, CLASSES[3]).unwrap();
    }
    let f = if warm {
        s.fit_warm(&mut |_| true).unwrap()
    } else {
        s.fit(&mut |_| true).unwrap()
    };
    if warm {
        assert_eq!(
            f.steps,
            first.steps.div_ceil(4),
            "{kind:?}: a quarter of the steps"
        );
    } else {
        assert_eq!(f.steps, first.steps);
    }
    let classes = s.adapter().unwrap().classes.clone();
    (correct(&mut s), f.steps, classes)
}

#[test]
fn a_warm_refit_after_a_new_class_matches_a_full_one() {
    for kind in [Kind::Linear, Kind::Ladder] {
        let (warm, ws, classes) = grown(kind, true);
        let (cold, cs, _) = grown(kind, false);
        println!("{kind:?}: warm {warm}/8 in {ws} steps, from scratch {cold}/8 in {cs} steps");
        assert_eq!(classes, CLASSES);
        assert!(
            warm + 1 >= cold,
            "{kind:?}: warm {warm}/8, from scratch {cold}/8"
        );
        assert!(warm >= 6, "{kind:?}: warm {warm}/8");
    }
}

/// The tail methods continue from the trained tail: the body and the old classes' rows,
/// the new class's row from its prototype through the trained tail.
#[test]
fn a_warm_tail_refit_after_a_new_class_matches_a_full_one() {
    for kind in [Kind::Tail, Kind::Bias, Kind::Lora] {
        let (warm, ws, classes) = grown(kind, true);
        let (cold, cs, _) = grown(kind, false);
        println!("{kind:?}: warm {warm}/8 in {ws} steps, from scratch {cold}/8 in {cs} steps");
        assert_eq!(classes, CLASSES);
        assert!(
            warm + 1 >= cold,
            "{kind:?}: warm {warm}/8, from scratch {cold}/8"
        );
        assert!(warm >= 6, "{kind:?}: warm {warm}/8");
    }
}
