//! Streaming audio through the C ABI (`et_listen_i16`, `et_listen_f32`): the examples it
//! hands out, and the predictions on them, equal the library `Session`'s on the same
//! stream.

use edgetune::npy::read_npy;
use edgetune::session::{Sample, Session};
use edgetune_capi::*;
use std::path::Path;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn plan_bytes() -> Vec<u8> {
    let bytes = std::fs::read(Path::new(ROOT).join("models/oww_melw.f32")).unwrap();
    let filters: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let opts = edgetune::import::ImportOptions {
        meta: vec![
            ("preprocess".into(), "audio:oww:76:4".into()),
            (
                "mel_filters".into(),
                edgetune::preprocess::f32_hex(&filters),
            ),
        ],
        ..Default::default()
    };
    let onnx = std::fs::read(Path::new(ROOT).join("models/oww_embedding_int8.onnx")).unwrap();
    edgetune::import::import_bytes(&onnx, &opts)
        .unwrap()
        .to_bytes()
}

/// The golden speech clip, then the same at half loudness, as 16-bit PCM.
fn stream() -> Vec<i16> {
    let (_, clip) = read_npy(&Path::new(ROOT).join("models/golden/oww_clip.npy")).unwrap();
    clip.iter()
        .map(|&v| v as i16)
        .chain(clip.iter().map(|&v| (v * 0.5) as i16))
        .collect()
}

fn taps(x: &Sample) -> Vec<f32> {
    match x {
        Sample::Taps(t) => t[0].clone(),
        _ => panic!("listening gives taps"),
    }
}

#[test]
fn c_listening_equals_the_session_and_predicts_alike() {
    let plan = plan_bytes();
    let pcm = stream();

    // The library: examples of the stream in 80 ms chunks, trained loud against quiet.
    let mut lib = Session::from_bytes(&plan).unwrap();
    let mut want = vec![];
    for c in pcm.chunks(1280) {
        let f: Vec<f32> = c.iter().map(|&v| v as f32).collect();
        want.extend(lib.listen(&f).unwrap());
    }
    assert!(want.len() >= 18, "{} examples", want.len());
    let half = want.len() / 2;
    let label = |i: usize| if i < half { 7u32 } else { 9 };
    for (i, x) in want.iter().enumerate() {
        lib.enrol(x.clone(), &label(i).to_string()).unwrap();
    }
    lib.fit(&mut |_| true).unwrap();
    let lib_top: Vec<(u32, f32)> = want
        .iter()
        .map(|x| {
            let (c, sc) = lib.predict(x, 1).unwrap()[0];
            (lib.class_name(c).unwrap().parse().unwrap(), sc)
        })
        .collect();

    let mut s: *mut EtSession = std::ptr::null_mut();
    // SAFETY: every pointer is live for its call; handles are freed once.
    unsafe {
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        assert_eq!(et_set_method(s, c"linear".as_ptr()), EtStatus::Ok);
        let mut got: Vec<*mut EtExample> = vec![];
        for c in pcm.chunks(1280) {
            let mut out = [std::ptr::null_mut(); 2];
            let mut n = usize::MAX;
            assert_eq!(
                et_listen_i16(s, c.as_ptr(), c.len(), out.as_mut_ptr(), 2, &mut n),
                EtStatus::Ok
            );
            assert!(n <= 1, "an 80 ms chunk completes at most one example");
            got.extend(&out[..n]);
        }
        assert_eq!(got.len(), want.len());
        for (i, &x) in got.iter().enumerate() {
            assert_eq!(et_enrol_example(s, x, label(i)), EtStatus::Ok);
        }
        assert_eq!(et_train(s, 0, None, std::ptr::null_mut()), EtStatus::Ok);
        for (i, &x) in got.iter().enumerate() {
            let (mut c, mut sc) = (0u32, 0f32);
            assert_eq!(et_predict_example(s, x, 1, &mut c, &mut sc), EtStatus::Ok);
            assert_eq!((c, sc), lib_top[i], "example {i}");
        }
        for x in got {
            et_example_free(x);
        }

        // Float PCM in -1..1, fed whole after a reset: the same examples, the most recent
        // `cap` of them handed out.
        assert_eq!(et_listen_reset(s), EtStatus::Ok);
        let f: Vec<f32> = pcm.iter().map(|&v| v as f32 / 32768.0).collect();
        let mut out = [std::ptr::null_mut(); 3];
        let mut n = 0;
        assert_eq!(
            et_listen_f32(s, f.as_ptr(), f.len(), out.as_mut_ptr(), 3, &mut n),
            EtStatus::Ok
        );
        assert_eq!(n, 3);
        for (k, &x) in out.iter().enumerate() {
            let (mut c, mut sc) = (0u32, 0f32);
            assert_eq!(et_predict_example(s, x, 1, &mut c, &mut sc), EtStatus::Ok);
            let i = want.len() - 3 + k;
            assert_eq!(c, lib_top[i].0, "example {i} from float PCM");
            assert!(
                (sc - lib_top[i].1).abs() < 1e-3,
                "example {i} from float PCM"
            );
            et_example_free(x);
        }

        // Bad input: a NaN sample, a null output with room asked for.
        let bad = [0.0f32, f32::NAN];
        assert_ne!(
            et_listen_f32(s, bad.as_ptr(), 2, out.as_mut_ptr(), 3, &mut n),
            EtStatus::Ok
        );
        assert_eq!(
            et_listen_i16(s, pcm.as_ptr(), 1280, std::ptr::null_mut(), 1, &mut n),
            EtStatus::InvalidArgument
        );
        et_free(s);
    }
    assert!(want.iter().all(|x| taps(x).len() == 4 * 96));
}
