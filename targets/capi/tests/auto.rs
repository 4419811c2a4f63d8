//! `et_choose_method` picks what the Rust `Session::choose_method` picks on the same
//! examples, with the same held-out accuracies, and the next `et_train` trains the pick
//! (same predictions as the Session's fit). An unknown candidate, a class with one
//! example, a negative budget and a null session get their typed status and message.

use edgetune::adapt::Kind;
use edgetune::frame::PixelFormat;
use edgetune::session::auto::AutoConfig;
use edgetune::session::Session;
use edgetune_capi::*;
use std::ffi::{c_char, CStr, CString};
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

/// Grey 28x28 Fashion-MNIST images of classes 0, 2, 4 and 6 (the ones that look alike):
/// the first `n` of each after skipping `skip`.
fn images(skip: usize, n: usize) -> Vec<(Vec<u8>, u32)> {
    let px =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    let mut seen = [0; 10];
    let mut v = vec![];
    for (i, &l) in lb[8..].iter().enumerate() {
        if matches!(l, 0 | 2 | 4 | 6) {
            seen[l as usize] += 1;
            if seen[l as usize] > skip && seen[l as usize] <= skip + n {
                v.push((px[16 + i * 784..][..784].to_vec(), l as u32));
            }
        }
    }
    v
}

fn failed(st: EtStatus) -> (EtStatus, String) {
    // SAFETY: `et_last_error` returns a NUL-terminated string valid until the next call.
    let m = unsafe { CStr::from_ptr(et_last_error()) };
    (st, m.to_string_lossy().into_owned())
}

/// The choice line without its time.
fn untimed(s: &str) -> &str {
    s.rsplit_once("; ").map_or(s, |(a, _)| a)
}

#[test]
fn the_c_abi_choice_is_the_sessions() {
    let plan = plan_bytes();
    let (sup, test) = (images(0, 4), images(4, 5));
    let grey = EtPixelFormat::Grey as u32;
    // The oracle: the Rust Session on the same examples.
    let mut r = Session::from_bytes(&plan).unwrap();
    for (px, l) in &sup {
        let x = r.frame(px, PixelFormat::Grey, 28, 28, 0, 0).unwrap();
        r.enrol(x, &l.to_string()).unwrap();
    }
    let cfg = AutoConfig {
        candidates: vec![Kind::Ncm, Kind::Linear, Kind::Moment],
        folds: 4,
        ensembles: false,
        ..Default::default()
    };
    let want = r.choose_method(&cfg).unwrap();
    r.fit(&mut |_| true).unwrap();
    let mut s: *mut EtSession = std::ptr::null_mut();
    // SAFETY: every pointer is live for its call; the session is freed once at the end.
    unsafe {
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        for (px, l) in &sup {
            let st = et_enrol_image(s, px.as_ptr(), px.len(), grey, 28, 28, 0, 0, *l);
            assert_eq!(st, EtStatus::Ok);
        }
        let cands = CString::new("ncm,linear,moment").unwrap();
        let (mut m, mut why): (*const c_char, *const c_char) = (std::ptr::null(), std::ptr::null());
        let st = et_choose_method(s, cands.as_ptr(), 4, 0.0, &mut m, &mut why);
        assert_eq!(st, EtStatus::Ok, "{}", failed(st).1);
        let (m, why) = (
            CStr::from_ptr(m).to_str().unwrap(),
            CStr::from_ptr(why).to_str().unwrap(),
        );
        assert_eq!(m, want.pick[0].kind.name());
        assert_eq!(untimed(why), untimed(&want.why()));
        assert!(why.contains("tried ncm"), "{why}");
        assert_eq!(et_train(s, 0, None, std::ptr::null_mut()), EtStatus::Ok);
        for (px, _) in &test {
            let (mut c, mut sc) = (0u32, 0f32);
            let st = et_predict_image(
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
            );
            assert_eq!(st, EtStatus::Ok);
            let x = r.frame(px, PixelFormat::Grey, 28, 28, 0, 0).unwrap();
            let p = r.predict(&x, 1).unwrap()[0];
            assert_eq!(
                (c.to_string().as_str(), sc),
                (r.class_name(p.0).unwrap(), p.1)
            );
        }
        // Bad input.
        let bogus = CString::new("ncm,bogus").unwrap();
        let (st, msg) = failed(et_choose_method(
            s,
            bogus.as_ptr(),
            0,
            0.0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ));
        assert_eq!(st, EtStatus::InvalidArgument, "{msg}");
        assert!(msg.contains("unknown candidate"), "{msg}");
        let (st, msg) = failed(et_choose_method(
            s,
            std::ptr::null(),
            0,
            -1.0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ));
        assert_eq!(st, EtStatus::InvalidArgument, "{msg}");
        let (st, msg) = failed(et_choose_method(
            std::ptr::null_mut(),
            std::ptr::null(),
            0,
            0.0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ));
        assert_eq!(
            (st, msg.as_str()),
            (EtStatus::InvalidArgument, "null session")
        );
        et_free(s);
        // A class with one example cannot be held out.
        let mut t: *mut EtSession = std::ptr::null_mut();
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut t),
            EtStatus::Ok
        );
        for (px, l) in sup
            .iter()
            .filter(|x| x.1 != 0)
            .chain(sup.iter().find(|x| x.1 == 0))
        {
            assert_eq!(
                et_enrol_image(t, px.as_ptr(), px.len(), grey, 28, 28, 0, 0, *l),
                EtStatus::Ok
            );
        }
        let (st, msg) = failed(et_choose_method(
            t,
            cands.as_ptr(),
            0,
            0.0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ));
        assert_ne!(st, EtStatus::Ok);
        assert!(msg.contains("at least 2"), "{msg}");
        et_free(t);
    }
}
