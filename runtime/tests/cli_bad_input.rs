//! Bad input to `edgetune adapt` / `predict`: each case exits non-zero with a message
//! naming the problem, and never replaces an existing adapter.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgetune");
const IMAGES: &[u8] = include_bytes!("../../examples/data/fashion_mnist_600-images.idx");

fn png(path: &Path, i: usize) {
    let px = IMAGES[16 + i * 784..][..784].to_vec();
    image::GrayImage::from_raw(28, 28, px)
        .unwrap()
        .save(path)
        .unwrap();
}

/// Runs the CLI; returns (success, stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn adapt_and_predict_refuse_bad_input_and_keep_the_old_adapter() {
    let dir = std::env::temp_dir().join(format!("edgetune-bad-{}", std::process::id()));
    let good = dir.join("good");
    for (c, base) in [("a", 0), ("b", 10)] {
        std::fs::create_dir_all(good.join(c)).unwrap();
        for i in 0..2 {
            png(&good.join(c).join(format!("{i}.png")), base + i);
        }
    }
    let eta = dir.join("user.eta");
    let e = eta.to_str().unwrap();
    let g = good.to_str().unwrap();
    let (ok, err) = cli(&["adapt", "--train", g, "--method", "ncm", "-o", e]);
    assert!(ok, "{err}");
    let before = std::fs::read(&eta).unwrap();

    // One class only.
    let one = dir.join("one");
    std::fs::create_dir_all(one.join("a")).unwrap();
    png(&one.join("a").join("0.png"), 0);
    // An empty class folder.
    let empty = dir.join("empty");
    std::fs::create_dir_all(empty.join("b")).unwrap();
    std::fs::create_dir_all(empty.join("a")).unwrap();
    png(&empty.join("a").join("0.png"), 0);
    // An unreadable image.
    let broken = dir.join("broken");
    for c in ["a", "b"] {
        std::fs::create_dir_all(broken.join(c)).unwrap();
        png(&broken.join(c).join("0.png"), 1);
    }
    std::fs::write(broken.join("b").join("1.png"), b"not a png").unwrap();
    let cases: [(&Path, &str, &str); 4] = [
        (&one, "ncm", "at least two class folders"),
        (&empty, "linear", "is empty"),
        (&broken, "ladder", "unreadable image"),
        (&good, "nosuch", "unknown method"),
    ];
    for (d, method, msg) in cases {
        let (ok, err) = cli(&[
            "adapt",
            "--train",
            d.to_str().unwrap(),
            "--method",
            method,
            "-o",
            e,
        ]);
        assert!(
            !ok && err.contains(msg),
            "{}: expected '{msg}', got {err}",
            d.display()
        );
        assert_eq!(
            std::fs::read(&eta).unwrap(),
            before,
            "adapter changed after a refused run"
        );
    }
    // Over budget: refused with the figure, adapter kept.
    let (ok, err) = cli(&[
        "adapt",
        "--train",
        g,
        "--method",
        "query",
        "--max-memory",
        "1000",
        "-o",
        e,
    ]);
    assert!(!ok && err.contains("budget is 1000"), "{err}");
    assert_eq!(std::fs::read(&eta).unwrap(), before);

    // Truncated adapter, and an adapter for another plan.
    let img = good.join("a").join("0.png");
    let trunc = dir.join("trunc.eta");
    std::fs::write(&trunc, &before[..before.len() / 2]).unwrap();
    let (ok, err) = cli(&[
        "predict",
        "--adapter",
        trunc.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("bad adapter"), "{err}");
    let other_plan = dir.join("other.etm");
    let onnx = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/efficientnet_lite0_int8.onnx"
    );
    let (ok, err) = cli(&[
        "compile",
        onnx,
        "-o",
        other_plan.to_str().unwrap(),
        "--taps",
        "blocks",
        "--preprocess",
        "image:224:127:128",
    ]);
    assert!(ok, "{err}");
    let (ok, err) = cli(&[
        "predict",
        "--plan",
        other_plan.to_str().unwrap(),
        "--adapter",
        e,
        img.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("trained on plan"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `compile --check` lists every node that cannot be imported (not just the first), with
/// a count per op, exits non-zero and writes no plan; on a model that imports it says so.
#[test]
fn compile_check_lists_every_unsupported_node() {
    use prost::Message;
    use tract_onnx::pb;
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: [1i64, 4]
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = |ops: &[&str]| {
        let name = |i: usize| match i {
            0 => "x".to_string(),
            i if i == ops.len() => "y".to_string(),
            i => format!("t{i}"),
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: ops
                    .iter()
                    .enumerate()
                    .map(|(i, op)| pb::NodeProto {
                        name: format!("n{i}"),
                        op_type: op.to_string(),
                        input: vec![name(i)],
                        output: vec![name(i + 1)],
                        ..Default::default()
                    })
                    .collect(),
                input: vec![vi("x")],
                output: vec![vi("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let dir = std::env::temp_dir().join(format!("edgetune-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, model(&["Relu", "Tan", "Acos", "Sigmoid", "Tan"])).unwrap();
    let out = dir.join("bad.etm");
    let o = Command::new(BIN)
        .args([
            "compile",
            "--check",
            bad.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    eprintln!("{stdout}{stderr}");
    assert!(!o.status.success());
    for n in ["'n1'", "'n2'", "'n4'"] {
        assert!(stdout.contains(n), "node {n} listed: {stdout}");
    }
    assert!(!stdout.contains("'n0'") && !stdout.contains("'n3'"));
    assert!(
        stderr.contains("3 node(s)") && stderr.contains("ai.onnx:Tan x2"),
        "{stderr}"
    );
    assert!(!out.exists(), "--check writes no plan");
    let good = dir.join("good.onnx");
    std::fs::write(&good, model(&["Relu", "Sigmoid"])).unwrap();
    let o = Command::new(BIN)
        .args(["compile", "--check", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("every node imports"));
    let _ = std::fs::remove_dir_all(&dir);
}
