//! The one flow from an example to a prediction, for every front end (CLI, C ABI,
//! bindings, examples): plan + executor + the plan's declared preprocessing + tap cache +
//! method + adapter.
//!
//! ```text
//! enrol(example, class) ──▶ backbone ──▶ taps ──▶ tap cache (what the method reads)
//! fit() ──▶ adapter            predict(example) ──▶ backbone ──▶ taps ──▶ adapter ──▶ top-k
//! ```
//!
//! A session keeps the decoded examples it enrolled, so it can re-cache them when the
//! method changes (another method reads other taps) and drop a class without running the
//! backbone again. One session is used from one thread at a time; it is `Send`, so
//! sessions can live on worker threads, each with its own.

pub mod auto;
pub mod cache;
pub mod eval;
pub mod options;
pub mod prep;

pub use cache::Reduce;
pub use options::{Options, Serve};
pub use prep::{prep_of, Image, Prep, Sample};

use crate::adapt::cache::{NamedTap, TapCache, TapShape};
use crate::adapt::rng::Rng;
use crate::adapt::tail::TailQ;
use crate::adapt::train::Progress;
use crate::adapt::{self, Adapter, Kind, Method, Spec};
use crate::audio::MelStream;
use crate::features::TapReader;
use crate::frame::{frame_to_image, PixelFormat};
use crate::par::Par;
use crate::plan::{AlignedBytes, Plan, DEFAULT_ARENA_LIMIT};
use crate::preprocess::AUDIO_STRIDE;
use crate::{Error, Executor, Result};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use cache::{Batcher, Filler};

/// Memory a fit needs at its peak, before anything is allocated for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// The tap cache of the enrolled examples.
    pub cache: usize,
    /// The backbone's arena.
    pub arena: usize,
    /// Everything: cache, arena, parameters, gradients, optimiser state, activations.
    pub peak: usize,
}

/// What a fit produced.
#[derive(Clone, Debug)]
pub struct Fitted {
    pub kind: Kind,
    pub params: usize,
    pub steps: usize,
    pub examples: usize,
    pub cache_bytes: usize,
    pub adapter_bytes: usize,
    pub memory: Memory,
    /// The last progress report (loss, training accuracy), if the method trains in steps.
    pub last: Option<(f32, f32)>,
}

pub struct Session {
    plan: Arc<Plan<'static>>,
    prep: Prep,
    pub opts: Options,
    seed: u64,
    kind: Kind,
    taps: Vec<String>,
    reader: TapReader<'static, 'static>,
    cache: TapCache,
    samples: Vec<(Sample, usize)>,
    /// Unlabeled examples: their cached taps (same layout and precision as `cache`, no
    /// augmented views) and the examples, kept to cache again when the method changes.
    unl_cache: TapCache,
    unl_samples: Vec<Sample>,
    /// Whether the fit learns from the unlabeled examples (the automatic choice may
    /// find it does better without them).
    use_unlabeled: bool,
    listening: Option<Listening>,
    classes: Vec<String>,
    adapter: Option<Adapter>,
    int8: Option<TailQ>,
    rng: Rng,
    par: Par,
}

fn invalid(what: String) -> Error {
    Error::Invalid { what }
}

/// A stream being listened to: its log-mel frames and the taps of its last windows.
struct Listening {
    mel: MelStream,
    ring: VecDeque<Vec<Vec<f32>>>,
    one: Vec<Vec<f32>>,
}

impl Session {
    /// A session on `plan` with the default method (`linear`) and options.
    pub fn new(plan: Plan<'static>) -> Result<Session> {
        Session::with_options(plan, Options::default())
    }

    pub fn with_options(plan: Plan<'static>, opts: Options) -> Result<Session> {
        let plan = Arc::new(plan);
        let prep = if plan.meta("preprocess").is_none() {
            Prep::Tensors
        } else {
            prep_of(&plan)?
        };
        let kind = Kind::Linear;
        let taps = opts.taps_for(&plan, kind);
        let par = Par::new(0)?;
        let reader = Self::reader(&plan, &prep, &taps, &par)?;
        let cache = TapCache::new(
            opts.cache_for(kind),
            opts.reduce_for(kind).shapes(&reader.shapes),
        );
        let unl_cache = TapCache::new(cache.format, cache.named());
        Ok(Session {
            plan,
            prep,
            opts,
            seed: 0,
            kind,
            taps,
            reader,
            cache,
            samples: Vec::new(),
            unl_cache,
            unl_samples: Vec::new(),
            use_unlabeled: true,
            listening: None,
            classes: Vec::new(),
            adapter: None,
            int8: None,
            rng: Rng::new(0xa5a5),
            par,
        })
    }

