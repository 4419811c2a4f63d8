//! Custom wake word: enrol a new phrase from 3 recordings, then detect it in a stream.
//!
//! The recordings are synthesised with espeak-ng (one voice) and sox when absent. The
//! device runs openWakeWord's log-mel front end and its speech embedding (int8) in an
//! edgetune `Session` on a plan declared `audio:oww:76:16` (an example is 16 consecutive
//! embeddings, 1.28 s of context), trains a `linear` adapter on the phrase against other
//! phrases and noise, then listens (`Session::listen`) to a synthetic recording in 80 ms
//! chunks: the phrase said by other voices at other speeds and pitches, other phrases,
//! noise.
//!
//! usage: wakeword [--phrase TEXT] [--minutes M] [--data DIR] [--threshold P] [--seed S]

use edgetune::import::{import_path, ImportOptions};
use edgetune::preprocess::f32_hex;
use edgetune::session::{Sample, Session};
use edgetune::{Error, Result};
use edgetune_examples::{arg, root, seeded, Rng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RATE: usize = 16000;
const CHUNK: usize = 1280; // 80 ms
const CONTEXT: usize = 16; // embeddings per example: 1.28 s
/// Class names, by the label the enrolment gives each feature.
const CLASSES: [&str; 2] = ["other", "wake"];

/// The enrolling user's voice.
const ENROL_VOICE: &str = "en-us";
/// Voices the detector never heard at enrolment.
const TEST_VOICES: &[&str] = &[
    "en-gb",
    "en-us+f2",
    "en+m3",
    "en-gb+f3",
    "en+m7",
    "en-gb-scotland",
    "en-029+f4",
    "en-gb-x-rp+m2",
    "en-us+f5",
    "en-gb-x-gbclan",
];
/// Other speech: what the user says to the device that is not the wake word.
const TRAIN_OTHER: &[&str] = &[
    "turn on the lights",
    "what time is it",
    "play some music",
    "good morning",
    "set a timer for five minutes",
    "call my mother",
    "how is the weather today",
    "open the window",
    "next song please",
    "I am going out",
    "read my messages",
    "stop the alarm",
    "hello there",
    "add milk to the list",
    "yes",
    "no",
    "okay",
    "hey you",
    "excuse me",
    "see you later",
    "sounds good",
    "nice to meet you",
    "hang on",
    "right away",
    "any news",
    "well done",
    "tune in",
    "edge",
    "hey",
];
/// Voices of the negative phrases: the user's and two more, none of them a test voice.
const OTHER_VOICES: &[&str] = &[ENROL_VOICE, "en-us+m1", "en-gb+f1"];
const TEST_OTHER: &[&str] = &[
    "where are my keys",
    "the meeting starts at noon",
    "can you help me",
    "thank you",
    "let us go for a walk",
    "dinner is ready",
    "the train is late again",
    "good night",
    "send an email to the team",
    "I like this tune",
    "edge of the table",
    "turn it down",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn tool(name: &str, pkg: &str) -> Result<()> {
    match Command::new(name).arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::Invalid {
            what: format!("{name} is missing: apt-get install {pkg}"),
        }),
    }
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| Error::Invalid {
        what: format!("{cmd:?}: {e}"),
    })?;
    if !out.status.success() {
        return Err(Error::Invalid {
            what: format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}

/// `text` said by `voice` at `speed` words/min and `pitch` (0-99), 16 kHz mono, cached.
fn say(dir: &Path, text: &str, voice: &str, speed: u32, pitch: u32) -> Result<Vec<f32>> {
    let key = format!("{voice}_{speed}_{pitch}_{text}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>();
    let wav = dir.join(format!("{key}.wav"));
    if !wav.exists() {
        let raw = dir.join(format!("{key}.raw.wav"));
        sh(Command::new("espeak-ng")
            .args([
                "-v",
                voice,
                "-s",
                &speed.to_string(),
                "-p",
                &pitch.to_string(),
                "-w",
            ])
            .arg(&raw)
            .arg(text))?;
        // Written beside, then renamed: an interrupted run leaves no half file.
        let tmp = dir.join(format!("{key}.tmp.wav"));
        sh(Command::new("sox")
            .arg(&raw)
            .args(["-r", "16000", "-c", "1", "-b", "16"])
            .arg(&tmp))?;
        std::fs::rename(&tmp, &wav).map_err(|e| io(&wav, e))?;
        let _ = std::fs::remove_file(&raw);
    }
    read_wav(&wav)
}

fn io(p: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: p.display().to_string(),
        detail: e.to_string(),
    }
}

fn read_wav(p: &Path) -> Result<Vec<f32>> {
    let mut r = hound::WavReader::open(p).map_err(|e| io(p, e))?;
    let s = r.spec();
    if s.sample_rate != RATE as u32 || s.channels != 1 || s.bits_per_sample != 16 {
        return Err(Error::Invalid {
            what: format!("{}: need 16 kHz mono 16-bit, got {s:?}", p.display()),
        });
    }
    r.samples::<i16>()
        .map(|v| v.map(|v| v as f32).map_err(|e| io(p, e)))
        .collect()
}

/// Noise beds from sox's generators (white, pink, brown), 30 s each, cached.
fn noises(dir: &Path) -> Result<Vec<Vec<f32>>> {
    ["whitenoise", "pinknoise", "brownnoise"]
        .iter()
        .map(|kind| {
            let wav = dir.join(format!("noise_{kind}.wav"));
            if !wav.exists() {
                let tmp = dir.join(format!("noise_{kind}.tmp.wav"));
                sh(Command::new("sox")
                    .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
                    .arg(&tmp)
                    .args(["synth", "30", kind, "vol", "0.5"]))?;
                std::fs::rename(&tmp, &wav).map_err(|e| io(&wav, e))?;
            }
            read_wav(&wav)
        })
        .collect()
}

/// `x` played `factor` times faster (linear interpolation): shorter and higher.
fn resample(x: &[f32], factor: f32) -> Vec<f32> {
    let n = (x.len() as f32 / factor) as usize;
    (0..n)
        .map(|i| {
            let p = i as f32 * factor;
            let (j, f) = (p as usize, p.fract());
            let a = x[j.min(x.len() - 1)];
            let b = x[(j + 1).min(x.len() - 1)];
            a + (b - a) * f
        })
        .collect()
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Where speech starts and ends in a synthesised clip (espeak pads with silence).
fn speech_span(x: &[f32]) -> (usize, usize) {
    let frame = 160;
    let loud: Vec<bool> = x.chunks(frame).map(|f| rms(f) > 200.0).collect();
    let first = loud.iter().position(|&l| l).unwrap_or(0);
    let last = loud
        .iter()
        .rposition(|&l| l)
        .unwrap_or(loud.len().saturating_sub(1));
    (first * frame, ((last + 1) * frame).min(x.len()))
}

/// The examples a clip yields as the session listens to it in 80 ms chunks, each with the
/// sample index it ends at.
fn features(ear: &mut Session, x: &[f32]) -> Result<Vec<(usize, Sample)>> {
    ear.listen_reset();
    let mut v = vec![];
    for (i, chunk) in x.chunks(CHUNK).enumerate() {
        let end = i * CHUNK + chunk.len();
        for f in ear.listen(chunk)? {
            v.push((end, f));
        }
    }
    Ok(v)
}

/// `speech` placed in a noise bed: `lead` s of noise before, `tail` s after, noise at
/// `snr` dB below the speech. Returns the mix and the speech span in it.
fn mix(
    speech: &[f32],
    noise: &[f32],
    rng: &mut Rng,
    lead: f32,
    tail: f32,
    snr: f32,
    gain: f32,
) -> (Vec<f32>, (usize, usize)) {
    let (s0, s1) = speech_span(speech);
    let sp = &speech[s0..s1];
    let (a, b) = ((lead * RATE as f32) as usize, (tail * RATE as f32) as usize);
    let n = a + sp.len() + b;
    let off = rng.below(noise.len() - n.min(noise.len() - 1));
    let nscale = rms(sp) * gain / rms(noise).max(1e-6) * 10f32.powf(-snr / 20.0);
    let mut y: Vec<f32> = (0..n)
        .map(|i| noise[(off + i) % noise.len()] * nscale)
        .collect();
    for (o, v) in y[a..].iter_mut().zip(sp) {
        *o += v * gain;
    }
    y.iter_mut().for_each(|v| *v = v.clamp(-32768.0, 32767.0));
    (y, (a, a + sp.len()))
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let phrase = arg(&args, "--phrase").unwrap_or_else(|| "hey edge tune".into());
    let minutes: f32 = arg(&args, "--minutes")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let fixed_threshold: Option<f32> = arg(&args, "--threshold").and_then(|s| s.parse().ok());
    let seed: u64 = arg(&args, "--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let data = arg(&args, "--data").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
            .join(".cache/edgetune/wakeword")
    });
    std::fs::create_dir_all(&data).map_err(|e| io(&data, e))?;
    tool("espeak-ng", "espeak-ng")?;
    tool("sox", "sox")?;

    // The plan: the embedding backbone, its log-mel filter bank and the declared context.
    let melw = std::fs::read(root().join("models/oww_melw.f32")).map_err(|e| io(&root(), e))?;
    let filters: Vec<f32> = melw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let opts = ImportOptions {
        meta: vec![
            ("preprocess".into(), format!("audio:oww:76:{CONTEXT}")),
            ("mel_filters".into(), f32_hex(&filters)),
        ],
        ..Default::default()
    };
    let plan = import_path(&root().join("models/oww_embedding_int8.onnx"), &opts)?.to_bytes();
    let mut ear = Session::from_bytes(&plan)?;
    let noise = noises(&data)?;
    let mut rng = seeded(seed);

    // Enrolment: the user says the phrase 3 times (one voice, natural variation).
    let t0 = Instant::now();
    let enrol: Vec<Vec<f32>> = [(150, 50), (170, 45), (160, 58)]
        .iter()
        .map(|&(s, p)| say(&data, &phrase, ENROL_VOICE, s, p))
        .collect::<Result<_>>()?;
    let mut others = vec![];
    for (i, t) in TRAIN_OTHER.iter().enumerate() {
        for (j, v) in OTHER_VOICES.iter().enumerate() {
            others.push(say(&data, t, v, 150 + 10 * ((i + j) % 3) as u32, 50)?);
        }
    }
    // Every clip's examples in stream order, with its fold (recording or phrase mod 3;
    // noise is in no fold) and whether the phrase is in it; the labelled ones are enrolled.
    let mut clips: Vec<Clip> = vec![];
    let mut add = |x: &[f32],
                   span: Option<(usize, usize)>,
                   fold,
                   ear: &mut Session,
                   rng: &mut Rng|
     -> Result<()> {
        let mut clip = Clip {
            fold,
            positive: span.is_some(),
            rows: vec![],
        };
        for (end, f) in features(ear, x)? {
            // Positives: features that end just after the phrase. Features ending before
            // its midpoint are negatives: the first half of the phrase must not fire.
            let label = match span {
                Some((_, e)) if end >= e && end <= e + 3 * CHUNK => Some(1),
                Some((s, e)) if end < (s + e) / 2 && rng.below(3) == 0 => Some(0),
                Some(_) => None,
                None if fold == usize::MAX || rng.below(3) == 0 => Some(0),
                None => None,
            };
            if let Some(l) = label {
                ear.enrol(f.clone(), CLASSES[l])?;
            }
            clip.rows.push((label, f));
        }
        clips.push(clip);
        Ok(())
    };
    // Each recording at 5 speeds (resampled: tempo and pitch move together, as between
    // speakers), in 3 noise conditions at 2 loudnesses.
    for (r, rec) in enrol.iter().enumerate() {
        for speed in [0.85, 0.92, 1.0, 1.08, 1.16] {
            let rec = resample(rec, speed);
            for (k, snr) in [30.0, 15.0, 8.0].into_iter().enumerate() {
                for gain in [1.0, 0.5] {
                    let (x, span) =
                        mix(&rec, &noise[k % noise.len()], &mut rng, 1.5, 0.6, snr, gain);
                    add(&x, Some(span), r, &mut ear, &mut rng)?;
                }
            }
        }
    }
    for (i, o) in others.iter().enumerate() {
        for snr in [25.0, 10.0] {
            let (x, _) = mix(o, &noise[i % noise.len()], &mut rng, 1.0, 0.8, snr, 1.0);
            add(&x, None, (i / OTHER_VOICES.len()) % 3, &mut ear, &mut rng)?;
        }
    }
    for nz in &noise {
        let (x, _) = mix(&enrol[0][..1600], nz, &mut rng, 2.0, 2.0, -40.0, 0.0);
        add(&x, None, usize::MAX, &mut ear, &mut rng)?;
    }
    let labelled = || clips.iter().flat_map(|c| c.rows.iter().filter_map(|r| r.0));
    let npos = labelled().filter(|&l| l == 1).count();
    let nneg = labelled().count() - npos;

    // Threshold from the enrolment material alone: train without one recording and a third
    // of the other phrases, take the peak score on each held-out clip, and put the
    // threshold three quarters of the way from the negatives' highest peak to the phrase
    // peaks' 5th percentile: a false accept costs more than a repeated phrase.
    let threshold = match fixed_threshold {
        Some(t) => t,
        None => {
            let (mut pos, mut neg) = (vec![], vec![]);
            for fold in 0..3 {
                // A session of its own per fold: it enrols the other folds' examples
                // (taps already computed: the backbone does not run again).
                let mut s = Session::from_bytes(&plan)?;
                for c in clips.iter().filter(|c| c.fold != fold) {
                    for (l, f) in &c.rows {
                        if let Some(l) = l {
                            s.enrol(f.clone(), CLASSES[*l])?;
                        }
                    }
                }
                s.fit(&mut |_| true)?;
                for c in clips.iter().filter(|c| c.fold == fold) {
                    let peak = c.peak(&mut s)?;
                    if c.positive {
                        pos.push(peak)
                    } else {
                        neg.push(peak)
                    }
                }
            }
            pos.sort_by(f32::total_cmp);
            let low_pos = pos[pos.len() / 20]; // 5th percentile
            let high_neg = neg.iter().copied().fold(0.0, f32::max);
            let t = if high_neg < low_pos {
                high_neg + 0.75 * (low_pos - high_neg)
            } else {
                low_pos
            };
            println!(
                "threshold {t:.3} from held-out enrolment clips: phrase peaks 5th percentile {low_pos:.3}, \
                 other phrases' highest peak {high_neg:.3}"
            );
            t
        }
    };
    let fitted = ear.fit(&mut |_| true)?;
    println!(
        "enrolled \"{phrase}\" from 3 recordings ({ENROL_VOICE}): {npos} positive and {nneg} negative features, \
         linear adapter ({} parameters), {:.1} s in all",
        fitted.params,
        t0.elapsed().as_secs_f32()
    );

    // The test recording: other voices, speeds and pitches; other phrases; noise.
    let total = (minutes * 60.0 * RATE as f32) as usize;
    let bed = &noise[1];
    let mut stream: Vec<f32> = (0..total).map(|i| bed[i % bed.len()] * 0.02).collect();
    let mut truth = vec![];
    let mut events: Vec<(usize, usize, &str, &str)> = vec![];
    let mut at = RATE;
    let mut n_other = 0;
    while at + 4 * RATE < total {
        let positive = rng.below(5) < 2;
        let voice = TEST_VOICES[rng.below(TEST_VOICES.len())];
        let speed = 130 + 10 * rng.below(8) as u32;
        let pitch = 25 + 5 * rng.below(12) as u32;
        let text = if positive {
            phrase.as_str()
        } else {
            n_other += 1;
            TEST_OTHER[rng.below(TEST_OTHER.len())]
        };
        let clip = say(&data, text, voice, speed, pitch)?;
        let (s0, s1) = speech_span(&clip);
        let sp = &clip[s0..s1];
        if at + sp.len() >= total {
            break;
        }
        let gain = 0.5 + rng.below(6) as f32 * 0.1;
        for (o, v) in stream[at..].iter_mut().zip(sp) {
            *o = (*o + v * gain).clamp(-32768.0, 32767.0);
        }
        if positive {
            truth.push((at, at + sp.len(), voice, speed, pitch));
        }
        events.push((at, at + sp.len(), text, voice));
        at += sp.len() + RATE + rng.below(4 * RATE);
    }

    ear.listen_reset();
    let (mut detections, mut times) = (vec![], vec![]);
    let (mut last, mut refractory_until) = (0.0f32, 0usize);
    for (i, chunk) in stream.chunks_exact(CHUNK).enumerate() {
        let end = (i + 1) * CHUNK;
        let t = Instant::now();
        let mut p = None;
        for f in ear.listen(chunk)? {
            p = Some(score(&mut ear, &f)?);
        }
        times.push(t.elapsed().as_secs_f64());
        if let Some(p) = p {
            // Two-chunk average: one loud chunk alone does not fire.
            let smooth = 0.5 * (p + last);
            last = p;
            if smooth >= threshold && end >= refractory_until {
                detections.push(end);
                refractory_until = end + RATE * 3 / 2;
            }
        }
    }
    let hit = |s: usize, e: usize, d: usize| d >= s && d <= e + RATE * 3 / 2;
    let detected = truth
        .iter()
        .filter(|&&(s, e, ..)| detections.iter().any(|&d| hit(s, e, d)))
        .count();
    let false_accepts = detections
        .iter()
        .filter(|&&d| !truth.iter().any(|&(s, e, ..)| hit(s, e, d)))
        .count();
    let hours = stream.len() as f64 / RATE as f64 / 3600.0;
    let mean_chunk = times.iter().sum::<f64>() / times.len().max(1) as f64;
    for &(s, e, voice, speed, pitch) in &truth {
        if !detections.iter().any(|&d| hit(s, e, d)) {
            println!(
                "  missed at {:.1} s: {voice} speed {speed} pitch {pitch}",
                s as f64 / RATE as f64
            );
        }
    }
    for &d in &detections {
        if !truth.iter().any(|&(s, e, ..)| hit(s, e, d)) {
            let during = events
                .iter()
                .filter(|e| d >= e.0 && d <= e.1 + RATE)
                .map(|e| format!(" after \"{}\" ({})", e.2, e.3))
                .collect::<String>();
            println!("  false accept at {:.1} s{during}", d as f64 / RATE as f64);
        }
    }
    println!(
        "stream: {:.1} min, {} wake-word utterances by {} unseen voices, {n_other} other phrases, threshold {threshold}",
        stream.len() as f64 / RATE as f64 / 60.0,
        truth.len(),
        TEST_VOICES.len()
    );
    println!(
        "detection rate {:.3} ({detected}/{})   [target >= 0.90]",
        detected as f64 / truth.len().max(1) as f64,
        truth.len()
    );
    println!(
        "false accepts {false_accepts} = {:.1} per hour   [target <= 2]",
        false_accepts as f64 / hours
    );
    println!(
        "time per 80 ms chunk {:.3} ms, real-time factor {:.4} on one core   [target <= 0.05]",
        mean_chunk * 1e3,
        mean_chunk / 0.08
    );
    Ok(())
}

/// P(wake word) of one example.
fn score(s: &mut Session, f: &Sample) -> Result<f32> {
    let mut sc = Vec::with_capacity(2);
    s.scores(f, &mut sc)?;
    let at = |name: &str| {
        (0..sc.len())
            .find(|&l| s.class_name(l) == Some(name))
            .ok_or_else(|| Error::Invalid {
                what: format!("no class '{name}' was enrolled"),
            })
    };
    let (wake, other) = (at(CLASSES[1])?, at(CLASSES[0])?);
    Ok(1.0 / (1.0 + (sc[other] - sc[wake]).exp()))
}

/// One enrolment clip: its examples in order, each with its label if it was enrolled.
struct Clip {
    fold: usize,
    positive: bool,
    rows: Vec<(Option<usize>, Sample)>,
}

impl Clip {
    /// The highest two-example average score, as the detector smooths.
    fn peak(&self, s: &mut Session) -> Result<f32> {
        let mut last = 0.0;
        let mut peak = 0.0f32;
        for (_, f) in &self.rows {
            let p = score(s, f)?;
            peak = peak.max(0.5 * (p + last));
            last = p;
        }
        Ok(peak)
    }
}
