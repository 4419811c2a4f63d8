//! Streaming audio through a `Session` (`listen`) on a plan declared `audio:oww:76:C`: an
//! example every 80 ms, the embeddings of the last C log-mel windows one after the other.
//! The oracle is the same pipeline assembled from the parts tests/wakeword_golden.rs holds
//! against onnxruntime: `MelStream` windows 8 frames apart, each through an `Executor` on
//! the plan, and a ring of the last C outputs.
#![cfg(feature = "onnx")]

use edgetune::audio::{loudest_window, MelConfig, MelFrontEnd, MelStream};
use edgetune::import::{import_path, ImportOptions};
use edgetune::kernels::Kernels;
use edgetune::npy::read_npy;
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::preprocess::{f32_hex, Preprocess};
use edgetune::session::{Sample, Session};
use edgetune::{Error, Executor};
use std::path::{Path, PathBuf};

const CONTEXT: usize = 4;

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn front() -> MelFrontEnd {
    let bytes = std::fs::read(root().join("models/oww_melw.f32")).unwrap();
    MelFrontEnd::from_le_bytes(MelConfig::OPENWAKEWORD, &bytes).unwrap()
}

fn plan_bytes(decl: &str) -> Vec<u8> {
    let bytes = std::fs::read(root().join("models/oww_melw.f32")).unwrap();
    let filters: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let opts = ImportOptions {
        meta: vec![
            ("preprocess".into(), decl.into()),
            ("mel_filters".into(), f32_hex(&filters)),
        ],
        ..Default::default()
    };
    import_path(&root().join("models/oww_embedding_int8.onnx"), &opts)
        .unwrap()
        .to_bytes()
}

fn session(bytes: &[u8]) -> Session {
    Session::from_bytes(bytes).unwrap()
}

/// Two seconds of speech: the golden clip, then the same clip at half loudness.
fn speech() -> Vec<f32> {
    let (_, clip) = read_npy(&root().join("models/golden/oww_clip.npy")).unwrap();
    let mut x = clip.clone();
    x.extend(clip.iter().map(|v| v * 0.5));
    x
}

/// The oracle's examples: each window's embedding, the last CONTEXT concatenated.
fn oracle(bytes: &[u8], x: &[f32]) -> Vec<Vec<f32>> {
    let plan = Plan::from_owned(AlignedBytes::from_slice(bytes)).unwrap();
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
    let out = plan.outputs[0].tensor;
    let mut stream = MelStream::new(front(), 76, 8).unwrap();
    let (mut ring, mut examples) = (Vec::<Vec<f32>>::new(), vec![]);
    stream
        .push(x, &mut |w| {
            exec.run(&[w])?;
            let mut e = vec![0.0; 96];
            exec.tensor_f32(out, &mut e)?;
            ring.push(e);
            if ring.len() > CONTEXT {
                ring.remove(0);
            }
            if ring.len() == CONTEXT {
                examples.push(ring.concat());
            }
            Ok(())
        })
        .unwrap();
    examples
}

fn listen(s: &mut Session, x: &[f32], chunk: usize) -> Vec<Vec<f32>> {
    s.listen_reset();
    let mut v = vec![];
    for c in x.chunks(chunk) {
        for e in s.listen(c).unwrap() {
            let Sample::Taps(t) = e else {
                panic!("listen gives taps")
            };
            assert_eq!(t.len(), 1);
            v.push(t.into_iter().next().unwrap());
        }
    }
    v
}

#[test]
fn listening_equals_windows_through_the_backbone_in_any_chunking() {
    let bytes = plan_bytes(&format!("audio:oww:76:{CONTEXT}"));
    let x = speech();
    let want = oracle(&bytes, &x);
    // 2.56 s of audio: windows every 80 ms after the first 0.76 s.
    assert!(want.len() >= 18, "{} examples", want.len());
    let mut s = session(&bytes);
    for chunk in [1280, 333, 20518] {
        let got = listen(&mut s, &x, chunk);
        assert_eq!(got.len(), want.len(), "chunks of {chunk}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "example {i}, chunks of {chunk}");
        }
    }
    // A stream fed after a reset starts over: the first example comes with the CONTEXT-th
    // window again.
    s.listen_reset();
    assert!(s.listen(&x[..1280]).unwrap().is_empty());
}

