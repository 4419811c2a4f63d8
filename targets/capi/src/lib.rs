//! C ABI of edgetune for apps, a thin layer over the library's [`Session`]: open a plan,
//! turn camera frames, audio or text into examples with the preprocessing the plan
//! declares, enrol them under integer labels (and add unlabeled ones that `ncm`, `linear`
//! and `moment` learn from), train any method with a progress callback
//! that can cancel, predict, drop a class, save and load adapters (int8 tails included).
//!
//! Every function returns an [`EtStatus`]; on failure `et_last_error` gives the message
//! (per thread). No panic crosses the boundary: each entry point catches it and returns
//! `ET_STATUS_PANIC`.
//!
//! Threads: a session is used by one thread at a time (calls on one session are not
//! synchronised); different sessions may run on different threads at once, and a session
//! may move between threads.

use edgetune::adapt::train::Progress;
use edgetune::adapt::Kind;
use edgetune::frame::PixelFormat;
use edgetune::session::{Sample, Serve, Session};
use edgetune::Error;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result of every call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtStatus {
    Ok = 0,
    /// A null pointer or an argument out of range.
    InvalidArgument = 1,
    /// A bad plan or adapter file (magic, version, checksum, truncation).
    BadFile = 2,
    /// The adapter was trained on another plan.
    PlanMismatch = 3,
    /// Wrong input shape, NaN/Inf in inputs.
    BadInput = 4,
    /// The plan needs more memory than allowed.
    TooLarge = 5,
    /// Training diverged or was cancelled by the callback.
    Training = 6,
    Io = 7,
    /// An internal error was caught at the boundary.
    Panic = 8,
}

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = c);
}

fn status_of(e: &Error) -> EtStatus {
    match e {
        Error::BadFile { .. } | Error::Malformed { .. } | Error::UnsupportedOp { .. } => {
            EtStatus::BadFile
        }
        Error::PlanMismatch { .. } => EtStatus::PlanMismatch,
        Error::ShapeMismatch { .. } | Error::NonFinite { .. } | Error::Kernel(_) => {
            EtStatus::BadInput
        }
        Error::ArenaTooLarge { .. } | Error::OverBudget { .. } => EtStatus::TooLarge,
        Error::Diverged { .. } | Error::Cancelled { .. } => EtStatus::Training,
        Error::Io { .. } => EtStatus::Io,
        Error::Invalid { .. } => EtStatus::InvalidArgument,
    }
}

/// Runs `f`, turning errors and panics into a status and a message.
fn guard(f: impl FnOnce() -> Result<(), (EtStatus, String)>) -> EtStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => EtStatus::Ok,
        Ok(Err((s, m))) => {
            set_error(&m);
            s
        }
        Err(_) => {
            set_error("internal error (panic caught at the C boundary)");
            EtStatus::Panic
        }
    }
}

fn err(e: Error) -> (EtStatus, String) {
    (status_of(&e), e.to_string())
}

fn arg(msg: &str) -> (EtStatus, String) {
    (EtStatus::InvalidArgument, msg.to_string())
}

/// A plan with its executor, tap cache and adapter ([`Session`]). Opaque to C.
pub struct EtSession {
    s: Session,
    /// The last automatic choice: the method picked and the line that says why.
    chose: (CString, CString),
}

/// One example, preprocessed as the plan declares (image, audio, text or raw tensors).
/// Opaque to C; free with `et_example_free`.
pub struct EtExample {
    x: Sample,
}

unsafe fn session<'a>(s: *mut EtSession) -> Result<&'a mut Session, (EtStatus, String)> {
    // SAFETY: the caller passes a pointer from `et_open_*` that it has not freed.
    unsafe { s.as_mut() }
        .map(|s| &mut s.s)
        .ok_or_else(|| arg("null session"))
}

unsafe fn example<'a>(x: *const EtExample) -> Result<&'a Sample, (EtStatus, String)> {
    // SAFETY: the caller passes a pointer from `et_example_*` that it has not freed.
    unsafe { x.as_ref() }
        .map(|x| &x.x)
        .ok_or_else(|| arg("null example"))
}

