//! Blocks of mobile networks (SiLU, hard-swish, squeeze-excite, explicit Pad, channel Concat,
//! the shape arithmetic before a Reshape, Gemm with transB = 0, Split, Slice, arithmetic
//! with constants, nearest upsampling, average pooling, depthwise convolutions with a stride
//! per axis, tokens through a layer norm
//! written out and a MatMul), quantised by onnxruntime's
//! quantiser in QDQ form (u8 and int8 activations) and QOperator (com.microsoft) form, against onnxruntime's outputs on
//! the same inputs (models/golden/ops, written by tools/make_op_models.py).
#![cfg(feature = "onnx")]

use edgetune::import::{import_path, ImportOptions};
use edgetune::kernels::Kernels;
use edgetune::npy::read_npy;
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::Executor;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/golden/ops")).to_path_buf()
}

/// Every model of the folder, run on every input: the worst difference to onnxruntime in
/// output steps (the output's range over 255, the step of its u8 quantisation).
/// Generated models that do not import yet, with the reason.
const UNSUPPORTED: &[(&str, &str)] = &[];

#[test]
fn quantised_blocks_match_onnxruntime() {
    let (xs, x) = read_npy(&dir().join("x.npy")).unwrap();
    let xl = x.len() / xs[0];
    let mut models: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    assert!(models.len() >= 30, "expected the 30 generated models");
    let mut failed = vec![];
    for m in &models {
        let stem = m.file_stem().unwrap().to_str().unwrap().to_string();
        if let Some((_, why)) = UNSUPPORTED.iter().find(|u| u.0 == stem) {
            // Known not to import: it must still fail, so that support, when it comes,
            // moves it into the comparison.
            match import_path(m, &ImportOptions::default()) {
                Err(e) => eprintln!("SKIPPED {stem}: {why} ({e})"),
                Ok(_) => failed.push(format!("{stem} imports now: drop it from UNSUPPORTED")),
            }
            continue;
        }
        let parts = match import_path(m, &ImportOptions::default()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{stem}: does not import: {e}");
                failed.push(stem);
                continue;
            }
        };
        let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
        let (_, y) = read_npy(&dir().join(format!("{stem}_y.npy"))).unwrap();
        let yl = y.len() / xs[0];
        let (lo, hi) = y
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let step = (hi - lo).max(1e-6) / 255.0;
        let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
        let mut out = vec![0.0; yl];
        let mut worst = 0.0f32;
        for i in 0..xs[0] {
            exec.run(&[&x[i * xl..][..xl]]).unwrap();
            exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
            for (a, b) in out.iter().zip(&y[i * yl..][..yl]) {
                worst = worst.max((a - b).abs() / step);
            }
        }
        eprintln!(
            "{stem}: worst difference {worst:.2} output steps over {} inputs ({} ops)",
            xs[0],
            plan.ops.len()
        );
        if worst > 2.0 {
            failed.push(stem);
        }
    }
    assert!(failed.is_empty(), "differ from onnxruntime: {failed:?}");
}

/// The generated blocks that also exist as float models (float/) and dynamically
/// quantised ones (dyn/).
const BLOCKS: [&str; 10] = [
    "silu",
    "se_hardswish",
    "pad_concat",
    "shape_flatten",
    "split_scalar",
    "upsample",
    "anchors",
    "deconv",
    "avgpool",
    "tokens",
];

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    d / (n(a) * n(b)).max(1e-12)
}

