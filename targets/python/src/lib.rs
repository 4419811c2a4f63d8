//! Python binding of edgetune: a thin layer over [`edgetune::Session`] (the one flow every
//! front end calls) plus the plan compiler and the few-shot evaluation.
//!
//! Every call converts its Python arguments while attached to the interpreter, then runs
//! the library with the interpreter released (`Python::detach`), so other Python threads
//! keep running while the backbone or a fit works. A `Session` object holds its library
//! session behind a mutex: one call uses it at a time.
//!
//! What an example `x` becomes (`enrol`, `predict`, `scores`, `add_class`):
//!
//! | `x` | becomes |
//! |---|---|
//! | `os.PathLike` (`pathlib.Path`) | a file of the plan's kind (`Session::load`: image, WAV, text) |
//! | `str` on an image or audio plan | a file path, as above |
//! | `str` on a text plan | the text itself (`Session::text`) |
//! | `numpy.uint8` array `HxW`, `HxWx1` or `HxWx3` | a grey or RGB image (`Session::image`) |
//! | `numpy.uint8` array `HxWx4` | an RGBA image (`Session::frame`, `PixelFormat::Rgba`) |
//! | 1-D `numpy.int16` array | 16 kHz mono audio (`Session::audio`) |
//! | 1-D `numpy.float32` array | 16 kHz mono audio in -1..1 (scaled by 32768, as the C ABI) |
//! | list or tuple of `numpy.float32` arrays | the plan's input tensors (`Session::tensors`) |

use ::edgetune as et;
use et::adapt::train::Progress;
use et::adapt::Kind;
use et::frame::{Image, PixelFormat};
use et::import::{import_bytes, ImportOptions, Taps};
use et::plan::{AlignedBytes, Plan};
use et::preprocess::Preprocess;
use et::session::{Options, Prep, Sample, Serve};
use numpy::PyUntypedArrayMethods;
use numpy::{IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArray};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

create_exception!(
    edgetune,
    EdgetuneError,
    PyValueError,
    "Raised for every error of the library (bad plan or adapter file, input of the wrong \
     kind or shape, non-finite values, a cancelled fit, ...); the message is the library's."
);

fn err(e: et::Error) -> PyErr {
    EdgetuneError::new_err(e.to_string())
}

fn bad(msg: impl Into<String>) -> PyErr {
    EdgetuneError::new_err(msg.into())
}

fn kind_of(name: &str) -> PyResult<Kind> {
    Kind::parse(name).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        bad(format!(
            "unknown method '{name}' (one of {})",
            all.join(", ")
        ))
    })
}

fn read_plan(path: &Path) -> et::Result<Plan<'static>> {
    let data = std::fs::read(path).map_err(|e| et::Error::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    Plan::from_owned(AlignedBytes::from_slice(&data))
}

/// An example as read from Python, before the library turns it into a [`Sample`].
enum Input {
    Path(PathBuf),
    Text(String),
    Image(Image),
    Rgba { px: Vec<u8>, w: usize, h: usize },
    Audio(Vec<f32>),
    Tensors(Vec<Vec<f32>>),
    Example(Sample),
}

fn shape_str(s: &[usize]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("({})", v.join(", "))
}

