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

/// The `shape` of an .npy file's header.
fn npy_shape(path: &std::path::Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned();
    let at = head.find("'shape': (").unwrap() + 10;
    let end = head[at..].find(')').unwrap();
    head[at..at + end]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

/// `eval --export DIR` of one 3-way 2-shot episode with 2 unlabeled examples per class,
/// and `extra` arguments.
fn export_episode(dir: &std::path::Path, extra: &[&str]) {
    let _ = std::fs::remove_dir_all(dir);
    let o = Command::new(BIN)
        .args([
            "eval",
            "--data",
            "bundled",
            "--ways",
            "3",
            "--shots",
            "2",
            "--episodes",
            "1",
            "--method",
            "ncm",
            "--unlabeled",
            "2",
            "--export",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `eval --export` with `--augment` writes the unlabeled examples' views beside them
/// (what tools/semi_probe.py's consistency rule reads): one row per view, and a mirrored
/// view's taps differ from its original's.
#[test]
fn export_writes_the_unlabeled_views() {
    let dir = std::env::temp_dir().join(format!("edgetune-views-{}", std::process::id()));
    export_episode(&dir, &["--augment", "1"]);
    let u = npy_shape(&dir.join("e0_unlabeled_t0.npy"));
    let v = npy_shape(&dir.join("e0_unlabeled_views_t0.npy"));
    assert_eq!(u[0], 3 * 2, "unlabeled rows {u:?}");
    assert_eq!(v, u, "one view each: {v:?} against {u:?}");
    let (a, b) = (
        std::fs::read(dir.join("e0_unlabeled_t0.npy")).unwrap(),
        std::fs::read(dir.join("e0_unlabeled_views_t0.npy")).unwrap(),
    );
    assert_ne!(a, b, "the views' taps equal the originals'");
    // Without --augment there are no views to write.
    export_episode(&dir, &[]);
    assert!(dir.join("e0_unlabeled_t0.npy").exists());
    assert!(!dir.join("e0_unlabeled_views_t0.npy").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