/// How far from onnxruntime's float outputs of block `name` a model quantised by
/// `import_calibrated` on the 16 calibration inputs lands, over the 12 test inputs, beside
/// the yardstick: the worst of onnxruntime's own quantised outputs `ort` (files of the
/// folder). Returns the line to print and whether it passes: at most 1.5 times the
/// yardstick's worst error plus one output step, and a cosine within 0.002 of its lowest.
fn follows_float(name: &str, model: &str, ort: &[String]) -> (String, bool) {
    use edgetune::import::import_calibrated;
    let (cs, c) = read_npy(&dir().join("calib.npy")).unwrap();
    let cl = c.len() / cs[0];
    let samples: Vec<Vec<Vec<f32>>> = (0..cs[0])
        .map(|i| vec![c[i * cl..][..cl].to_vec()])
        .collect();
    let bytes = std::fs::read(dir().join(model)).unwrap();
    let (parts, report) = match import_calibrated(&bytes, &ImportOptions::default(), &samples) {
        Ok(p) => p,
        Err(e) => return (format!("{model}: does not calibrate: {e}"), false),
    };
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    assert!(
        plan.ops
            .iter()
            .any(|o| matches!(o, edgetune::plan::Op::ConvI8 { .. })),
        "{model}: convolutions should run in int8"
    );
    let (xs, x) = read_npy(&dir().join("x.npy")).unwrap();
    let xl = x.len() / xs[0];
    let (_, y) = read_npy(&dir().join(format!("float/{name}_y.npy"))).unwrap();
    let yl = y.len() / xs[0];
    let (lo, hi) = y
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let step = (hi - lo).max(1e-6) / 255.0;
    let worst_of = |q: &[f32]| {
        q.iter()
            .zip(&y)
            .fold(0.0f32, |w, (a, b)| w.max((a - b).abs() / step))
    };
    let (mut ort_worst, mut ort_cos) = (0.0f32, 1.0f64);
    for f in ort {
        let (_, q) = read_npy(&dir().join(f)).unwrap();
        ort_worst = ort_worst.max(worst_of(&q));
        ort_cos = ort_cos.min(cosine(&q, &y));
    }
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
    let mut out = vec![0.0; yl];
    let mut ours = vec![];
    for i in 0..xs[0] {
        exec.run(&[&x[i * xl..][..xl]]).unwrap();
        exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
        ours.extend_from_slice(&out);
    }
    let (worst, cos) = (worst_of(&ours), cosine(&ours, &y));
    (
        format!(
            "{model}: calibrated on {} inputs ({} activations, {} weights quantised): worst \
             {worst:.2} output steps from float (onnxruntime's {ort:?}: {ort_worst:.2}), \
             cosine {cos:.5} (onnxruntime's {ort_cos:.5}) over {} inputs",
            report.samples, report.activations, report.weights, xs[0]
        ),
        worst <= 1.5 * ort_worst + 1.0 && cos >= ort_cos - 0.002,
    )
}

