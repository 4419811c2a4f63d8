//! Float models compiled as they are, against onnxruntime's outputs on the same inputs
//! (models/golden/ops/f32, written by tools/make_float_op_models.py): float convolutions
//! (1-D strided, 2-D grouped, dilated, asymmetrically padded, transposed), bilinear Resize under each
//! coordinate transform, ReduceMax, Clip with run-time bounds, Max/Min of two tensors,
//! MatMul by constant weights, comparisons, boolean logic and Where (the attention masks
//! of transformers' exporters), Gather/GatherND by constant indices, Expand, a 5-D
//! Transpose of attention heads, a bidirectional LSTM with peepholes, nested If on the
//! input's shape, runs of elementwise ops fused into chains, batch norms and activations
//! between convolutions run on NHWC maps, comparisons, Where, PRelu, Max and Min over
//! rows long enough for the vector paths (softmax rows all masked, their NaNs replaced by
//! the IsNaN guard), max and average pools over pairs of columns, a squeeze-and-excitation
//! block whose map is scaled on NHWC, YOLOv8's C2f block and a pyramid step run on NHWC
//! maps; and a model quantised by
//! onnxruntime whose bilinear Resize runs as a float island.
#![cfg(feature = "onnx")]

use edgetune::import::{import_path, ImportOptions};
use edgetune::kernels::Kernels;
use edgetune::npy::read_npy;
use edgetune::plan::{AlignedBytes, BinOp, Op, Plan};
use edgetune::Executor;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/golden/ops/f32"
    ))
    .to_path_buf()
}

