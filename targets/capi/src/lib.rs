//! C ABI of edgetune for apps: open a plan, enrol labelled examples into the tap cache,
//! train an adapter with a progress callback, predict, save and load adapters.
//!
//! Every function returns an [`EtStatus`]; on failure `et_last_error` gives the message.
//! No panic crosses the boundary: each entry point catches it and returns
//! `ET_ERR_PANIC`.

use edgetune::adapt::cache::{CacheFormat, TapCache};
use edgetune::adapt::heads::TapDims;
use edgetune::adapt::train::Progress;
use edgetune::adapt::{self, Adapter, Kind, Method, Spec};
use edgetune::features::{default_taps, TapReader};
use edgetune::plan::{AlignedBytes, Plan, DEFAULT_ARENA_LIMIT};
use edgetune::preprocess::ImagePrep;
use edgetune::{Error, Executor};
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

/// A plan with its executor, tap cache and adapter. Opaque to C.
pub struct EtSession {
    // `reader` borrows `plan`; it is declared first so that it is dropped first.
    reader: Option<TapReader<'static, 'static>>,
    plan: Box<Plan<'static>>,
    kind: Kind,
    taps: Vec<String>,
    cache: Option<TapCache>,
    bufs: Vec<Vec<f32>>,
    adapter: Option<Adapter>,
}