/// Reads `x` (the module doc's table). `text_plan`: a `str` is text, not a path.
fn read_input(x: &Bound<'_, PyAny>, text_plan: bool) -> PyResult<Input> {
    if let Ok(e) = x.cast::<PyExample>() {
        return Ok(Input::Example(e.get().x.clone()));
    }
    if let Ok(s) = x.cast::<PyString>() {
        let s = s.to_cow()?.into_owned();
        return Ok(if text_plan {
            Input::Text(s)
        } else {
            Input::Path(PathBuf::from(s))
        });
    }
    if let Ok(a) = x.cast::<PyUntypedArray>() {
        return read_array(x, a.shape());
    }
    if x.cast::<PyList>().is_ok() || x.cast::<PyTuple>().is_ok() {
        let mut inputs = Vec::new();
        for (i, t) in x.try_iter()?.enumerate() {
            let t = t?;
            let a = t.cast::<PyArrayDyn<f32>>().map_err(|_| {
                bad(format!(
                    "input tensor {i}: expected a numpy float32 array, got {}",
                    type_name(&t)
                ))
            })?;
            let r = a
                .try_readonly()
                .map_err(|e| bad(format!("input tensor {i}: {e}")))?;
            inputs.push(r.as_array().iter().copied().collect());
        }
        return Ok(Input::Tensors(inputs));
    }
    if x.hasattr("__fspath__")? {
        return Ok(Input::Path(x.extract::<PathBuf>()?));
    }
    Err(bad(format!(
        "cannot use a {} as an example: expected a path (str or os.PathLike), text (str, \
         text plans), a numpy uint8 image (HxW or HxWxC, C in 1, 3, 4), a 1-D numpy int16 or \
         float32 audio array, or a list of float32 input tensors",
        type_name(x)
    )))
}

fn type_name(x: &Bound<'_, PyAny>) -> String {
    x.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn read_array(x: &Bound<'_, PyAny>, shape: &[usize]) -> PyResult<Input> {
    if let Ok(a) = x.cast::<PyArrayDyn<u8>>() {
        let (h, w, c) = match *shape {
            [h, w] => (h, w, 1),
            [h, w, c] if matches!(c, 1 | 3 | 4) => (h, w, c),
            _ => {
                return Err(bad(format!(
                    "a uint8 array is an image of shape HxW or HxWxC with C in 1, 3, 4; got \
                     shape {}",
                    shape_str(shape)
                )))
            }
        };
        let r = a.try_readonly().map_err(|e| bad(e.to_string()))?;
        // Logical (C) order whatever the strides.
        let px: Vec<u8> = r.as_array().iter().copied().collect();
        return Ok(if c == 4 {
            Input::Rgba { px, w, h }
        } else {
            Input::Image(Image { px, w, h, c })
        });
    }
    let audio_shape = || {
        if shape.len() == 1 {
            Ok(())
        } else {
            Err(bad(format!(
                "an int16 or float32 array is 1-D audio (16 kHz mono); got shape {} (pass \
                 input tensors as a list of float32 arrays)",
                shape_str(shape)
            )))
        }
    };
    if let Ok(a) = x.cast::<PyArrayDyn<i16>>() {
        audio_shape()?;
        let r = a.try_readonly().map_err(|e| bad(e.to_string()))?;
        return Ok(Input::Audio(
            r.as_array().iter().map(|&v| v as f32).collect(),
        ));
    }
    if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
        audio_shape()?;
        let r = a.try_readonly().map_err(|e| bad(e.to_string()))?;
        return Ok(Input::Audio(
            r.as_array().iter().map(|&v| v * 32768.0).collect(),
        ));
    }
    let dtype = x
        .getattr("dtype")
        .and_then(|d| d.str())
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(bad(format!(
        "numpy arrays of dtype {dtype} are not examples: uint8 images, int16 or float32 \
         audio, or a list of float32 input tensors"
    )))
}

/// Turns an input into a sample through the plan's preprocessing (the library's steps).
fn sample(s: &mut et::Session, x: Input) -> et::Result<Sample> {
    match x {
        Input::Path(p) => s.load(&p),
        Input::Text(t) => s.text(&t),
        Input::Image(im) => s.image(im),
        Input::Rgba { px, w, h } => s.frame(&px, PixelFormat::Rgba, w, h, 0, 0),
        Input::Audio(v) => s.audio(&v),
        Input::Tensors(t) => s.tensors(t),
        Input::Example(x) => Ok(x),
    }
}

/// An example a session made from a stream (`Session.listen`): `enrol`, `predict` and
/// `scores` take it like any other input.
#[pyclass(module = "edgetune", name = "StreamExample", frozen)]
struct PyExample {
    x: Sample,
}

/// A plan, its preprocessing, the enrolled examples' tap cache, a method and an adapter:
/// `edgetune::Session`.
#[pyclass(module = "edgetune", name = "Session")]
struct PySession {
    inner: Mutex<et::Session>,
    text: bool,
}