unsafe fn slice<'a, T>(p: *const T, n: usize) -> Result<&'a [T], (EtStatus, String)> {
    if p.is_null() {
        return Err(arg("null input"));
    }
    // SAFETY: the caller promises `n` readable values at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

unsafe fn cstr<'a>(p: *const c_char) -> Result<&'a str, (EtStatus, String)> {
    if p.is_null() {
        return Err(arg("null string"));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| arg("string is not UTF-8"))
}

unsafe fn put<T>(out: *mut T, v: T) -> Result<(), (EtStatus, String)> {
    if out.is_null() {
        return Err(arg("null output pointer"));
    }
    // SAFETY: non-null; the caller promises it is writable.
    unsafe { *out = v };
    Ok(())
}

fn class_of(label: u32) -> Result<String, (EtStatus, String)> {
    if label > 4095 {
        return Err(arg("label out of range (0..4096)"));
    }
    Ok(label.to_string())
}

/// The message of the last failed call on this thread (valid until the next call).
#[no_mangle]
pub extern "C" fn et_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

fn open(data: &[u8], out: *mut *mut EtSession) -> Result<(), (EtStatus, String)> {
    let s = Session::from_bytes(data).map_err(err)?;
    // SAFETY: forwarded caller promise that `out` is writable.
    unsafe {
        put(
            out,
            Box::into_raw(Box::new(EtSession {
                s,
                chose: Default::default(),
            })),
        )
    }
}

/// Opens a plan from `len` bytes at `bytes` (copied).
///
/// # Safety
/// `bytes` points at `len` readable bytes; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_open_plan(
    bytes: *const u8,
    len: usize,
    out: *mut *mut EtSession,
) -> EtStatus {
    guard(|| {
        // SAFETY: the caller promises `len` readable bytes.
        let data = unsafe { slice(bytes, len) }?;
        open(data, out)
    })
}

/// Opens a plan file.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_open_plan_path(
    path: *const c_char,
    out: *mut *mut EtSession,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let p = unsafe { cstr(path) }?;
        let data = std::fs::read(p).map_err(|e| (EtStatus::Io, format!("{p}: {e}")))?;
        open(&data, out)
    })
}

/// Frees a session (null is fine).
///
/// # Safety
/// `s` comes from `et_open_*` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn et_free(s: *mut EtSession) {
    if !s.is_null() {
        // SAFETY: `s` was created by `Box::into_raw` in `et_open_*` and is freed once.
        drop(unsafe { Box::from_raw(s) });
    }
}

/// Length of the f32 input the plan takes (its first input, ONNX layout).
///
/// # Safety
/// `s` is a live session; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_input_len(s: *mut EtSession, out: *mut usize) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        let p = s.plan();
        let t = p.inputs.first().ok_or_else(|| arg("plan has no input"))?;
        // SAFETY: forwarded caller promise.
        unsafe { put(out, p.tensors[t.tensor as usize].len()) }
    })
}

/// Turns `w×h` pixels with `channels` interleaved bytes (1 = grey, 3 = RGB, 4 = RGBA) into
/// the plan's input tensor, with the preprocessing the plan declares. `out` holds
/// `et_input_len` floats.
///
/// # Safety
/// `px` has `w·h·channels` bytes; `out` has `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn et_preprocess_image(
    s: *mut EtSession,
    px: *const u8,
    w: usize,
    h: usize,
    channels: usize,
    out: *mut f32,
    out_len: usize,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        let format = match channels {
            1 => PixelFormat::Grey,
            3 => PixelFormat::Rgb,
            4 => PixelFormat::Rgba,
            _ => return Err(arg("channels must be 1, 3 or 4")),
        };
        let n = w
            .checked_mul(h)
            .and_then(|v| v.checked_mul(channels))
            .ok_or_else(|| arg("image too large"))?;
        // SAFETY: the caller promises `w·h·channels` bytes at `px`.
        let pixels = unsafe { slice(px, n) }?;
        let x = s.frame(pixels, format, w, h, 0, 0).map_err(err)?;
        let mut v = Vec::new();
        s.prep().inputs(&x, 0, &mut v).map_err(err)?;
        let v = v.into_iter().next().unwrap_or_default();
        if v.len() != out_len || out.is_null() {
            return Err((
                EtStatus::BadInput,
                format!("output holds {out_len} floats, the plan takes {}", v.len()),
            ));
        }
        // SAFETY: the caller promises `out_len` writable floats at `out`.
        unsafe { std::slice::from_raw_parts_mut(out, out_len) }.copy_from_slice(&v);
        Ok(())
    })
}

