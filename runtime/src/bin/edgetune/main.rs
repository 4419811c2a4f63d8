//! The `edgetune` command line: compile, inspect, run, adapt, predict, eval, demo.
#![allow(clippy::too_many_arguments, clippy::type_complexity)]

use clap::{Parser, Subcommand};
mod fewshot;

use edgetune::adapt::cache::CacheFormat;
use edgetune::adapt::train::Optimizer;
use edgetune::adapt::Kind;
use edgetune::import::{import_bytes, ImportOptions, Taps};
use edgetune::plan::{AlignedBytes, Plan, DEFAULT_ARENA_LIMIT};
use edgetune::preprocess::Preprocess;
use edgetune::session::auto::AutoConfig;
use edgetune::session::eval::{class_folders, episodes as run_episodes, mean_std};
use edgetune::session::{Image, Options, Sample, Serve};
use edgetune::{Error, Executor, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

const DEFAULT_ONNX: &[u8] = include_bytes!("../../../../models/efficientnet_lite0_int8.onnx");
const DEMO_IMAGES: &[u8] = include_bytes!("../../../../examples/data/fashion_mnist_600-images.idx");
const DEMO_LABELS: &[u8] = include_bytes!("../../../../examples/data/fashion_mnist_600-labels.idx");
const FASHION: [&str; 10] = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];

#[derive(Parser)]
#[command(
    name = "edgetune",
    about = "Personalise a frozen int8 backbone on the device"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Threads for each backbone run, the caller's included (default: one per available
    /// core). Results are identical for any count.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile an ONNX model into an edgetune plan (.etm).
    Compile {
        model: PathBuf,
        #[arg(short, long, required_unless_present = "check")]
        output: Option<PathBuf>,
        /// NAME:SHAPE, e.g. image:1x3x224x224 (the name may contain ':').
        #[arg(long)]
        input: Vec<String>,
        /// NAME=V[,V...]: fix an input to a value at compile time (a sample rate, a mode
        /// flag); it folds into the plan and leaves its inputs, e.g. sr=16000.
        #[arg(long, value_name = "NAME=VALUES")]
        constant: Vec<String>,
        /// `blocks`, or a comma-separated list of tensor names.
        #[arg(long)]
        taps: Option<String>,
        /// Preprocessing stored with the plan. Images: a preset (torchvision, tf-keras,
        /// paddle, yolo) and/or fields, e.g. 'image size=224 resize=256 crop=center
        /// mean=123.7,116.3,103.5 std=58.4,57.1,57.4 order=rgb layout=nchw' or
        /// 'preset=torchvision size=384' (fields: size, resize, crop, fill, interp, mean,
        /// std, scale, order, layout; see README), or the first form
        /// image:SIZE:MEAN:STD[:CHANNELS]. Audio: audio:oww:FRAMES[:CONTEXT] (WAV at any
        /// rate and channel count → 16 kHz mono → log-mel window, or CONTEXT windows 80 ms
        /// apart; needs --mel-filters). Text:
        /// text:TOKENS[:CHUNKS] (needs --tokenizer; a text longer than TOKENS runs as up to
        /// CHUNKS windows whose taps are averaged, default 1).
        #[arg(long)]
        preprocess: Option<String>,
        /// Mel filter bank (little-endian f32, `[bins][bands]`) stored with an audio plan.
        #[arg(long)]
        mel_filters: Option<PathBuf>,
        /// tokenizer.json stored with a text plan.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Only check the model: list every node that cannot be imported (op, domain,
        /// node, why, and a count per op) and exit non-zero if there is any.
        #[arg(long)]
        check: bool,
        /// Quantise a float model to int8: activation ranges from running it on the
        /// inputs in DIR (images, read with the --preprocess image declaration, or .npy
        /// tensors of the first input's shape), weights per channel. A model quantised
        /// dynamically (onnxruntime's quantize_dynamic) is turned back into float first.
        #[arg(long, value_name = "DIR")]
        calibrate: Option<PathBuf>,
        /// How many files of the --calibrate folder to use (sorted by name).
        #[arg(long, default_value_t = 32)]
        calibrate_count: usize,
        /// Activation ranges of --calibrate: `minmax` (the default: smallest and largest
        /// value seen) or `percentile:P` (the 100-P and P percentiles, e.g. 99.99).
        #[arg(long, default_value = "minmax", value_name = "METHOD")]
        calibrate_range: String,
    },
    /// Print a plan's ops, parameters, arena, taps and hash.
    Inspect { plan: PathBuf },
    /// Run a plan on .npy inputs ([NAME=]FILE), or on a photo, WAV or text file read with
    /// the preprocessing the plan declares.
    Run {
        plan: PathBuf,
        inputs: Vec<String>,
        #[arg(long)]
        save_outputs: Option<PathBuf>,
        /// Run N more times and print the median latency and the time per op kind.
        #[arg(long, value_name = "N")]
        profile: Option<usize>,
        /// With `--profile`: also each op's time, slowest first, with the shapes it reads
        /// and writes.
        #[arg(long, requires = "profile")]
        per_op: bool,
    },
    /// Train an adapter from a folder with one sub-folder of images per class.
    Adapt {
        #[arg(long)]
        plan: Option<PathBuf>,
        #[arg(long)]
        train: PathBuf,
        /// ncm, linear, moment, ladder, query, tail, bias, lora, or auto (chosen on the
        /// training examples alone: `--candidates`, `--budget`, `--auto-folds`,
        /// `--max-memory`).
        #[arg(long, default_value = "linear")]
        method: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Refuse to train if the training peak would exceed this many bytes.
        #[arg(long)]
        max_memory: Option<usize>,
        /// Unlabeled images of the same classes (the files of DIR and of its
        /// sub-folders, whose names are not read): ncm refines its prototypes by soft
        /// k-means over them, linear and moment self-train on confident pseudo-labels.
        #[arg(long, value_name = "DIR")]
        unlabeled: Option<PathBuf>,
        #[command(flatten)]
        fit: FitArgs,
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write the backbone with a trained head (ncm, linear, moment) as one ONNX model
    /// with an output `scores` (class names in the metadata `edgetune.classes`).
    Export {
        /// The ONNX model the plan was compiled from (default: the embedded backbone).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        plan: Option<PathBuf>,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Top-k classes of images with a trained adapter.
    Predict {
        #[arg(long)]
        plan: Option<PathBuf>,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long, default_value_t = 3)]
        top: usize,
        #[arg(long)]
        json: bool,
        inputs: Vec<PathBuf>,
    },
    /// Few-shot episodes on a folder of class folders: accuracy per method.
    Eval {
        #[arg(long)]
        plan: Option<PathBuf>,
        /// DIR/<class>/*.png, or `bundled` for the bundled Fashion-MNIST sample.
        #[arg(long)]
        data: String,
        #[arg(long, default_value_t = 5)]
        ways: usize,
        #[arg(long, default_value_t = 5)]
        shots: usize,
        #[arg(long, default_value_t = 5)]
        episodes: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Comma-separated methods (default: all); `auto` adds the method chosen per
        /// episode on its support set alone (`--candidates`, `--budget`, `--auto-folds`).
        #[arg(long)]
        method: Option<String>,
        /// U further examples per class, neither support nor query, given to the methods
        /// without their labels: ncm, linear and moment are then reported without and
        /// with them (`+unlabeled`) on the same queries.
        #[arg(long, default_value_t = 0, value_name = "U")]
        unlabeled: usize,
        /// `--method auto`: skip candidates whose training peak would exceed this many
        /// bytes.
        #[arg(long)]
        max_memory: Option<usize>,
        #[command(flatten)]
        fit: FitArgs,
        /// Accuracy vs shots (1, 2, 5, 10) per method, as SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The few-shot demo on the bundled backbone and Fashion-MNIST sample: every method on
    /// 2 seeded episodes (`--episodes 5` for the 5-episode protocol of BENCHMARKS.md).
    Demo {
        /// Seeded episodes (the PyTorch reference column covers 1 to 5).
        #[arg(long, default_value_t = 2)]
        episodes: u64,
        #[arg(long, default_value_t = 5)]
        shots: usize,
        /// Comma-separated methods (default: all).
        #[arg(long)]
        method: Option<String>,
        /// Use only the first N bundled images of each class (default: all 60), e.g. for
        /// a shorter run under emulation.
        #[arg(long)]
        per_class: Option<usize>,
        #[command(flatten)]
        fit: FitArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Clone, Debug)]