impl PySession {
    fn lock(&self) -> MutexGuard<'_, et::Session> {
        // A panic in an earlier call (raised as PanicException) leaves the session as the
        // library left it; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut et::Session) -> et::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&mut self.lock())).map_err(err)
    }

    fn example(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        f: impl FnOnce(&mut et::Session, Sample) -> et::Result<()> + Send,
    ) -> PyResult<()> {
        let x = read_input(x, self.text)?;
        self.with(py, |s| {
            let x = sample(s, x)?;
            f(s, x)
        })
    }
}

#[pymethods]
impl PySession {
    /// Opens a plan; `adapter` loads a trained adapter (its method takes over).
    #[new]
    #[pyo3(signature = (plan, adapter=None, method=None, *, seed=0, augment=0, serve="float", max_memory=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        plan: PathBuf,
        adapter: Option<PathBuf>,
        method: Option<&str>,
        seed: u64,
        augment: usize,
        serve: &str,
        max_memory: Option<usize>,
    ) -> PyResult<Self> {
        let kind = method.map(kind_of).transpose()?;
        let serve = Serve::parse(serve)
            .ok_or_else(|| bad(format!("serve '{serve}': expected 'float' or 'int8'")))?;
        let opts = Options {
            augment,
            serve,
            max_memory,
            ..Options::default()
        };
        let s = py
            .detach(|| -> et::Result<et::Session> {
                let mut s = et::Session::with_options(read_plan(&plan)?, opts)?;
                s.set_seed(seed);
                if let Some(k) = kind {
                    s.set_method(k)?;
                }
                if let Some(a) = &adapter {
                    s.load_adapter(a)?;
                    if let Some(k) = kind.filter(|&k| k != s.method()) {
                        return Err(et::Error::Invalid {
                            what: format!(
                                "{}: the adapter was trained with {}, not {}",
                                a.display(),
                                s.method().name(),
                                k.name()
                            ),
                        });
                    }
                }
                Ok(s)
            })
            .map_err(err)?;
        let text = matches!(s.prep(), Prep::Text { .. });
        Ok(PySession {
            inner: Mutex::new(s),
            text,
        })
    }

    /// Chooses the method of the next fit; enrolled examples are cached again when it
    /// reads other taps.
    fn set_method(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let k = kind_of(name)?;
        self.with(py, |s| s.set_method(k))
    }

    /// The current method's name.
    #[getter]
    fn method(&self) -> &'static str {
        self.lock().method().name()
    }

    /// Streaming audio (plans declared `audio:oww:FRAMES:CONTEXT`): feeds a 1-D int16 or
    /// float32 (-1..1) array of 16 kHz samples, any length, and returns the examples it
    /// completed (one every 80 ms once the context is full) as `StreamExample`s.
    fn listen(&self, py: Python<'_>, pcm: &Bound<'_, PyAny>) -> PyResult<Vec<PyExample>> {
        let v = match read_input(pcm, false)? {
            Input::Audio(v) => v,
            _ => {
                return Err(bad(
                    "listen takes a 1-D int16 or float32 numpy array of 16 kHz samples",
                ))
            }
        };
        let done = self.with(py, |s| s.listen(&v))?;
        Ok(done.into_iter().map(|x| PyExample { x }).collect())
    }

    /// Forgets the stream being listened to.
    fn listen_reset(&self) {
        self.lock().listen_reset()
    }

    /// Seed of augmentation and of the fit's initialisation and batches.
    fn set_seed(&self, seed: u64) {
        self.lock().set_seed(seed)
    }

    /// Runs `x` through the backbone and caches what the method reads, under `label`.
    fn enrol(&self, py: Python<'_>, x: &Bound<'_, PyAny>, label: &str) -> PyResult<()> {
        let label = label.to_owned();
        self.example(py, x, move |s, x| s.enrol(x, &label))
    }

    /// `enrol` for many examples at once, `xs[i]` under `labels[i]`: they go through the
    /// backbone one per thread, each on an executor of its own, and are cached in their
    /// order (the cache `enrol` on each in turn gives). All or nothing: on an error none
    /// is enrolled.
    fn enrol_many(
        &self,
        py: Python<'_>,
        xs: Vec<Bound<'_, PyAny>>,
        labels: Vec<String>,
    ) -> PyResult<()> {
        if xs.len() != labels.len() {
            return Err(bad(format!(
                "enrol_many: {} examples and {} labels",
                xs.len(),
                labels.len()
            )));
        }
        let inputs = xs
            .iter()
            .map(|x| read_input(x, self.text))
            .collect::<PyResult<Vec<_>>>()?;
        self.with(py, |s| {
            let samples = inputs
                .into_iter()
                .map(|x| sample(s, x))
                .collect::<et::Result<Vec<_>>>()?;
            s.enrol_batch(samples.into_iter().zip(labels.iter().map(|l| l.as_str())))
        })
    }

    /// Runs `x` through the backbone and caches what the method reads, without a label:
    /// at the next fit `ncm` refines its prototypes and `linear` and `moment` self-train on
    /// it; the other methods refuse to fit while unlabeled examples are kept.
    fn add_unlabeled(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<()> {
        self.example(py, x, |s, x| s.add_unlabeled(x))
    }

    /// Unlabeled examples kept for the next fit.
    #[getter]
    fn unlabeled(&self) -> usize {
        self.lock().unlabeled()
    }

    /// Forgets every unlabeled example.
    fn clear_unlabeled(&self) {
        self.lock().clear_unlabeled()
    }

    /// Chooses the method and its C on the enrolled examples alone (leave-one-example-out
    /// folds of each class) among `candidates` (None: all), within `budget_s` seconds and
    /// `max_memory` bytes, and makes it the method of the next fit: the lowest held-out
    /// log-loss wins. Returns the pick (`method`, `c`, `unlabeled`), its held-out
    /// `accuracy` and `log_loss`, the line `why` and every candidate's `trials` as (name,
    /// held-out accuracy or None, held-out log-loss or None, note).
    #[pyo3(signature = (candidates=None, folds=5, budget_s=None, max_memory=None))]
    fn choose_method<'py>(
        &self,
        py: Python<'py>,
        candidates: Option<Vec<String>>,
        folds: usize,
        budget_s: Option<f64>,
        max_memory: Option<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let candidates = match candidates {
            None => Kind::ALL.to_vec(),
            Some(v) => v.iter().map(|n| kind_of(n)).collect::<PyResult<Vec<_>>>()?,
        };
        let cfg = et::session::auto::AutoConfig {
            candidates,
            folds,
            budget_s,
            max_memory,
            ensembles: false,
        };
        let ch = self.with(py, |s| s.choose_method(&cfg))?;
        let d = PyDict::new(py);
        let pick = &ch.pick[0];
        d.set_item("method", pick.kind.name())?;
        d.set_item("c", pick.c)?;
        d.set_item("unlabeled", pick.unlabeled)?;
        d.set_item("accuracy", ch.acc)?;
        d.set_item("log_loss", ch.nll)?;
        d.set_item("why", ch.why())?;
        let trials: Vec<(String, Option<f64>, Option<f64>, String)> = ch
            .trials
            .iter()
            .map(|t| (t.cand.label(), t.acc, t.nll, t.note.clone()))
            .collect();
        d.set_item("trials", trials)?;
        Ok(d)
    }

    /// Trains the method on everything enrolled. `steps` (None: the method's default) holds
    /// for this fit and for the warm refits of `add_class`. `progress(step, steps,
    /// loss, accuracy)` is called at each step; returning False cancels the fit, and an
    /// exception it raises cancels the fit and is raised again here.
    #[pyo3(signature = (method=None, steps=None, progress=None))]
    fn fit<'py>(
        &self,
        py: Python<'py>,
        method: Option<&str>,
        steps: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let kind = method.map(kind_of).transpose()?;
        let mut raised: Option<PyErr> = None;
        let res = py.detach(|| {
            let mut s = self.lock();
            if let Some(k) = kind {
                s.set_method(k)?;
            }
            s.opts.steps = steps;
            s.fit(&mut |p: &Progress| {
                Python::attach(|py| {
                    let go = py.check_signals().and_then(|()| match &progress {
                        None => Ok(true),
                        Some(cb) => {
                            let r = cb.call1(py, (p.step, p.steps, p.loss, p.accuracy))?;
                            Ok(r.is_none(py) || r.is_truthy(py)?)
                        }
                    });
                    go.unwrap_or_else(|e| {
                        raised = Some(e);
                        false
                    })
                })
            })
        });
        let f = match (res, raised) {
            (Err(_), Some(e)) => return Err(e),
            (r, _) => r.map_err(err)?,
        };
        let d = PyDict::new(py);
        d.set_item("method", f.kind.name())?;
        d.set_item("params", f.params)?;
        d.set_item("steps", f.steps)?;
        d.set_item("examples", f.examples)?;
        d.set_item("cache_bytes", f.cache_bytes)?;
        d.set_item("adapter_bytes", f.adapter_bytes)?;
        d.set_item("peak_bytes", f.memory.peak)?;
        d.set_item("loss", f.last.map(|l| l.0))?;
        d.set_item("accuracy", f.last.map(|l| l.1))?;
        Ok(d)
    }

    /// The `top` best classes of `x`: [(class, score)], best first.
    #[pyo3(signature = (x, top=3))]
    fn predict(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        top: usize,
    ) -> PyResult<Vec<(String, f32)>> {
        let x = read_input(x, self.text)?;
        self.with(py, |s| {
            let x = sample(s, x)?;
            let best = s.predict(&x, top.max(1))?;
            Ok(best
                .into_iter()
                .map(|(c, sc)| (s.class_name(c).unwrap_or("?").to_string(), sc))
                .collect())
        })
    }

    /// Every class's score of `x` (float32, in the order of `classes`; higher is better).
    fn scores<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let x = read_input(x, self.text)?;
        let v = self.with(py, |s| {
            let x = sample(s, x)?;
            let mut out = Vec::new();
            s.scores(&x, &mut out)?;
            Ok(out)
        })?;
        Ok(v.into_pyarray(py))
    }

    /// Writes the adapter atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.with(py, |s| s.save(&path))
    }

    /// Writes `onnx_path` (the model the plan was compiled from) with the trained head
    /// appended as an output `scores` to `out_path` (ncm, linear and moment heads).
    fn export_onnx(&self, py: Python<'_>, onnx_path: PathBuf, out_path: PathBuf) -> PyResult<()> {
        self.with(py, |s| {
            let model = std::fs::read(&onnx_path).map_err(|e| et::Error::Io {
                path: onnx_path.display().to_string(),
                detail: e.to_string(),
            })?;
            let bytes = s.export_onnx(&model)?;
            et::fsutil::write_atomic(&out_path, &bytes)
        })
    }

    /// Loads an adapter trained on this plan (its method and classes take over).
    fn load_adapter(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.with(py, |s| s.load_adapter(&path))
    }

    /// Enrols a new class's examples and refits a trained adapter.
    fn add_class(&self, py: Python<'_>, name: &str, examples: &Bound<'_, PyAny>) -> PyResult<()> {
        let xs = examples
            .try_iter()?
            .map(|x| read_input(&x?, self.text))
            .collect::<PyResult<Vec<_>>>()?;
        let name = name.to_owned();
        self.with(py, move |s| {
            let xs = xs
                .into_iter()
                .map(|x| sample(s, x))
                .collect::<et::Result<Vec<_>>>()?;
            s.add_class(&name, xs)
        })
    }

    /// Drops a class (its examples and cached rows) and removes it from a trained adapter
    /// without training (its column or prototype goes; the other classes score as before).
    fn remove_class(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let name = name.to_owned();
        self.with(py, move |s| s.remove_class(&name))
    }

    /// Class names in label order.
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.lock().classes().to_vec()
    }

    /// Examples enrolled (kept for re-caching).
    #[getter]
    fn examples(&self) -> usize {
        self.lock().examples()
    }

    /// Rows in the tap cache (examples and their augmented views).
    #[getter]
    fn cached(&self) -> usize {
        self.lock().cached()
    }

    /// The taps the current method reads.
    #[getter]
    fn taps(&self) -> Vec<String> {
        self.lock().taps().to_vec()
    }

    /// Whether predictions run an int8 re-quantised tail.
    #[getter]
    fn serves_int8(&self) -> bool {
        self.lock().serves_int8()
    }

    /// Memory a fit of the current method needs at its peak, before anything is allocated:
    /// on what is enrolled now, or on `rows` cached rows.
    #[pyo3(signature = (rows=None))]
    fn memory<'py>(&self, py: Python<'py>, rows: Option<usize>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.with(py, |s| match rows {
            Some(r) => s.memory_for(r),
            None => s.memory(),
        })?;
        let d = PyDict::new(py);
        d.set_item("cache_bytes", m.cache)?;
        d.set_item("arena_bytes", m.arena)?;
        d.set_item("peak_bytes", m.peak)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let s = self.lock();
        format!(
            "edgetune.Session(method={}, classes={:?}, examples={}, adapter={})",
            s.method().name(),
            s.classes(),
            s.examples(),
            if s.adapter().is_some() {
                "trained"
            } else {
                "none"
            }
        )
    }
}

