//! `et_export_onnx`: an ncm head trained through the C ABI, appended to the ONNX model
//! and run by an independent runtime (tract), gives the session's top-1 on the bundled
//! held-out photos.
#![cfg(feature = "onnx")]

use edgetune_capi::*;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const CLASSES: [&str; 4] = ["astronaut", "cat", "coffee", "rocket"];

fn model_path() -> PathBuf {
    Path::new(ROOT).join("models/efficientnet_lite0_int8.onnx")
}

fn plan_bytes() -> Vec<u8> {
    let onnx = std::fs::read(model_path()).unwrap();
    let opts = edgetune::import::ImportOptions {
        taps: edgetune::import::Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    edgetune::import::import_bytes(&onnx, &opts)
        .unwrap()
        .to_bytes()
}

/// Photo `i` of `class` as packed RGB bytes, width and height.
fn photo(class: &str, i: usize) -> (Vec<u8>, usize, usize) {
    let p = Path::new(ROOT).join(format!("examples/data/photos/{class}/{i}.jpg"));
    let im = image::open(p).unwrap().to_rgb8();
    let (w, h) = (im.width() as usize, im.height() as usize);
    (im.into_raw(), w, h)
}

fn last_error() -> String {
    // SAFETY: et_last_error returns a live NUL-terminated string.
    unsafe { CStr::from_ptr(et_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn an_exported_ncm_head_gives_the_sessions_top1() {
    let dir = std::env::temp_dir().join(format!("edgetune-capi-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("with_head.onnx");
    let (src, dst) = (
        CString::new(model_path().to_str().unwrap()).unwrap(),
        CString::new(out.to_str().unwrap()).unwrap(),
    );
    let plan = plan_bytes();
    let rgb = EtPixelFormat::Rgb as u32;
    let mut s: *mut EtSession = std::ptr::null_mut();
    // SAFETY: every pointer is live for its call; the session is freed once at the end.
    unsafe {
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        let m = CString::new("ncm").unwrap();
        assert_eq!(et_set_method(s, m.as_ptr()), EtStatus::Ok);
        // Nothing trained yet: nothing to export.
        assert_eq!(
            et_export_onnx(s, src.as_ptr(), dst.as_ptr()),
            EtStatus::InvalidArgument
        );
        assert!(last_error().contains("no adapter"), "{}", last_error());
        for (l, c) in CLASSES.iter().enumerate() {
            for i in 0..3 {
                let (px, w, h) = photo(c, i);
                let st = et_enrol_image(s, px.as_ptr(), px.len(), rgb, w, h, 0, 0, l as u32);
                assert_eq!(st, EtStatus::Ok);
            }
        }
        assert_eq!(et_train(s, 1, None, std::ptr::null_mut()), EtStatus::Ok);
        let st = et_export_onnx(s, src.as_ptr(), dst.as_ptr());
        assert_eq!(st, EtStatus::Ok, "{}", last_error());
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(&out)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let mut n = 0;
        assert_eq!(et_input_len(s, &mut n), EtStatus::Ok);
        let (mut agree, mut right, mut held) = (0, 0, 0);
        for (l, c) in CLASSES.iter().enumerate() {
            for i in 3..5 {
                let (px, w, h) = photo(c, i);
                let mut x = vec![0f32; n];
                let st = et_preprocess_image(s, px.as_ptr(), w, h, 3, x.as_mut_ptr(), n);
                assert_eq!(st, EtStatus::Ok);
                let (mut label, mut score) = (0u32, 0f32);
                let st = et_predict(s, x.as_ptr(), n, 1, &mut label, &mut score);
                assert_eq!(st, EtStatus::Ok);
                let t = Tensor::from_shape(&[1, 3, 224, 224], &x).unwrap();
                let outs = model.run(tvec!(t.into())).unwrap();
                let sc: Vec<f32> = outs
                    .last()
                    .unwrap()
                    .to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect();
                assert_eq!(sc.len(), CLASSES.len());
                let top = (0..sc.len())
                    .max_by(|&a, &b| sc[a].total_cmp(&sc[b]))
                    .unwrap();
                agree += (top as u32 == label) as usize;
                right += (label as usize == l) as usize;
                held += 1;
            }
        }
        et_free(s);
        println!(
            "ncm through the C ABI: exported model (tract) top-1 = session top-1 on {agree}/{held} held-out photos; session right on {right}/{held}"
        );
        assert_eq!(agree, held);
        assert!(right * 4 >= held * 3, "ncm right on {right}/{held}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