struct FitArgs {
    /// Taps the method reads (comma-separated; default per method and backbone).
    #[arg(long)]
    taps: Option<String>,
    /// Tap cache precision: f16 or i8 (default f16; i8 for `adapt --method query`, which
    /// caches every token of two taps: same accuracy on the demo's episodes, 1.15× instead
    /// of 1.32× the peak RSS of `run`).
    #[arg(long)]
    cache: Option<String>,
    /// Augmented views (mirror, shift) per example run through the backbone.
    #[arg(long, default_value_t = 0)]
    augment: usize,
    /// Training steps (full-batch epochs) of trained methods.
    #[arg(long)]
    epochs: Option<usize>,
    /// adamw or sgd (momentum 0.9).
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// Early stop on one held-out example per class.
    #[arg(long)]
    holdout: bool,
    /// Ladder: side width = widest tap / reduction.
    #[arg(long, default_value_t = 16)]
    reduction: usize,
    /// Query: learned tokens per tap.
    #[arg(long, default_value_t = 4)]
    queries: usize,
    /// Lora: rank of the low-rank updates of the tail's 1×1 convolutions.
    #[arg(long, default_value_t = 4)]
    rank: usize,
    /// eval: choose hyper-parameters on the support set only: hold out shot `f` of each
    /// class for folds f = 0..N, train on the other shots, report accuracy on the held-out
    /// shots (the query set is not used).
    #[arg(long, default_value_t = 0)]
    select_folds: usize,
    /// Base learning rate of trained methods (default per method).
    #[arg(long)]
    lr: Option<f32>,
    /// Examples per training step (0 = the whole support set; default per method).
    #[arg(long)]
    batch: Option<usize>,
    /// Linear and moment probes: inverse L2 strength C.
    #[arg(long)]
    c: Option<f32>,
    /// Tail methods: learning-rate multiplier of the tail's own weights.
    #[arg(long)]
    body_lr: Option<f32>,
    /// eval: write each episode's cached taps, labels and the frozen tail to DIR (.npy),
    /// for reference trainers (tools/torch_reference.py).
    #[arg(long)]
    export: Option<PathBuf>,
    /// Tail methods (tail, bias, lora): serve the trained tail in float or re-quantised
    /// to int8 (activation ranges calibrated on the support set, stored in the adapter).
    #[arg(long, default_value = "float")]
    serve: String,
    /// `--method auto`: the methods to choose from (comma-separated; default: all).
    #[arg(long)]
    candidates: Option<String>,
    /// `--method auto`: held-out folds of the support set (at most the fewest examples
    /// of a class).
    #[arg(long, default_value_t = 5)]
    auto_folds: usize,
    /// `--method auto`: seconds for choosing and the final fit (per episode in eval).
    #[arg(long, value_name = "SECONDS")]
    budget: Option<f64>,
}