/// Chooses the method: `ncm`, `linear`, `moment`, `ladder`, `query`, `tail`, `bias` or
/// `lora`. Examples enrolled so far are kept (cached again if the method reads other
/// taps).
///
/// # Safety
/// `s` is a live session; `method` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn et_set_method(s: *mut EtSession, method: *const c_char) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, m) = unsafe { (session(s)?, cstr(method)?) };
        let kind = Kind::parse(m).ok_or_else(|| {
            arg("unknown method (ncm, linear, moment, ladder, query, tail, bias, lora)")
        })?;
        s.set_method(kind).map_err(err)
    })
}

/// Chooses the method and its C on the enrolled examples alone (each class's examples
/// held out in turn, `folds` times; 0 means 5) among `candidates` (comma-separated method
/// names; NULL or empty: all), within `budget_s` seconds (0: no limit), and makes it the
/// method of the next `et_train`. Every class needs at least two examples. `method` and
/// `why` (each may be NULL) receive the pick's name (the lowest held-out log-loss) and one
/// line with every candidate's held-out log-loss and accuracy and what was skipped,
/// NUL-terminated, owned by the session and valid until its next `et_choose_method` or
/// `et_free`.
///
/// # Safety
/// `s` is a live session; `candidates` NULL or a NUL-terminated string; `method` and
/// `why` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn et_choose_method(
    s: *mut EtSession,
    candidates: *const c_char,
    folds: u32,
    budget_s: f64,
    method: *mut *const c_char,
    why: *mut *const c_char,
) -> EtStatus {
    guard(|| {
        if s.is_null() {
            return Err(arg("null session"));
        }
        // SAFETY: checked non-null; the caller promises it is live and not aliased.
        let es = unsafe { &mut *s };
        let list = if candidates.is_null() {
            ""
        } else {
            // SAFETY: forwarded caller promise (NUL-terminated).
            unsafe { cstr(candidates) }?
        };
        let kinds = if list.is_empty() {
            Kind::ALL.to_vec()
        } else {
            list.split(',')
                .map(|m| {
                    Kind::parse(m.trim()).ok_or_else(|| {
                        arg("unknown candidate (ncm, linear, moment, ladder, query, tail, bias, lora)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if budget_s.is_nan() || budget_s < 0.0 {
            return Err(arg(
                "budget_s: 0 (no limit) or a positive number of seconds",
            ));
        }
        let cfg = edgetune::session::auto::AutoConfig {
            candidates: kinds,
            folds: if folds == 0 { 5 } else { folds as usize },
            budget_s: (budget_s > 0.0).then_some(budget_s),
            max_memory: None,
            ensembles: false,
        };
        let ch = es.s.choose_method(&cfg).map_err(err)?;
        let text = |t: String| CString::new(t.replace('\0', " ")).unwrap_or_default();
        es.chose = (text(ch.pick[0].kind.name().into()), text(ch.why()));
        // SAFETY: the caller promises each non-null out pointer is writable.
        unsafe {
            if !method.is_null() {
                *method = es.chose.0.as_ptr();
            }
            if !why.is_null() {
                *why = es.chose.1.as_ptr();
            }
        }
        Ok(())
    })
}

/// Serving of trained tails (`tail`, `bias`, `lora`): 0 float, 1 int8 (re-quantised,
/// activation ranges calibrated on the enrolled examples and saved with the adapter).
/// Takes effect at the next `et_train`.
///
/// # Safety
/// `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn et_set_serve_int8(s: *mut EtSession, int8: i32) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        s.opts.serve = if int8 != 0 { Serve::Int8 } else { Serve::Float };
        Ok(())
    })
}

/// Training steps of the trained methods (0 = the method's default).
///
/// # Safety
/// `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn et_set_steps(s: *mut EtSession, steps: u32) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        s.opts.steps = (steps > 0).then_some(steps as usize);
        Ok(())
    })
}