impl EtSession {
    fn new(plan: Plan<'static>) -> Result<Box<EtSession>, Error> {
        let mut s = Box::new(EtSession {
            reader: None,
            plan: Box::new(plan),
            kind: Kind::Linear,
            taps: Vec::new(),
            cache: None,
            bufs: Vec::new(),
            adapter: None,
        });
        // SAFETY: the plan lives in its own Box owned by the session and is never moved
        // or replaced while `reader` (which borrows it) exists; `reader` is dropped
        // before `plan` (field order), so the borrow never outlives the plan.
        let plan: &'static Plan<'static> = unsafe { &*(s.plan.as_ref() as *const Plan<'static>) };
        s.set_method(Kind::Linear, plan)?;
        Ok(s)
    }

    fn set_method(&mut self, kind: Kind, plan: &'static Plan<'static>) -> Result<(), Error> {
        let taps = default_taps(plan, kind);
        let exec = Executor::new(
            plan,
            edgetune::kernels::Kernels::detect(),
            DEFAULT_ARENA_LIMIT,
        )?;
        let reader = TapReader::new(exec, &taps)?;
        self.bufs = reader.shapes.iter().map(|s| vec![0.0; s.len()]).collect();
        self.cache = Some(TapCache::new(CacheFormat::F16, reader.shapes.clone()));
        self.reader = Some(reader);
        self.kind = kind;
        self.taps = taps;
        Ok(())
    }

    fn plan_static(&self) -> &'static Plan<'static> {
        // SAFETY: as in `new`: the boxed plan outlives every borrow handed out here,
        // which are only stored in `self.reader`.
        unsafe { &*(self.plan.as_ref() as *const Plan<'static>) }
    }

    fn run(&mut self, input: &[f32]) -> Result<(), Error> {
        let r = self.reader.as_mut().ok_or_else(|| Error::Invalid {
            what: "no plan".into(),
        })?;
        r.run(input, &mut self.bufs)
    }
}

unsafe fn session<'a>(s: *mut EtSession) -> Result<&'a mut EtSession, (EtStatus, String)> {
    // SAFETY: the caller passes a pointer from `et_open_*` that it has not freed.
    unsafe { s.as_mut() }.ok_or_else(|| arg("null session"))
}

unsafe fn floats<'a>(p: *const f32, n: usize) -> Result<&'a [f32], (EtStatus, String)> {
    if p.is_null() {
        return Err(arg("null input"));
    }
    // SAFETY: the caller promises `n` readable floats at `p`.
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

/// The message of the last failed call on this thread (valid until the next call).
#[no_mangle]
pub extern "C" fn et_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
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
        if bytes.is_null() || out.is_null() {
            return Err(arg("null pointer"));
        }
        // SAFETY: the caller promises `len` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(bytes, len) };
        let plan = Plan::from_owned(AlignedBytes::from_slice(data)).map_err(err)?;
        let s = EtSession::new(plan).map_err(err)?;
        // SAFETY: `out` is non-null and writable (checked / promised).
        unsafe { *out = Box::into_raw(s) };
        Ok(())
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
        if out.is_null() {
            return Err(arg("null out"));
        }
        let data = std::fs::read(p).map_err(|e| (EtStatus::Io, format!("{p}: {e}")))?;
        let plan = Plan::from_owned(AlignedBytes::from_slice(&data)).map_err(err)?;
        let s = EtSession::new(plan).map_err(err)?;
        // SAFETY: `out` is non-null and writable.
        unsafe { *out = Box::into_raw(s) };
        Ok(())
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

/// Length of the f32 input the plan takes (NCHW).
///
/// # Safety
/// `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn et_input_len(s: *mut EtSession, out: *mut usize) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        let p = s.plan_static();
        let t = p.inputs.first().ok_or_else(|| arg("plan has no input"))?;
        if out.is_null() {
            return Err(arg("null out"));
        }
        // SAFETY: non-null, caller-owned.
        unsafe { *out = p.tensors[t.tensor as usize].len() };
        Ok(())
    })
}

/// Turns `w×h` pixels with `channels` interleaved bytes (1 = grey, 3 = RGB) into the
/// plan's input, with the preprocessing the plan declares. `out` holds `et_input_len`.
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
        if px.is_null() || out.is_null() || !(channels == 1 || channels == 3) || w == 0 || h == 0 {
            return Err(arg("bad image arguments"));
        }
        let prep = s
            .plan_static()
            .meta("preprocess")
            .and_then(ImagePrep::parse)
            .ok_or_else(|| arg("plan declares no image preprocessing"))?;
        let n = w
            .checked_mul(h)
            .and_then(|v| v.checked_mul(channels))
            .ok_or_else(|| arg("image too large"))?;
        // SAFETY: the caller promises `w·h·channels` bytes at `px`.
        let pixels = unsafe { std::slice::from_raw_parts(px, n) };
        // The preprocessing takes planar RGB; convert interleaved input.
        let planar: Vec<u8> = if channels == 3 {
            (0..3)
                .flat_map(|c| pixels.iter().skip(c).step_by(3).copied())
                .collect()
        } else {
            pixels.to_vec()
        };
        let mut v = Vec::new();
        prep.apply(&planar, w, h, channels, &mut v);
        if v.len() != out_len {
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

/// Chooses the method (`ncm`, `linear`, `moment`, `ladder`, `query`) and clears the tap
/// cache. Call before enrolling.
///
/// # Safety
/// `s` is a live session; `method` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn et_set_method(s: *mut EtSession, method: *const c_char) -> EtStatus {
    guard(|| {
        // SAFETY: forwarded caller promises.
        let (s, m) = unsafe { (session(s)?, cstr(method)?) };
        let kind = Kind::parse(m)
            .ok_or_else(|| arg("unknown method (ncm, linear, moment, ladder, query)"))?;
        let plan = s.plan_static();
        s.reader = None;
        s.set_method(kind, plan).map_err(err)
    })
}

/// Runs one preprocessed example through the backbone and adds its taps to the cache
/// under class `label`.
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
        let (s, x) = unsafe { (session(s)?, floats(input, len)?) };
        if label > 4096 {
            return Err(arg("label out of range (0..4096)"));
        }
        s.run(x).map_err(err)?;
        let v: Vec<&[f32]> = s.bufs.iter().map(|b| &b[..]).collect();
        let cache = s.cache.as_mut().ok_or_else(|| arg("no cache"))?;
        cache.push(&v, label as usize).map_err(err)
    })
}

/// Progress callback: step, steps, loss, accuracy, user pointer. Non-zero cancels.
pub type EtProgress = Option<unsafe extern "C" fn(u32, u32, f32, f32, *mut c_void) -> i32>;

/// Trains the chosen method on the enrolled examples (labels must be `0..classes`).
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
    guard(|| {
        // SAFETY: forwarded caller promise.
        let s = unsafe { session(s) }?;
        let cache = s.cache.as_ref().ok_or_else(|| arg("no cache"))?;
        let classes = cache.classes();
        let idx: Vec<usize> = (0..cache.len()).collect();
        let sel: Vec<usize> = (0..cache.taps.len()).collect();
        let mut spec = Spec::new(s.kind).seed(seed);
        if s.kind.is_tail() {
            // The tail methods train a float copy of the plan after their cut tap.
            let cut = cache
                .taps
                .first()
                .ok_or_else(|| arg("no cached tap"))?
                .name
                .clone();
            spec = spec.bind_tail(s.plan_static(), &cut).map_err(err)?;
        }
        let mut progress = |p: &Progress| match cb {
            // SAFETY: the caller promises `cb` is callable with `user`.
            Some(f) => unsafe { f(p.step as u32, p.steps as u32, p.loss, p.accuracy, user) == 0 },
            None => true,
        };
        let m = adapt::fit(&spec, cache, &sel, &idx, classes, &mut progress).map_err(err)?;
        s.adapter = Some(Adapter {
            plan_hash: s.plan.hash(),
            taps: cache
                .taps
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        TapDims {
                            tokens: t.tokens,
                            dim: t.dim,
                        },
                    )
                })
                .collect(),
            classes: (0..classes).map(|c| c.to_string()).collect(),
            hyper: vec![("seed".into(), seed.to_string())],
            method: m,
        });
        Ok(())
    })
}

