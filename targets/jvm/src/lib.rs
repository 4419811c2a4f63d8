//! JVM binding of edgetune (Kotlin, Java, Android): the native half of the `edgetune`
//! package in `targets/jvm/kotlin`, a thin JNI layer over [`edgetune::Session`] (the one
//! flow every front end calls).
//!
//! Every native method is a static method of `edgetune.Native` taking the session's
//! handle (a `Box<Mutex<Session>>` as a `long`). Errors of the library, JNI errors and
//! panics become a thrown `edgetune.EdgetuneException` carrying the library's message;
//! an exception thrown by a progress listener cancels the fit and reaches the caller
//! unchanged.
//!
//! Pixels arrive either as a `byte[]` (copied once) or as a direct `java.nio.ByteBuffer`
//! (read in place): an offset and a length select the frame inside either.

use edgetune::adapt::train::Progress;
use edgetune::adapt::Kind;
use edgetune::frame::PixelFormat;
use edgetune::session::{Sample, Serve, Session};
use jni::errors::ErrorPolicy;
use jni::objects::{JByteArray, JByteBuffer, JClass, JFloatArray, JObject, JObjectArray, JString};
use jni::sys::{jboolean, jint, jlong};
use jni::{jni_sig, jni_str, Env, EnvUnowned, JValue};
use std::path::Path;
use std::sync::Mutex;

/// Why a native call failed.
#[derive(Debug)]
enum Fail {
    /// The library's (or this layer's) message: thrown as `EdgetuneException`.
    Msg(String),
    /// A JNI call failed (a Java exception may be pending: it is kept).
    Jni(jni::errors::Error),
}

impl From<jni::errors::Error> for Fail {
    fn from(e: jni::errors::Error) -> Self {
        Fail::Jni(e)
    }
}

impl From<edgetune::Error> for Fail {
    fn from(e: edgetune::Error) -> Self {
        Fail::Msg(e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> Fail {
    Fail::Msg(msg.into())
}

type R<T> = Result<T, Fail>;

/// Throws `edgetune.EdgetuneException` (unless a Java exception is already pending, such
/// as one thrown by a progress listener) and returns the default value.
struct Throw;

fn throw(env: &mut Env<'_>, msg: &str) {
    // A failure to throw leaves the JVM's own exception (e.g. NoClassDefFoundError)
    // pending, which reaches the caller instead.
    let _ = env.throw_new(
        jni_str!("edgetune/EdgetuneException"),
        jni::strings::JNIString::new(msg),
    );
}

impl<T: Default> ErrorPolicy<T, Fail> for Throw {
    type Captures<'unowned_env_local: 'native_method, 'native_method> = ();

    fn on_error<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _cap: &mut (),
        err: Fail,
    ) -> jni::errors::Result<T> {
        if !env.exception_check() {
            match err {
                Fail::Msg(m) => throw(env, &m),
                Fail::Jni(e) => throw(env, &format!("JNI: {e}")),
            }
        }
        Ok(T::default())
    }

    fn on_panic<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _cap: &mut (),
        payload: Box<dyn std::any::Any + Send + 'static>,
    ) -> jni::errors::Result<T> {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // The payload is dropped here, inside the policy's own catch_unwind.
        drop(payload);
        if !env.exception_check() {
            throw(
                env,
                &format!("internal error (panic caught at the JNI boundary): {what}"),
            );
        }
        Ok(T::default())
    }
}

type Handle = Mutex<Session>;

/// The session behind `h`, locked for this call. A second call on the same session while
/// one runs (only possible from its own progress listener: the Kotlin class serialises
/// its methods) is refused rather than aliased.
fn with_session<T>(h: jlong, f: impl FnOnce(&mut Session) -> R<T>) -> R<T> {
    if h == 0 {
        return Err(bad("the Session is closed"));
    }
    // SAFETY: a non-zero handle comes from `open` (Box::into_raw) and the Kotlin class
    // frees it only in `close`, after which it passes 0; its methods are synchronised, so
    // no call runs while `close` frees it.
    let m: &Handle = unsafe { &*(h as *const Handle) };
    let mut g = match m.try_lock() {
        Ok(g) => g,
        // A panic in an earlier call (thrown as EdgetuneException) leaves the session as
        // the library left it: keep using it.
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            return Err(bad(
                "the Session is busy (called again from its own progress listener)",
            ))
        }
    };
    f(&mut g)
}

