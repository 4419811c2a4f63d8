//! `edgetune compile --calibrate DIR` on a float model (models/golden/ops/float): the plan
//! it writes runs in int8 and gives, through `edgetune run`, the outputs of the library's
//! `import_calibrated` on the same calibration inputs; a folder with nothing to calibrate
//! on and a quantised model are refused with the reason, and no plan is written.

use edgetune::import::{import_calibrated, ImportOptions};
use edgetune::kernels::Kernels;
use edgetune::npy::{read_npy, write_npy};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::Executor;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ops() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/golden/ops")).to_path_buf()
}

fn edgetune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .args(args)
        .output()
        .unwrap()
}

/// A fresh folder `NAME-PID` with `cal/NN.npy`, the models' calibration inputs, and the
/// same inputs as `import_calibrated` takes them.
fn calibration_folder(name: &str) -> (PathBuf, PathBuf, Vec<Vec<Vec<f32>>>) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let cal = dir.join("cal");
    std::fs::create_dir_all(&cal).unwrap();
    let (cs, c) = read_npy(&ops().join("calib.npy")).unwrap();
    let cl = c.len() / cs[0];
    let mut samples = vec![];
    for i in 0..cs[0] {
        let x = &c[i * cl..][..cl];
        write_npy(&cal.join(format!("{i:02}.npy")), &[1, 3, 16, 16], x).unwrap();
        samples.push(vec![x.to_vec()]);
    }
    (dir, cal, samples)
}

#[test]
fn compile_calibrate_matches_the_library_and_refuses_bad_folders() {
    let (dir, cal, samples) = calibration_folder("et-calibrate");
    let model = ops().join("float/split_scalar.onnx");
    let plan = dir.join("p.etm");
    let out = edgetune(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
        "--calibrate",
        cal.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("calibrated on {} inputs", samples.len())),
        "{text}"
    );
    // The library on the same inputs, run in process.
    let bytes = std::fs::read(&model).unwrap();
    let (parts, _) = import_calibrated(&bytes, &ImportOptions::default(), &samples).unwrap();
    let lib = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let cli = Plan::from_owned(AlignedBytes::from_slice(&std::fs::read(&plan).unwrap())).unwrap();
    assert!(cli.ops == lib.ops, "the CLI's plan has the library's ops");
    let (xs, x) = read_npy(&ops().join("x.npy")).unwrap();
    let x0 = &x[..x.len() / xs[0]];
    let input = dir.join("x0.npy");
    write_npy(&input, &[1, 3, 16, 16], x0).unwrap();
    let saved = dir.join("out");
    let out = edgetune(&[
        "run",
        plan.to_str().unwrap(),
        input.to_str().unwrap(),
        "--save-outputs",
        saved.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read_dir(&saved)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (_, y_cli) = read_npy(&file).unwrap();
    let mut exec = Executor::new(&lib, Kernels::detect(), 1 << 24).unwrap();
    exec.run(&[x0]).unwrap();
    let mut y = vec![0.0; y_cli.len()];
    exec.tensor_f32(lib.outputs[0].tensor, &mut y).unwrap();
    assert_eq!(y, y_cli);

    // Nothing to calibrate on: refused, no plan written.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let none = dir.join("none.etm");
    let out = edgetune(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        none.to_str().unwrap(),
        "--calibrate",
        empty.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no .npy or image files"));
    assert!(!none.exists());
    // A quantised model is not calibrated again.
    let q = ops().join("silu_qdq.onnx");
    let out = edgetune(&[
        "compile",
        q.to_str().unwrap(),
        "-o",
        none.to_str().unwrap(),
        "--calibrate",
        cal.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already quantised"));
    assert!(!none.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `percentile_range` against the exact percentiles of the same values (sorted), and a
/// handful of outliers left outside the range they would stretch.
#[test]
fn percentile_ranges_follow_the_exact_percentiles() {
    use edgetune::import::calibrate::percentile_range;
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Sum of three uniforms in [-1, 1): a bell over [-3, 3).
        (0..3)
            .map(|k| ((state >> (11 + 7 * k)) & 0xffff) as f32 / 32768.0 - 1.0)
            .sum::<f32>()
    };
    let mut v: Vec<f32> = (0..20000).map(|_| next()).collect();
    v.extend([40.0, 45.0, -35.0, 50.0, 44.0]);
    let (lo, hi) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let bins = 2048;
    let w = (hi - lo) / bins as f32;
    let mut hist = vec![0u64; bins];
    for &x in &v {
        hist[((((x - lo) / (hi - lo)) * bins as f32) as usize).min(bins - 1)] += 1;
    }
    let mut sorted = v.clone();
    sorted.sort_by(f32::total_cmp);
    for p in [99.0f32, 99.9, 99.99] {
        let (a, b) = percentile_range(&hist, lo, hi, p);
        let cut = ((1.0 - f64::from(p) / 100.0) * v.len() as f64).floor() as usize;
        let (want_lo, want_hi) = (sorted[cut], sorted[v.len() - 1 - cut]);
        assert!(
            a <= want_lo && want_lo < a + w,
            "p{p}: low {a} vs {want_lo}"
        );
        assert!(
            b - w <= want_hi && want_hi <= b,
            "p{p}: high {b} vs {want_hi}"
        );
        if cut >= 5 {
            assert!(
                b < 10.0 && a > -10.0,
                "p{p}: the outliers stretch [{a}, {b}]"
            );
        }
    }
    assert_eq!(percentile_range(&hist, lo, hi, 100.0).0, lo);
}

/// `--calibrate-range percentile:P` writes the library's plan for that calibration, one
/// that differs from the min-max plan; an out-of-range P is refused and nothing written.
#[test]
fn compile_calibrate_range_percentile() {
    use edgetune::import::Calibration;
    let (dir, cal, samples) = calibration_folder("et-calibrate-p");
    let model = ops().join("float/split_scalar.onnx");
    let plan = dir.join("p.etm");
    let compile = |range: &str, out: &Path| {
        edgetune(&[
            "compile",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--calibrate",
            cal.to_str().unwrap(),
            "--calibrate-range",
            range,
        ])
    };
    let out = compile("percentile:99.9", &plan);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&model).unwrap();
    let lib = |calibration| {
        let opts = ImportOptions {
            calibration,
            ..Default::default()
        };
        import_calibrated(&bytes, &opts, &samples)
            .unwrap()
            .0
            .to_bytes()
    };
    let pct = lib(Calibration::Percentile(99.9));
    let cli = Plan::from_owned(AlignedBytes::from_slice(&std::fs::read(&plan).unwrap())).unwrap();
    let want = Plan::from_owned(AlignedBytes::from_slice(&pct)).unwrap();
    assert!(cli.ops == want.ops, "the CLI's plan has the library's ops");
    assert!(
        pct != lib(Calibration::MinMax),
        "percentile ranges change the plan"
    );
    let none = dir.join("none.etm");
    for bad in ["percentile:20", "percentile:x", "histogram"] {
        let out = compile(bad, &none);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--calibrate-range"));
        assert!(!none.exists());
    }
    std::fs::remove_dir_all(&dir).ok();
}
