//! openWakeWord's speech front end and int8 embedding on edgetune against onnxruntime on
//! the same clip (models/golden/oww_*, written by tools/convert_wakeword.py).
#![cfg(feature = "onnx")]

use edgetune::audio::{MelConfig, MelFrontEnd, MelStream};
use edgetune::import::{import_path, ImportOptions};
use edgetune::kernels::{dispatch::Cpu, registry::Tier, Kernels};
use edgetune::npy::read_npy;
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::Executor;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn front() -> MelFrontEnd {
    let bytes = std::fs::read(root().join("models/oww_melw.f32")).unwrap();
    MelFrontEnd::from_le_bytes(MelConfig::OPENWAKEWORD, &bytes).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b)).max(1e-30)
}

#[test]
fn log_mel_matches_melspectrogram_onnx() {
    let (_, clip) = read_npy(&root().join("models/golden/oww_clip.npy")).unwrap();
    let (shape, gold) = read_npy(&root().join("models/golden/oww_mel.npy")).unwrap();
    let mut mel = front();
    let mut out = vec![];
    let frames = mel.log_mel(&clip, &mut out).unwrap();
    assert_eq!(vec![frames, 32], shape);
    // dB values span about -30..60 here; FFT and DFT-as-convolution round differently.
    let worst = out
        .iter()
        .zip(&gold)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("log-mel: {frames} frames, max |Δ| {worst:.2e} dB");
    assert!(worst < 1e-2, "max |Δ| {worst} dB");
}

#[test]
fn stream_windows_equal_one_shot_frames() {
    let (_, clip) = read_npy(&root().join("models/golden/oww_clip.npy")).unwrap();
    let mut whole = vec![];
    let frames = front().log_mel_unfloored(&clip, &mut whole).unwrap();
    whole.iter_mut().for_each(|v| *v = *v / 10.0 + 2.0);
    let mut s = MelStream::new(front(), 76, 8).unwrap();
    let mut got = vec![];
    // Odd chunk sizes: the stream must not depend on them.
    for chunk in clip.chunks(1000) {
        s.push(chunk, &mut |w| {
            got.push(w.to_vec());
            Ok(())
        })
        .unwrap();
    }
    let expect: Vec<usize> = (76..=frames).step_by(8).collect();
    assert_eq!(got.len(), expect.len());
    for (w, &end) in got.iter().zip(&expect) {
        let want = &whole[(end - 76) * 32..end * 32];
        let d = w
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-4, "window ending at frame {end}: max |Δ| {d}");
    }
}

#[test]
fn embedding_int8_matches_onnxruntime() {
    let parts = import_path(
        &root().join("models/oww_embedding_int8.onnx"),
        &ImportOptions::default(),
    )
    .unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes())).unwrap();
    let (shape, x) = read_npy(&root().join("models/golden/oww_windows.npy")).unwrap();
    let (_, g8) = read_npy(&root().join("models/golden/oww_embeddings_int8.npy")).unwrap();
    let (_, g32) = read_npy(&root().join("models/golden/oww_embeddings_fp32.npy")).unwrap();
    let n = shape[0];
    assert!(n >= 20, "{n} golden windows");
    let mut e = vec![0.0; 96];
    let cpu = Cpu::detect();
    for tier in Tier::ALL {
        let kern = Kernels::select(&cpu, Some(tier));
        if kern.i8_gemm.tier != tier {
            eprintln!("SKIPPED tier {tier:?}: not on this CPU");
            continue;
        }
        let mut exec = Executor::new(&plan, kern, 1 << 24).unwrap();
        let (mut worst, mut worst32, mut max_abs) = (1.0f64, 1.0f64, 0.0f32);
        for w in 0..n {
            exec.run(&[&x[w * 76 * 32..][..76 * 32]]).unwrap();
            exec.tensor_f32(plan.outputs[0].tensor, &mut e).unwrap();
            let (r8, r32) = (&g8[w * 96..][..96], &g32[w * 96..][..96]);
            worst = worst.min(cosine(&e, r8));
            worst32 = worst32.min(cosine(&e, r32));
            max_abs = e
                .iter()
                .zip(r8)
                .map(|(a, b)| (a - b).abs())
                .fold(max_abs, f32::max);
        }
        eprintln!(
            "{tier:?}: {n} windows, worst cosine to onnxruntime int8 {worst:.6}, max |Δ| {max_abs:.2e}, worst cosine to fp32 {worst32:.4}"
        );
        // onnxruntime evaluates the QDQ graph's convolutions in float; edgetune's integer
        // sums are exact. Codes near a rounding boundary can land one step apart and the
        // step carries through later layers: the bar is cosine ≥ 0.999 per output.
        assert!(
            worst >= 0.999,
            "{tier:?}: cosine {worst}, max |Δ| {max_abs}"
        );
        assert!(worst32 > 0.98, "{tier:?}: cosine to fp32 {worst32}");
    }
    // Front end and backbone together: our mel frames against onnxruntime's, both through
    // the plan.
    let (_, clip) = read_npy(&root().join("models/golden/oww_clip.npy")).unwrap();
    let (_, ort_mel) = read_npy(&root().join("models/golden/oww_mel.npy")).unwrap();
    let mut ours = vec![];
    front().features(&clip, &mut ours).unwrap();
    let theirs: Vec<f32> = ort_mel.iter().map(|v| v / 10.0 + 2.0).collect();
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
    let mut run = |w: &[f32]| {
        let mut e = vec![0.0; 96];
        exec.run(&[w]).unwrap();
        exec.tensor_f32(plan.outputs[0].tensor, &mut e).unwrap();
        e
    };
    let (a, b) = (run(&ours[..76 * 32]), run(&theirs[..76 * 32]));
    let c = cosine(&a, &b);
    eprintln!("our mel vs onnxruntime's mel through the plan: cosine {c:.5}");
    assert!(c > 0.999, "cosine {c}");
}
