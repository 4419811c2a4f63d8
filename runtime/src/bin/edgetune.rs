//! The `edgetune` command line: compile, inspect, run, demo.

use clap::{Parser, Subcommand};
use edgetune::adapt::{self, rng::Rng, LinearConfig, Ncm, Support};
use edgetune::features::FeatureExtractor;
use edgetune::import::{import_bytes, ImportOptions, Taps};
use edgetune::plan::{AlignedBytes, Plan, DEFAULT_ARENA_LIMIT};
use edgetune::preprocess::ImagePrep;
use edgetune::{Error, Executor, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

const DEFAULT_ONNX: &[u8] = include_bytes!("../../../models/efficientnet_lite0_int8.onnx");
const DEMO_IMAGES: &[u8] = include_bytes!("../../../examples/data/fashion_mnist_600-images.idx");
const DEMO_LABELS: &[u8] = include_bytes!("../../../examples/data/fashion_mnist_600-labels.idx");
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
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile an ONNX model into an edgetune plan (.etm).
    Compile {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// NAME:SHAPE, e.g. image:1x3x224x224 (the name may contain ':').
        #[arg(long)]
        input: Vec<String>,
        /// `blocks`, or a comma-separated list of tensor names.
        #[arg(long)]
        taps: Option<String>,
        /// Preprocessing stored with the plan, e.g. image:224:127:128.
        #[arg(long)]
        preprocess: Option<String>,
    },
    /// Print a plan's ops, parameters, arena, taps and hash.
    Inspect { plan: PathBuf },
    /// Run a plan on .npy inputs ([NAME=]FILE).
    Run {
        plan: PathBuf,
        inputs: Vec<String>,
        #[arg(long)]
        save_outputs: Option<PathBuf>,
    },
    /// Train an adapter from a folder with one sub-folder of images per class.
    Adapt {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        train: PathBuf,
        #[arg(long, default_value = "linear")]
        method: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Refuse to train if the training peak would exceed this many bytes.
        #[arg(long)]
        max_memory: Option<usize>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Top-3 classes of images with a trained adapter.
    Predict {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        adapter: PathBuf,
        inputs: Vec<PathBuf>,
    },
    /// The few-shot demo on the bundled backbone and Fashion-MNIST sample.
    Demo {
        #[arg(long, default_value_t = 5)]
        episodes: u64,
        #[arg(long, default_value_t = 5)]
        shots: usize,
    },
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

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt())
}