/// The same blocks as float models, quantised by `import_calibrated`, against onnxruntime's
/// own post-training quantisation (`quantize_static`, same calibration inputs, the `_qdq`
/// models).
#[test]
fn calibrated_float_blocks_follow_onnxruntime_float() {
    let mut failed = vec![];
    for name in BLOCKS {
        let (line, ok) = follows_float(
            name,
            &format!("float/{name}.onnx"),
            &[format!("{name}_qdq_y.npy")],
        );
        eprintln!("{line}");
        if !ok {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "far from onnxruntime's float outputs: {failed:?}"
    );
}

/// A quantised model, a sample of the wrong size or a non-finite sample is a typed error.
#[test]
fn calibration_refuses_bad_input() {
    use edgetune::import::import_calibrated;
    use edgetune::Error;
    let float = std::fs::read(dir().join("float/silu.onnx")).unwrap();
    let good = vec![vec![vec![0.1f32; 3 * 16 * 16]]];
    assert!(matches!(
        import_calibrated(&float, &ImportOptions::default(), &[vec![vec![0.0; 5]]]),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        import_calibrated(
            &float,
            &ImportOptions::default(),
            &[vec![vec![f32::NAN; 3 * 16 * 16]]]
        ),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        import_calibrated(&float, &ImportOptions::default(), &[]),
        Err(Error::Invalid { .. })
    ));
    let quantised = std::fs::read(dir().join("silu_qdq.onnx")).unwrap();
    match import_calibrated(&quantised, &ImportOptions::default(), &good) {
        Err(Error::Invalid { what }) => assert!(what.contains("already quantised"), "{what}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// The blocks quantised by onnxruntime's `quantize_dynamic` (DynamicQuantizeLinear →
/// ConvInteger / MatMulInteger → Cast → Mul by the scales; models/golden/ops/dyn). Without
/// calibration a model runs as onnxruntime runs it: activations quantised at run time, the
/// integer products summed (in float, exact) and scaled: at cosine 0.9999 or more to
/// onnxruntime's dynamic run, and as close to the float outputs as it (no op in int8). `import_calibrated` undoes the dynamic quantisation
/// and quantises statically, against the worse of onnxruntime's two quantisations of the
/// same block (dynamic, and static on the same calibration inputs).
#[test]
fn dynamically_quantised_blocks_calibrate_like_float_ones() {
    use edgetune::import::import_bytes;
    use edgetune::Error;
    let mut failed = vec![];
    for name in BLOCKS {
        let model = format!("dyn/{name}.onnx");
        let bytes = std::fs::read(dir().join(&model)).unwrap();
        let parts = match import_bytes(&bytes, &ImportOptions::default()) {
            Ok(p) => p,
            Err(e @ Error::UnsupportedOp { .. }) => panic!("{name}: {e}"),
            Err(e) => panic!("{name}: {e}"),
        };
        let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
        let (xs, x) = read_npy(&dir().join("x.npy")).unwrap();
        let xl = x.len() / xs[0];
        let (_, f) = read_npy(&dir().join(format!("float/{name}_y.npy"))).unwrap();
        let (_, d) = read_npy(&dir().join(format!("dyn/{name}_y.npy"))).unwrap();
        let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
        let mut out = vec![0.0; f.len() / xs[0]];
        let mut ours = vec![];
        for i in 0..xs[0] {
            exec.run(&[&x[i * xl..][..xl]]).unwrap();
            exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
            ours.extend_from_slice(&out);
        }
        let (c, cd, co) = (cosine(&ours, &f), cosine(&d, &f), cosine(&ours, &d));
        eprintln!(
            "dyn/{name}.onnx as it is: cosine {co:.6} to onnxruntime's dynamic run; to float {c:.5} (onnxruntime's dynamic run {cd:.5})"
        );
        if c < cd - 0.002 || co < 0.9999 {
            failed.push(name);
        }
        let (line, ok) = follows_float(
            name,
            &model,
            &[format!("dyn/{name}_y.npy"), format!("{name}_qdq_y.npy")],
        );
        eprintln!("{line}");
        if !ok {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "far from onnxruntime's float outputs: {failed:?}"
    );
}

/// The output bits of generated model `stem` on every input, and its plan, compiled with
/// `unfused` (the plain lowering) or not.
fn bits_of(stem: &str, unfused: bool) -> (Vec<u32>, Plan<'static>) {
    let (xs, x) = read_npy(&dir().join("x.npy")).unwrap();
    let xl = x.len() / xs[0];
    let opts = ImportOptions {
        unfused,
        ..Default::default()
    };
    let parts = import_path(&dir().join(format!("{stem}.onnx")), &opts).unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
    let yl = plan.tensors[plan.outputs[0].tensor as usize].len();
    let mut all = vec![];
    for i in 0..xs[0] {
        exec.run(&[&x[i * xl..][..xl]]).unwrap();
        let mut out = vec![0.0; yl];
        exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
        all.extend(out.iter().map(|v| v.to_bits()));
    }
    drop(exec);
    (all, plan)
}

fn count(plan: &Plan, f: fn(&edgetune::plan::Op) -> bool) -> usize {
    plan.ops.iter().filter(|o| f(o)).count()
}

/// A quantised transposed convolution whose kernel equals its stride runs as a 1×1
/// convolution and a transpose: the same integers, so the same bytes as the dilated
/// convolution of the plain lowering (`ImportOptions::unfused`), in QDQ, int8 and
/// QOperator form; the other transposed convolution of the model keeps its dilation.
#[test]
fn subpixel_transposed_convolutions_give_the_dilated_ones_bytes() {
    use edgetune::plan::Op;
    for stem in ["deconv_qdq", "deconv_s8", "deconv_qop"] {
        let ((plain, p), (fused, f)) = (bits_of(stem, true), bits_of(stem, false));
        let dilations = |p: &Plan| count(p, |o| matches!(o, Op::Dilate { .. }));
        assert_eq!((dilations(&p), dilations(&f)), (2, 1), "{stem}");
        assert!(plain == fused, "{stem}: outputs differ");
    }
}

/// Quantised depthwise convolutions with a stride of their own per axis (strides (2, 1)
/// and (1, 2)) run row by row on the depthwise kernel: the same bytes as the dense
/// convolutions of the plain lowering (`ImportOptions::unfused`, a GEMM whose weights are
/// zero between channels), in QDQ, int8 and QOperator form.
#[test]
fn strided_depthwise_gives_the_dense_convolutions_bytes() {
    use edgetune::plan::Op;
    for stem in ["dw_strides_qdq", "dw_strides_s8", "dw_strides_qop"] {
        let ((plain, p), (fused, f)) = (bits_of(stem, true), bits_of(stem, false));
        let dw = |p: &Plan| count(p, |o| matches!(o, Op::DwI8 { .. }));
        assert_eq!((dw(&p), dw(&f)), (0, 2), "{stem}");
        assert!(plain == fused, "{stem}: outputs differ");
    }
}

/// A quantised map times a quantised scale per channel (squeeze-and-excitation, as the
/// quantiser leaves it: Mul between DequantizeLinear and QuantizeLinear) runs as one op of
/// per-channel tables built from the scales: the same bytes as the plain lowering's float
/// ops (`ImportOptions::unfused`: Dequantize both sides, multiply, Quantize), in QDQ and
/// int8 form, with no Dequantize of the map left.
#[test]
fn channel_scales_are_per_channel_tables() {
    use edgetune::plan::Op;
    for stem in ["se_hardswish_qdq", "se_hardswish_s8"] {
        let ((plain, p), (fused, f)) = (bits_of(stem, true), bits_of(stem, false));
        let kinds = |p: &Plan| {
            (
                count(p, |o| matches!(o, Op::MulChanU8 { .. })),
                count(p, |o| matches!(o, Op::BinF32 { .. })),
            )
        };
        assert_eq!(
            kinds(&p),
            (0, 1),
            "{stem}: the plain lowering's float multiply"
        );
        assert_eq!(kinds(&f), (1, 0), "{stem}: one op of per-channel tables");
        assert!(plain == fused, "{stem}: outputs differ");
    }
}

/// A quantised `x·sigmoid(x)` (SiLU as QDQ exporters write it, the sigmoid quantised on
/// its own) runs as one table of x: the same bytes as the float ops of the plain lowering
/// (`ImportOptions::unfused`: Dequantize both sides, multiply, Quantize), in QDQ, int8 and
/// QOperator form, with no float op and no separate sigmoid table left.
#[test]
fn a_product_of_functions_of_one_tensor_is_one_table() {
    use edgetune::plan::Op;
    for stem in ["silu_qdq", "silu_s8", "silu_qop"] {
        let ((plain, p), (fused, f)) = (bits_of(stem, true), bits_of(stem, false));
        let kinds = |p: &Plan| {
            (
                count(p, |o| matches!(o, Op::BinF32 { .. })),
                count(p, |o| matches!(o, Op::LutU8 { .. })),
            )
        };
        assert_eq!(
            kinds(&p),
            (1, 1),
            "{stem}: the plain lowering's multiply and sigmoid table"
        );
        assert_eq!(kinds(&f), (0, 1), "{stem}: one table");
        assert!(plain == fused, "{stem}: outputs differ");
    }
}