#[test]
fn a_clip_is_the_loudest_run_of_windows_and_caches_their_embeddings() {
    let bytes = plan_bytes(&format!("audio:oww:76:{CONTEXT}"));
    let (_, clip) = read_npy(&root().join("models/golden/oww_clip.npy")).unwrap();
    let mut s = session(&bytes);
    let sample = s.audio(&clip).unwrap();
    let Sample::Inputs(sets) = &sample else {
        panic!("a clip gives input windows")
    };
    assert_eq!(sets.len(), CONTEXT);
    // Oracle: the one-shot log-mel frames, the loudest span of CONTEXT windows 8 apart.
    let mut feat = vec![];
    front().features(&clip, &mut feat).unwrap();
    let span = 76 + 8 * (CONTEXT - 1);
    let w = loudest_window(&feat, 32, span).unwrap();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&bytes)).unwrap();
    let mut exec = Executor::new(&plan, Kernels::detect(), 1 << 24).unwrap();
    let mut want = vec![];
    for (k, set) in sets.iter().enumerate() {
        let win = &w[k * 8 * 32..][..76 * 32];
        assert_eq!(&set[0][..], win, "window {k}");
        exec.run(&[win]).unwrap();
        let mut e = vec![0.0; 96];
        exec.tensor_f32(plan.outputs[0].tensor, &mut e).unwrap();
        want.extend(e);
    }
    s.enrol(sample, "speech").unwrap();
    assert_eq!(s.cache().taps[0].len(), CONTEXT * 96);
    let mut row = vec![0.0; CONTEXT * 96];
    s.cache().read(0, 0, &mut row);
    // The cache keeps f16.
    let want: Vec<f32> = want
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(row, want);
}

#[test]
fn streamed_examples_train_and_score_like_any_other() {
    let bytes = plan_bytes(&format!("audio:oww:76:{CONTEXT}"));
    let x = speech();
    let mut s = session(&bytes);
    let ex = listen(&mut s, &x, 1280);
    // The loud first half against the quiet second half of the stream.
    let half = ex.len() / 2;
    for (i, e) in ex.iter().enumerate() {
        let class = if i < half { "loud" } else { "quiet" };
        s.enrol(Sample::Taps(vec![e.clone()]), class).unwrap();
    }
    s.fit(&mut |_| true).unwrap();
    let mut right = 0;
    for (i, e) in ex.iter().enumerate() {
        let top = s.predict(&Sample::Taps(vec![e.clone()]), 1).unwrap()[0].0;
        right += (s.class_name(top) == Some(if i < half { "loud" } else { "quiet" })) as usize;
    }
    assert!(
        right * 10 >= ex.len() * 8,
        "{right}/{} on the training examples",
        ex.len()
    );

    // What listen gives is what scores read: the same predictions from the stream.
    s.listen_reset();
    let mut streamed = vec![];
    for c in x.chunks(1280) {
        for e in s.listen(c).unwrap() {
            streamed.push(s.predict(&e, 1).unwrap()[0].0);
        }
    }
    let direct: Vec<usize> = ex
        .iter()
        .map(|e| s.predict(&Sample::Taps(vec![e.clone()]), 1).unwrap()[0].0)
        .collect();
    assert_eq!(streamed, direct);

    // One ONNX graph of the backbone does not hold several windows: export is refused.
    let onnx = std::fs::read(root().join("models/oww_embedding_int8.onnx")).unwrap();
    match s.export_onnx(&onnx) {
        Err(Error::Invalid { what }) => assert!(what.contains("audio context"), "{what}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn bad_taps_and_bad_declarations_are_refused() {
    let bytes = plan_bytes(&format!("audio:oww:76:{CONTEXT}"));
    let mut s = session(&bytes);
    let short = Sample::Taps(vec![vec![0.0; 96]]);
    assert!(matches!(
        s.enrol(short, "a"),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(s.classes().is_empty(), "a refused example adds no class");
    let mut nan = vec![0.0; CONTEXT * 96];
    nan[7] = f32::NAN;
    assert!(matches!(
        s.enrol(Sample::Taps(vec![nan]), "a"),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        s.listen(&[0.0, f32::INFINITY]),
        Err(Error::NonFinite { .. })
    ));
    // A window's input tensors where CONTEXT windows are declared.
    let one = s.tensors(vec![vec![0.0; 76 * 32]]).unwrap();
    assert!(matches!(
        s.enrol(one, "a"),
        Err(Error::ShapeMismatch { .. })
    ));

    // Declarations: the context round-trips; out of range is refused with the field.
    for (decl, ok) in [
        ("audio:oww:76:16", true),
        ("audio:oww:76", true),
        ("audio:oww:76:0", false),
        ("audio:oww:76:257", false),
        ("audio:oww:76:4:2", false),
    ] {
        match Preprocess::declare(decl) {
            Ok(p) => {
                assert!(ok, "{decl} accepted");
                assert_eq!(p.to_meta(), decl);
            }
            Err(e) => {
                assert!(!ok, "{decl}: {e}");
                assert_eq!(e.field, "audio");
            }
        }
    }

    // An image plan does not listen.
    let onnx = root().join("models/tiny_cnn_fmnist04_int8.onnx");
    let opts = ImportOptions {
        meta: vec![("preprocess".into(), "image:28:127:128:1".into())],
        ..Default::default()
    };
    let img = import_path(&onnx, &opts).unwrap().to_bytes();
    let mut s = Session::from_bytes(&img).unwrap();
    assert!(matches!(s.listen(&[0.0; 1280]), Err(Error::Invalid { .. })));
}