fn string(env: &Env<'_>, s: &JString<'_>, what: &str) -> R<String> {
    if s.is_null() {
        return Err(bad(format!("{what} is null")));
    }
    Ok(s.try_to_string(env)?)
}

fn kind_of(name: &str) -> R<Kind> {
    Kind::parse(name).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        bad(format!(
            "unknown method '{name}' (one of {})",
            all.join(", ")
        ))
    })
}

fn open_session(plan: &[u8], adapter: Option<&[u8]>) -> R<jlong> {
    let mut s = Session::from_bytes(plan)?;
    if let Some(a) = adapter {
        s.load_adapter_bytes(a)?;
    }
    Ok(Box::into_raw(Box::new(Mutex::new(s))) as jlong)
}

/// `Native.open(planPath, adapterPath?)`: a new session's handle.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_open<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    plan: JString<'l>,
    adapter: JString<'l>,
) -> jlong {
    env.with_env(|env| -> R<jlong> {
        let plan = string(env, &plan, "the plan path")?;
        let mut s = Session::open(Path::new(&plan))?;
        if !adapter.is_null() {
            let a = adapter.try_to_string(env)?;
            s.load_adapter(Path::new(&a))?;
        }
        Ok(Box::into_raw(Box::new(Mutex::new(s))) as jlong)
    })
    .resolve::<Throw>()
}

/// `Native.openBytes(plan, adapter?)`: a session on a plan (and adapter) held in memory,
/// e.g. read from an Android asset.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_openBytes<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    plan: JByteArray<'l>,
    adapter: JByteArray<'l>,
) -> jlong {
    env.with_env(|env| -> R<jlong> {
        if plan.is_null() {
            return Err(bad("the plan bytes are null"));
        }
        let plan = env.convert_byte_array(&plan)?;
        let adapter = if adapter.is_null() {
            None
        } else {
            Some(env.convert_byte_array(&adapter)?)
        };
        open_session(&plan, adapter.as_deref())
    })
    .resolve::<Throw>()
}

/// `Native.free(handle)`: drops the session (0 is ignored).
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_free<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    h: jlong,
) {
    env.with_env(|_env| -> R<()> {
        if h != 0 {
            // SAFETY: `h` comes from Box::into_raw in `open`; the Kotlin class calls free
            // once, then forgets the handle.
            drop(unsafe { Box::from_raw(h as *mut Handle) });
        }
        Ok(())
    })
    .resolve::<Throw>()
}

/// Pixels of one frame: a copy of a `byte[]` region or a direct buffer's bytes in place.
enum Pixels<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
}

impl Pixels<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Pixels::Owned(v) => v,
            Pixels::Borrowed(s) => s,
        }
    }
}

fn region(off: jint, len: jint, cap: usize) -> R<(usize, usize)> {
    let (o, n) = (usize::try_from(off), usize::try_from(len));
    match (o, n) {
        (Ok(o), Ok(n)) if o.checked_add(n).is_some_and(|e| e <= cap) => Ok((o, n)),
        _ => Err(bad(format!(
            "pixel region at offset {off} of {len} bytes lies outside the {cap}-byte buffer"
        ))),
    }
}

/// Reads the frame from `arr[off..off+len]` or `buf[off..off+len]` (exactly one is set).
fn pixels<'b>(
    env: &Env<'_>,
    arr: &JByteArray<'_>,
    buf: &'b JByteBuffer<'_>,
    off: jint,
    len: jint,
) -> R<Pixels<'b>> {
    if !arr.is_null() {
        let all = env.convert_byte_array(arr)?;
        let (o, n) = region(off, len, all.len())?;
        return Ok(Pixels::Owned(if o == 0 && n == all.len() {
            all
        } else {
            all[o..o + n].to_vec()
        }));
    }
    if buf.is_null() {
        return Err(bad("the pixels are null"));
    }
    let addr = env
        .get_direct_buffer_address(buf)
        .map_err(|_| bad("the ByteBuffer is not direct (pass a byte[] or a direct buffer)"))?;
    let cap = env.get_direct_buffer_capacity(buf)?;
    let (o, n) = region(off, len, cap)?;
    if n == 0 {
        return Ok(Pixels::Borrowed(&[]));
    }
    // SAFETY: a direct buffer's memory holds `cap` bytes at `addr` and stays valid while
    // the buffer object is referenced, which the caller's local reference `buf` (borrowed
    // for 'b) guarantees for the duration of this native call; o + n <= cap.
    Ok(Pixels::Borrowed(unsafe {
        std::slice::from_raw_parts(addr.add(o), n)
    }))
}