/// Threads each backbone run may use, the caller's included (0 = one per available core,
/// the default). Predictions and training are identical for any count.
///
/// # Safety
/// `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn et_set_threads(s: *mut EtSession, threads: u32) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        s.set_threads(threads as usize).map_err(err)
    })
}

fn new_example(x: Sample, out: *mut *mut EtExample) -> Result<(), (EtStatus, String)> {
    // SAFETY: forwarded caller promise that `out` is writable.
    unsafe { put(out, Box::into_raw(Box::new(EtExample { x }))) }
}

/// A camera frame or bitmap as an example: `format` is an `EtPixelFormat`, rows are
/// `stride` bytes apart (0 = packed), `rotation` (0, 90, 180, 270) is the clockwise
/// rotation that makes the picture upright (Android's `rotationDegrees`). `len` is the
/// size of the buffer at `px` (checked against what the format needs).
///
/// # Safety
/// `s` is a live session; `px` has `len` readable bytes; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_example_image(
    s: *mut EtSession,
    px: *const u8,
    len: usize,
    format: u32,
    w: usize,
    h: usize,
    stride: usize,
    rotation: u32,
    out: *mut *mut EtExample,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, px) = unsafe { (session(s)?, slice(px, len)?) };
        let x = s
            .frame(px, pixel_format(format)?, w, h, stride, rotation)
            .map_err(err)?;
        new_example(x, out)
    })
}

/// 16 kHz mono 16-bit PCM as an example (audio plans).
///
/// # Safety
/// `s` is a live session; `pcm` has `n` samples; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_example_audio_i16(
    s: *mut EtSession,
    pcm: *const i16,
    n: usize,
    out: *mut *mut EtExample,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, pcm) = unsafe { (session(s)?, slice(pcm, n)?) };
        let v: Vec<f32> = pcm.iter().map(|&v| v as f32).collect();
        new_example(s.audio(&v).map_err(err)?, out)
    })
}

/// 16 kHz mono float PCM in -1..1 as an example (audio plans).
///
/// # Safety
/// `s` is a live session; `pcm` has `n` samples; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_example_audio_f32(
    s: *mut EtSession,
    pcm: *const f32,
    n: usize,
    out: *mut *mut EtExample,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, pcm) = unsafe { (session(s)?, slice(pcm, n)?) };
        let v: Vec<f32> = pcm.iter().map(|&v| v * 32768.0).collect();
        new_example(s.audio(&v).map_err(err)?, out)
    })
}

fn listen(
    s: &mut Session,
    pcm: Vec<f32>,
    out: *mut *mut EtExample,
    cap: usize,
    got: *mut usize,
) -> Result<(), (EtStatus, String)> {
    if out.is_null() && cap > 0 {
        return Err(arg("null output pointer"));
    }
    let done = s.listen(&pcm).map_err(err)?;
    // The most recent `cap` examples; the older ones are dropped.
    let keep = &done[done.len().saturating_sub(cap)..];
    for (i, x) in keep.iter().enumerate() {
        let h = Box::into_raw(Box::new(EtExample { x: x.clone() }));
        // SAFETY: non-null (checked above when cap > 0); the caller promises `cap`
        // writable slots and i < keep.len() <= cap.
        unsafe { *out.add(i) = h };
    }
    // SAFETY: forwarded caller promise that `got` is writable.
    unsafe { put(got, keep.len()) }
}

