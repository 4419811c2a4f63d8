//! Sessions on threads: two sessions driven from two threads at once, through the C ABI,
//! give the results one thread gives (each session is used by one thread at a time).

use edgetune_capi::*;
use std::path::Path;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn plan_bytes() -> Vec<u8> {
    let onnx = std::fs::read(Path::new(ROOT).join("models/efficientnet_lite0_int8.onnx")).unwrap();
    let opts = edgetune::import::ImportOptions {
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    edgetune::import::import_bytes(&onnx, &opts)
        .unwrap()
        .to_bytes()
}

/// Grey 28x28 Fashion-MNIST images of classes 0, 1 and 8 with their labels.
fn images() -> Vec<(Vec<u8>, u32)> {
    let px =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb =
        std::fs::read(Path::new(ROOT).join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    let mut seen = [0; 10];
    let mut v = vec![];
    for (i, &l) in lb[8..].iter().enumerate() {
        if matches!(l, 0 | 1 | 8) && seen[l as usize] < 6 {
            seen[l as usize] += 1;
            v.push((px[16 + i * 784..][..784].to_vec(), l as u32));
        }
    }
    v
}

/// Enrols the first four of each class, trains `method`, and returns the top class and
/// score of every image.
fn flow(plan: &[u8], method: &str, imgs: &[(Vec<u8>, u32)]) -> Vec<(u32, f32)> {
    flow_on(plan, method, imgs, 1)
}

/// [`flow`] with `threads` threads per backbone run.
fn flow_on(plan: &[u8], method: &str, imgs: &[(Vec<u8>, u32)], threads: u32) -> Vec<(u32, f32)> {
    let mut s: *mut EtSession = std::ptr::null_mut();
    let m = std::ffi::CString::new(method).unwrap();
    let grey = EtPixelFormat::Grey as u32;
    // SAFETY: every pointer is live for the call; the session is freed once at the end.
    unsafe {
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        assert_eq!(et_set_method(s, m.as_ptr()), EtStatus::Ok);
        assert_eq!(et_set_threads(s, threads), EtStatus::Ok);
        let mut per = std::collections::HashMap::new();
        for (px, l) in imgs {
            let n = per.entry(*l).or_insert(0);
            *n += 1;
            if *n <= 4 {
                let st = et_enrol_image(s, px.as_ptr(), px.len(), grey, 28, 28, 0, 0, *l);
                assert_eq!(st, EtStatus::Ok);
            }
        }
        assert_eq!(et_train(s, 3, None, std::ptr::null_mut()), EtStatus::Ok);
        let out = predict_all(s, imgs);
        et_free(s);
        out
    }
}

/// The top class and score of every grey 28x28 image.
///
/// # Safety
/// `s` is a live, trained session.
unsafe fn predict_all(s: *mut EtSession, imgs: &[(Vec<u8>, u32)]) -> Vec<(u32, f32)> {
    let grey = EtPixelFormat::Grey as u32;
    imgs.iter()
        .map(|(px, _)| {
            let (mut c, mut sc) = (0u32, 0f32);
            // SAFETY: `s` is live (the caller's promise); `px`, `c` and `sc` are live.
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
fn two_sessions_on_two_threads_match_one_thread() {
    let plan = plan_bytes();
    let imgs = images();
    let alone_a = flow(&plan, "linear", &imgs);
    let alone_b = flow(&plan, "ncm", &imgs);
    for round in 0..2 {
        let (a, b) = std::thread::scope(|t| {
            let a = t.spawn(|| flow(&plan, "linear", &imgs));
            let b = t.spawn(|| flow(&plan, "ncm", &imgs));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a, alone_a, "round {round}: linear on a thread");
        assert_eq!(b, alone_b, "round {round}: ncm on a thread");
    }
    let ok = alone_a
        .iter()
        .zip(&imgs)
        .filter(|(p, i)| p.0 == i.1)
        .count();
    assert!(
        ok * 10 >= imgs.len() * 8,
        "linear: {ok} of {} right",
        imgs.len()
    );
}

/// Threads inside a session change no bit: the same scores on 1, 2 and 3 threads per
/// backbone run, and a thread count past the limit is refused with the reason.
#[test]
fn threads_within_a_session_change_nothing() {
    let plan = plan_bytes();
    let imgs = images();
    for method in ["linear", "ncm"] {
        let one = flow_on(&plan, method, &imgs, 1);
        for t in [2, 3] {
            assert_eq!(
                flow_on(&plan, method, &imgs, t),
                one,
                "{method} on {t} threads"
            );
        }
    }
    let mut s: *mut EtSession = std::ptr::null_mut();
    // SAFETY: every pointer is live for the call; the session is freed once at the end.
    unsafe {
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        assert_ne!(et_set_threads(s, 100_000), EtStatus::Ok);
        let msg = std::ffi::CStr::from_ptr(et_last_error()).to_string_lossy();
        assert!(msg.contains("threads"), "{msg}");
        et_free(s);
    }
}

unsafe extern "C" fn steps_of(
    _: u32,
    steps: u32,
    _: f32,
    _: f32,
    user: *mut std::ffi::c_void,
) -> i32 {
    // SAFETY: the test passes a live u32 as `user`.
    unsafe { *(user as *mut u32) = steps };
    0
}

/// A class enrolled after training: `et_train_warm` continues from the trained adapter
/// (a quarter of the linear probe's steps) and classifies the held-out images as well as
/// training again from scratch.
#[test]
fn a_class_added_after_training_trains_warm() {
    let plan = plan_bytes();
    let imgs = images();
    let grey = EtPixelFormat::Grey as u32;
    let run = |warm: bool| -> (usize, u32) {
        let mut s: *mut EtSession = std::ptr::null_mut();
        let m = std::ffi::CString::new("linear").unwrap();
        // SAFETY: every pointer is live for the call; the session is freed once at the end.
        unsafe {
            assert_eq!(
                et_open_plan(plan.as_ptr(), plan.len(), &mut s),
                EtStatus::Ok
            );
            assert_eq!(et_set_method(s, m.as_ptr()), EtStatus::Ok);
            let enrol = |classes: &[u32]| {
                let mut per = std::collections::HashMap::new();
                for (px, l) in imgs.iter().filter(|i| classes.contains(&i.1)) {
                    let n = per.entry(*l).or_insert(0);
                    *n += 1;
                    if *n <= 4 {
                        let st = et_enrol_image(s, px.as_ptr(), px.len(), grey, 28, 28, 0, 0, *l);
                        assert_eq!(st, EtStatus::Ok);
                    }
                }
            };
            enrol(&[0, 1]);
            let mut steps = 0u32;
            let user = &mut steps as *mut u32 as *mut std::ffi::c_void;
            assert_eq!(et_train(s, 3, Some(steps_of), user), EtStatus::Ok);
            let full = steps;
            enrol(&[8]);
            let st = if warm {
                et_train_warm(s, 3, Some(steps_of), user)
            } else {
                et_train(s, 3, Some(steps_of), user)
            };
            assert_eq!(st, EtStatus::Ok);
            assert_eq!(steps, if warm { full.div_ceil(4) } else { full });
            // The two held-out images of each class.
            let mut per = std::collections::HashMap::new();
            let mut ok = 0;
            for (px, l) in &imgs {
                let n = per.entry(*l).or_insert(0);
                *n += 1;
                if *n > 4 {
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
                    ok += (c == *l) as usize;
                }
            }
            et_free(s);
            (ok, steps)
        }
    };
    let (warm, ws) = run(true);
    let (cold, cs) = run(false);
    println!("held out: warm {warm}/6 in {ws} steps, from scratch {cold}/6 in {cs} steps");
    assert!(
        warm + 1 >= cold && warm >= 4,
        "warm {warm}/6, from scratch {cold}/6"
    );
}

/// `et_enrol_examples` on two threads enrols what `et_enrol_example` one at a time on one
/// thread does: the trained sessions score every image the same. A batch with a label out
/// of range is refused whole, and training after it gives the same scores.
#[test]
fn enrolling_examples_at_once_equals_one_at_a_time() {
    let plan = plan_bytes();
    let imgs = images();
    let grey = EtPixelFormat::Grey as u32;
    let m = std::ffi::CString::new("linear").unwrap();
    // SAFETY: every pointer is live for its call; examples and sessions are freed once.
    let run = |threads: u32, batch: bool| unsafe {
        let mut s: *mut EtSession = std::ptr::null_mut();
        assert_eq!(
            et_open_plan(plan.as_ptr(), plan.len(), &mut s),
            EtStatus::Ok
        );
        assert_eq!(et_set_method(s, m.as_ptr()), EtStatus::Ok);
        assert_eq!(et_set_threads(s, threads), EtStatus::Ok);
        let mut xs: Vec<*mut EtExample> = vec![];
        let mut labels = vec![];
        for (px, l) in imgs.iter().step_by(2) {
            let mut x = std::ptr::null_mut();
            let st = et_example_image(s, px.as_ptr(), px.len(), grey, 28, 28, 0, 0, &mut x);
            assert_eq!(st, EtStatus::Ok);
            xs.push(x);
            labels.push(*l);
        }
        if batch {
            let ptrs: Vec<*const EtExample> = xs.iter().map(|&x| x as *const _).collect();
            let mut bad = labels.clone();
            bad[1] = 5000;
            let st = et_enrol_examples(s, ptrs.as_ptr(), bad.as_ptr(), ptrs.len());
            assert_eq!(st, EtStatus::InvalidArgument, "label 5000 refused");
            let st = et_enrol_examples(s, ptrs.as_ptr(), labels.as_ptr(), ptrs.len());
            assert_eq!(st, EtStatus::Ok);
        } else {
            for (&x, &l) in xs.iter().zip(&labels) {
                assert_eq!(et_enrol_example(s, x, l), EtStatus::Ok);
            }
        }
        for x in xs {
            et_example_free(x);
        }
        assert_eq!(et_train(s, 3, None, std::ptr::null_mut()), EtStatus::Ok);
        let out: Vec<(u32, u32)> = predict_all(s, &imgs)
            .into_iter()
            .map(|(c, sc)| (c, sc.to_bits()))
            .collect();
        et_free(s);
        out
    };
    let one = run(1, false);
    let two = run(2, true);
    assert_eq!(one, two);
}
