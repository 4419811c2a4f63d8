//! Crash safety: `edgetune adapt` and `edgetune compile` killed with SIGKILL at random
//! moments while writing over an existing file. Afterwards the file is either the old one,
//! byte for byte, or a complete new one that loads — never partial.

use edgetune::adapt::Adapter;
use edgetune::plan::{AlignedBytes, Plan};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_edgetune");
const ONNX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/efficientnet_lite0_int8.onnx"
);
const IMAGES: &[u8] = include_bytes!("../../examples/data/fashion_mnist_600-images.idx");
const LABELS: &[u8] = include_bytes!("../../examples/data/fashion_mnist_600-labels.idx");

fn run(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two classes of three bundled Fashion-MNIST images as PNG folders.
fn train_dir(dir: &Path) -> PathBuf {
    let root = dir.join("train");
    for (class, label) in [("tshirt", 0u8), ("trouser", 1u8)] {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        let idx: Vec<usize> = (0..600)
            .filter(|&i| LABELS[8 + i] == label)
            .take(3)
            .collect();
        for i in idx {
            let px = IMAGES[16 + i * 784..][..784].to_vec();
            image::GrayImage::from_raw(28, 28, px)
                .unwrap()
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    root
}

/// Kills `args(round)` at uniformly random moments over 2× its full run time, `rounds`
/// times, and checks `target` after each kill with `valid`. Successive rounds write
/// different bytes, so a replaced file is told from a kept one. Returns (kept, replaced).
fn kill_loop(
    args: &dyn Fn(usize) -> Vec<String>,
    target: &Path,
    rounds: usize,
    valid: &dyn Fn(&[u8]) -> bool,
) -> (usize, usize) {
    // The longer of two full runs, so that one fast moment does not shrink the window.
    let mut full = Duration::ZERO;
    for r in 0..2 {
        let t = Instant::now();
        let st = Command::new(BIN)
            .args(args(rounds + r))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        full = full.max(t.elapsed());
    }
    let mut old = std::fs::read(target).unwrap();
    let (mut kept, mut replaced) = (0, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = full.mul_f64(2.0 * (seed % 10_000) as f64 / 10_000.0);
        let mut child = Command::new(BIN)
            .args(args(round))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at.min(Duration::from_secs(30)));
        let _ = child.kill(); // SIGKILL on Unix
        let _ = child.wait();
        let now = std::fs::read(target).expect("target file vanished");
        if now == old {
            kept += 1;
        } else {
            assert!(
                valid(&now),
                "partial or corrupt file after a kill at {at:?}"
            );
            replaced += 1;
            old = now;
        }
    }
    (kept, replaced)
}

#[test]
fn killed_adapt_and_compile_never_leave_a_partial_file() {
    let dir = std::env::temp_dir().join(format!("edgetune-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan_path = dir.join("p.etm");
    let p = plan_path.to_str().unwrap();
    run(&[
        "compile",
        ONNX,
        "-o",
        p,
        "--preprocess",
        "image:224:127:128",
    ]);
    let plan_bytes = std::fs::read(&plan_path).unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&plan_bytes)).unwrap();
    let hash = plan.hash();
    let train = train_dir(&dir);
    let eta = dir.join("user.eta");
    let e = eta.to_str().unwrap();
    run(&[
        "adapt",
        "--plan",
        p,
        "--train",
        train.to_str().unwrap(),
        "--method",
        "ncm",
        "-o",
        e,
    ]);
    let tr = train.to_str().unwrap().to_string();
    let args = |round: usize| -> Vec<String> {
        let seed = round.to_string();
        [
            "adapt", "--plan", p, "--train", &tr, "--method", "linear", "--epochs", "100",
            "--seed", &seed, "--json", "-o", e,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (kept, replaced) = kill_loop(&args, &eta, 50, &|b| Adapter::from_bytes(b, &hash).is_ok());
    assert!(
        kept > 0 && replaced > 0,
        "kills never landed on both sides of the write"
    );
    eprintln!("adapt: 50 kills, old adapter kept {kept}, new complete {replaced}");

    let out = dir.join("q.etm");
    std::fs::write(&out, &plan_bytes).unwrap();
    let o = out.to_str().unwrap();
    let args = |round: usize| -> Vec<String> {
        let taps = if round.is_multiple_of(2) {
            "blocks"
        } else {
            "/_blocks.2/Add_output_0"
        };
        ["compile", ONNX, "-o", o, "--taps", taps]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (kept, replaced) = kill_loop(&args, &out, 50, &|b| {
        Plan::from_owned(AlignedBytes::from_slice(b)).is_ok()
    });
    eprintln!("compile: 50 kills, old plan kept {kept}, new complete {replaced}");
    assert!(
        kept > 0 && replaced > 0,
        "kills never landed on both sides of the write"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
