//! edgetune's soft k-means refinement (ncm) and self-training (linear) against the
//! scikit-learn / numpy reference run on the same exported taps and episodes
//! (tools/unlabeled_reference.py, results committed in
//! tools/reference/unlabeled_fmnist.json): mean accuracy within 1.5 points, with and
//! without the unlabeled examples. No Python needed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgetune");
const REFERENCE: &str = include_str!("../../tools/reference/unlabeled_fmnist.json");

/// The summary's `"method": {"mean": x` in the reference JSON (indent 1, as written).
fn reference_mean(method: &str) -> f64 {
    let key = format!("\n  \"{method}\": {{\n   \"mean\": ");
    let at = REFERENCE
        .find(&key)
        .unwrap_or_else(|| panic!("{method} missing from the reference"));
    let rest = &REFERENCE[at + key.len()..];
    let end = rest.find([',', '\n', '}']).unwrap();
    rest[..end].trim().parse().unwrap()
}

/// `"method":"name","accuracy":x` in `edgetune eval --json`.
fn measured(json: &str, method: &str) -> f64 {
    let at = json.find(&format!("\"method\":\"{method}\"")).unwrap();
    let rest = &json[at..];
    let a = rest.find("\"accuracy\":").unwrap() + 11;
    let end = rest[a..].find(',').unwrap();
    rest[a..a + end].parse().unwrap()
}

#[test]
fn soft_kmeans_and_self_training_match_the_reference() {
    let o = Command::new(BIN)
        .args([
            "eval",
            "--data",
            "bundled",
            "--ways",
            "10",
            "--shots",
            "5",
            "--episodes",
            "5",
            "--method",
            "ncm,linear",
            "--unlabeled",
            "20",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json = String::from_utf8_lossy(&o.stdout);
    for m in ["ncm", "ncm+unlabeled", "linear", "linear+unlabeled"] {
        let (ours, theirs) = (measured(&json, m), reference_mean(m));
        assert!(
            (ours - theirs).abs() <= 0.015,
            "{m}: edgetune {ours:.4}, reference {theirs:.4}"
        );
    }
}
