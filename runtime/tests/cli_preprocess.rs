//! `edgetune compile --preprocess`: presets and fields are stored with the plan and shown
//! in the compile summary and `inspect`; the first form is kept as written; bad
//! declarations and declarations that do not fit the model are refused with the field
//! named and no plan written; a plan compiled with the torchvision preset adapts on and
//! predicts the photos through the CLI.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgetune");
const ONNX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/efficientnet_lite0_int8.onnx"
);
const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/photos");

/// Runs the CLI; returns (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn compile(out: &Path, decl: &str) -> (bool, String, String) {
    cli(&[
        "compile",
        ONNX,
        "-o",
        out.to_str().unwrap(),
        "--taps",
        "blocks",
        "--preprocess",
        decl,
    ])
}

#[test]
fn compile_stores_and_shows_the_declaration() {
    let dir = std::env::temp_dir().join(format!("edgetune-cliprep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tv = "image preset=torchvision size=224 resize=256 crop=center interp=bilinear \
              mean=123.675,116.28,103.53 std=58.395,57.12,57.375 order=rgb layout=nchw";

    let plan = dir.join("tv.etm");
    let (ok, out, err) = compile(&plan, "torchvision");
    assert!(ok, "{err}");
    assert!(out.contains(&format!("preprocess: {tv}")), "{out}");
    let (ok, out, err) = cli(&["inspect", plan.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("preprocess {tv}")), "{out}");
    assert!(out.contains(&format!("meta   preprocess = {tv}")), "{out}");

    // The first form is stored as written (earlier runtimes read it) and shown in full.
    let old = dir.join("old.etm");
    let (ok, out, err) = compile(&old, "image:224:127:128");
    assert!(ok, "{err}");
    assert!(
        out.contains("preprocess: image size=224 resize=stretch interp=bilinear-noaa mean=127 std=128 order=rgb layout=nchw"),
        "{out}"
    );
    let (_, out, _) = cli(&["inspect", old.to_str().unwrap()]);
    assert!(
        out.contains("meta   preprocess = image:224:127:128"),
        "{out}"
    );

    // Bad declarations name the field; a declaration the model's input does not take is
    // refused before any plan is written.
    for (decl, field) in [
        ("image size=224 mean=1,2", "`mean`"),
        ("torchvision interp=bicubic", "`interp`"),
        ("image size=224 colour=rgb", "`colour`"),
        ("tf-keras", "layout"),
        ("preset=torchvision size=192", "size"),
    ] {
        let p = dir.join("bad.etm");
        let (ok, _, err) = compile(&p, decl);
        assert!(!ok, "{decl} was accepted");
        assert!(err.contains(field), "{decl}: {err}");
        assert!(!p.exists(), "{decl}: a plan was written");
    }

    // Text without a length takes the model's own.
    let minilm = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/minilm_l6_int8.onnx");
    let tok = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/minilm_tokenizer.json"
    );
    let p = dir.join("text.etm");
    let (ok, out, err) = cli(&[
        "compile",
        minilm,
        "-o",
        p.to_str().unwrap(),
        "--preprocess",
        "text",
        "--tokenizer",
        tok,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("preprocess: text:128:1"), "{out}");

    // The CLI front end reads the photos through the declared policy.
    let eta = dir.join("photos.eta");
    let (ok, _, err) = cli(&[
        "adapt",
        "--plan",
        plan.to_str().unwrap(),
        "--train",
        PHOTOS,
        "--method",
        "ncm",
        "-o",
        eta.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let cat = format!("{PHOTOS}/cat/2.jpg");
    let (ok, out, err) = cli(&[
        "predict",
        "--plan",
        plan.to_str().unwrap(),
        "--adapter",
        eta.to_str().unwrap(),
        "--top",
        "1",
        &cat,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("cat"),
        "an enrolled photo is its own class: {out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
