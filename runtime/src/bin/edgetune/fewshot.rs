//! The CLI's adaptation commands (adapt, predict, and the printing of eval and demo):
//! argument handling and output only; the flow is the library's [`Session`].

use edgetune::adapt::Kind;
use edgetune::plan::Plan;
use edgetune::session::auto::AutoConfig;
use edgetune::session::eval::{mean_std, MethodResult};
use edgetune::session::{Options, Session};
use edgetune::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn progress_bar(show: bool, steps: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(steps as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("train {bar:30} step {pos}/{len} {msg} eta {eta}")
            .unwrap_or(indicatif::ProgressStyle::default_bar()),
    );
    pb
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A bar over the backbone passes of `total` examples (hidden when `show` is false).
pub fn backbone_bar(show: bool, total: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "backbone {bar:30} {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or(indicatif::ProgressStyle::default_bar()),
    );
    pb
}

#[allow(clippy::too_many_arguments)]
/// The files of `dir` and of its sub-folders (one level), sorted.
fn unlabeled_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let list = |d: &Path| -> Result<Vec<std::path::PathBuf>> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .map_err(|e| Error::Io {
                path: d.display().to_string(),
                detail: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = vec![];
    for p in list(dir)? {
        if p.is_dir() {
            out.extend(list(&p)?.into_iter().filter(|f| f.is_file()));
        } else if p.is_file() {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid {
            what: format!("--unlabeled {}: no files", dir.display()),
        });
    }
    Ok(out)
}

pub fn adapt_cmd(
    plan: Plan<'static>,
    train: &Path,
    unlabeled: Option<&Path>,
    kind: Kind,
    auto: Option<&AutoConfig>,
    opts: &Options,
    seed: u64,
    json: bool,
    output: &Path,
) -> Result<()> {
    let mut s = Session::with_options(plan, opts.clone())?;
    s.set_seed(seed);
    s.set_method(kind)?;
    let (names, files) = edgetune::session::eval::class_folders(train)?;
    let samples = files
        .iter()
        .map(|(p, l)| Ok((s.load(p)?, *l)))
        .collect::<Result<Vec<_>>>()?;
    // The budget is checked on the cache's exact size before the backbone runs.
    let unl_files = match unlabeled {
        Some(d) => unlabeled_files(d)?,
        None => vec![],
    };
    // Unlabeled examples are cached once each, beside the enrolled ones.
    let mem = s.memory_for(samples.len() * (1 + opts.augment) + unl_files.len())?;
    if !json {
        println!(
            "training peak: {} bytes (tap cache {} + backbone arena {} + parameters, gradients, optimiser state, activations)",
            mem.peak, mem.cache, mem.arena
        );
    }
    if let (Some(limit), None) = (opts.max_memory, auto) {
        if mem.peak > limit {
            return Err(Error::OverBudget {
                need: mem.peak,
                limit,
            });
        }
    }
    let bar = backbone_bar(!json, samples.len() + unl_files.len());
    // In batches, one example per thread at a time.
    let mut samples = samples.into_iter().peekable();
    while samples.peek().is_some() {
        let batch: Vec<_> = samples.by_ref().take(32).collect();
        let n = batch.len();
        s.enrol_batch(batch.into_iter().map(|(x, l)| (x, names[l].as_str())))?;
        bar.inc(n as u64);
    }
    for files in unl_files.chunks(32) {
        let xs = files
            .iter()
            .map(|f| s.load(f))
            .collect::<Result<Vec<_>>>()?;
        s.add_unlabeled_batch(xs)?;
        bar.inc(files.len() as u64);
    }
    bar.finish_and_clear();
    let mut chose = None;
    let kind = match auto {
        Some(cfg) => {
            let t = Instant::now();
            let ch = s.choose_method(cfg)?;
            if !json {
                println!(
                    "auto: {} (chosen in {:.1} s)",
                    ch.why(),
                    t.elapsed().as_secs_f64()
                );
            }
            chose = Some(ch);
            s.method()
        }
        None => kind,
    };
    let steps = s
        .opts
        .spec(s.plan(), kind, seed)
        .map(|sp| s.opts.steps_for(&sp))?;
    let pb = progress_bar(!json && kind != Kind::Ncm, steps);
    let t = Instant::now();
    let fit = s.fit(&mut |p| {
        pb.set_position(p.step as u64);
        pb.set_message(format!("loss {:.4} acc {:.2}", p.loss, p.accuracy));
        true
    })?;
    pb.finish_and_clear();
    let train_s = t.elapsed().as_secs_f64();
    s.save(output)?;
    let size = fit.adapter_bytes;
    if json {
        println!(
            "{{\"method\":{},\"classes\":{},\"examples\":{},\"params\":{},\"adapter_bytes\":{size},\"train_seconds\":{train_s:.4},\"final_loss\":{},\"cache_bytes\":{},\"peak_bytes\":{},\"serve\":{},\"output\":{},\"auto\":{}}}",
            json_str(kind.name()),
            s.classes().len(),
            s.cached(),
            fit.params,
            match fit.last {
                Some((l, _)) if l.is_finite() => format!("{l:.5}"),
                _ => "null".into(),
            },
            fit.cache_bytes,
            fit.memory.peak,
            json_str(if s.serves_int8() { "int8" } else { "float" }),
            json_str(&output.display().to_string()),
            chose.as_ref().map_or("null".into(), |c| json_str(&c.why()))
        );
    } else {
        println!(
            "{} adapter: {} classes, {} examples ({} cached, {} bytes), {} parameters, trained in {:.2} s{}, {} bytes -> {}",
            kind.name(),
            s.classes().len(),
            fit.examples,
            s.cached(),
            fit.cache_bytes,
            fit.params,
            train_s,
            if s.serves_int8() { ", served in int8" } else { "" },
            size,
            output.display()
        );
    }
    Ok(())
}

pub fn predict_cmd(
    plan: Plan<'static>,
    adapter: &Path,
    inputs: &[PathBuf],
    top: usize,
    json: bool,
) -> Result<()> {
    let mut s = Session::new(plan)?;
    s.load_adapter(adapter)?;
    for p in inputs {
        // Decoding, preprocessing, backbone and head: what one image costs.
        let t = Instant::now();
        let x = s.load(p)?;
        let top = s.predict(&x, top)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let name = |c: usize| s.class_name(c).unwrap_or("?").to_string();
        if json {
            let items: Vec<String> = top
                .iter()
                .map(|&(c, sc)| format!("{{\"class\":{},\"score\":{:.5}}}", json_str(&name(c)), sc))
                .collect();
            println!(
                "{{\"input\":{},\"top\":[{}],\"ms\":{ms:.2}}}",
                json_str(&p.display().to_string()),
                items.join(",")
            );
        } else {
            let v: Vec<String> = top
                .iter()
                .map(|&(c, sc)| format!("{} {:.3}", name(c), sc))
                .collect();
            println!("{}: {}", p.display(), v.join(", "));
        }
    }
    Ok(())
}

/// Accuracy against shots per method, as an SVG line chart.
pub fn plot(path: &Path, shots: &[usize], rows: &[(Kind, Vec<f64>)]) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::Io {
        path: path.display().to_string(),
        detail: e,
    };
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let xmax = *shots.iter().max().unwrap_or(&10) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("few-shot accuracy vs shots", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..xmax + 0.5, 0.0..1.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("shots per class")
        .y_desc("query accuracy")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (k, acc)) in rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = shots
            .iter()
            .zip(acc)
            .map(|(&s, &a)| (s as f64, a))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(k.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// How the episodes ran, which the train times are per episode of.
pub fn episode_note(runs: u64, export: bool) -> String {
    let (workers, threads) = edgetune::session::eval::episode_threads(runs, export);
    let t = if threads == 1 { "thread" } else { "threads" };
    if workers > 1 {
        format!("episodes: {workers} side by side, each on {threads} {t} (train times are per episode on {threads} {t})")
    } else {
        format!("episodes: one after another, each on {threads} {t}")
    }
}

pub fn print_table(res: &[MethodResult], refs: &dyn Fn(Kind) -> String, json: bool) {
    if json {
        let items: Vec<String> = res
            .iter()
            .map(|m| {
                let (a, s) = mean_std(&m.acc);
                format!(
                    "{{\"method\":{},\"accuracy\":{a:.4},\"std\":{s:.4},\"episodes\":{:?},\"int8_episodes\":{:?},\"train_ms\":{:.2},\"peak_bytes\":{},\"params\":{},\"adapter_bytes\":{},\"choices\":[{}]}}",
                    json_str(&m.label()),
                    m.acc,
                    m.acc_int8,
                    m.train_s * 1e3,
                    m.peak,
                    m.params,
                    m.adapter_bytes,
                    m.auto
                        .iter()
                        .flatten()
                        .map(|c| json_str(c))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        println!("[{}]", items.join(","));
        return;
    }
    println!("| method | accuracy (mean ± std) | reference | train time / episode | training peak | parameters | adapter |");
    println!("|---|---|---|---|---|---|---|");
    for m in res {
        let (a, s) = mean_std(&m.acc);
        println!(
            "| {} | {a:.3} ± {s:.3} | {} | {:.1} ms | {:.2} MB | {} | {:.1} KB |",
            m.label(),
            if m.unlabeled {
                "-".into()
            } else {
                refs(m.kind)
            },
            m.train_s * 1e3,
            m.peak as f64 / 1e6,
            m.params,
            m.adapter_bytes as f64 / 1e3
        );
        if !m.acc_int8.is_empty() {
            let (a, s) = mean_std(&m.acc_int8);
            println!(
                "| {} (int8) | {a:.3} ± {s:.3} | - | (same) | - | - | - |",
                m.kind.name()
            );
        }
    }
}