/// Top-`k` classes of one preprocessed example, best first.
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
        let (s, x) = unsafe { (session(s)?, floats(input, len)?) };
        if classes.is_null() || scores.is_null() || k == 0 {
            return Err(arg("null output or k = 0"));
        }
        let a = s
            .adapter
            .as_ref()
            .ok_or_else(|| arg("no adapter: train or load one first"))?;
        let names: Vec<&str> = a.taps.iter().map(|t| t.0.as_str()).collect();
        if names != s.taps.iter().map(|t| t.as_str()).collect::<Vec<_>>() {
            return Err(arg(
                "the adapter reads other taps than the session's method; call et_set_method",
            ));
        }
        let dims: Vec<TapDims> = a.taps.iter().map(|t| t.1).collect();
        let mut sc = vec![0.0; a.classes.len()];
        s.run(x).map_err(err)?;
        let a = s.adapter.as_ref().ok_or_else(|| arg("no adapter"))?;
        let v: Vec<&[f32]> = s.bufs.iter().map(|b| &b[..]).collect();
        a.method.scores(&v, &dims, &mut sc).map_err(err)?;
        let mut order: Vec<usize> = (0..sc.len()).collect();
        order.sort_by(|&i, &j| sc[j].total_cmp(&sc[i]));
        let k = (k as usize).min(order.len());
        for (r, &c) in order.iter().take(k).enumerate() {
            // SAFETY: the caller promises `k` slots in both outputs.
            unsafe {
                *classes.add(r) = c as u32;
                *scores.add(r) = sc[c];
            }
        }
        Ok(())
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
        let a = s
            .adapter
            .as_ref()
            .ok_or_else(|| arg("no adapter to save"))?;
        a.save(std::path::Path::new(p)).map_err(err)
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
        let s = unsafe { session(s) }?;
        if bytes.is_null() {
            return Err(arg("null bytes"));
        }
        // SAFETY: the caller promises `len` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(bytes, len) };
        let mut a = Adapter::from_bytes(data, &s.plan.hash()).map_err(err)?;
        let plan = s.plan_static();
        a.bind(plan).map_err(err)?;
        let kind = a.method.kind();
        s.reader = None;
        s.set_method(kind, plan).map_err(err)?;
        s.taps = a.taps.iter().map(|t| t.0.clone()).collect();
        let exec = Executor::new(
            plan,
            edgetune::kernels::Kernels::detect(),
            DEFAULT_ARENA_LIMIT,
        )
        .map_err(err)?;
        let reader = TapReader::new(exec, &s.taps).map_err(err)?;
        s.bufs = reader.shapes.iter().map(|t| vec![0.0; t.len()]).collect();
        s.reader = Some(reader);
        let _: &Method = &a.method;
        s.adapter = Some(a);
        Ok(())
    })
}

/// Loads an adapter file; see [`et_load_adapter_bytes`].
///
/// # Safety
/// `s` is a live session; `path` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn et_load_adapter(s: *mut EtSession, path: *const c_char) -> EtStatus {
    let data = match catch_unwind(|| {
        // SAFETY: forwarded caller promise.
        let p = unsafe { cstr(path) }?;
        std::fs::read(p).map_err(|e| (EtStatus::Io, format!("{p}: {e}")))
    }) {
        Ok(Ok(d)) => d,
        Ok(Err((st, m))) => {
            set_error(&m);
            return st;
        }
        Err(_) => {
            set_error("internal error (panic caught at the C boundary)");
            return EtStatus::Panic;
        }
    };
    // SAFETY: `data` is a live buffer of `data.len()` bytes; `s` is forwarded.
    unsafe { et_load_adapter_bytes(s, data.as_ptr(), data.len()) }
}
