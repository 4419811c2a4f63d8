//! edgetune as a WebAssembly module for a web page: one [`Session`] per module instance
//! (the page's Web Worker holds it), driven by plain `extern "C"` functions over the
//! module's memory, so no binding generator is needed.
//!
//! Calling convention: JavaScript allocates input buffers with [`et_alloc`], writes into
//! them through a view of `memory`, calls, and frees them with [`et_free`]. Functions
//! return `0` (or a non-negative length) on success and `-1` on failure, with the message
//! in [`et_error`]. Results are JSON text in an output buffer ([`et_out_ptr`],
//! [`et_out_len`]). Training reports each step to the imported `env.et_progress`.

use edgetune::adapt::Kind;
use edgetune::frame::PixelFormat;
use edgetune::Session;
use std::cell::RefCell;
use std::fmt::Write;

struct State {
    session: Option<Session>,
    out: String,
    error: String,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { session: None, out: String::new(), error: String::new() })
    };
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    /// Called after each training step; returns non-zero to cancel.
    fn et_progress(step: u32, steps: u32, loss: f32, accuracy: f32) -> i32;
}

#[cfg(not(target_arch = "wasm32"))]
unsafe fn et_progress(_: u32, _: u32, _: f32, _: f32) -> i32 {
    0
}

/// Runs `f` on the state, turning its error into `-1` and the message.
fn guard(f: impl FnOnce(&mut State) -> Result<i32, String>) -> i32 {
    STATE.with(|st| {
        let mut st = st.borrow_mut();
        match f(&mut st) {
            Ok(v) => v,
            Err(e) => {
                st.error = e;
                -1
            }
        }
    })
}

fn session(st: &mut State) -> Result<&mut Session, String> {
    st.session
        .as_mut()
        .ok_or_else(|| "no plan loaded: call et_open first".to_string())
}

/// `len` bytes at `ptr` of this module's memory.
///
/// # Safety
/// `ptr` points at `len` readable bytes (a buffer from [`et_alloc`]), or `len` is 0.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], String> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err("null buffer".into());
    }
    // SAFETY: the caller's promise above.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// As [`bytes`].
unsafe fn text<'a>(ptr: *const u8, len: usize) -> Result<&'a str, String> {
    // SAFETY: forwarded.
    std::str::from_utf8(unsafe { bytes(ptr, len) }?).map_err(|e| format!("not UTF-8: {e}"))
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A buffer of `len` bytes in this module's memory (freed with [`et_free`]).
#[no_mangle]
pub extern "C" fn et_alloc(len: usize) -> *mut u8 {
    let mut v = std::mem::ManuallyDrop::new(vec![0u8; len.max(1)]);
    v.as_mut_ptr()
}

/// Frees a buffer from [`et_alloc`].
///
/// # Safety
/// `ptr` and `len` are exactly those of one [`et_alloc`] call, freed once.
#[no_mangle]
pub unsafe extern "C" fn et_free(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: the caller's promise: this is the vector `et_alloc` leaked.
        drop(unsafe { Vec::from_raw_parts(ptr, len.max(1), len.max(1)) });
    }
}

/// The message of the last failure (UTF-8, [`et_error_len`] bytes).
#[no_mangle]
pub extern "C" fn et_error() -> *const u8 {
    STATE.with(|st| st.borrow().error.as_ptr())
}

#[no_mangle]
pub extern "C" fn et_error_len() -> usize {
    STATE.with(|st| st.borrow().error.len())
}

/// The last JSON result (UTF-8, [`et_out_len`] bytes).
#[no_mangle]
pub extern "C" fn et_out_ptr() -> *const u8 {
    STATE.with(|st| st.borrow().out.as_ptr())
}

#[no_mangle]
pub extern "C" fn et_out_len() -> usize {
    STATE.with(|st| st.borrow().out.len())
}