/// The frame as a library sample (the library checks the size against the format).
#[allow(clippy::too_many_arguments)]
fn frame(
    s: &Session,
    px: &Pixels<'_>,
    format: jint,
    w: jint,
    h: jint,
    stride: jint,
    rotation: jint,
) -> R<Sample> {
    let f = u32::try_from(format)
        .ok()
        .and_then(PixelFormat::from_u32)
        .ok_or_else(|| bad(format!("pixel format {format}: unknown")))?;
    let dim = |v: jint, what: &str| {
        usize::try_from(v).map_err(|_| bad(format!("{what} {v}: must not be negative")))
    };
    let rot = u32::try_from(rotation).map_err(|_| {
        bad(format!(
            "rotation {rotation}: must be 0, 90, 180 or 270 degrees"
        ))
    })?;
    Ok(s.frame(
        px.bytes(),
        f,
        dim(w, "width")?,
        dim(h, "height")?,
        dim(stride, "stride")?,
        rot,
    )?)
}

/// `Native.enrol(handle, arr?, buf?, off, len, format, w, h, stride, rotation, label)`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_edgetune_Native_enrol<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
    arr: JByteArray<'l>,
    buf: JByteBuffer<'l>,
    off: jint,
    len: jint,
    format: jint,
    w: jint,
    h: jint,
    stride: jint,
    rotation: jint,
    label: JString<'l>,
) {
    env.with_env(|env| -> R<()> {
        let label = string(env, &label, "the label")?;
        let px = pixels(env, &arr, &buf, off, len)?;
        with_session(handle, |s| {
            let x = frame(s, &px, format, w, h, stride, rotation)?;
            Ok(s.enrol(x, &label)?)
        })
    })
    .resolve::<Throw>()
}

/// `Native.predict(...)`: the top `top` classes, best first; their names are written to
/// `labels` (length `top`) and their scores returned.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_edgetune_Native_predict<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
    arr: JByteArray<'l>,
    buf: JByteBuffer<'l>,
    off: jint,
    len: jint,
    format: jint,
    w: jint,
    h: jint,
    stride: jint,
    rotation: jint,
    top: jint,
    labels: JObjectArray<'l, JString<'l>>,
) -> JFloatArray<'l> {
    env.with_env(|env| -> R<JFloatArray<'l>> {
        let k = usize::try_from(top)
            .ok()
            .filter(|&k| k > 0)
            .ok_or_else(|| bad(format!("top {top}: must be at least 1")))?;
        if labels.is_null() || labels.len(env)? < k {
            return Err(bad("the label array is shorter than top"));
        }
        let px = pixels(env, &arr, &buf, off, len)?;
        let best = with_session(handle, |s| {
            let x = frame(s, &px, format, w, h, stride, rotation)?;
            let best = s.predict(&x, k)?;
            Ok(best
                .into_iter()
                .map(|(c, sc)| (s.class_name(c).unwrap_or("?").to_string(), sc))
                .collect::<Vec<_>>())
        })?;
        let scores: Vec<f32> = best.iter().map(|b| b.1).collect();
        for (i, (name, _)) in best.iter().enumerate() {
            let js = JString::from_str(env, name)?;
            labels.set_element(env, i, &js)?;
        }
        let out = JFloatArray::new(env, scores.len())?;
        out.set_region(env, 0, &scores)?;
        Ok(out)
    })
    .resolve::<Throw>()
}

