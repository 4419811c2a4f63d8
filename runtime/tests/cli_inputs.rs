//! `DIR/<class>/*.wav|txt` through the CLI, with the preprocessing declared in the plan:
//! the openWakeWord embedding compiled with `--preprocess audio:oww:76 --mel-filters`, and
//! MiniLM compiled with `--preprocess text:128 --tokenizer`. Each adapts `ncm` on a few
//! files per class and must classify held-out files of the same kinds; a file of the wrong
//! kind and an unreadable WAV are refused with messages naming them.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgetune");

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgetune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 1.2 s of 16 kHz audio: a tone (`tone = Some(hz)`) or noise, with a seeded noise bed.
fn wav(path: &Path, tone: Option<f32>, seed: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    for i in 0..19_200 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let noise = (s as f32 / u32::MAX as f32 - 0.5) * 2.0;
        let t = i as f32 / 16_000.0;
        let v = match tone {
            Some(hz) => 6000.0 * (2.0 * std::f32::consts::PI * hz * t).sin() + 300.0 * noise,
            None => 6000.0 * noise,
        };
        w.write_sample(v as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// Predicted class (first of the top list) of each file.
fn predict(plan: &str, eta: &str, files: &[PathBuf]) -> Vec<String> {
    let mut args = vec!["predict", "--plan", plan, "--adapter", eta, "--top", "1"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(|s| s.as_str()));
    let (ok, out, err) = cli(&args);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| {
            let (_, rest) = l.rsplit_once(": ").unwrap();
            rest.split_whitespace().next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn wav_folders_adapt_and_predict_on_the_speech_backbone() {
    let d = tmp("wav");
    let plan = d.join("oww.etm");
    let p = plan.to_str().unwrap();
    let model = root().join("models/oww_embedding_int8.onnx");
    let filters = root().join("models/oww_melw.f32");
    let (ok, _, err) = cli(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        p,
        "--preprocess",
        "audio:oww:76",
        "--mel-filters",
        filters.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let train = d.join("train");
    let mut held = vec![];
    for (class, tone) in [("tone", Some(440.0f32)), ("noise", None)] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        // Held-out tones lie between the enrolled ones (400, 480, 560 Hz → 440, 520, 600).
        for i in 0..6u32 {
            let hz = tone.map(|f| f - 40.0 + 40.0 * i as f32);
            let f = if i % 2 == 0 {
                train.join(class).join(format!("{i}.wav"))
            } else {
                d.join(format!("{class}{i}.wav"))
            };
            wav(&f, hz, i + 1);
            if i % 2 == 1 {
                held.push((f, class));
            }
        }
    }
    let eta = d.join("a.eta");
    let e = eta.to_str().unwrap();
    let (ok, _, err) = cli(&[
        "adapt",
        "--plan",
        p,
        "--train",
        train.to_str().unwrap(),
        "--method",
        "ncm",
        "-o",
        e,
    ]);
    assert!(ok, "{err}");
    let files: Vec<PathBuf> = held.iter().map(|h| h.0.clone()).collect();
    let got = predict(p, e, &files);
    let want: Vec<&str> = held.iter().map(|h| h.1).collect();
    assert_eq!(got, want);

    // A PNG given to the audio plan, and a truncated WAV: refused, naming the file.
    let png = d.join("x.png");
    image::GrayImage::from_raw(2, 2, vec![0; 4])
        .unwrap()
        .save(&png)
        .unwrap();
    let bad = d.join("bad.wav");
    let whole = std::fs::read(&files[0]).unwrap();
    std::fs::write(&bad, &whole[..30]).unwrap();
    for f in [&png, &bad] {
        let (ok, _, err) = cli(&["predict", "--plan", p, "--adapter", e, f.to_str().unwrap()]);
        assert!(!ok);
        assert!(
            err.contains(f.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        assert!(err.contains("WAV"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn text_folders_adapt_and_predict_on_the_text_backbone() {
    let d = tmp("txt");
    let plan = d.join("minilm.etm");
    let p = plan.to_str().unwrap();
    let model = root().join("models/minilm_l6_int8.onnx");
    let tok = root().join("models/minilm_tokenizer.json");
    let (ok, _, err) = cli(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        p,
        "--preprocess",
        "text:128",
        "--tokenizer",
        tok.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let sport = [
        "The striker scored twice in the second half and the home side won the match.",
        "Our goalkeeper saved a penalty in the final minute of the cup tie.",
        "The tennis champion lost the first set but came back to win the final.",
        "The team trained hard all week before the league game on Saturday.",
        "A late goal from the midfielder sealed the victory for the visitors.",
    ];
    let food = [
        "Simmer the onions in butter until soft, then add the garlic and the rice.",
        "Whisk the eggs with sugar and fold in the flour before baking the cake.",
        "Roast the vegetables with olive oil, salt and rosemary for forty minutes.",
        "Knead the dough, let it rise for an hour and bake the bread until golden.",
        "Season the soup with pepper and serve it hot with fresh parsley.",
    ];
    let train = d.join("train");
    let mut held = vec![];
    for (class, texts) in [("food", &food), ("sport", &sport)] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let f = if i < 3 {
                train.join(class).join(format!("{i}.txt"))
            } else {
                d.join(format!("{class}{i}.txt"))
            };
            std::fs::write(&f, t).unwrap();
            if i >= 3 {
                held.push((f, class));
            }
        }
    }
    let eta = d.join("a.eta");
    let e = eta.to_str().unwrap();
    let (ok, _, err) = cli(&[
        "adapt",
        "--plan",
        p,
        "--train",
        train.to_str().unwrap(),
        "--method",
        "ncm",
        "-o",
        e,
    ]);
    assert!(ok, "{err}");
    let files: Vec<PathBuf> = held.iter().map(|h| h.0.clone()).collect();
    let got = predict(p, e, &files);
    let want: Vec<&str> = held.iter().map(|h| h.1).collect();
    assert_eq!(got, want);
    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, [0x63, 0x61, 0x66, 0xe9]).unwrap();
    let (ok, _, err) = cli(&[
        "predict",
        "--plan",
        p,
        "--adapter",
        e,
        latin1.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("latin1.txt") && err.contains("UTF-8"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