fn demo(episodes: u64, shots: usize) -> Result<()> {
    let t0 = Instant::now();
    let plan = default_plan()?;
    let kernels = edgetune::kernels::Kernels::detect();
    println!("edgetune demo: EfficientNet-Lite0 int8 (embedded), Fashion-MNIST 10-way {shots}-shot, {episodes} episodes");
    println!("kernels: {:?}", kernels.describe());
    println!(
        "plan: {} ops, {:.1} MB weights, arena {:.1} MB, compiled in {:.2} s",
        plan.ops.len(),
        plan.weight_bytes() as f64 / 1e6,
        plan.arena_bytes() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let prep = plan
        .meta("preprocess")
        .and_then(ImagePrep::parse)
        .ok_or_else(|| Error::Invalid {
            what: "plan declares no image preprocessing".into(),
        })?;
    let (idims, pixels) = read_idx(DEMO_IMAGES)?;
    let (_, labels) = read_idx(DEMO_LABELS)?;
    let (n, h, w) = (idims[0], idims[1], idims[2]);
    let exec = Executor::new(&plan, kernels, DEFAULT_ARENA_LIMIT)?;
    let mut fx = FeatureExtractor::new(exec, "features")?;
    let dim = fx.dim;
    let mut feats = vec![0.0f32; n * dim];
    let mut input = Vec::new();
    let t1 = Instant::now();
    for i in 0..n {
        prep.apply(&pixels[i * h * w..][..h * w], w, h, 1, &mut input);
        fx.features(&input, &mut feats[i * dim..][..dim])?;
    }
    let per = t1.elapsed().as_secs_f64() / n as f64;
    println!(
        "backbone: {n} images, {:.1} ms per image (one thread)",
        per * 1e3
    );
    let classes = 10;
    let by_class: Vec<Vec<usize>> = (0..classes)
        .map(|c| (0..n).filter(|&i| labels[i] as usize == c).collect())
        .collect();
    let mut acc_ncm = vec![];
    let mut acc_lin = vec![];
    let (mut t_ncm, mut t_lin) = (0.0, 0.0);
    for seed in 0..episodes {
        let mut rng = Rng::new(seed);
        let (mut sx, mut sy, mut query) = (vec![], vec![], vec![]);
        for (c, idx) in by_class.iter().enumerate() {
            let mut idx = idx.clone();
            rng.shuffle(&mut idx);
            for &i in &idx[..shots] {
                sx.extend_from_slice(&feats[i * dim..][..dim]);
                sy.push(c);
            }
            query.extend(idx[shots..].iter().map(|&i| (i, c)));
        }
        let t = Instant::now();
        let mut ncm = Ncm::new(dim);
        for (i, &c) in sy.iter().enumerate() {
            ncm.enrol(c, &sx[i * dim..][..dim]);
        }
        t_ncm += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let support = Support {
            x: &sx,
            y: &sy,
            dim,
            classes,
        };
        let (head, _) = adapt::train_linear(
            &support,
            &LinearConfig {
                seed,
                ..Default::default()
            },
        )?;
        t_lin += t.elapsed().as_secs_f64();
        let mut scores = vec![0.0; classes];
        let (mut ok_n, mut ok_l) = (0, 0);
        for &(i, c) in &query {
            let f = &feats[i * dim..][..dim];
            ncm.scores(f, &mut scores);
            ok_n += (adapt::argmax(&scores) == c) as usize;
            head.logits(f, &mut scores);
            ok_l += (adapt::argmax(&scores) == c) as usize;
        }
        acc_ncm.push(ok_n as f64 / query.len() as f64);
        acc_lin.push(ok_l as f64 / query.len() as f64);
    }
    let e = episodes as f64;
    println!("\n| method | accuracy (mean ± std) | reference (onnxruntime features) | train time per episode |");
    println!("|---|---|---|---|");
    let (m, s) = mean_std(&acc_ncm);
    println!(
        "| ncm    | {m:.3} ± {s:.3} | 0.667 ± 0.023 (NCM) | {:.2} ms |",
        t_ncm / e * 1e3
    );
    let (m, s) = mean_std(&acc_lin);
    println!(
        "| linear | {m:.3} ± {s:.3} | 0.730 ± 0.020 (logistic regression, C=10) | {:.1} ms |",
        t_lin / e * 1e3
    );
    println!(
        "\npeak RSS {:.1} MB; classes: {}",
        peak_rss_kb() as f64 / 1024.0,
        FASHION.join(", ")
    );
    Ok(())
}

fn run(plan_path: &Path, inputs: &[String], save: Option<&Path>) -> Result<()> {
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
        feeds[name] = edgetune::npy::read_npy(Path::new(file))?.1;
    }
    let mut exec = Executor::new(
        &plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    let refs: Vec<&[f32]> = feeds.iter().map(|v| v.as_slice()).collect();
    exec.run(&refs)?;
    for (i, p) in plan.outputs.iter().enumerate() {
        let t = &plan.tensors[p.tensor as usize];
        let mut v = vec![0.0; t.len()];
        exec.tensor_f32(p.tensor, &mut v)?;
        let top = adapt::argmax(&v);
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

/// Loads an image as grey or RGB bytes.
fn load_image(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    let img = image::open(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        detail: format!("unreadable image: {e}"),
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Ok((rgb.into_raw(), w as usize, h as usize, 3))
}

fn image_features(fx: &mut FeatureExtractor, prep: &ImagePrep, path: &Path) -> Result<Vec<f32>> {
    let (px, w, h, c) = load_image(path)?;
    let mut input = Vec::new();
    prep.apply(&px, w, h, c, &mut input);
    fx.features_vec(&input)
}

fn prep_of(plan: &Plan) -> Result<ImagePrep> {
    plan.meta("preprocess").and_then(ImagePrep::parse).ok_or_else(|| Error::Invalid { what: "plan declares no image preprocessing (compile with --preprocess image:SIZE:MEAN:STD)".into() })
}

fn adapt_cmd(
    plan_path: &Path,
    train: &Path,
    method: &str,
    seed: u64,
    max_memory: Option<usize>,
    output: &Path,
) -> Result<()> {
    let plan = load_plan(plan_path)?;
    let prep = prep_of(&plan)?;
    let mut classes: Vec<(String, Vec<PathBuf>)> = vec![];
    let rd = std::fs::read_dir(train).map_err(|e| io_err(train, e))?;
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| io_err(&d, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if files.is_empty() {
            return Err(Error::Invalid {
                what: format!("class folder '{name}' is empty"),
            });
        }
        classes.push((name, files));
    }
    if classes.len() < 2 {
        return Err(Error::Invalid {
            what: format!(
                "{} needs at least two class folders, found {}",
                train.display(),
                classes.len()
            ),
        });
    }
    let exec = Executor::new(
        &plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    let mut fx = FeatureExtractor::new(exec, "features")?;
    let dim = fx.dim;
    let n: usize = classes.iter().map(|c| c.1.len()).sum();
    let need = adapt::linear_memory(n, dim, classes.len());
    println!(
        "training memory: {need} bytes (features, parameters, gradients, AdamW state, logits)"
    );
    if let Some(limit) = max_memory {
        if need > limit {
            return Err(Error::OverBudget { need, limit });
        }
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    let (mut x, mut y) = (vec![], vec![]);
    for (c, (_, files)) in classes.iter().enumerate() {
        for f in files {
            x.extend(image_features(&mut fx, &prep, f)?);
            y.push(c);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let m = match method {
        "ncm" => {
            let mut ncm = Ncm::new(dim);
            for (i, &c) in y.iter().enumerate() {
                ncm.enrol(c, &x[i * dim..][..dim]);
            }
            adapt::Method::Ncm(ncm)
        }
        "linear" => {
            let (head, loss) = adapt::train_linear(
                &Support {
                    x: &x,
                    y: &y,
                    dim,
                    classes: classes.len(),
                },
                &LinearConfig {
                    seed,
                    ..Default::default()
                },
            )?;
            println!("final loss {loss:.4}");
            adapt::Method::Linear(head)
        }
        other => {
            return Err(Error::Invalid {
                what: format!("unknown method '{other}' (available: ncm, linear)"),
            })
        }
    };
    let a = adapt::Adapter {
        plan_hash: plan.hash(),
        source: "features".into(),
        classes: classes.into_iter().map(|c| c.0).collect(),
        hyper: vec![("seed".into(), seed.to_string())],
        method: m,
    };
    a.save(output)?;
    println!(
        "{} adapter, {} classes, {} bytes -> {}",
        a.method.name(),
        a.classes.len(),
        a.to_bytes().len(),
        output.display()
    );
    Ok(())
}

fn predict_cmd(plan_path: &Path, adapter: &Path, inputs: &[PathBuf]) -> Result<()> {
    let plan = load_plan(plan_path)?;
    let prep = prep_of(&plan)?;
    let a = adapt::Adapter::load(adapter, &plan.hash())?;
    let exec = Executor::new(
        &plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    let mut fx = FeatureExtractor::new(exec, &a.source)?;
    if fx.dim != a.method.dim() {
        return Err(Error::ShapeMismatch {
            op: "adapter".into(),
            expected: vec![a.method.dim()],
            got: vec![fx.dim],
        });
    }
    let mut scores = vec![0.0; a.classes.len()];
    for p in inputs {
        let f = image_features(&mut fx, &prep, p)?;
        a.method.scores(&f, &mut scores);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&i| format!("{} {:.3}", a.classes[i], scores[i]))
            .collect();
        println!("{}: {}", p.display(), top.join(", "));
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Compile {
            model,
            output,
            input,
            taps,
            preprocess,
        } => (|| {
            let t = Instant::now();
            let inputs = input
                .iter()
                .map(|s| parse_input_shape(s))
                .collect::<Result<Vec<_>>>()?;
            let taps = match taps.as_deref() {
                None => Taps::None,
                Some("blocks") => Taps::Blocks,
                Some(list) => Taps::Names(list.split(',').map(String::from).collect()),
            };
            let mut meta = vec![("source".to_string(), model.display().to_string())];
            if let Some(p) = preprocess {
                meta.push(("preprocess".into(), p));
            }
            let bytes = std::fs::read(&model).map_err(|e| io_err(&model, e))?;
            let parts = import_bytes(&bytes, &ImportOptions { inputs, taps, meta })?;
            let out = parts.to_bytes();
            edgetune::fsutil::write_atomic(&output, &out)?;
            println!(
                "{} -> {} ({} ops, {:.2} MB) in {:.2} s",
                model.display(),
                output.display(),
                parts.ops.len(),
                out.len() as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
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
            for (k, v) in &p.meta {
                println!("meta   {k} = {v}");
            }
        }),
        Cmd::Run {
            plan,
            inputs,
            save_outputs,
        } => run(&plan, &inputs, save_outputs.as_deref()),
        Cmd::Demo { episodes, shots } => demo(episodes, shots),
        Cmd::Adapt {
            plan,
            train,
            method,
            seed,
            max_memory,
            output,
        } => adapt_cmd(&plan, &train, &method, seed, max_memory, &output),
        Cmd::Predict {
            plan,
            adapter,
            inputs,
        } => predict_cmd(&plan, &adapter, &inputs),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
