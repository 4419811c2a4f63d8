//! Cancelling from the progress callback: for every method a callback that returns
//! non-zero stops the training with `ET_STATUS_TRAINING`, and the session keeps
//! predicting with the adapter it had.

use edgetune_capi::*;
use std::ffi::{c_void, CStr, CString};
use std::path::Path;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn plan_bytes() -> Vec<u8> {
    let onnx = std::fs::read(Path::new(ROOT).join("models/efficientnet_lite0_int8.onnx")).unwrap();
    let opts = edgetune::import::ImportOptions {
        taps: edgetune::import::Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    edgetune::import::import_bytes(&onnx, &opts)
        .unwrap()
        .to_bytes()
}

/// Grey 28x28 Fashion-MNIST images, three of each of classes 0, 1 and 8, with labels.
fn images() -> Vec<(Vec<u8>, u32)> {
    let px =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    let mut seen = [0; 10];
    let mut v = vec![];
    for (i, &l) in lb[8..].iter().enumerate() {
        if matches!(l, 0 | 1 | 8) && seen[l as usize] < 3 {
            seen[l as usize] += 1;
            v.push((px[16 + i * 784..][..784].to_vec(), l as u32));
        }
    }
    v
}

/// What the callback sees: calls so far, the call that cancels, the steps announced.
struct Cancel {
    calls: u32,
    at: u32,
    steps: u32,
}

unsafe extern "C" fn cancel_at(step: u32, steps: u32, _: f32, _: f32, user: *mut c_void) -> i32 {
    // SAFETY: the test passes a live `Cancel` as `user`.
    let c = unsafe { &mut *(user as *mut Cancel) };
    c.calls += 1;
    c.steps = steps;
    assert!(step <= steps);
    (c.calls >= c.at) as i32
}

fn top1(s: *mut EtSession, imgs: &[(Vec<u8>, u32)]) -> Vec<(u32, f32)> {
    let grey = EtPixelFormat::Grey as u32;
    imgs.iter()
        .map(|(px, _)| {
            let (mut c, mut sc) = (0u32, 0f32);
            // SAFETY: `s` is live; the pixel buffer and outputs are live for the call.
            let st = unsafe {
                et_predict_image(
                    s,
                    px.as_ptr(),
                    px.len(),
                    grey,
                    28,
                    28,
                    0,
                    0,
                    1,
                    &mut c,
                    &mut sc,
                )
            };
            assert_eq!(st, EtStatus::Ok);
            (c, sc)
        })
        .collect()
}

#[test]
fn a_callback_that_cancels_keeps_the_previous_adapter() {
    let plan = plan_bytes();
    let imgs = images();
    let grey = EtPixelFormat::Grey as u32;
    let mut s: *mut EtSession = std::ptr::null_mut();
    // SAFETY: every pointer is live for its call; the session is freed once at the end.
    unsafe {
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        for (px, l) in &imgs {
            let st = et_enrol_image(s, px.as_ptr(), px.len(), grey, 28, 28, 0, 0, *l);
            assert_eq!(st, EtStatus::Ok);
        }
        assert_eq!(et_set_steps(s, 20), EtStatus::Ok);
        for m in [
            "ncm", "linear", "moment", "ladder", "query", "tail", "bias", "lora",
        ] {
            let name = CString::new(m).unwrap();
            assert_eq!(et_set_method(s, name.as_ptr()), EtStatus::Ok, "{m}");
            assert_eq!(
                et_train(s, 1, None, std::ptr::null_mut()),
                EtStatus::Ok,
                "{m}"
            );
            let before = top1(s, &imgs);
            // Trained methods are cancelled at their third report, ncm at its only one.
            let at = if m == "ncm" { 1 } else { 3 };
            for warm in [false, true] {
                let mut c = Cancel {
                    calls: 0,
                    at,
                    steps: 0,
                };
                let user = &mut c as *mut Cancel as *mut c_void;
                let st = if warm {
                    et_train_warm(s, 2, Some(cancel_at), user)
                } else {
                    et_train(s, 2, Some(cancel_at), user)
                };
                let msg = CStr::from_ptr(et_last_error())
                    .to_string_lossy()
                    .into_owned();
                assert_eq!(st, EtStatus::Training, "{m} (warm {warm}): {msg}");
                assert!(msg.contains("cancelled"), "{m}: {msg}");
                assert_eq!(c.calls, at, "{m} (warm {warm}): training went on");
                if m != "ncm" {
                    assert!(c.steps > at, "{m}: {} steps announced", c.steps);
                }
                assert_eq!(top1(s, &imgs), before, "{m} (warm {warm}): adapter changed");
            }
            println!("{m}: cancelled at report {at}, previous adapter kept");
        }
        et_free(s);
    }
}
