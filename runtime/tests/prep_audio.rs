//! WAV files at other rates and channel counts become the model's 16 kHz mono: compared
//! with sox's conversion of the same files (`sox IN -e float -b 32 -r 16000 -c 1 OUT`,
//! tools/make_prep_goldens.py), which averages the channels and resamples with its
//! high-quality band-limited filter.

use edgetune::session::prep::read_wav;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/golden/prep")
}

/// sox's output in int16 units.
fn sox(name: &str) -> Vec<f32> {
    let mut r = hound::WavReader::open(dir().join(name)).unwrap();
    assert_eq!(r.spec().sample_rate, 16_000);
    r.samples::<f32>().map(|v| v.unwrap() * 32768.0).collect()
}

/// Largest difference relative to the signal's peak, away from the first and last 10 ms
/// (where each resampler pads the clip's ends its own way).
fn compare(ours: &[f32], theirs: &[f32]) -> (f32, f32) {
    let n = ours.len().min(theirs.len());
    let edge = 160;
    let peak = theirs.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (mut worst, mut sq) = (0f32, 0f64);
    for i in edge..n - edge {
        let d = (ours[i] - theirs[i]).abs();
        worst = worst.max(d);
        sq += (d as f64).powi(2);
    }
    let rms = (sq / (n - 2 * edge) as f64).sqrt() as f32;
    (worst / peak, rms / peak)
}

/// Tolerance of the agreement, relative to the peak. Both are band-limited resamplers
/// with their passbands past the test tones (up to 6 kHz of the 8 kHz Nyquist frequency);
/// measured: 5.7e-6 (44.1 kHz stereo) and 1.2e-5 (8 kHz mono).
const TOL_MAX: f32 = 1e-4;

#[test]
fn stereo_44k_and_mono_8k_become_16k_mono_like_sox() {
    for (src, gold, rate_in, frames_in) in [
        (
            "tone_44k_stereo.wav",
            "tone_44k_stereo_sox16k.wav",
            44_100,
            22_050,
        ),
        ("tone_8k.wav", "tone_8k_sox16k.wav", 8_000, 4_000),
    ] {
        let ours = read_wav(&dir().join(src)).unwrap();
        let theirs = sox(gold);
        let want_len = (frames_in as u64 * 16_000).div_ceil(rate_in) as usize;
        assert_eq!(ours.len(), want_len, "{src}: ceil(frames * 16000 / rate)");
        assert!(
            ours.len().abs_diff(theirs.len()) <= 1,
            "{src}: {} vs sox {}",
            ours.len(),
            theirs.len()
        );
        let (max, rms) = compare(&ours, &theirs);
        println!("{src} -> 16 kHz mono: max |edgetune - sox| {max:.2e} of peak, rms {rms:.2e}");
        assert!(max < TOL_MAX, "{src}: {max}");
        // The comparison can fail: the same clip a sample late is far off.
        let (shifted, _) = compare(&ours[1..], &theirs);
        assert!(shifted > 10.0 * max, "{src}: shifted {shifted} vs {max}");
    }
}

#[test]
fn truncated_and_broken_wavs_are_typed_errors() {
    let d = std::env::temp_dir().join(format!("edgetune-wav-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("cut.wav");
    // A float WAV cut in the middle of its only sample.
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&f, spec).unwrap();
    w.write_sample(0.5f32).unwrap();
    w.finalize().unwrap();
    let mut bytes = std::fs::read(&f).unwrap();
    bytes.truncate(bytes.len() - 2);
    std::fs::write(&f, &bytes).unwrap();
    let e = read_wav(&f).unwrap_err();
    assert!(matches!(e, edgetune::Error::Io { .. }), "{e:?}");
    std::fs::write(&f, b"RIFF0000WAVEjunk").unwrap();
    let e = read_wav(&f).unwrap_err();
    assert!(e.to_string().contains("unreadable WAV"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