/// Streaming 16 kHz mono 16-bit PCM (plans declared `audio:oww:FRAMES:CONTEXT`): feeds
/// `n` samples of a stream and writes the examples they completed (one every 80 ms once
/// the context is full) to `out` as new handles, the most recent `cap` of them, and their
/// count to `*got`. Each is scored with `et_predict_example` or enrolled with
/// `et_enrol_example`, and freed with `et_example_free`. `et_listen_reset` starts a new
/// stream. An 80 ms chunk (1280 samples) completes at most one.
///
/// # Safety
/// `s` is a live session; `pcm` has `n` samples; `out` has `cap` writable slots; `got`
/// is writable.
#[no_mangle]
pub unsafe extern "C" fn et_listen_i16(
    s: *mut EtSession,
    pcm: *const i16,
    n: usize,
    out: *mut *mut EtExample,
    cap: usize,
    got: *mut usize,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, pcm) = unsafe { (session(s)?, slice(pcm, n)?) };
        listen(s, pcm.iter().map(|&v| v as f32).collect(), out, cap, got)
    })
}

/// [`et_listen_i16`] of float PCM in -1..1.
///
/// # Safety
/// As [`et_listen_i16`].
#[no_mangle]
pub unsafe extern "C" fn et_listen_f32(
    s: *mut EtSession,
    pcm: *const f32,
    n: usize,
    out: *mut *mut EtExample,
    cap: usize,
    got: *mut usize,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, pcm) = unsafe { (session(s)?, slice(pcm, n)?) };
        listen(s, pcm.iter().map(|&v| v * 32768.0).collect(), out, cap, got)
    })
}

/// Forgets the stream being listened to.
///
/// # Safety
/// `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn et_listen_reset(s: *mut EtSession) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        unsafe { session(s)? }.listen_reset();
        Ok(())
    })
}

/// UTF-8 text as an example (text plans: the plan's tokenizer, its window length).
///
/// # Safety
/// `s` is a live session; `text` a NUL-terminated UTF-8 string; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_example_text(
    s: *mut EtSession,
    text: *const c_char,
    out: *mut *mut EtExample,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, t) = unsafe { (session(s)?, cstr(text)?) };
        new_example(s.text(t).map_err(err)?, out)
    })
}

/// The plan's input tensor, preprocessed by the caller, as an example (single-input
/// plans; `len` = `et_input_len`).
///
/// # Safety
/// `s` is a live session; `input` has `len` floats; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn et_example_tensor(
    s: *mut EtSession,
    input: *const f32,
    len: usize,
    out: *mut *mut EtExample,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, x) = unsafe { (session(s)?, slice(input, len)?) };
        new_example(s.tensors(vec![x.to_vec()]).map_err(err)?, out)
    })
}

/// Frees an example (null is fine).
///
/// # Safety
/// `x` comes from `et_example_*` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn et_example_free(x: *mut EtExample) {
    if !x.is_null() {
        // SAFETY: `x` was created by `Box::into_raw` in `et_example_*` and is freed once.
        drop(unsafe { Box::from_raw(x) });
    }
}

/// Runs an example through the backbone and adds its taps to the cache under `label`
/// (any integer below 4096; classes need not be consecutive).
///
/// # Safety
/// `s` is a live session; `x` a live example.
#[no_mangle]
pub unsafe extern "C" fn et_enrol_example(
    s: *mut EtSession,
    x: *const EtExample,
    label: u32,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, x) = unsafe { (session(s)?, example(x)?) };
        s.enrol(x.clone(), &class_of(label)?).map_err(err)
    })
}

/// [`et_enrol_example`] for `n` examples at once, `xs[i]` under `labels[i]`: they go
/// through the backbone one per thread of the session ([`et_set_threads`]), each on an
/// executor of its own, and are cached in their order, as `n` calls of
/// [`et_enrol_example`] would cache them. All or nothing: on an error none is enrolled.
///
/// # Safety
/// `s` is a live session; `xs` holds `n` live examples and `labels` `n` labels.
#[no_mangle]
pub unsafe extern "C" fn et_enrol_examples(
    s: *mut EtSession,
    xs: *const *const EtExample,
    labels: *const u32,
    n: usize,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, xs, labels) = unsafe { (session(s)?, slice(xs, n)?, slice(labels, n)?) };
        let mut items = Vec::with_capacity(n);
        for (&x, &l) in xs.iter().zip(labels) {
            // SAFETY: forwarded caller promise: each pointer is a live example.
            let x = unsafe { example(x)? };
            items.push((x.clone(), class_of(l)?));
        }
        s.enrol_batch(items.iter().map(|(x, c)| (x.clone(), c.as_str())))
            .map_err(err)
    })
}

