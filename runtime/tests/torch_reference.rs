//! edgetune's linear probe and ladder side network against the PyTorch reference trained
//! on the same cached taps and episodes (tools/torch_reference.py, results committed in
//! tools/reference/torch_fmnist.json): mean accuracy within 1.5 points. No torch needed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgetune");
const REFERENCE: &str = include_str!("../../tools/reference/torch_fmnist.json");

/// The summary's `"method": {"mean": x` in the reference JSON (indent 1, as written).
fn reference_mean(method: &str) -> f64 {
    let key = format!("\n \"{method}\": {{\n  \"mean\": ");
    let at = REFERENCE
        .find(&key)
        .unwrap_or_else(|| panic!("{method} missing from the reference"));
    let rest = &REFERENCE[at..];
    let m = key.len();
    let end = rest[m..].find([',', '\n', '}']).unwrap();
    rest[m..m + end].trim().parse().unwrap()
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
fn linear_and_ladder_match_the_pytorch_reference() {
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
            "linear,ladder",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json = String::from_utf8_lossy(&o.stdout);
    for m in ["linear", "ladder"] {
        let (ours, theirs) = (measured(&json, m), reference_mean(m));
        assert!(
            (ours - theirs).abs() <= 0.015,
            "{m}: edgetune {ours:.4}, PyTorch {theirs:.4}"
        );
    }
}