/// Runs model `stem` on its inputs; the worst difference to onnxruntime relative to the
/// output's largest magnitude, and the plan.
fn worst(stem: &str) -> (f32, Plan<'static>) {
    let parts = import_path(
        &dir().join(format!("{stem}.onnx")),
        &ImportOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{stem}: {e}"));
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let (xs, x) = read_npy(&dir().join(format!("{stem}_x.npy"))).unwrap();
    let (_, y) = read_npy(&dir().join(format!("{stem}_y.npy"))).unwrap();
    let (xl, yl) = (x.len() / xs[0], y.len() / xs[0]);
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
    let mut out = vec![0.0; yl];
    let scale = y.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    for i in 0..xs[0] {
        exec.run(&[&x[i * xl..][..xl]]).unwrap();
        exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
        for (a, b) in out.iter().zip(&y[i * yl..][..yl]) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    eprintln!(
        "{stem}: worst difference {worst:.2e} of the largest output over {} inputs ({} ops)",
        xs[0],
        plan.ops.len()
    );
    (worst, plan)
}

fn count(plan: &Plan, f: impl Fn(&Op) -> bool) -> usize {
    plan.ops.iter().filter(|o| f(o)).count()
}

#[test]
fn float_models_match_onnxruntime() {
    let mut failed = vec![];
    for stem in [
        "conv1d_stft",
        "conv2d_grouped",
        "conv_act_dw",
        "deconv",
        "resize_linear",
        "reduce_clip",
        "matmul_heads",
        "mask_logic",
        "upsample_linear",
        "lstm_bidir",
        "if_shape",
        "elementwise_chains",
        "bn_hardswish",
        "blaze_blocks",
        "deconv_subpixel",
        "wide_select",
        "pool_pairs",
        "se_block",
        "c2f_block",
        "winograd_convs",
    ] {
        let (w, plan) = worst(stem);
        if w > 1e-4 {
            failed.push(format!("{stem}: {w:.2e}"));
        }
        // Nothing of a float model is quantised.
        assert_eq!(
            count(&plan, |o| matches!(o, Op::ConvI8 { .. } | Op::DwI8 { .. })),
            0,
            "{stem}"
        );
    }
    assert!(failed.is_empty(), "differ from onnxruntime: {failed:?}");
}

#[test]
fn each_op_lowers_to_its_float_kernel() {
    let ops = |stem: &str| worst(stem).1;
    let p = ops("conv1d_stft");
    assert_eq!(count(&p, |o| matches!(o, Op::ConvF32 { .. })), 2);
    // The grouped convolution runs directly on the planes, the depthwise one on the NHWC
    // map with the channels innermost.
    let p = ops("conv2d_grouped");
    assert_eq!(count(&p, |o| matches!(o, Op::ConvF32 { .. })), 1);
    assert_eq!(count(&p, |o| matches!(o, Op::GroupConvF32 { .. })), 1);
    assert_eq!(count(&p, |o| matches!(o, Op::DwF32 { .. })), 1);
    // Convolution, ReLU6, depthwise, ReLU, convolution: each activation runs on the NHWC
    // map between two convolutions, so only the input's and the output's transposes stay.
    let p = ops("conv_act_dw");
    assert_eq!(count(&p, |o| matches!(o, Op::ConvF32 { .. })), 2);
    assert_eq!(count(&p, |o| matches!(o, Op::DwF32 { .. })), 1);
    assert_eq!(count(&p, |o| matches!(o, Op::TransposeF32 { .. })), 2);
    let p = ops("deconv");
    assert_eq!(count(&p, |o| matches!(o, Op::ConvF32 { .. })), 2);
    assert_eq!(count(&p, |o| matches!(o, Op::Dilate { .. })), 1);
    let p = ops("resize_linear");
    assert_eq!(count(&p, |o| matches!(o, Op::ResizeLinearF32 { .. })), 4);
    // The batch norms, activations and the residual add of two branches between
    // convolutions run on the NHWC maps, each run of them one chain, the hard-swish's
    // output read by two convolutions among them. Of the ten transposes into and out of
    // the five convolutions, two stay: the input's, and the last convolution's output,
    // added to the NCHW input.
    let p = ops("bn_hardswish");
    assert_eq!(count(&p, |o| matches!(o, Op::TransposeF32 { .. })), 2);
    assert_eq!(count(&p, |o| matches!(o, Op::ChainF32 { .. })), 5);
    // tflite2onnx's transposes to NHWC and back around each of the seven convolutions
    // (28), with the importer's own into and out of each (14): a transpose undone by the
    // next one goes, and so do the ops between convolutions on the NHWC maps, a residual
    // path reading their result or not. Five stay: the input's; the NCHW maps the pools,
    // the channel Pad and the adds of the Pad's output read.
    // A squeeze-and-excitation block: the batch norms, hard-swishes and the map scaled
    // by its channel scales run on the NHWC map (the scales, repeated over the pixels,
    // read as a constant is), each batch norm and hard-swish one chain, and the global
    // pool sums the NHWC map. Two transposes stay: the input's and the output's.
    let p = ops("se_block");
    assert_eq!(count(&p, |o| matches!(o, Op::TransposeF32 { .. })), 2);
    assert_eq!(
        count(
            &p,
            |o| matches!(o, Op::SumF32 { inner, .. } if *inner == 16)
        ),
        1
    );
    assert_eq!(count(&p, |o| matches!(o, Op::BinF32 { .. })), 2);
    // YOLOv8's C2f block and a pyramid step: the activations, the channel split, the
    // residual add, the concatenations and the upsampling run on the NHWC maps (each
    // transpose moved below them until it meets the one into the next convolution), so
    // only the input's and the output's transposes stay.
    let p = ops("c2f_block");
    assert_eq!(count(&p, |o| matches!(o, Op::TransposeF32 { .. })), 2);
    assert_eq!(count(&p, |o| matches!(o, Op::Concat { .. })), 3);
    let p = ops("blaze_blocks");
    assert_eq!(count(&p, |o| matches!(o, Op::TransposeF32 { .. })), 5);
    assert_eq!(count(&p, |o| matches!(o, Op::PoolF32 { .. })), 3);
    // Transposed convolutions whose kernel equals their stride: a 1×1 convolution each and
    // a transpose into place, no zeros inserted.
    let p = ops("deconv_subpixel");
    assert_eq!(count(&p, |o| matches!(o, Op::Dilate { .. })), 0);
    assert_eq!(
        count(
            &p,
            |o| matches!(o, Op::ConvF32 { geom, .. } if geom.kh == 1 && geom.kw == 1)
        ),
        2
    );
    let p = ops("reduce_clip");
    assert_eq!(count(&p, |o| matches!(o, Op::MaxF32 { .. })), 2);
    // The additive mask's Where stays; Where(IsNaN(s), 0, s) is one pass replacing NaNs.
    let nan_to = |o: &Op| {
        matches!(
            o,
            Op::BinF32 {
                f: BinOp::NanTo,
                ..
            }
        )
    };
    let p = ops("mask_logic");
    assert_eq!(count(&p, |o| matches!(o, Op::WhereF32 { .. })), 1);
    assert_eq!(count(&p, nan_to), 1);
    assert_eq!(count(&p, |o| matches!(o, Op::Take { .. })), 2);
    let p = ops("wide_select");
    assert_eq!(count(&p, |o| matches!(o, Op::WhereF32 { .. })), 2);
    assert_eq!(count(&p, nan_to), 1);
    let p = ops("matmul_heads");
    // The 5-D transpose runs as one transpose over fewer axes.
    assert!(count(&p, |o| matches!(o, Op::TransposeF32 { .. })) >= 3);
    assert_eq!(count(&p, |o| matches!(o, Op::ConvF32 { .. })), 2);
}

/// onnxruntime's quantiser leaves the bilinear Resize between a DequantizeLinear and a
/// QuantizeLinear: the convolutions run in int8, the Resize in float, and the output is
/// within two of its quantisation steps of onnxruntime's.
#[test]
fn a_quantised_model_resizes_bilinearly_in_a_float_island() {
    let (w, plan) = worst("upsample_linear_qdq");
    assert_eq!(count(&plan, |o| matches!(o, Op::ConvI8 { .. })), 2);
    assert_eq!(count(&plan, |o| matches!(o, Op::ResizeLinearF32 { .. })), 1);
    let (_, y) = read_npy(&dir().join("upsample_linear_qdq_y.npy")).unwrap();
    let (lo, hi) = y
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let scale = y.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let steps = w * scale / ((hi - lo) / 255.0);
    eprintln!("upsample_linear_qdq: worst {steps:.2} output steps");
    assert!(steps <= 2.0, "{steps} output steps from onnxruntime");
}

/// Outputs of a plan on every input of model `stem`, on `threads` threads.
fn outputs(stem: &str, unfused: bool, threads: usize) -> (Vec<f32>, Plan<'static>) {
    let opts = ImportOptions {
        unfused,
        ..Default::default()
    };
    let parts = import_path(&dir().join(format!("{stem}.onnx")), &opts).unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let (xs, x) = read_npy(&dir().join(format!("{stem}_x.npy"))).unwrap();
    let xl = x.len() / xs[0];
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
    exec.set_par(edgetune::par::Par::new(threads).unwrap());
    let yl = plan.tensors[plan.outputs[0].tensor as usize].len();
    let mut all = vec![];
    for i in 0..xs[0] {
        let mut out = vec![0.0; yl];
        exec.run(&[&x[i * xl..][..xl]]).unwrap();
        exec.tensor_f32(plan.outputs[0].tensor, &mut out).unwrap();
        all.extend(out);
    }
    (all, plan)
}

/// Runs of elementwise ops fused into chains, transposed convolutions run as 1×1 ones
/// (`deconv_subpixel`) and a clamp taken as a convolution's bounds (`conv_act_dw`) give
/// the plain lowering's bits, on one thread and two: a GELU
/// written out, a Reshape inside a chain, repeated constants and a tensor
/// broadcast over leading axes, values read outside their chain, chains cut at a third
/// input, scalar-path functions.
#[test]
fn chains_give_the_separate_ops_bits() {
    let chains = |p: &Plan| count(p, |o| matches!(o, Op::ChainF32 { .. }));
    for stem in [
        "elementwise_chains",
        "mask_logic",
        "if_shape",
        "bn_hardswish",
        "deconv_subpixel",
        "conv_act_dw",
        "se_block",
        "c2f_block",
    ] {
        let (want, plain) = outputs(stem, true, 1);
        assert_eq!(chains(&plain), 0, "{stem}");
        for threads in [1, 2] {
            let (got, fused) = outputs(stem, false, threads);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{stem} on {threads} threads"
            );
            if stem == "elementwise_chains" {
                // The GELU with its bias add and Reshape, the scale and residual, the
                // masked square's start, and two pieces of the tail cut at third inputs.
                assert_eq!(chains(&fused), 4);
                assert!(fused.ops.len() < plain.ops.len() - 10);
            }
            if stem == "conv_act_dw" {
                // The ReLU6 after the first convolution is its bounds, one op fewer.
                let relu6 = |p: &Plan| {
                    count(
                        p,
                        |o| matches!(o, Op::ConvF32 { lo, hi, .. } if *lo == 0.0 && *hi == 6.0),
                    )
                };
                assert_eq!((relu6(&plain), relu6(&fused)), (0, 1));
                assert_eq!(fused.ops.len(), plain.ops.len() - 1);
            }
        }
    }
}

/// The 3×3 convolutions of this plan whose weights are in Winograd's F(4×4, 3×3) form.
fn winograd(plan: &Plan) -> usize {
    use edgetune::kernels::winograd::weights_len;
    count(plan, |o| {
        matches!(o, Op::ConvF32 { geom, w, .. }
            if plan.blob::<f32>(*w).len() == weights_len(geom.ic, geom.oc))
    })
}

/// 3×3 stride-1 convolutions of 32 channels and more run as Winograd's F(4×4, 3×3): within
/// a few 1e-6 of the direct form (the unfused lowering keeps it) relative to the largest
/// output, with a ReLU as the bounds, partial tiles, part-empty panels and lane groups;
/// the same bits on one, two and three threads.
#[test]
fn winograd_convolutions_follow_the_direct_ones() {
    let stem = "winograd_convs";
    let (direct, plain) = outputs(stem, true, 1);
    assert_eq!(winograd(&plain), 0);
    let (one, fused) = outputs(stem, false, 1);
    assert_eq!(winograd(&fused), 3);
    let scale = direct.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = one
        .iter()
        .zip(&direct)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs() / scale));
    eprintln!("{stem}: Winograd {worst:.2e} of the largest output from the direct form");
    assert!(worst < 1e-5, "{worst:.2e}");
    for threads in [2, 3] {
        let (got, _) = outputs(stem, false, threads);
        assert!(
            got.iter()
                .zip(&one)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads"
        );
    }
}