/// `Native.fit(handle, method?, steps, seed, int8, listener?)`: trains on everything
/// enrolled. Returns [params, steps, examples, cache bytes, adapter bytes, peak bytes,
/// loss, accuracy] (loss and accuracy NaN for methods without steps).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_edgetune_Native_fit<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
    method: JString<'l>,
    steps: jint,
    seed: jlong,
    int8: jboolean,
    listener: JObject<'l>,
) -> jni::objects::JDoubleArray<'l> {
    env.with_env(|env| -> R<jni::objects::JDoubleArray<'l>> {
        let kind = if method.is_null() {
            None
        } else {
            Some(kind_of(&method.try_to_string(env)?)?)
        };
        let steps = usize::try_from(steps)
            .map_err(|_| bad(format!("steps {steps}: must not be negative")))?;
        let f = with_session(handle, |s| {
            if let Some(k) = kind {
                s.set_method(k)?;
            }
            s.opts.steps = (steps > 0).then_some(steps);
            s.opts.serve = if int8 { Serve::Int8 } else { Serve::Float };
            s.set_seed(seed as u64);
            let mut progress = |p: &Progress| -> bool {
                if listener.is_null() {
                    return true;
                }
                let r = env.call_method(
                    &listener,
                    jni_str!("onProgress"),
                    jni_sig!("(IIFF)Z"),
                    &[
                        JValue::Int(p.step as jint),
                        JValue::Int(p.steps as jint),
                        JValue::Float(p.loss),
                        JValue::Float(p.accuracy),
                    ],
                );
                // An exception thrown by the listener stays pending and cancels the fit.
                r.and_then(|v| v.z()).unwrap_or(false)
            };
            Ok(s.fit(&mut progress)?)
        })?;
        // A listener that threw during a method that reports once and does not cancel
        // (linear, moment): its exception is still pending and goes to the caller.
        if env.exception_check() {
            return Err(Fail::Jni(jni::errors::Error::JavaException));
        }
        let (loss, acc) = f
            .last
            .map(|(l, a)| (l as f64, a as f64))
            .unwrap_or((f64::NAN, f64::NAN));
        let v = [
            f.params as f64,
            f.steps as f64,
            f.examples as f64,
            f.cache_bytes as f64,
            f.adapter_bytes as f64,
            f.memory.peak as f64,
            loss,
            acc,
        ];
        let out = jni::objects::JDoubleArray::new(env, v.len())?;
        out.set_region(env, 0, &v)?;
        Ok(out)
    })
    .resolve::<Throw>()
}

/// `Native.save(handle, path)`: writes the adapter atomically.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_save<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
    path: JString<'l>,
) {
    env.with_env(|env| -> R<()> {
        let p = string(env, &path, "the path")?;
        with_session(handle, |s| Ok(s.save(Path::new(&p))?))
    })
    .resolve::<Throw>()
}

/// `Native.loadAdapter(handle, path)`: its method and classes take over.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_loadAdapter<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
    path: JString<'l>,
) {
    env.with_env(|env| -> R<()> {
        let p = string(env, &path, "the path")?;
        with_session(handle, |s| Ok(s.load_adapter(Path::new(&p))?))
    })
    .resolve::<Throw>()
}

/// `Native.removeClass(handle, label)`: drops a class and refits a trained adapter.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_removeClass<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
    label: JString<'l>,
) {
    env.with_env(|env| -> R<()> {
        let l = string(env, &label, "the label")?;
        with_session(handle, |s| Ok(s.remove_class(&l)?))
    })
    .resolve::<Throw>()
}

/// `Native.setMethod(handle, method)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_setMethod<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
    method: JString<'l>,
) {
    env.with_env(|env| -> R<()> {
        let k = kind_of(&string(env, &method, "the method")?)?;
        with_session(handle, |s| Ok(s.set_method(k)?))
    })
    .resolve::<Throw>()
}

/// `Native.method(handle)`: the current method's name.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_method<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
) -> JString<'l> {
    env.with_env(|env| -> R<JString<'l>> {
        let m = with_session(handle, |s| Ok(s.method().name()))?;
        Ok(JString::from_str(env, m)?)
    })
    .resolve::<Throw>()
}

/// `Native.classes(handle)`: class names in label order (the adapter's once one is
/// trained or loaded).
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_classes<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
) -> JObjectArray<'l, JString<'l>> {
    env.with_env(|env| -> R<JObjectArray<'l, JString<'l>>> {
        let names = with_session(handle, |s| {
            Ok(match s.adapter() {
                Some(a) => a.classes.clone(),
                None => s.classes().to_vec(),
            })
        })?;
        let out = JObjectArray::<JString>::new(env, names.len(), JString::null())?;
        for (i, n) in names.iter().enumerate() {
            let js = JString::from_str(env, n)?;
            out.set_element(env, i, &js)?;
        }
        Ok(out)
    })
    .resolve::<Throw>()
}

/// `Native.examples(handle)`: examples enrolled.
#[unsafe(no_mangle)]
pub extern "system" fn Java_edgetune_Native_examples<'l>(
    mut env: EnvUnowned<'l>,
    _c: JClass<'l>,
    handle: jlong,
) -> jint {
    env.with_env(|_env| -> R<jint> { with_session(handle, |s| Ok(s.examples() as jint)) })
        .resolve::<Throw>()
}