/// Opens a plan (`.etm` bytes) with a method (`ncm`, `linear`, ...). The output is
/// `{"ops":N,"kernels":{...},"method":"..."}`.
///
/// # Safety
/// `plan` holds `plan_len` bytes and `method` `method_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn et_open(
    plan: *const u8,
    plan_len: usize,
    method: *const u8,
    method_len: usize,
) -> i32 {
    guard(|st| {
        // SAFETY: forwarded caller promises.
        let (plan, method) = unsafe { (bytes(plan, plan_len)?, text(method, method_len)?) };
        let kind = Kind::parse(method).ok_or_else(|| format!("unknown method '{method}'"))?;
        let mut s = Session::from_bytes(plan).map_err(|e| e.to_string())?;
        s.set_method(kind).map_err(|e| e.to_string())?;
        let k = edgetune::kernels::Kernels::detect();
        let mut o = format!("{{\"ops\":{},\"kernels\":{{", s.plan().ops.len());
        for (i, (fam, name)) in k.describe().iter().enumerate() {
            let _ = write!(
                o,
                "{}{}:{}",
                if i > 0 { "," } else { "" },
                json_str(fam),
                json_str(name)
            );
        }
        let _ = write!(o, "}},\"method\":{}}}", json_str(kind.name()));
        st.out = o;
        st.session = Some(s);
        Ok(0)
    })
}

/// Enrols one RGBA image (`w·h·4` bytes, as a canvas's `getImageData` gives it) under
/// `class`: the plan's preprocessing, the backbone, the tap cache. Returns the number
/// of examples enrolled.
///
/// # Safety
/// `px` holds `w·h·4` bytes and `class` `class_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn et_enrol_rgba(
    px: *const u8,
    w: u32,
    h: u32,
    class: *const u8,
    class_len: usize,
) -> i32 {
    guard(|st| {
        let n = (w as usize)
            .checked_mul(h as usize)
            .and_then(|v| v.checked_mul(4))
            .ok_or("image size overflows")?;
        // SAFETY: forwarded caller promises.
        let (px, class) = unsafe { (bytes(px, n)?, text(class, class_len)?) };
        let s = session(st)?;
        let x = s
            .frame(px, PixelFormat::Rgba, w as usize, h as usize, 0, 0)
            .map_err(|e| e.to_string())?;
        s.enrol(x, class).map_err(|e| e.to_string())?;
        Ok(s.examples() as i32)
    })
}

/// Trains the session's method on everything enrolled (seed `seed`), reporting each
/// step to `env.et_progress`. The output is `{"steps":N,"params":N,"loss":x|null}`.
#[no_mangle]
pub extern "C" fn et_fit(seed: u32) -> i32 {
    guard(|st| {
        let s = session(st)?;
        s.set_seed(seed as u64);
        let fit = s
            .fit(&mut |p| {
                // SAFETY: an imported JavaScript function taking and returning numbers.
                unsafe { et_progress(p.step as u32, p.steps as u32, p.loss, p.accuracy) == 0 }
            })
            .map_err(|e| e.to_string())?;
        let loss = match fit.last {
            Some((l, _)) if l.is_finite() => format!("{l}"),
            _ => "null".into(),
        };
        st.out = format!(
            "{{\"steps\":{},\"params\":{},\"examples\":{},\"loss\":{loss}}}",
            fit.steps, fit.params, fit.examples
        );
        Ok(0)
    })
}

/// The `top` best classes of one RGBA image, best first:
/// `{"top":[{"class":"...","score":x},...]}`.
///
/// # Safety
/// `px` holds `w·h·4` bytes.
#[no_mangle]
pub unsafe extern "C" fn et_predict_rgba(px: *const u8, w: u32, h: u32, top: u32) -> i32 {
    guard(|st| {
        let n = (w as usize)
            .checked_mul(h as usize)
            .and_then(|v| v.checked_mul(4))
            .ok_or("image size overflows")?;
        // SAFETY: forwarded caller promise.
        let px = unsafe { bytes(px, n) }?;
        let s = session(st)?;
        let x = s
            .frame(px, PixelFormat::Rgba, w as usize, h as usize, 0, 0)
            .map_err(|e| e.to_string())?;
        let best = s
            .predict(&x, top.max(1) as usize)
            .map_err(|e| e.to_string())?;
        let mut o = String::from("{\"top\":[");
        for (i, (c, score)) in best.iter().enumerate() {
            let name = s.class_name(*c).unwrap_or("?");
            let _ = write!(
                o,
                "{}{{\"class\":{},\"score\":{score}}}",
                if i > 0 { "," } else { "" },
                json_str(name)
            );
        }
        o.push_str("]}");
        st.out = o;
        Ok(0)
    })
}