/// [`et_enrol_example`] of one preprocessed input tensor (`len` = `et_input_len`).
///
/// # Safety
/// `s` is a live session; `input` has `len` floats.
#[no_mangle]
pub unsafe extern "C" fn et_enrol(
    s: *mut EtSession,
    input: *const f32,
    len: usize,
    label: u32,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, x) = unsafe { (session(s)?, slice(input, len)?) };
        let x = s.tensors(vec![x.to_vec()]).map_err(err)?;
        s.enrol(x, &class_of(label)?).map_err(err)
    })
}

/// [`et_enrol_example`] of a camera frame (see [`et_example_image`]).
///
/// # Safety
/// As [`et_example_image`].
#[no_mangle]
pub unsafe extern "C" fn et_enrol_image(
    s: *mut EtSession,
    px: *const u8,
    len: usize,
    format: u32,
    w: usize,
    h: usize,
    stride: usize,
    rotation: u32,
    label: u32,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, px) = unsafe { (session(s)?, slice(px, len)?) };
        let x = s
            .frame(px, pixel_format(format)?, w, h, stride, rotation)
            .map_err(err)?;
        s.enrol(x, &class_of(label)?).map_err(err)
    })
}

/// Runs an example through the backbone and caches its taps without a label: at the next
/// training `ncm` refines its prototypes by soft k-means over the unlabeled examples,
/// `linear` and `moment` self-train on confident pseudo-labels; the other methods refuse
/// them (`ET_STATUS_INVALID_ARGUMENT` from training) until [`et_clear_unlabeled`].
///
/// # Safety
/// `s` is a live session; `x` a live example.
#[no_mangle]
pub unsafe extern "C" fn et_add_unlabeled_example(
    s: *mut EtSession,
    x: *const EtExample,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, x) = unsafe { (session(s)?, example(x)?) };
        s.add_unlabeled(x.clone()).map_err(err)
    })
}

/// [`et_add_unlabeled_example`] of one preprocessed input tensor (`len` = `et_input_len`).
///
/// # Safety
/// `s` is a live session; `input` has `len` floats.
#[no_mangle]
pub unsafe extern "C" fn et_add_unlabeled(
    s: *mut EtSession,
    input: *const f32,
    len: usize,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, x) = unsafe { (session(s)?, slice(input, len)?) };
        let x = s.tensors(vec![x.to_vec()]).map_err(err)?;
        s.add_unlabeled(x).map_err(err)
    })
}

/// [`et_add_unlabeled_example`] of a camera frame (see [`et_example_image`]).
///
/// # Safety
/// As [`et_example_image`].
#[no_mangle]
pub unsafe extern "C" fn et_add_unlabeled_image(
    s: *mut EtSession,
    px: *const u8,
    len: usize,
    format: u32,
    w: usize,
    h: usize,
    stride: usize,
    rotation: u32,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, px) = unsafe { (session(s)?, slice(px, len)?) };
        let x = s
            .frame(px, pixel_format(format)?, w, h, stride, rotation)
            .map_err(err)?;
        s.add_unlabeled(x).map_err(err)
    })
}

/// Forgets every unlabeled example.
///
/// # Safety
/// `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn et_clear_unlabeled(s: *mut EtSession) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let s = unsafe { session(s)? };
        s.clear_unlabeled();
        Ok(())
    })
}

/// Drops every example of `label`; a trained or loaded adapter forgets the class
/// without training (the other classes score as before; an int8 tail is rebuilt from
/// its stored activation ranges). An adapter left with one class is dropped.
///
/// # Safety
/// `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn et_remove_class(s: *mut EtSession, label: u32) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        s.remove_class(&class_of(label)?).map_err(err)
    })
}

/// Progress callback: step, steps, loss, accuracy, user pointer. Non-zero cancels.
pub type EtProgress = Option<unsafe extern "C" fn(u32, u32, f32, f32, *mut c_void) -> i32>;