/// Compiles an ONNX model into a plan (`edgetune compile`): `inputs` fixes input shapes by
/// name, `taps` is None, "blocks" or a list of tensor names, `preprocess` is stored with
/// the plan (image:SIZE:MEAN:STD[:CHANNELS], audio:oww:FRAMES with `mel_filters`,
/// text:TOKENS[:CHUNKS] with `tokenizer`).
#[pyfunction]
#[pyo3(signature = (onnx_path, out_path, inputs=None, taps=None, preprocess=None, mel_filters=None, tokenizer=None))]
#[allow(clippy::too_many_arguments)]
fn compile<'py>(
    py: Python<'py>,
    onnx_path: PathBuf,
    out_path: PathBuf,
    inputs: Option<Vec<(String, Vec<usize>)>>,
    taps: Option<&Bound<'py, PyAny>>,
    preprocess: Option<String>,
    mel_filters: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let taps =
        match taps {
            None => Taps::None,
            Some(t) if t.is_none() => Taps::None,
            Some(t) => match t.extract::<String>() {
                Ok(s) if s == "blocks" => Taps::Blocks,
                Ok(s) => {
                    return Err(bad(format!(
                        "taps '{s}': expected None, \"blocks\" or a list of tensor names"
                    )))
                }
                Err(_) => Taps::Names(t.extract::<Vec<String>>().map_err(|_| {
                    bad("taps: expected None, \"blocks\" or a list of tensor names")
                })?),
            },
        };
    let io = |p: &Path, e: std::io::Error| et::Error::Io {
        path: p.display().to_string(),
        detail: e.to_string(),
    };
    let (n_ops, n_bytes, tap_names) = py
        .detach(|| -> et::Result<_> {
            let mut meta = vec![("source".to_string(), onnx_path.display().to_string())];
            if let Some(p) = preprocess {
                let decl = Preprocess::parse(&p).ok_or_else(|| et::Error::Invalid {
                    what: format!(
                        "preprocess '{p}': expected image:SIZE:MEAN:STD[:CHANNELS], \
                         audio:oww:FRAMES or text:TOKENS[:CHUNKS]"
                    ),
                })?;
                match decl {
                    Preprocess::Audio { .. } => {
                        let f = mel_filters.as_ref().ok_or_else(|| et::Error::Invalid {
                            what: "preprocess audio:... needs mel_filters".into(),
                        })?;
                        let b = std::fs::read(f).map_err(|e| io(f, e))?;
                        let v: Vec<f32> = b
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                        meta.push(("mel_filters".into(), et::preprocess::f32_hex(&v)));
                    }
                    Preprocess::Text { .. } => {
                        let t = tokenizer.as_ref().ok_or_else(|| et::Error::Invalid {
                            what: "preprocess text:... needs tokenizer".into(),
                        })?;
                        let json = std::fs::read_to_string(t).map_err(|e| io(t, e))?;
                        meta.push(("tokenizer".into(), json));
                    }
                    _ => {}
                }
                meta.push(("preprocess".into(), p));
            }
            let bytes = std::fs::read(&onnx_path).map_err(|e| io(&onnx_path, e))?;
            let opts = ImportOptions {
                inputs: inputs.unwrap_or_default(),
                taps,
                meta,
                constants: vec![],
                ..Default::default()
            };
            let parts = import_bytes(&bytes, &opts)?;
            let out = parts.to_bytes();
            // Refuse a plan whose declared preprocessing (filter bank, tokenizer) does not
            // load, before writing it.
            let plan = Plan::from_owned(AlignedBytes::from_slice(&out))?;
            if plan.meta("preprocess").is_some() {
                et::session::prep_of(&plan)?;
            }
            et::fsutil::write_atomic(&out_path, &out)?;
            let names: Vec<String> = parts.taps.iter().map(|t| t.name.clone()).collect();
            Ok((parts.ops.len(), out.len(), names))
        })
        .map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("path", out_path)?;
    d.set_item("ops", n_ops)?;
    d.set_item("bytes", n_bytes)?;
    d.set_item("taps", tap_names)?;
    Ok(d)
}

