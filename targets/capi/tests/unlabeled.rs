//! Unlabeled examples through the C ABI: an `ncm` session that enrols three images of
//! each of three classes and adds twelve unlabeled ones predicts exactly what the Rust
//! `Session` doing the same predicts, with and without them, and the two differ (the
//! unlabeled examples moved the prototypes); after `et_clear_unlabeled` it is the plain
//! fit again; `ladder` refuses them. Bad input (a short frame, a tensor of the wrong
//! length or with a NaN, null pointers) gets its typed status and message and leaves the
//! kept unlabeled examples as they were.

use edgetune::frame::PixelFormat;
use edgetune::session::Session;
use edgetune_capi::*;
use std::ffi::{CStr, CString};
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

/// Grey 28x28 Fashion-MNIST images of classes 0, 1 and 8: the first `n` of each, after
/// skipping `skip` of each.
fn images(skip: usize, n: usize) -> Vec<(Vec<u8>, u32)> {
    let px =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    let mut seen = [0; 10];
    let mut v = vec![];
    for (i, &l) in lb[8..].iter().enumerate() {
        if matches!(l, 0 | 1 | 8) {
            seen[l as usize] += 1;
            if seen[l as usize] > skip && seen[l as usize] <= skip + n {
                v.push((px[16 + i * 784..][..784].to_vec(), l as u32));
            }
        }
    }
    v
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

/// Top-1 label and score of each of `test` from a Rust `ncm` Session given `sup` with
/// labels and `unl` without.
fn oracle(
    plan: &[u8],
    sup: &[(Vec<u8>, u32)],
    unl: &[(Vec<u8>, u32)],
    test: &[(Vec<u8>, u32)],
) -> Vec<(u32, f32)> {
    let mut r = Session::from_bytes(plan).unwrap();
    r.set_method(edgetune::adapt::Kind::Ncm).unwrap();
    for (px, l) in sup {
        let x = r.frame(px, PixelFormat::Grey, 28, 28, 0, 0).unwrap();
        r.enrol(x, &l.to_string()).unwrap();
    }
    for (px, _) in unl {
        let x = r.frame(px, PixelFormat::Grey, 28, 28, 0, 0).unwrap();
        r.add_unlabeled(x).unwrap();
    }
    assert_eq!(r.unlabeled(), unl.len());
    r.fit(&mut |_| true).unwrap();
    test.iter()
        .map(|(px, _)| {
            let x = r.frame(px, PixelFormat::Grey, 28, 28, 0, 0).unwrap();
            let p = r.predict(&x, 1).unwrap()[0];
            (r.class_name(p.0).unwrap().parse().unwrap(), p.1)
        })
        .collect()
}

/// The status of a call and the message `et_last_error` gives for it.
fn failed(st: EtStatus) -> (EtStatus, String) {
    // SAFETY: `et_last_error` returns a NUL-terminated string valid until the next call.
    let m = unsafe { CStr::from_ptr(et_last_error()) };
    (st, m.to_string_lossy().into_owned())
}

#[test]
fn unlabeled_examples_through_the_c_abi_match_the_session() {
    let plan = plan_bytes();
    let (sup, unl, test) = (images(0, 3), images(3, 4), images(7, 4));
    let grey = EtPixelFormat::Grey as u32;
    // The oracle: the Rust Session with the same examples, without and with the
    // unlabeled ones.
    let want_plain = oracle(&plan, &sup, &[], &test);
    let want = oracle(&plan, &sup, &unl, &test);
    let mut s: *mut EtSession = std::ptr::null_mut();
    // SAFETY: every pointer is live for its call; the session is freed once at the end.
    unsafe {
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        let ncm = CString::new("ncm").unwrap();
        assert_eq!(et_set_method(s, ncm.as_ptr()), EtStatus::Ok);
        for (px, l) in &sup {
            let st = et_enrol_image(s, px.as_ptr(), px.len(), grey, 28, 28, 0, 0, *l);
            assert_eq!(st, EtStatus::Ok);
        }
        assert_eq!(et_train(s, 0, None, std::ptr::null_mut()), EtStatus::Ok);
        let plain = top1(s, &test);
        assert_eq!(plain, want_plain, "C ABI vs Session, no unlabeled examples");
        for (px, _) in &unl {
            let st = et_add_unlabeled_image(s, px.as_ptr(), px.len(), grey, 28, 28, 0, 0);
            assert_eq!(st, EtStatus::Ok);
        }
        assert_eq!(et_train(s, 0, None, std::ptr::null_mut()), EtStatus::Ok);
        let semi = top1(s, &test);
        assert_eq!(semi, want, "C ABI vs Session");
        assert_ne!(semi, plain, "the unlabeled examples changed nothing");
        // Bad input: a typed status and message, and the kept examples stay as they were.
        let (st, m) = failed(et_add_unlabeled_image(
            s,
            test[0].0.as_ptr(),
            100,
            grey,
            28,
            28,
            0,
            0,
        ));
        assert_eq!(st, EtStatus::BadInput, "{m}");
        assert!(m.contains("784"), "{m}");
        let mut n = 0usize;
        assert_eq!(et_input_len(s, &mut n), EtStatus::Ok);
        let mut x = vec![0.5f32; n];
        let (st, m) = failed(et_add_unlabeled(s, x.as_ptr(), n - 1));
        assert_eq!(st, EtStatus::BadInput, "{m}");
        x[n / 2] = f32::NAN;
        let (st, m) = failed(et_add_unlabeled(s, x.as_ptr(), n));
        assert_eq!(st, EtStatus::BadInput, "{m}");
        assert!(m.contains("non-finite"), "{m}");
        let mut ex: *mut EtExample = std::ptr::null_mut();
        assert_eq!(et_example_tensor(s, x.as_ptr(), n, &mut ex), EtStatus::Ok);
        let (st, m) = failed(et_add_unlabeled_example(s, ex));
        assert_eq!(st, EtStatus::BadInput, "{m}");
        assert!(m.contains("non-finite"), "{m}");
        et_example_free(ex);
        let (st, m) = failed(et_add_unlabeled_example(s, std::ptr::null()));
        assert_eq!(
            (st, m.as_str()),
            (EtStatus::InvalidArgument, "null example")
        );
        let (st, m) = failed(et_add_unlabeled(s, std::ptr::null(), n));
        assert_eq!((st, m.as_str()), (EtStatus::InvalidArgument, "null input"));
        let (st, m) = failed(et_add_unlabeled_image(
            s,
            std::ptr::null(),
            784,
            grey,
            28,
            28,
            0,
            0,
        ));
        assert_eq!((st, m.as_str()), (EtStatus::InvalidArgument, "null input"));
        let (st, m) = failed(et_add_unlabeled(std::ptr::null_mut(), x.as_ptr(), n));
        assert_eq!(
            (st, m.as_str()),
            (EtStatus::InvalidArgument, "null session")
        );
        let (st, m) = failed(et_clear_unlabeled(std::ptr::null_mut()));
        assert_eq!(
            (st, m.as_str()),
            (EtStatus::InvalidArgument, "null session")
        );
        assert_eq!(et_train(s, 0, None, std::ptr::null_mut()), EtStatus::Ok);
        assert_eq!(top1(s, &test), want, "after the refused examples");
        // A method that does not learn from them refuses to train while they are kept.
        let ladder = CString::new("ladder").unwrap();
        assert_eq!(et_set_method(s, ladder.as_ptr()), EtStatus::Ok);
        let (st, m) = failed(et_train(s, 0, None, std::ptr::null_mut()));
        assert_eq!(st, EtStatus::InvalidArgument, "{m}");
        assert!(m.contains("unlabeled"), "{m}");
        assert_eq!(et_clear_unlabeled(s), EtStatus::Ok);
        assert_eq!(et_set_method(s, ncm.as_ptr()), EtStatus::Ok);
        assert_eq!(et_train(s, 0, None, std::ptr::null_mut()), EtStatus::Ok);
        assert_eq!(top1(s, &test), plain, "after et_clear_unlabeled");
        et_free(s);
    }
}