/// Trains the chosen method on the enrolled examples (at least two classes).
///
/// # Safety
/// `s` is a live session; `cb`, when set, is callable with `user`.
#[no_mangle]
pub unsafe extern "C" fn et_train(
    s: *mut EtSession,
    seed: u64,
    cb: EtProgress,
    user: *mut c_void,
) -> EtStatus {
    // SAFETY: forwarded caller promise.
    unsafe { train(s, seed, cb, user, false) }
}

/// [`et_train`] continuing from the adapter trained before, after classes were added
/// (`Session::fit_warm`): every trained method (linear, moment, ladder, query, tail, bias,
/// lora) keeps what it learned and runs a quarter of the steps; otherwise a full training.
///
/// # Safety
/// `s` is a live session; `cb`, when set, is callable with `user`.
#[no_mangle]
pub unsafe extern "C" fn et_train_warm(
    s: *mut EtSession,
    seed: u64,
    cb: EtProgress,
    user: *mut c_void,
) -> EtStatus {
    // SAFETY: forwarded caller promise.
    unsafe { train(s, seed, cb, user, true) }
}

/// # Safety
/// As [`et_train`].
unsafe fn train(
    s: *mut EtSession,
    seed: u64,
    cb: EtProgress,
    user: *mut c_void,
    warm: bool,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        s.set_seed(seed);
        let mut progress = |p: &Progress| match cb {
            // SAFETY: the caller promises `cb` is callable with `user`.
            Some(f) => unsafe { f(p.step as u32, p.steps as u32, p.loss, p.accuracy, user) == 0 },
            None => true,
        };
        let fitted = if warm {
            s.fit_warm(&mut progress)
        } else {
            s.fit(&mut progress)
        };
        fitted.map(|_| ()).map_err(err)
    })
}

fn top_k(
    s: &mut Session,
    x: &Sample,
    k: u32,
    classes: *mut u32,
    scores: *mut f32,
) -> Result<(), (EtStatus, String)> {
    if classes.is_null() || scores.is_null() || k == 0 {
        return Err(arg("null output or k = 0"));
    }
    let top = s.predict(x, k as usize).map_err(err)?;
    for (r, &(c, sc)) in top.iter().enumerate() {
        let label = s
            .class_name(c)
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| arg("the adapter's classes are not integer labels"))?;
        // SAFETY: the caller promises `k` slots in both outputs; r < k.
        unsafe {
            *classes.add(r) = label;
            *scores.add(r) = sc;
        }
    }
    Ok(())
}

/// Top-`k` labels of an example, best first (fewer when there are fewer classes).
///
/// # Safety
/// `s` is a live session; `x` a live example; `classes` and `scores` have `k` slots.
#[no_mangle]
pub unsafe extern "C" fn et_predict_example(
    s: *mut EtSession,
    x: *const EtExample,
    k: u32,
    classes: *mut u32,
    scores: *mut f32,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, x) = unsafe { (session(s)?, example(x)?) };
        top_k(s, x, k, classes, scores)
    })
}

/// Top-`k` labels of one preprocessed input tensor, best first.
///
/// # Safety
/// `s` is a live session; `input` has `len` floats; `classes` and `scores` have `k` slots.
#[no_mangle]
pub unsafe extern "C" fn et_predict(
    s: *mut EtSession,
    input: *const f32,
    len: usize,
    k: u32,
    classes: *mut u32,
    scores: *mut f32,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, x) = unsafe { (session(s)?, slice(input, len)?) };
        let x = s.tensors(vec![x.to_vec()]).map_err(err)?;
        top_k(s, &x, k, classes, scores)
    })
}

/// Top-`k` labels of a camera frame (see [`et_example_image`]).
///
/// # Safety
/// As [`et_example_image`]; `classes` and `scores` have `k` slots.
#[no_mangle]
pub unsafe extern "C" fn et_predict_image(
    s: *mut EtSession,
    px: *const u8,
    len: usize,
    format: u32,
    w: usize,
    h: usize,
    stride: usize,
    rotation: u32,
    k: u32,
    classes: *mut u32,
    scores: *mut f32,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, px) = unsafe { (session(s)?, slice(px, len)?) };
        let x = s
            .frame(px, pixel_format(format)?, w, h, stride, rotation)
            .map_err(err)?;
        top_k(s, &x, k, classes, scores)
    })
}