    /// Opens a plan from its bytes (copied once into aligned memory).
    pub fn from_bytes(bytes: &[u8]) -> Result<Session> {
        Session::new(Plan::from_owned(AlignedBytes::from_slice(bytes))?)
    }

    /// Opens a plan file.
    pub fn open(path: &std::path::Path) -> Result<Session> {
        let data = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Session::from_bytes(&data)
    }

    fn reader(
        plan: &Arc<Plan<'static>>,
        prep: &Prep,
        taps: &[String],
        par: &Par,
    ) -> Result<TapReader<'static, 'static>> {
        let mut exec = Executor::shared(
            plan.clone(),
            crate::kernels::Kernels::detect(),
            DEFAULT_ARENA_LIMIT,
        )?;
        exec.set_par(par.clone());
        Ok(TapReader::new(exec, taps)?.with_context(prep.context()))
    }

    /// Threads the backbone may use for one example (the caller's included); 0 means the
    /// process default (one per available core unless [`crate::par::set_default_threads`]
    /// says otherwise). The trainer's GEMMs take the process default. Any count gives the
    /// same results.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        self.par = Par::new(threads)?;
        self.reader.exec.set_par(self.par.clone());
        Ok(())
    }

    /// Threads the backbone uses.
    pub fn threads(&self) -> usize {
        self.par.threads()
    }

    pub fn plan(&self) -> &Plan<'static> {
        &self.plan
    }

    pub fn prep(&self) -> &Prep {
        &self.prep
    }

    pub fn method(&self) -> Kind {
        self.kind
    }

    /// The taps the current method reads.
    pub fn taps(&self) -> &[String] {
        &self.taps
    }

    /// Class names, in label order (the order they were first enrolled).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Rows in the tap cache (examples and their augmented views).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    pub fn examples(&self) -> usize {
        self.samples.len()
    }

    pub fn cache(&self) -> &TapCache {
        &self.cache
    }

    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// Seed of augmentation and of the fit's initialisation and batches.
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.rng = Rng::new(seed ^ 0xa5a5);
    }

    /// Chooses the method (and re-reads `opts`). Examples already enrolled are cached
    /// again when the method reads other taps or keeps them otherwise.
    pub fn set_method(&mut self, kind: Kind) -> Result<()> {
        let taps = self.opts.taps_for(&self.plan, kind);
        let reduce = self.opts.reduce_for(kind);
        let reader = Self::reader(&self.plan, &self.prep, &taps, &self.par)?;
        let shapes = reduce.shapes(&reader.shapes);
        let format = self.opts.cache_for(kind);
        let same = taps == self.taps && shapes == self.cache.named() && format == self.cache.format;
        self.kind = kind;
        self.use_unlabeled = true;
        if same {
            return Ok(());
        }
        self.reader = reader;
        self.listening = None;
        self.taps = taps;
        self.cache = TapCache::new(format, shapes);
        self.unl_cache = TapCache::new(self.cache.format, self.cache.named());
        self.recache()
    }

    /// Runs every kept example through the backbone into a fresh cache.
    fn recache(&mut self) -> Result<()> {
        let mut cache = TapCache::new(self.cache.format, self.cache.named());
        cache.reserve(self.samples.len() * (1 + self.opts.augment));
        let mut fill = self.batcher(self.opts.augment, self.seed)?;
        fill.push_all(&self.prep, &self.samples, &mut cache, &mut |_, _| {})?;
        self.rng = fill.rng;
        self.cache = cache;
        let mut unl = TapCache::new(self.cache.format, self.cache.named());
        unl.reserve(self.unl_samples.len());
        let mut fill = self.batcher(0, 0)?;
        let unlabeled = &self.unl_samples;
        let n = unlabeled.len();
        fill.push_each(
            &self.prep,
            n,
            &|i| (&unlabeled[i], 0),
            &mut unl,
            &mut |_, _| {},
        )?;
        self.unl_cache = unl;
        Ok(())
    }

    /// Runs `s` through the backbone once and caches what the method reads, without a
    /// label: the methods that learn from unlabeled examples ([`Kind::uses_unlabeled`])
    /// use it at the next fit (`ncm` refines its prototypes, `linear` and `moment`
    /// self-train). The unlabeled cache has the enrolled examples' precision and
    /// counts in [`memory`](Self::memory).
    pub fn add_unlabeled(&mut self, s: Sample) -> Result<()> {
        let mut fill = Filler::new(&mut self.reader, self.opts.reduce_for(self.kind), 0, 0);
        fill.push(&self.prep, &s, 0, &mut self.unl_cache)?;
        self.unl_samples.push(s);
        Ok(())
    }

    /// [`add_unlabeled`](Self::add_unlabeled) for many examples, one per thread as in
    /// [`enrol_batch`](Self::enrol_batch); all or nothing.
    pub fn add_unlabeled_batch(&mut self, examples: Vec<Sample>) -> Result<()> {
        let rows = self.unl_cache.len();
        let mut fill = self.batcher(0, 0)?;
        let n = examples.len();
        let got = fill.push_each(
            &self.prep,
            n,
            &|i| (&examples[i], 0),
            &mut self.unl_cache,
            &mut |_, _| {},
        );
        if let Err(e) = got {
            self.unl_cache.truncate(rows);
            return Err(e);
        }
        self.unl_samples.extend(examples);
        Ok(())
    }

    /// Chooses the method and its key settings on the enrolled examples alone
    /// (leave-one-example-out folds of each class, [`auto::choose`]) among
    /// `cfg.candidates`, within its time and memory budgets (`opts.max_memory` when
    /// `cfg` sets none), and makes the pick the current method: its C, and whether it
    /// learns from the unlabeled examples, apply at the next [`fit`](Self::fit). An
    /// adapter holds one head, so ensembles are not candidates here. Every class needs
    /// at least two examples. The backbone runs once more over the enrolled and
    /// unlabeled examples, for the union of the candidates' taps.
    pub fn choose_method(&mut self, cfg: &auto::AutoConfig) -> Result<auto::Choice> {
        if self.classes.len() < 2 {
            return Err(invalid(
                "choosing a method needs examples of at least two classes".into(),
            ));
        }
        let mut names: Vec<String> = Vec::new();
        for &k in &cfg.candidates {
            for t in self.opts.taps_for(&self.plan, k) {
                if !names.contains(&t) {
                    names.push(t);
                }
            }
        }
        let (sup, groups, _) = eval::cache_all(
            &self.plan,
            &self.prep,
            &self.samples,
            &names,
            &self.opts,
            self.seed,
            &mut |_, _| {},
        )?;
        let unl: Vec<(Sample, usize)> = self.unl_samples.iter().map(|s| (s.clone(), 0)).collect();
        let plain = Options {
            augment: 0,
            ..self.opts.clone()
        };
        let (ucache, _, _) = eval::cache_all(
            &self.plan,
            &self.prep,
            &unl,
            &names,
            &plain,
            0,
            &mut |_, _| {},
        )?;
        let uidx: Vec<usize> = (0..ucache.len()).collect();
        let u = (!uidx.is_empty()).then_some(adapt::Unlabeled {
            cache: &ucache,
            idx: &uidx,
        });
        let mut cfg = cfg.clone();
        cfg.ensembles = false;
        if cfg.max_memory.is_none() {
            cfg.max_memory = self.opts.max_memory;
        }
        let ch = auto::choose(
            &self.plan,
            &self.opts,
            &sup,
            &groups,
            self.classes.len(),
            u,
            &cfg,
            self.seed,
            self.plan.arena_bytes(),
        )?;
        let c = &ch.pick[0];
        if c.c.is_some() {
            self.opts.c = c.c;
        }
        self.set_method(c.kind)?;
        self.use_unlabeled = c.unlabeled;
        Ok(ch)
    }

    /// Unlabeled examples kept for the next fit.
    pub fn unlabeled(&self) -> usize {
        self.unl_samples.len()
    }

    /// Forgets every unlabeled example.
    pub fn clear_unlabeled(&mut self) {
        self.unl_samples.clear();
        self.unl_cache = TapCache::new(self.cache.format, self.cache.named());
    }

    // Inputs: what an example becomes, through the preprocessing the plan declares.

    /// A decoded image (interleaved grey or RGB).
    pub fn image(&self, im: Image) -> Result<Sample> {
        self.prep.image(im)
    }

    /// A camera frame or bitmap in `format`, rows `stride` bytes apart (0: packed),
    /// rotated clockwise by `rotation` degrees to be upright.
    pub fn frame(
        &self,
        px: &[u8],
        format: PixelFormat,
        w: usize,
        h: usize,
        stride: usize,
        rotation: u32,
    ) -> Result<Sample> {
        self.prep
            .image(frame_to_image(px, format, w, h, stride, rotation)?)
    }

    /// 16 kHz mono audio in int16 units.
    pub fn audio(&mut self, pcm: &[f32]) -> Result<Sample> {
        self.prep.audio(pcm)
    }

    /// Streaming audio (16 kHz mono, int16 units), on a plan declared
    /// `audio:oww:FRAMES[:CONTEXT]`: feeds `pcm` (any length) and returns the examples it
    /// completed, one every 80 ms once `CONTEXT` windows are in, ready for
    /// [`scores`](Self::scores) or [`enrol`](Self::enrol). Each window runs through the
    /// backbone once; an example is the taps of the last `CONTEXT` windows, as
    /// [`audio`](Self::audio) gives for a clip. [`listen_reset`](Self::listen_reset)
    /// starts a new stream.
    pub fn listen(&mut self, pcm: &[f32]) -> Result<Vec<Sample>> {
        let Prep::Audio {
            front,
            frames,
            context,
        } = &self.prep
        else {
            return Err(invalid(
                "listening needs a plan declared audio:oww:FRAMES[:CONTEXT]".into(),
            ));
        };
        if pcm.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "audio samples".into(),
            });
        }
        let context = *context;
        if self.listening.is_none() {
            let stride = if context > 1 { AUDIO_STRIDE } else { *frames };
            self.listening = Some(Listening {
                mel: MelStream::new((**front).clone(), *frames, stride)?,
                ring: VecDeque::with_capacity(context + 1),
                one: alloc::vec![Vec::new(); self.taps.len()],
            });
        }
        let Some(Listening { mel, ring, one }) = &mut self.listening else {
            unreachable!()
        };
        let reader = &mut self.reader;
        let mut out = Vec::new();
        let pushed = mel.push(pcm, &mut |w| {
            reader.run_inputs(&[w], one)?;
            let mut taps = if ring.len() == context {
                ring.pop_front().unwrap_or_default()
            } else {
                Vec::new()
            };
            taps.clone_from(one);
            ring.push_back(taps);
            if ring.len() == context {
                out.push(Sample::Taps(
                    (0..one.len())
                        .map(|i| ring.iter().flat_map(|w| w[i].iter().copied()).collect())
                        .collect(),
                ));
            }
            Ok(())
        });
        if let Err(e) = pushed {
            self.listening = None;
            return Err(e);
        }
        Ok(out)
    }

    /// Forgets the stream being listened to.
    pub fn listen_reset(&mut self) {
        self.listening = None;
    }

    /// UTF-8 text.
    #[cfg(feature = "text")]
    pub fn text(&self, text: &str) -> Result<Sample> {
        self.prep.text(text)
    }

    /// A file of the plan's kind of input (image, WAV, text).
    #[cfg(feature = "files")]
    pub fn load(&mut self, path: &std::path::Path) -> Result<Sample> {
        self.prep.load(path)
    }

    /// The plan's input tensors, already preprocessed by the caller (one per plan input,
    /// in the plan's input order).
    pub fn tensors(&self, inputs: Vec<Vec<f32>>) -> Result<Sample> {
        let lens: Vec<usize> = self
            .plan
            .inputs
            .iter()
            .map(|p| self.plan.tensors[p.tensor as usize].len())
            .collect();
        let got: Vec<usize> = inputs.iter().map(|v| v.len()).collect();
        if lens != got {
            return Err(Error::ShapeMismatch {
                op: "plan inputs".into(),
                expected: lens,
                got,
            });
        }
        Ok(Sample::Inputs(alloc::vec![inputs]))
    }

    // The flow.

    fn label_of(&mut self, class: &str) -> Result<usize> {
        if class.is_empty() || class.len() > 256 {
            return Err(invalid("class names are 1 to 256 bytes long".into()));
        }
        Ok(match self.classes.iter().position(|c| c == class) {
            Some(l) => l,
            None => {
                if self.classes.len() >= 4096 {
                    return Err(invalid("at most 4096 classes".into()));
                }
                self.classes.push(class.into());
                self.classes.len() - 1
            }
        })
    }

    /// Runs `s` through the backbone once (and each augmented view) and caches what the
    /// method reads, under `class`.
    pub fn enrol(&mut self, s: Sample, class: &str) -> Result<()> {
        let known = self.classes.len();
        let label = self.label_of(class)?;
        let mut fill = Filler::new(
            &mut self.reader,
            self.opts.reduce_for(self.kind),
            self.opts.augment,
            0,
        );
        fill.rng = self.rng.clone();
        let pushed = fill.push(&self.prep, &s, label, &mut self.cache);
        self.rng = fill.rng;
        if let Err(e) = pushed {
            self.classes.truncate(known);
            return Err(e);
        }
        self.samples.push((s, label));
        Ok(())
    }

    /// [`enrol`](Self::enrol) for many examples, run through the backbone several at a
    /// time, one per thread (each on an executor of its own), and cached in their order:
    /// the cache is the one `enrol` on each in turn would give. All or nothing: on an
    /// error none of them is enrolled (nor a class they named).
    pub fn enrol_batch<'a>(
        &mut self,
        items: impl IntoIterator<Item = (Sample, &'a str)>,
    ) -> Result<()> {
        let known = self.classes.len();
        let mut examples = Vec::new();
        for (s, c) in items {
            match self.label_of(c) {
                Ok(l) => examples.push((s, l)),
                Err(e) => {
                    self.classes.truncate(known);
                    return Err(e);
                }
            }
        }
        let rows = self.cache.len();
        let mut fill = self.batcher(self.opts.augment, 0)?;
        fill.rng = self.rng.clone();
        if let Err(e) = fill.push_all(&self.prep, &examples, &mut self.cache, &mut |_, _| {}) {
            self.cache.truncate(rows);
            self.classes.truncate(known);
            return Err(e);
        }
        self.rng = fill.rng;
        self.samples.extend(examples);
        Ok(())
    }

    /// Readers of the current taps, one per thread of the session (each single-threaded),
    /// sharing out examples.
    fn batcher(&self, augment: usize, seed: u64) -> Result<Batcher<'static, 'static>> {
        let readers = (0..self.par.threads())
            .map(|_| Self::reader(&self.plan, &self.prep, &self.taps, &Par::single()))
            .collect::<Result<Vec<_>>>()?;
        let reduce = self.opts.reduce_for(self.kind);
        Ok(Batcher::new(
            readers,
            self.par.clone(),
            reduce,
            augment,
            seed,
        ))
    }

    fn spec(&self) -> Result<Spec> {
        self.opts.spec(&self.plan, self.kind, self.seed)
    }

    /// Memory a fit of the current method on `rows` cached rows would need at its peak.
    pub fn memory_for(&self, rows: usize) -> Result<Memory> {
        let spec = self.spec()?;
        let probe = TapCache::new(self.cache.format, self.cache.named());
        let sel: Vec<usize> = (0..self.taps.len()).collect();
        let cache = (rows + self.unl_cache.len()) * probe.bytes_per_example();
        let arena = self.plan.arena_bytes();
        let classes = self.classes.len().max(2);
        Ok(Memory {
            cache,
            arena,
            peak: adapt::fit_memory(&spec, &probe, &sel, rows, classes) + cache + arena,
        })
    }

    /// Memory of a fit on what is enrolled now.
    pub fn memory(&self) -> Result<Memory> {
        self.memory_for(self.cache.len())
    }

    fn taps_dims(&self) -> Vec<NamedTap> {
        self.reader.shapes.clone()
    }

    /// Trains the current method on everything enrolled. `progress` sees each step and
    /// cancels the fit by returning `false`. Refused before anything is allocated when
    /// the peak would pass `opts.max_memory`.
    pub fn fit(&mut self, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<Fitted> {
        self.fit_with(false, progress)
    }

    /// [`fit`](Self::fit) warm-started from the adapter trained before, when that is the
    /// same method on the same taps and its classes are the first of the enrolled ones
    /// (classes were added since): `linear` and `moment` keep its weights, `ladder`,
    /// `query` and the tail methods (`tail`, `bias`, `lora` of the same rank) all its
    /// parameters, and the fit runs a quarter of the steps. Otherwise a full fit.
    pub fn fit_warm(&mut self, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<Fitted> {
        self.fit_with(true, progress)
    }

    fn fit_with(
        &mut self,
        warm: bool,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<Fitted> {
        let mut spec = self.spec()?;
        let dims = self.taps_dims();
        let prev = self.adapter.as_ref().filter(|a| {
            warm && a.method.kind() == self.kind
                && a.classes.len() <= self.classes.len()
                && a.classes[..] == self.classes[..a.classes.len()]
                && a.taps == dims
        });
        if prev.is_some() {
            spec.train.steps = spec.train.steps.div_ceil(4);
            spec.linear.steps = spec.linear.steps.div_ceil(4);
        }
        let memory = self.memory()?;
        if let Some(limit) = self.opts.max_memory {
            if memory.peak > limit {
                return Err(Error::OverBudget {
                    need: memory.peak,
                    limit,
                });
            }
        }
        let sel: Vec<usize> = (0..self.taps.len()).collect();
        let idx: Vec<usize> = (0..self.cache.len()).collect();
        let mut last = None;
        let unl_idx: Vec<usize> = if self.use_unlabeled {
            (0..self.unl_cache.len()).collect()
        } else {
            Vec::new()
        };
        let unl = (!unl_idx.is_empty()).then_some(adapt::Unlabeled {
            cache: &self.unl_cache,
            idx: &unl_idx,
        });
        let method = adapt::fit_semi(
            &spec,
            &self.cache,
            &sel,
            &idx,
            self.classes.len(),
            prev.map(|a| &a.method),
            unl,
            &mut |p: &Progress| {
                // ncm reports once with no steps: it has no loss to keep.
                if p.steps > 0 {
                    last = Some((p.loss, p.accuracy));
                }
                progress(p)
            },
        )?;
        let steps = self.opts.steps_for(&spec);
        let mut hyper = alloc::vec![
            ("seed".into(), self.seed.to_string()),
            ("steps".into(), steps.to_string()),
            ("augment".into(), self.opts.augment.to_string()),
            ("cache".into(), format!("{:?}", self.cache.format)),
        ];
        if !unl_idx.is_empty() {
            hyper.push(("unlabeled".into(), unl_idx.len().to_string()));
        }
        let mut int8 = None;
        if self.opts.serve == Serve::Int8 {
            let Method::Tail {
                tail: Some(t),
                params,
                ..
            } = &method
            else {
                return Err(invalid(format!(
                    "int8 serving is for the tail methods (tail, bias, lora), not {}",
                    self.kind.name()
                )));
            };
            let calib: Vec<Vec<f32>> = (0..self.cache.len())
                .map(|i| {
                    let mut v = alloc::vec![0.0; self.cache.taps[0].len()];
                    self.cache.read(i, 0, &mut v);
                    v
                })
                .collect();
            let views: Vec<&[f32]> = calib.iter().map(|v| &v[..]).collect();
            let ranges = TailQ::calibrate(t, params, &views)?;
            hyper.push(("int8_ranges".into(), ranges_to_str(&ranges)));
            int8 = Some(TailQ::with_ranges(t, params, &ranges, self.cut_q()?)?);
        }
        let a = Adapter::new(
            &self.plan,
            self.taps_dims(),
            self.classes.clone(),
            hyper,
            method,
        );
        let fitted = Fitted {
            kind: self.kind,
            params: a.method.params(),
            steps,
            examples: self.samples.len(),
            cache_bytes: self.cache.bytes(),
            adapter_bytes: a.to_bytes().len(),
            memory,
            last,
        };
        self.adapter = Some(a);
        self.int8 = int8;
        Ok(fitted)
    }

    /// The plan's quantisation of the tail methods' cut tap.
    fn cut_q(&self) -> Result<crate::plan::Q8> {
        let cut = self
            .plan
            .tap(&self.taps[0])
            .ok_or_else(|| invalid(format!("plan has no tap '{}'", self.taps[0])))?;
        Ok(crate::plan::Q8 {
            scale: cut.scale,
            zero: cut.zero,
        })
    }

    /// Class scores of `s` (one per class, higher is better).
    pub fn scores(&mut self, s: &Sample, out: &mut alloc::vec::Vec<f32>) -> Result<()> {
        let a = self
            .adapter
            .as_ref()
            .ok_or_else(|| invalid("no adapter: fit or load one first".into()))?;
        out.clear();
        out.resize(a.classes.len(), 0.0);
        let dims: Vec<TapShape> = a.taps.iter().map(|t| t.1).collect();
        let mut fill = Filler::new(&mut self.reader, Reduce::Full, 0, 0);
        let bufs = fill.taps(&self.prep, s)?;
        match &self.int8 {
            Some(q) => q.scores(&bufs[0], out),
            None => {
                let v: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
                a.method.scores(&v, &dims, out)
            }
        }
    }

    /// The `top` best classes of `s`: (label, score), best first.
    pub fn predict(&mut self, s: &Sample, top: usize) -> Result<Vec<(usize, f32)>> {
        let mut sc = Vec::new();
        self.scores(s, &mut sc)?;
        let mut order: Vec<usize> = (0..sc.len()).collect();
        order.sort_by(|&i, &j| sc[j].total_cmp(&sc[i]));
        Ok(order.into_iter().take(top).map(|c| (c, sc[c])).collect())
    }

    /// The class name of label `l`.
    pub fn class_name(&self, l: usize) -> Option<&str> {
        self.adapter
            .as_ref()
            .map(|a| &a.classes)
            .unwrap_or(&self.classes)
            .get(l)
            .map(|s| s.as_str())
    }

    /// Enrols the examples of a new class and, if an adapter is trained, refits it on the
    /// cache (the backbone does not run for the classes already enrolled): `ncm` adds the
    /// new class's prototype (no training), the others continue from the adapter they had
    /// ([`fit_warm`](Self::fit_warm): a quarter of the steps). The trained methods need
    /// examples of every class: after [`load_adapter`](Self::load_adapter) they are
    /// refused (the adapter is kept) until examples of each class are enrolled again.
    pub fn add_class(&mut self, class: &str, examples: Vec<Sample>) -> Result<()> {
        if self.classes.iter().any(|c| c == class) {
            return Err(invalid(format!("class '{class}' exists")));
        }
        if examples.is_empty() {
            return Err(invalid(format!("class '{class}': no examples")));
        }
        let ncm = match &self.adapter {
            Some(a) if a.method.kind() == Kind::Ncm && a.classes == self.classes => true,
            Some(a) => {
                if let Some(c) =
                    (0..self.classes.len()).find(|&c| !self.samples.iter().any(|s| s.1 == c))
                {
                    return Err(invalid(format!(
                        "cannot add class '{class}': class '{}' has no enrolled examples to \
                         train the {} adapter on (after loading an adapter, enrol examples \
                         of every class first); the adapter is unchanged",
                        self.classes[c],
                        a.method.name()
                    )));
                }
                false
            }
            None => false,
        };
        let first = self.cache.len();
        self.enrol_batch(examples.into_iter().map(|s| (s, class)))?;
        if ncm {
            return self.ncm_add(first);
        }
        self.refit_warm()
    }

    /// Adds the cached rows from `first` on (one new class) to the ncm adapter.
    fn ncm_add(&mut self, first: usize) -> Result<()> {
        let Some(a) = &mut self.adapter else {
            return Ok(());
        };
        let Method::Ncm(n) = &mut a.method else {
            return Ok(());
        };
        let d = self.cache.taps[0];
        let (mut x, mut f) = (alloc::vec![0.0; d.len()], alloc::vec![0.0; d.dim]);
        let label = self.classes.len() - 1;
        for r in first..self.cache.len() {
            self.cache.read(r, 0, &mut x);
            adapt::method::pooled(&x, d, &mut f);
            n.enrol(label, &f);
        }
        a.classes = self.classes.clone();
        Ok(())
    }

    /// Drops a class: its examples and cached rows go, later labels move down by one, and
    /// a trained adapter forgets the class without training ([`Method::drop_class`]: the
    /// other classes score as before; an int8 tail is rebuilt from its stored activation
    /// ranges). This works on a loaded adapter too. An adapter left with one class is
    /// dropped.
    pub fn remove_class(&mut self, class: &str) -> Result<()> {
        let l = self
            .classes
            .iter()
            .position(|c| c == class)
            .ok_or_else(|| invalid(format!("no class '{class}'")))?;
        self.adapter_drop(class)?;
        let relabel = |x: usize| if x > l { x - 1 } else { x };
        let mut cache = TapCache::new(self.cache.format, self.cache.named());
        let mut bufs: Vec<Vec<f32>> = self
            .cache
            .taps
            .iter()
            .map(|t| alloc::vec![0.0; t.len()])
            .collect();
        for r in 0..self.cache.len() {
            let y = self.cache.labels[r];
            if y == l {
                continue;
            }
            for (t, b) in bufs.iter_mut().enumerate() {
                self.cache.read(r, t, b);
            }
            let v: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
            cache.push(&v, relabel(y))?;
        }
        self.cache = cache;
        self.samples.retain(|s| s.1 != l);
        self.samples.iter_mut().for_each(|s| s.1 = relabel(s.1));
        self.classes.remove(l);
        Ok(())
    }

    /// The adapter without `class` (when it has it).
    fn adapter_drop(&mut self, class: &str) -> Result<()> {
        let Some(a) = &mut self.adapter else {
            return Ok(());
        };
        let Some(la) = a.classes.iter().position(|c| c == class) else {
            return Ok(());
        };
        if a.classes.len() <= 2 {
            self.adapter = None;
            self.int8 = None;
            return Ok(());
        }
        a.method.drop_class(la)?;
        a.classes.remove(la);
        if self.int8.is_some() {
            let rebuilt = self.int8_of_stored();
            if rebuilt.is_err() {
                self.adapter = None;
            }
            self.int8 = Some(rebuilt?);
        }
        Ok(())
    }

    /// The int8 tail of the adapter from the activation ranges stored with it.
    fn int8_of_stored(&self) -> Result<TailQ> {
        let a = self
            .adapter
            .as_ref()
            .ok_or_else(|| invalid("no adapter".into()))?;
        let (
            Some(r),
            Method::Tail {
                tail: Some(t),
                params,
                ..
            },
        ) = (a.hyper("int8_ranges"), &a.method)
        else {
            return Err(bad_adapter("int8 ranges on a method without a tail"));
        };
        let ranges =
            ranges_from_str(r).ok_or_else(|| bad_adapter("int8 activation ranges unreadable"))?;
        TailQ::with_ranges(t, params, &ranges, self.cut_q()?)
    }

    fn refit_warm(&mut self) -> Result<()> {
        if self.adapter.is_some() {
            self.int8 = None;
            if self.classes.len() >= 2 {
                if let Err(e) = self.fit_with(true, &mut |_| true) {
                    self.adapter = None;
                    return Err(e);
                }
            }
            self.adapter = self.adapter.take().filter(|a| a.classes == self.classes);
        }
        Ok(())
    }

    /// Uses a trained adapter (it must have been trained on the plan loaded here): the
    /// method and taps switch to the adapter's; int8 tails are rebuilt from the
    /// activation ranges stored with them.
    pub fn set_adapter(&mut self, mut a: Adapter) -> Result<()> {
        a.bind(&self.plan)?;
        let taps: Vec<String> = a.taps.iter().map(|t| t.0.clone()).collect();
        let reader = Self::reader(&self.plan, &self.prep, &taps, &self.par)?;
        for ((_, s), (n, d)) in reader.shapes.iter().zip(&a.taps) {
            if s != d {
                return Err(Error::ShapeMismatch {
                    op: format!("adapter tap '{n}'"),
                    expected: alloc::vec![d.tokens, d.dim],
                    got: alloc::vec![s.tokens, s.dim],
                });
            }
        }
        let kind = a.method.kind();
        self.int8 = match (a.hyper("int8_ranges"), &a.method) {
            (
                Some(r),
                Method::Tail {
                    tail: Some(t),
                    params,
                    ..
                },
            ) => {
                let ranges = ranges_from_str(r)
                    .ok_or_else(|| bad_adapter("int8 activation ranges unreadable"))?;
                self.taps = taps.clone();
                Some(TailQ::with_ranges(t, params, &ranges, self.cut_q()?)?)
            }
            (Some(_), _) => return Err(bad_adapter("int8 ranges on a method without a tail")),
            _ => None,
        };
        let reduce = self.opts.reduce_for(kind);
        self.cache = TapCache::new(self.opts.cache_for(kind), reduce.shapes(&reader.shapes));
        self.reader = reader;
        self.listening = None;
        self.taps = taps;
        self.kind = kind;
        self.classes = a.classes.clone();
        self.samples.clear();
        self.adapter = Some(a);
        Ok(())
    }

    /// Loads an adapter from its bytes; refused when trained on another plan.
    pub fn load_adapter_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let a = Adapter::from_bytes(bytes, &self.plan.hash())?;
        self.set_adapter(a)
    }

    pub fn load_adapter(&mut self, path: &std::path::Path) -> Result<()> {
        let a = Adapter::load(path, &self.plan.hash())?;
        self.set_adapter(a)
    }

    /// Writes the adapter atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.adapter
            .as_ref()
            .ok_or_else(|| invalid("no adapter to save: fit or load one first".into()))?
            .save(path)
    }

    /// The ONNX model `model` (the one the loaded plan was compiled from) with the
    /// trained head appended as an output `scores` (ncm, linear and moment heads).
    #[cfg(feature = "onnx")]
    pub fn export_onnx(&self, model: &[u8]) -> Result<Vec<u8>> {
        let a = self
            .adapter
            .as_ref()
            .ok_or_else(|| invalid("no adapter to export: fit or load one first".into()))?;
        crate::import::export_onnx(model, &self.plan, a)
    }

    /// Whether predictions run the int8 re-quantised tail.
    pub fn serves_int8(&self) -> bool {
        self.int8.is_some()
    }
}

fn bad_adapter(detail: &str) -> Error {
    Error::BadFile {
        what: "adapter",
        detail: alloc::string::String::from(detail).into(),
    }
}

/// `lo:hi,lo:hi,...` with Rust's shortest round-trip float formatting (exact).
fn ranges_to_str(r: &[(f32, f32)]) -> String {
    r.iter()
        .map(|(a, b)| format!("{a:?}:{b:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ranges_from_str(s: &str) -> Option<Vec<(f32, f32)>> {
    s.split(',')
        .map(|p| {
            let (a, b) = p.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_ranges_round_trip_exactly() {
        let r = [
            (f32::INFINITY, f32::NEG_INFINITY),
            (-1.5e-7, 3.25),
            (0.1, 1.0 / 3.0),
        ];
        let back = ranges_from_str(&ranges_to_str(&r)).unwrap();
        for (a, b) in r.iter().zip(&back) {
            assert_eq!(a.0.to_bits(), b.0.to_bits());
            assert_eq!(a.1.to_bits(), b.1.to_bits());
        }
        assert!(ranges_from_str("1:2,x").is_none());
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn sessions_can_move_between_threads() {
        assert_send::<Session>();
    }
}