impl FitArgs {
    /// What `--method auto` may try and within what budget.
    fn auto_config(&self, max_memory: Option<usize>) -> Result<AutoConfig> {
        if self.budget.is_some_and(|b| b.is_nan() || b <= 0.0) {
            return Err(Error::Invalid {
                what: "--budget: a positive number of seconds".into(),
            });
        }
        Ok(AutoConfig {
            candidates: parse_kinds(self.candidates.as_deref())?,
            folds: self.auto_folds.max(1),
            budget_s: self.budget,
            max_memory,
            ensembles: true,
        })
    }

    /// Whether the run trains as the committed PyTorch reference does (the methods'
    /// defaults, tools/torch_reference.py): any option that changes the taps, the cache,
    /// the data, the recipe or what is reported hides the reference column.
    fn is_default_recipe(&self) -> bool {
        self.taps.is_none()
            && self.cache.is_none()
            && self.augment == 0
            && self.epochs.is_none()
            && self.optimizer == "adamw"
            && !self.holdout
            && self.reduction == 16
            && self.queries == 4
            && self.rank == 4
            && self.select_folds == 0
            && self.lr.is_none()
            && self.batch.is_none()
            && self.c.is_none()
            && self.body_lr.is_none()
            && self.serve == "float"
    }

    fn opts(&self) -> Result<Options> {
        Ok(Options {
            taps: self
                .taps
                .as_ref()
                .map(|t| t.split(',').map(String::from).collect()),
            cache: match &self.cache {
                None => None,
                Some(c) => Some(CacheFormat::parse(c).ok_or_else(|| Error::Invalid {
                    what: format!("--cache {c}: use f16 or i8"),
                })?),
            },
            augment: self.augment,
            steps: self.epochs,
            optimizer: match self.optimizer.as_str() {
                "adamw" => Optimizer::AdamW,
                "sgd" => Optimizer::Sgd { momentum: 0.9 },
                o => {
                    return Err(Error::Invalid {
                        what: format!("--optimizer {o}: use adamw or sgd"),
                    })
                }
            },
            holdout: self.holdout,
            reduction: self.reduction.max(1),
            queries: self.queries.clamp(1, 256),
            rank: self.rank.clamp(1, 256),
            lr: self.lr,
            batch: self.batch,
            c: self.c,
            body_lr: self.body_lr,
            serve: Serve::parse(&self.serve).ok_or_else(|| Error::Invalid {
                what: format!("--serve {}: use float or int8", self.serve),
            })?,
            max_memory: None,
        })
    }
}

/// Prints every node `compile` cannot import, grouped per op; an error if there is any.
/// The calibration inputs of a folder: `.npy` tensors as they are, images through the
/// declared image preprocessing.
fn calibration_samples(
    dir: &std::path::Path,
    count: usize,
    image: Option<edgetune::preprocess::ImageSpec>,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut out = vec![];
    for f in files.iter().take(count.max(1)) {
        let ext = f
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext == "npy" {
            let (_, v) = edgetune::npy::read_npy(f)?;
            out.push(vec![v]);
        } else if matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "bmp") {
            let ip = image.as_ref().ok_or_else(|| Error::Invalid {
                what: format!(
                    "{}: calibrating on images needs --preprocess image:...",
                    f.display()
                ),
            })?;
            let im = edgetune::session::prep::load_image(f)?;
            let mut v = vec![];
            ip.apply(&im.px, im.w, im.h, im.c, &mut v)?;
            out.push(vec![v]);
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid {
            what: format!("{}: no .npy or image files to calibrate on", dir.display()),
        });
    }
    Ok(out)
}

fn check_cmd(model: &Path, bad: &[edgetune::import::Unsupported]) -> Result<()> {
    if bad.is_empty() {
        println!("{}: every node imports", model.display());
        return Ok(());
    }
    let mut per_op: Vec<(String, usize)> = vec![];
    for u in bad {
        let key = format!("{}:{}", u.domain, u.op);
        match per_op.iter_mut().find(|p| p.0 == key) {
            Some(p) => p.1 += 1,
            None => per_op.push((key, 1)),
        }
        println!("{} ({}) node '{}': {}", u.op, u.domain, u.node, u.why);
    }
    let summary: Vec<String> = per_op.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    Err(Error::Invalid {
        what: format!(
            "{}: {} node(s) cannot be imported: {}",
            model.display(),
            bad.len(),
            summary.join(", ")
        ),
    })
}

/// `--method` of eval: the methods to report, and whether `auto` is one of them (alone,
/// it is the only row).
fn parse_methods(s: Option<&str>) -> Result<(Vec<Kind>, bool)> {
    match s {
        Some(list) if list.split(',').any(|m| m == "auto") => {
            let rest: Vec<&str> = list.split(',').filter(|m| *m != "auto").collect();
            if rest.is_empty() {
                Ok((vec![], true))
            } else {
                Ok((parse_kinds(Some(&rest.join(",")))?, true))
            }
        }
        s => Ok((parse_kinds(s)?, false)),
    }
}

fn parse_kinds(s: Option<&str>) -> Result<Vec<Kind>> {
    match s {
        None => Ok(Kind::ALL.to_vec()),
        Some(list) => list
            .split(',')
            .map(|m| {
                Kind::parse(m).ok_or_else(|| Error::Invalid {
                    what: format!(
                        "unknown method '{m}' (available: ncm, linear, moment, ladder, query, tail, bias, lora)"
                    ),
                })
            })
            .collect(),
    }
}

fn io_err(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        detail: e.to_string(),
    }
}

fn load_plan(path: &Path) -> Result<Plan<'static>> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    Plan::from_owned(AlignedBytes::from_slice(&bytes))
}

fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>)> {
    // The shape follows the last ':'; names may contain ':' themselves.
    let (name, shape) = s.rsplit_once(':').ok_or_else(|| Error::Invalid {
        what: format!("--input {s}: expected NAME:SHAPE"),
    })?;
    let dims = shape
        .split('x')
        .map(|d| d.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>();
    let dims = dims.map_err(|_| Error::Invalid {
        what: format!("--input {s}: bad shape '{shape}'"),
    })?;
    Ok((name.to_string(), dims))
}

fn parse_constant(s: &str) -> Result<(String, Vec<f32>)> {
    let bad = |why: &str| Error::Invalid {
        what: format!("--constant {s}: {why} (expected NAME=V[,V...])"),
    };
    let (name, vals) = s.rsplit_once('=').ok_or_else(|| bad("no '='"))?;
    let vals = vals
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad("a value is not a number"))?;
    Ok((name.to_string(), vals))
}

/// A plan's preprocessing with every field spelled out (the first image form expanded).
fn describe_preprocess(d: &str) -> String {
    match Preprocess::declare(d) {
        Ok(Preprocess::Image(p)) => p.describe(),
        Ok(other) => other.to_meta(),
        Err(e) => format!("{d} (not understood: {e})"),
    }
}

fn default_plan() -> Result<Plan<'static>> {
    let opts = ImportOptions {
        taps: Taps::Blocks,
        meta: vec![
            ("preprocess".into(), "image:224:127:128".into()),
            ("source".into(), "efficientnet_lite0_int8.onnx".into()),
        ],
        ..Default::default()
    };
    let parts = import_bytes(DEFAULT_ONNX, &opts)?;
    Plan::from_owned(AlignedBytes::from_slice(&parts.to_bytes()))
}

fn read_idx(data: &[u8]) -> Result<(Vec<usize>, &[u8])> {
    let bad = || Error::BadFile {
        what: "idx",
        detail: "truncated or not an IDX file".into(),
    };
    if data.len() < 4 || data[2] != 0x08 {
        return Err(bad());
    }
    let nd = data[3] as usize;
    let mut dims = vec![];
    for i in 0..nd {
        let b = data.get(4 + 4 * i..8 + 4 * i).ok_or_else(bad)?;
        dims.push(u32::from_be_bytes(b.try_into().unwrap()) as usize);
    }
    let body = &data[4 + 4 * nd..];
    if body.len() != dims.iter().product::<usize>() {
        return Err(bad());
    }
    Ok((dims, body))
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The bundled Fashion-MNIST sample as grey images with labels.
fn bundled() -> Result<(Vec<String>, Vec<(Sample, usize)>)> {
    let (idims, pixels) = read_idx(DEMO_IMAGES)?;
    let (_, labels) = read_idx(DEMO_LABELS)?;
    let (n, h, w) = (idims[0], idims[1], idims[2]);
    let images = (0..n)
        .map(|i| {
            (
                Sample::Image(Image {
                    px: pixels[i * h * w..][..h * w].to_vec(),
                    w,
                    h,
                    c: 1,
                }),
                labels[i] as usize,
            )
        })
        .collect();
    Ok((FASHION.iter().map(|s| s.to_string()).collect(), images))
}

/// `--calibrate-range`: `minmax` or `percentile:P` with P in (50, 100].
fn calibration_of(s: &str) -> Result<edgetune::import::Calibration> {
    use edgetune::import::Calibration;
    if s == "minmax" {
        return Ok(Calibration::MinMax);
    }
    match s.strip_prefix("percentile:").map(|p| p.parse::<f32>()) {
        Some(Ok(p)) if p > 50.0 && p <= 100.0 => Ok(Calibration::Percentile(p)),
        _ => Err(Error::Invalid {
            what: format!("--calibrate-range {s}: use minmax or percentile:P with 50 < P <= 100"),
        }),
    }
}

fn plan_or_default(p: Option<&Path>) -> Result<Plan<'static>> {
    match p {
        Some(p) => load_plan(p),
        None => default_plan(),
    }
}

/// PyTorch trained on the same cached taps and episodes as `demo` / `eval --data bundled
/// --ways 10 --shots 5 --episodes 5 --seed 0` (tools/torch_reference.py; its results are
/// committed, one entry per episode), for the methods whose recipes it reproduces. Other
/// methods have no reference for this protocol and print `-`.
const TORCH_REFERENCE: &str = include_str!("../../../../tools/reference/torch_fmnist.json");

/// PyTorch's accuracy on the first `episodes` of the reference's episodes (what
/// `tools/torch_reference.py EXPORT OUT [methods] EPISODES` computes): the episodes are
/// drawn from the seed one by one, so the first n are the same for any count.
fn reference_accuracies(k: Kind, episodes: usize) -> Option<Vec<f64>> {
    if !matches!(
        k,
        Kind::Linear | Kind::Ladder | Kind::Tail | Kind::Bias | Kind::Lora
    ) {
        return None;
    }
    // Each episode's `"method": {"accuracy": a, ...}` (the summary's entries hold `"mean"`).
    let key = format!("\"{}\": {{", k.name());
    let list = &TORCH_REFERENCE[TORCH_REFERENCE.find("\"episodes\": [")?..];
    let mut acc = vec![];
    let mut rest = list;
    while let Some(at) = rest.find(&key) {
        let body = &rest[at + key.len()..];
        let end = body.find('}')?;
        let Some(a) = body[..end].find("\"accuracy\": ") else {
            break;
        };
        let v = &body[a + 13..end];
        let v = &v[..v.find([',', '\n']).unwrap_or(v.len())];
        acc.push(v.trim().parse().ok()?);
        rest = &body[end..];
    }
    (acc.len() >= episodes && episodes > 0).then(|| acc[..episodes].to_vec())
}

