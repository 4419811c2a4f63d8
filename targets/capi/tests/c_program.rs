//! The C ABI from C: the header is current, and `examples/c/flow.c`, compiled by gcc
//! against the static library, runs the whole flow on the default backbone (x86-64
//! natively; aarch64 cross-compiled and run under qemu-aarch64 when the tools exist).

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target"))
}

#[test]
fn header_is_current() {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let cfg = cbindgen::Config::from_file(Path::new(crate_dir).join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::generate_with_config(crate_dir, cfg)
        .unwrap()
        .write(&mut out);
    let committed =
        std::fs::read(Path::new(crate_dir).join("include/edgetune.h")).unwrap_or_default();
    if committed != out {
        if std::env::var_os("EDGETUNE_BLESS").is_some() {
            std::fs::write(Path::new(crate_dir).join("include/edgetune.h"), &out).unwrap();
        } else {
            panic!("targets/capi/include/edgetune.h is stale: rerun with EDGETUNE_BLESS=1");
        }
    }
}

fn plan(dir: &Path) -> PathBuf {
    let onnx = std::fs::read(Path::new(ROOT).join("models/efficientnet_lite0_int8.onnx")).unwrap();
    let opts = edgetune::import::ImportOptions {
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    let parts = edgetune::import::import_bytes(&onnx, &opts).unwrap();
    let p = dir.join("p.etm");
    std::fs::write(&p, parts.to_bytes()).unwrap();
    p
}

fn build_lib(target: Option<&str>) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--release", "-p", "edgetune-capi"])
        .current_dir(ROOT);
    if let Some(t) = target {
        c.args(["--target", t]);
    }
    assert!(
        c.status().unwrap().success(),
        "building the static library failed"
    );
    let mut d = target_dir();
    if let Some(t) = target {
        d = d.join(t);
    }
    d.join("release")
}

fn run_flow(cc: &str, libdir: &Path, runner: &[&str], dir: &Path, plan: &Path) {
    let exe = dir.join(format!("flow-{cc}"));
    let st = Command::new(cc)
        .arg(Path::new(ROOT).join("examples/c/flow.c"))
        .arg("-I")
        .arg(Path::new(ROOT).join("targets/capi/include"))
        .arg(libdir.join("libedgetune_capi.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success(), "{cc} failed");
    let data = Path::new(ROOT).join("examples/data");
    let mut cmd = if runner.is_empty() {
        Command::new(&exe)
    } else {
        let mut c = Command::new(runner[0]);
        c.args(&runner[1..]).arg(&exe);
        c
    };
    let out = cmd
        .arg(plan)
        .arg(data.join("fashion_mnist_600-images.idx"))
        .arg(data.join("fashion_mnist_600-labels.idx"))
        .arg(dir.join(format!("user-{cc}.eta")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{cc}:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("PASS"),
        "C flow failed"
    );
}

#[test]
fn c_program_runs_the_whole_flow() {
    let dir = std::env::temp_dir().join(format!("edgetune-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = plan(&dir);
    run_flow("gcc", &build_lib(None), &[], &dir, &plan);
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("aarch64-linux-gnu-gcc") && have("qemu-aarch64") {
        let lib = build_lib(Some("aarch64-unknown-linux-gnu"));
        run_flow(
            "aarch64-linux-gnu-gcc",
            &lib,
            &[
                "qemu-aarch64",
                "-L",
                "/usr/aarch64-linux-gnu",
                "-cpu",
                "max",
            ],
            &dir,
            &plan,
        );
    } else {
        eprintln!("SKIP aarch64 C flow: aarch64-linux-gnu-gcc or qemu-aarch64 missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