/// Writes the adapter atomically (temporary file, fsync, rename).
///
/// # Safety
/// `s` is a live session; `path` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn et_save_adapter(s: *mut EtSession, path: *const c_char) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, p) = unsafe { (session(s)?, cstr(path)?) };
        s.save(std::path::Path::new(p)).map_err(err)
    })
}

/// Loads an adapter from `len` bytes; refused if it was trained on another plan. Switches
/// the session to the adapter's method.
///
/// # Safety
/// `s` is a live session; `bytes` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn et_load_adapter_bytes(
    s: *mut EtSession,
    bytes: *const u8,
    len: usize,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, data) = unsafe { (session(s)?, slice(bytes, len)?) };
        s.load_adapter_bytes(data).map_err(err)
    })
}

/// Loads an adapter file; see [`et_load_adapter_bytes`].
///
/// # Safety
/// `s` is a live session; `path` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn et_load_adapter(s: *mut EtSession, path: *const c_char) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, p) = unsafe { (session(s)?, cstr(path)?) };
        s.load_adapter(std::path::Path::new(p)).map_err(err)
    })
}

/// Writes the ONNX model at `onnx_path` (the one the session's plan was compiled from)
/// with the trained head appended as an output `scores` to `out_path`, atomically (ncm,
/// linear and moment heads). Only in a library built with the importer (feature `onnx`,
/// `ET_WITH_ONNX` in C); the Android and iOS libraries are built without it.
///
/// # Safety
/// `s` is a live session; `onnx_path` and `out_path` are NUL-terminated strings.
#[cfg(feature = "onnx")]
#[no_mangle]
pub unsafe extern "C" fn et_export_onnx(
    s: *mut EtSession,
    onnx_path: *const c_char,
    out_path: *const c_char,
) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, src, dst) = unsafe { (session(s)?, cstr(onnx_path)?, cstr(out_path)?) };
        let model = std::fs::read(src).map_err(|e| (EtStatus::Io, format!("{src}: {e}")))?;
        let bytes = s.export_onnx(&model).map_err(err)?;
        edgetune::fsutil::write_atomic(std::path::Path::new(dst), &bytes).map_err(err)
    })
}

/// Pixel layouts of `et_example_image` and friends (pass the value as `uint32_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtPixelFormat {
    Rgb = 0,
    Rgba = 1,
    Bgra = 2,
    Grey = 3,
    /// YUV 4:2:0: Y plane, then interleaved V,U rows (Android camera).
    Nv21 = 4,
    /// YUV 4:2:0: Y plane, then interleaved U,V rows.
    Nv12 = 5,
    Bgr = 6,
}

/// A C caller's format value: an `EtPixelFormat`, checked (any other value is refused).
fn pixel_format(v: u32) -> Result<PixelFormat, (EtStatus, String)> {
    PixelFormat::from_u32(v).ok_or_else(|| arg("unknown pixel format (see EtPixelFormat)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C enum's values are the library's.
    #[test]
    fn pixel_format_values_match_the_library() {
        for (c, l) in [
            (EtPixelFormat::Rgb, PixelFormat::Rgb),
            (EtPixelFormat::Rgba, PixelFormat::Rgba),
            (EtPixelFormat::Bgra, PixelFormat::Bgra),
            (EtPixelFormat::Grey, PixelFormat::Grey),
            (EtPixelFormat::Nv21, PixelFormat::Nv21),
            (EtPixelFormat::Nv12, PixelFormat::Nv12),
            (EtPixelFormat::Bgr, PixelFormat::Bgr),
        ] {
            assert_eq!(pixel_format(c as u32), Ok(l));
        }
        assert!(pixel_format(7).is_err());
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn sessions_and_examples_are_send() {
        assert_send::<EtSession>();
        assert_send::<EtExample>();
    }
}