fn reference(k: Kind, episodes: usize) -> String {
    match reference_accuracies(k, episodes) {
        Some(a) => {
            let (m, s) = mean_std(&a);
            format!("{m:.3} ± {s:.3} (PyTorch, same taps and episodes)")
        }
        None => "-".into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn eval_cmd(
    plan: Option<&Path>,
    data: &str,
    ways: usize,
    shots: usize,
    episodes: u64,
    seed: u64,
    kinds: &[Kind],
    unlabeled: usize,
    auto: Option<&AutoConfig>,
    opts: &Options,
    fit: &FitArgs,
    plot: Option<&Path>,
    json: bool,
) -> Result<()> {
    let plan = plan_or_default(plan)?;
    let (names, images) = if data == "bundled" {
        bundled()?
    } else {
        let (names, files) = class_folders(Path::new(data))?;
        let mut prep = edgetune::session::prep_of(&plan)?;
        let imgs = files
            .iter()
            .map(|(p, l)| Ok((prep.load(p)?, *l)))
            .collect::<Result<Vec<_>>>()?;
        (names, imgs)
    };
    let bar = fewshot::backbone_bar(!json, 0);
    let (res, per) = run_episodes(
        &plan,
        &images,
        names.len(),
        kinds,
        ways,
        shots,
        episodes,
        seed,
        opts,
        fit.select_folds,
        unlabeled,
        auto,
        fit.export.as_deref(),
        &mut |i, n| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
        },
    )?;
    bar.finish_and_clear();
    if !json {
        let unl = if unlabeled > 0 {
            format!(", {unlabeled} unlabeled per class")
        } else {
            String::new()
        };
        println!(
            "{ways}-way {shots}-shot{unl}, {episodes} episodes, seed {seed}; backbone {:.1} ms per image; {}",
            per * 1e3,
            fewshot::episode_note(episodes * fit.select_folds.max(1) as u64, fit.export.is_some())
        );
    }
    // The references hold for the bundled 10-way 5-shot, seed-0 protocol (up to its 5
    // episodes) with the methods' default recipes only.
    let none = |_: Kind| "-".to_string();
    let same = data == "bundled"
        && ways == 10
        && shots == 5
        && (1..=5).contains(&episodes)
        && seed == 0
        && unlabeled == 0;
    let with_ref = |k: Kind| reference(k, episodes as usize);
    let refs: &dyn Fn(Kind) -> String = if same && fit.is_default_recipe() {
        &with_ref
    } else {
        &none
    };
    fewshot::print_table(&res, refs, json);
    if !json {
        for m in &res {
            for c in m.auto.iter().flatten() {
                println!("auto, {c}");
            }
        }
    }
    if let Some(path) = plot {
        // Shot counts the data can serve (every class needs one query left).
        let min_class = (0..names.len())
            .map(|c| images.iter().filter(|i| i.1 == c).count())
            .min()
            .unwrap_or(0);
        let shot_list: Vec<usize> = [1, 2, 5, 10]
            .into_iter()
            .filter(|&s| s != shots && s < min_class)
            .collect();
        let mut rows: Vec<(Kind, Vec<(usize, f64)>)> = res
            .iter()
            .filter(|m| !m.unlabeled && m.auto.is_none())
            .map(|m| (m.kind, vec![(shots, mean_std(&m.acc).0)]))
            .collect();
        for &s in &shot_list {
            let (r, _) = run_episodes(
                &plan,
                &images,
                names.len(),
                kinds,
                ways,
                s,
                episodes,
                seed,
                opts,
                fit.select_folds,
                0,
                None,
                None,
                &mut |_, _| {},
            )?;
            for (row, m) in rows.iter_mut().zip(&r) {
                row.1.push((s, mean_std(&m.acc).0));
            }
        }
        let mut shots_sorted: Vec<usize> = rows[0].1.iter().map(|p| p.0).collect();
        shots_sorted.sort();
        let series: Vec<(Kind, Vec<f64>)> = rows
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by_key(|p| p.0);
                (k, v.into_iter().map(|p| p.1).collect())
            })
            .collect();
        fewshot::plot(path, &shots_sorted, &series)?;
        if !json {
            println!("plot -> {}", path.display());
        }
    }
    Ok(())
}