/// Few-shot episodes on `data_dir/<class>/*` (`edgetune eval`): `ways` classes, `shots`
/// support examples each, the rest as queries; every method sees the same episodes.
#[pyfunction]
#[pyo3(signature = (plan_path, data_dir, ways, shots, episodes, methods=None, seed=0))]
#[allow(clippy::too_many_arguments)]
fn eval<'py>(
    py: Python<'py>,
    plan_path: PathBuf,
    data_dir: PathBuf,
    ways: usize,
    shots: usize,
    episodes: u64,
    methods: Option<Vec<String>>,
    seed: u64,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let names = methods.unwrap_or_else(|| vec!["ncm".into(), "linear".into()]);
    let kinds = names
        .iter()
        .map(|m| kind_of(m))
        .collect::<PyResult<Vec<_>>>()?;
    let (res, per) = py
        .detach(|| -> et::Result<_> {
            let plan = read_plan(&plan_path)?;
            let (classes, files) = et::session::eval::class_folders(&data_dir)?;
            let mut prep = et::session::prep_of(&plan)?;
            let examples = files
                .iter()
                .map(|(p, l)| Ok((prep.load(p)?, *l)))
                .collect::<et::Result<Vec<_>>>()?;
            et::session::eval::episodes(
                &plan,
                &examples,
                classes.len(),
                &kinds,
                ways,
                shots,
                episodes,
                seed,
                &Options::default(),
                0,
                0,
                None,
                None,
                &mut |_, _| {},
            )
        })
        .map_err(err)?;
    res.iter()
        .map(|m| {
            let (acc, std) = et::session::eval::mean_std(&m.acc);
            let d = PyDict::new(py);
            d.set_item("method", m.kind.name())?;
            d.set_item("accuracy", acc)?;
            d.set_item("std", std)?;
            d.set_item("episodes", m.acc.len())?;
            if !m.acc_int8.is_empty() {
                d.set_item("accuracy_int8", et::session::eval::mean_std(&m.acc_int8).0)?;
            }
            d.set_item("train_seconds", m.train_s)?;
            d.set_item("params", m.params)?;
            d.set_item("adapter_bytes", m.adapter_bytes)?;
            d.set_item("peak_bytes", m.peak)?;
            d.set_item("backbone_seconds", per)?;
            Ok(d)
        })
        .collect()
}

#[pymodule(name = "edgetune")]
fn edgetune_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EdgetuneError", m.py().get_type::<EdgetuneError>())?;
    m.add_class::<PySession>()?;
    m.add_class::<PyExample>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(eval, m)?)?;
    let methods: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    m.add("METHODS", methods)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