fn demo(
    episodes: u64,
    shots: usize,
    kinds: &[Kind],
    per_class: Option<usize>,
    opts: &Options,
    fit: &FitArgs,
    json: bool,
) -> Result<()> {
    let t0 = Instant::now();
    let plan = default_plan()?;
    let kernels = edgetune::kernels::Kernels::detect();
    if !json {
        let methods = if kinds.len() == Kind::ALL.len() {
            "every method".to_string()
        } else {
            kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sample = per_class.map_or(String::new(), |n| format!(" (first {n} images per class)"));
        println!("edgetune demo: EfficientNet-Lite0 int8 (embedded), Fashion-MNIST{sample} 10-way {shots}-shot, {episodes} seeded episodes, {methods}");
        println!("kernels: {:?}", kernels.describe());
        println!(
            "plan: {} ops, {:.1} MB weights, arena {:.1} MB, compiled in {:.2} s",
            plan.ops.len(),
            plan.weight_bytes() as f64 / 1e6,
            plan.arena_bytes() as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
    }
    let (names, mut images) = bundled()?;
    if let Some(n) = per_class {
        let mut seen = vec![0usize; names.len()];
        images.retain(|(_, l)| {
            seen[*l] += 1;
            seen[*l] <= n
        });
    }
    let bar = fewshot::backbone_bar(!json, 0);
    let (res, per) = run_episodes(
        &plan,
        &images,
        names.len(),
        kinds,
        10,
        shots,
        episodes,
        0,
        opts,
        fit.select_folds,
        0,
        None,
        fit.export.as_deref(),
        &mut |i, n| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
        },
    )?;
    bar.finish_and_clear();
    if !json {
        println!(
            "backbone: {} images once into the tap cache ({:?}), {:.1} ms per image ({} threads)",
            images.len() * (1 + opts.augment),
            opts.cache.unwrap_or(CacheFormat::F16),
            per * 1e3,
            edgetune::par::default_threads()
        );
        println!(
            "{}\n",
            fewshot::episode_note(
                episodes * fit.select_folds.max(1) as u64,
                fit.export.is_some()
            )
        );
    }
    // The reference's protocol: every bundled image, 5 shots, up to 5 episodes, seed 0,
    // the methods' default recipes.
    let none = |_: Kind| "-".to_string();
    let same =
        per_class.is_none() && shots == 5 && (1..=5).contains(&episodes) && fit.is_default_recipe();
    let with_ref = |k: Kind| reference(k, episodes as usize);
    let refs: &dyn Fn(Kind) -> String = if same { &with_ref } else { &none };
    fewshot::print_table(&res, refs, json);
    if !json {
        println!(
            "\npeak RSS {:.1} MB (whole run, incl. the {}-image tap cache); classes: {}",
            peak_rss_kb() as f64 / 1024.0,
            images.len(),
            names.join(", ")
        );
    }
    Ok(())
}

fn run(
    plan_path: &Path,
    inputs: &[String],
    save: Option<&Path>,
    profile: Option<usize>,
    per_op_listing: bool,
) -> Result<()> {
    let plan = load_plan(plan_path)?;
    let mut feeds: Vec<Vec<f32>> = vec![Vec::new(); plan.inputs.len()];
    for (k, arg) in inputs.iter().enumerate() {
        let (name, file) = match plan
            .inputs
            .iter()
            .position(|p| arg.starts_with(&format!("{}=", p.name)))
        {
            Some(i) => (i, &arg[plan.inputs[i].name.len() + 1..]),
            None if plan.inputs.len() == 1 && k == 0 => (0, arg.as_str()),
            None => {
                return Err(Error::Invalid {
                    what: format!(
                        "{arg}: use NAME=FILE (inputs: {:?})",
                        plan.inputs.iter().map(|p| &p.name).collect::<Vec<_>>()
                    ),
                })
            }
        };
        let path = Path::new(file);
        feeds[name] = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
        {
            edgetune::npy::read_npy(path)?.1
        } else {
            // Any other file (a photo, a WAV, a text) goes through the preprocessing the
            // plan declares, as `adapt` and `predict` read it.
            let mut prep = edgetune::session::prep_of(&plan)?;
            let sample = prep.load(path)?;
            let mut v = Vec::new();
            prep.inputs(&sample, 0, &mut v)?;
            if v.len() != plan.inputs.len() {
                return Err(Error::Invalid {
                    what: format!(
                        "{file}: the plan's preprocessing makes {} input(s), the plan takes {}",
                        v.len(),
                        plan.inputs.len()
                    ),
                });
            }
            if plan.inputs.len() > 1 {
                feeds = v;
                continue;
            }
            v.swap_remove(0)
        };
    }
    let mut exec = Executor::new(
        &plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    exec.set_par(edgetune::par::Par::new(0)?);
    let refs: Vec<&[f32]> = feeds.iter().map(|v| v.as_slice()).collect();
    exec.run(&refs)?;
    if let Some(n) = profile.filter(|&n| n > 0) {
        let mut runs = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            exec.run(&refs)?;
            runs.push(t.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        let kern = edgetune::kernels::Kernels::detect().describe();
        println!(
            "median {:.3} ms over {n} runs, {} threads ({kern:?})",
            runs[n / 2] * 1e3,
            exec.par().threads()
        );
        let stripes = exec.stripes();
        if !stripes.is_empty() {
            let list: Vec<String> = stripes
                .iter()
                .map(|&(a, n)| format!("{a}-{}", a + n - 1))
                .collect();
            println!(
                "  ops run as stripes (each thread through its part of every op, waiting only where parts meet): {}",
                list.join(", ")
            );
        }
        // Then each op on its own (on several threads, ops that run as stripes in the
        // whole-run timing above are timed one by one here).
        let mut per_op = vec![std::time::Duration::ZERO; plan.ops.len()];
        for _ in 0..n {
            exec.run_profiled(&refs, &mut per_op)?;
        }
        let mut kinds: Vec<(&str, f64, usize)> = vec![];
        for (op, t) in plan.ops.iter().zip(&per_op) {
            match kinds.iter_mut().find(|k| k.0 == op.name()) {
                Some(k) => {
                    k.1 += t.as_secs_f64();
                    k.2 += 1;
                }
                None => kinds.push((op.name(), t.as_secs_f64(), 1)),
            }
        }
        kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (name, t, count) in kinds {
            println!("  {name:<18} x{count:<3} {:8.3} ms/run", t / n as f64 * 1e3);
        }
        if per_op_listing {
            let shapes = |ids: &[u32]| {
                ids.iter()
                    .map(|&i| format!("{:?}", plan.tensors[i as usize].logical_shape()))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut order: Vec<usize> = (0..plan.ops.len()).collect();
            order.sort_by(|&a, &b| per_op[b].cmp(&per_op[a]));
            println!("  op    kind                 ms/run  reads -> writes");
            for i in order {
                let op = &plan.ops[i];
                let (ins, outs) = op.io();
                println!(
                    "  {i:<5} {:<18} {:8.3}  {} -> {}",
                    op.name(),
                    per_op[i].as_secs_f64() / n as f64 * 1e3,
                    shapes(&ins),
                    shapes(&outs)
                );
            }
        }
    }
    for (i, p) in plan.outputs.iter().chain(&plan.taps).enumerate() {
        let t = &plan.tensors[p.tensor as usize];
        let mut v = vec![0.0; t.len()];
        exec.tensor_f32(p.tensor, &mut v)?;
        let top = edgetune::adapt::argmax(&v);
        println!(
            "{}: shape {:?}, argmax {top} ({:.4})",
            p.name,
            t.logical_shape(),
            v[top]
        );
        if let Some(dir) = save {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            let safe: String = p
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            edgetune::npy::write_npy(&dir.join(format!("{i}_{safe}.npy")), &t.logical_shape(), &v)?;
        }
    }
    Ok(())
}

fn main() {
    // Like other Unix tools: a closed pipe (`edgetune predict ... | head`) ends the
    // process quietly instead of a panic in `println!`.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        edgetune::par::set_default_threads(t);
    }
    let res = match cli.cmd {
        Cmd::Compile {
            model,
            output,
            input,
            constant,
            taps,
            preprocess,
            mel_filters,
            tokenizer,
            check,
            calibrate,
            calibrate_count,
            calibrate_range,
        } => (|| {
            let t = Instant::now();
            let inputs = input
                .iter()
                .map(|s| parse_input_shape(s))
                .collect::<Result<Vec<_>>>()?;
            let constants = constant
                .iter()
                .map(|s| parse_constant(s))
                .collect::<Result<Vec<_>>>()?;
            let taps = match taps.as_deref() {
                None => Taps::None,
                Some("blocks") => Taps::Blocks,
                Some(list) => Taps::Names(list.split(',').map(String::from).collect()),
            };
            if check {
                let bytes = std::fs::read(&model).map_err(|e| io_err(&model, e))?;
                let opts = ImportOptions {
                    inputs,
                    taps,
                    meta: vec![],
                    constants: constants.clone(),
                    ..Default::default()
                };
                return check_cmd(&model, &edgetune::import::check(&bytes, &opts)?);
            }
            let output = output.ok_or_else(|| Error::Invalid {
                what: "compile needs -o OUTPUT".into(),
            })?;
            let mut meta = vec![("source".to_string(), model.display().to_string())];
            if let Some(p) = preprocess {
                let decl = Preprocess::declare(&p).map_err(|e| Error::Invalid {
                    what: format!("--preprocess '{p}': {e}"),
                })?;
                match (decl, &mel_filters, &tokenizer) {
                    (Preprocess::Audio { .. }, Some(f), _) => {
                        let b = std::fs::read(f).map_err(|e| io_err(f, e))?;
                        let cfg = edgetune::audio::MelConfig::OPENWAKEWORD;
                        // Checked here so a bad file is refused at compile time.
                        edgetune::audio::MelFrontEnd::from_le_bytes(cfg, &b)?;
                        let v: Vec<f32> = b
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                        meta.push(("mel_filters".into(), edgetune::preprocess::f32_hex(&v)));
                    }
                    (Preprocess::Text { .. }, _, Some(t)) => {
                        let json = std::fs::read_to_string(t).map_err(|e| io_err(t, e))?;
                        <tokenizers::Tokenizer as std::str::FromStr>::from_str(&json).map_err(
                            |e| Error::Invalid {
                                what: format!("{}: {e}", t.display()),
                            },
                        )?;
                        meta.push(("tokenizer".into(), json));
                    }
                    (Preprocess::Audio { .. }, None, _) => {
                        return Err(Error::Invalid {
                            what: "--preprocess audio:... needs --mel-filters FILE".into(),
                        })
                    }
                    (Preprocess::Text { .. }, _, None) => {
                        return Err(Error::Invalid {
                            what: "--preprocess text:... needs --tokenizer FILE".into(),
                        })
                    }
                    _ => {}
                }
                meta.push(("preprocess".into(), decl.to_meta()));
            }
            let bytes = std::fs::read(&model).map_err(|e| io_err(&model, e))?;
            let image_prep = meta
                .iter()
                .find(|(k, _)| k == "preprocess")
                .and_then(|(_, p)| match Preprocess::parse(p) {
                    Some(Preprocess::Image(ip)) => Some(ip),
                    _ => None,
                });
            let calibration = calibration_of(&calibrate_range)?;
            let opts = ImportOptions {
                inputs,
                taps,
                meta,
                constants,
                calibration,
                unfused: false,
            };
            let parts = match calibrate {
                None => import_bytes(&bytes, &opts)?,
                Some(dir) => {
                    let samples = calibration_samples(&dir, calibrate_count, image_prep)?;
                    let (parts, r) = edgetune::import::import_calibrated(&bytes, &opts, &samples)?;
                    println!(
                        "calibrated on {} inputs: {} activations and {} weight tensors quantised",
                        r.samples, r.activations, r.weights
                    );
                    parts
                }
            };
            let out = parts.to_bytes();
            // The declaration must fit the model's input (size, channels, layout) before
            // a plan is written.
            let plan = Plan::from_owned(AlignedBytes::from_slice(&out))?;
            let prep = match plan.meta("preprocess") {
                Some(_) => Some(edgetune::session::prep_of(&plan)?),
                None => None,
            };
            edgetune::fsutil::write_atomic(&output, &out)?;
            println!(
                "{} -> {} ({} ops, {:.2} MB) in {:.2} s",
                model.display(),
                output.display(),
                parts.ops.len(),
                out.len() as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            if let Some(d) = plan.meta("preprocess") {
                match prep {
                    Some(edgetune::session::Prep::Text { tokens, chunks, .. }) => println!(
                        "preprocess: text:{tokens}:{chunks} (tokenizer stored, {tokens} = the model's sequence length)"
                    ),
                    _ => println!("preprocess: {}", describe_preprocess(d)),
                }
            }
            Ok(())
        })(),
        Cmd::Inspect { plan } => load_plan(&plan).map(|p| {
            let mut counts: Vec<(&str, usize)> = vec![];
            for op in &p.ops {
                match counts.iter_mut().find(|(n, _)| *n == op.name()) {
                    Some(c) => c.1 += 1,
                    None => counts.push((op.name(), 1)),
                }
            }
            println!("hash {}", edgetune::error::hex(&p.hash()));
            println!("ops {}: {counts:?}", p.ops.len());
            println!(
                "weights {} bytes, arena {} bytes",
                p.weight_bytes(),
                p.arena_bytes()
            );
            for i in &p.inputs {
                println!(
                    "input  {} {:?}",
                    i.name,
                    p.tensors[i.tensor as usize].logical_shape()
                );
            }
            for o in &p.outputs {
                println!(
                    "output {} {:?}",
                    o.name,
                    p.tensors[o.tensor as usize].logical_shape()
                );
            }
            for t in &p.taps {
                println!(
                    "tap    {} {:?}",
                    t.name,
                    p.tensors[t.tensor as usize].logical_shape()
                );
            }
            if let Some(d) = p.meta("preprocess") {
                println!("preprocess {}", describe_preprocess(d));
            }
            for (k, v) in &p.meta {
                println!("meta   {k} = {v}");
            }
        }),
        Cmd::Run {
            plan,
            inputs,
            save_outputs,
            profile,
            per_op,
        } => run(&plan, &inputs, save_outputs.as_deref(), profile, per_op),
        Cmd::Demo {
            episodes,
            shots,
            method,
            per_class,
            fit,
            json,
        } => fit.opts().and_then(|o| {
            let kinds = parse_kinds(method.as_deref())?;
            demo(episodes, shots, &kinds, per_class, &o, &fit, json)
        }),
        Cmd::Adapt {
            plan,
            train,
            method,
            seed,
            max_memory,
            unlabeled,
            fit,
            json,
            output,
        } => (|| {
            let auto = method == "auto";
            let kind = if auto {
                vec![Kind::Linear]
            } else {
                parse_kinds(Some(&method))?
            };
            if kind.len() != 1 {
                return Err(Error::Invalid {
                    what: "adapt trains one method".into(),
                });
            }
            let plan = plan_or_default(plan.as_deref())?;
            let opts = Options {
                max_memory,
                ..fit.opts()?
            };
            let cfg = fit.auto_config(max_memory)?;
            fewshot::adapt_cmd(
                plan,
                &train,
                unlabeled.as_deref(),
                kind[0],
                auto.then_some(&cfg),
                &opts,
                seed,
                json,
                &output,
            )
        })(),
        Cmd::Export {
            model,
            plan,
            adapter,
            output,
        } => (|| {
            let onnx = match &model {
                Some(m) => std::fs::read(m).map_err(|e| io_err(m, e))?,
                None => DEFAULT_ONNX.to_vec(),
            };
            let plan = plan_or_default(plan.as_deref())?;
            let a = edgetune::adapt::Adapter::load(&adapter, &plan.hash())?;
            let bytes = edgetune::import::export_onnx(&onnx, &plan, &a)?;
            edgetune::fsutil::write_atomic(&output, &bytes)?;
            println!(
                "{} head ({} classes) on {} -> {} ({:.2} MB)",
                a.method.name(),
                a.classes.len(),
                a.taps[0].0,
                output.display(),
                bytes.len() as f64 / 1e6
            );
            Ok(())
        })(),
        Cmd::Predict {
            plan,
            adapter,
            top,
            json,
            inputs,
        } => plan_or_default(plan.as_deref())
            .and_then(|p| fewshot::predict_cmd(p, &adapter, &inputs, top.max(1), json)),
        Cmd::Eval {
            plan,
            data,
            ways,
            shots,
            episodes,
            seed,
            method,
            unlabeled,
            max_memory,
            fit,
            plot,
            json,
        } => (|| {
            let (kinds, auto) = parse_methods(method.as_deref())?;
            let cfg = fit.auto_config(max_memory)?;
            eval_cmd(
                plan.as_deref(),
                &data,
                ways,
                shots,
                episodes,
                seed,
                &kinds,
                unlabeled,
                auto.then_some(&cfg),
                &fit.opts()?,
                &fit,
                plot.as_deref(),
                json,
            )
        })(),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's own summary (`"method": {"mean": m, "std": s`) of its 5 episodes.
    fn summary(k: Kind) -> (f64, f64) {
        let at = TORCH_REFERENCE
            .find(&format!("\n \"{}\": {{\n  \"mean\"", k.name()))
            .unwrap();
        let num = |key: &str| -> f64 {
            let rest = &TORCH_REFERENCE[at..];
            let v = &rest[rest.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4..];
            v[..v.find([',', '\n']).unwrap()].trim().parse().unwrap()
        };
        (num("mean"), num("std"))
    }

    #[test]
    fn reference_episodes_agree_with_the_scripts_summary() {
        for k in [
            Kind::Linear,
            Kind::Ladder,
            Kind::Tail,
            Kind::Bias,
            Kind::Lora,
        ] {
            let acc = reference_accuracies(k, 5).unwrap();
            let (m, s) = mean_std(&acc);
            let (sm, ss) = summary(k);
            assert!(
                (m - sm).abs() < 1e-6 && (s - ss).abs() < 1e-6,
                "{k:?}: {m} {s} vs {sm} {ss}"
            );
            // Fewer episodes: the first ones.
            assert_eq!(reference_accuracies(k, 2).unwrap(), acc[..2].to_vec());
        }
        assert!(reference_accuracies(Kind::Linear, 6).is_none());
        assert!(reference_accuracies(Kind::Ncm, 1).is_none());
        assert_eq!(reference(Kind::Query, 5), "-");
    }
}
