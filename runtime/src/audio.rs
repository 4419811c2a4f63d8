//! Log-mel front end for speech backbones: the float stage before the int8 plan.
//!
//! It computes what openWakeWord's `melspectrogram.onnx` computes (a windowed 512-point
//! STFT as two convolutions, power, a mel filter bank, 10·log10, an 80 dB floor below the
//! loudest value of the call) with a radix-2 FFT instead of the 257×512 DFT matrices:
//! 4 KiB of tables instead of 1 MiB.

use crate::{Error, Result};
use alloc::vec;
use alloc::vec::Vec;

/// Framing and scaling of a log-mel front end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MelConfig {
    /// FFT length (a power of two); `n_fft/2 + 1` frequency bins.
    pub n_fft: usize,
    /// Periodic Hann window length, centred in the FFT frame.
    pub win: usize,
    /// Samples between frames.
    pub hop: usize,
    pub bands: usize,
    /// Values more than `top_db` below the loudest value of a call are raised to it.
    pub top_db: f32,
    /// Feature = `scale·dB + offset` (openWakeWord: `x/10 + 2`).
    pub scale: f32,
    pub offset: f32,
}

impl MelConfig {
    /// openWakeWord 0.4's front end: 16 kHz samples in int16 units, 32 bands, 10 ms hop.
    pub const OPENWAKEWORD: MelConfig = MelConfig {
        n_fft: 512,
        win: 400,
        hop: 160,
        bands: 32,
        top_db: 80.0,
        scale: 0.1,
        offset: 2.0,
    };

    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }
}

/// Computes log-mel frames; owns its scratch so a stream allocates nothing per chunk.
#[derive(Clone, Debug)]
pub struct MelFrontEnd {
    pub cfg: MelConfig,
    window: Vec<f32>,
    /// `(cos, -sin)` of `2πk/n_fft`, k < n_fft/2.
    twiddle: Vec<(f32, f32)>,
    /// `[bins][bands]`, as the ONNX MatMul's right operand.
    filters: Vec<f32>,
    re: Vec<f32>,
    im: Vec<f32>,
    power: Vec<f32>,
}

impl MelFrontEnd {
    /// `filters` is the `[bins][bands]` filter bank (for openWakeWord, `models/oww_melw.f32`).
    pub fn new(cfg: MelConfig, filters: Vec<f32>) -> Result<MelFrontEnd> {
        let n = cfg.n_fft;
        if !n.is_power_of_two()
            || !(2..=1 << 16).contains(&n)
            || cfg.win == 0
            || cfg.win > n
            || cfg.hop == 0
            || cfg.bands == 0
        {
            return Err(Error::Invalid {
                what: alloc::format!("mel front end: bad framing {cfg:?}"),
            });
        }
        if filters.len() != cfg.bins() * cfg.bands {
            return Err(Error::ShapeMismatch {
                op: "mel filter bank".into(),
                expected: vec![cfg.bins(), cfg.bands],
                got: vec![filters.len()],
            });
        }
        if filters.iter().any(|v| !v.is_finite())
            || ![cfg.top_db, cfg.scale, cfg.offset]
                .iter()
                .all(|v| v.is_finite())
        {
            return Err(Error::NonFinite {
                what: "mel front end parameters".into(),
            });
        }
        let mut window = vec![0.0; n];
        let off = (n - cfg.win) / 2;
        for (m, w) in window[off..off + cfg.win].iter_mut().enumerate() {
            let c = libm::cos(2.0 * core::f64::consts::PI * m as f64 / cfg.win as f64);
            *w = (0.5 - 0.5 * c) as f32;
        }
        let twiddle = (0..n / 2)
            .map(|k| {
                let a = 2.0 * core::f64::consts::PI * k as f64 / n as f64;
                (libm::cos(a) as f32, -libm::sin(a) as f32)
            })
            .collect();
        Ok(MelFrontEnd {
            cfg,
            window,
            twiddle,
            filters,
            re: vec![0.0; n],
            im: vec![0.0; n],
            power: vec![0.0; cfg.bins()],
        })
    }

    /// The filter bank from `bins·bands` little-endian f32.
    pub fn from_le_bytes(cfg: MelConfig, bytes: &[u8]) -> Result<MelFrontEnd> {
        if !bytes.len().is_multiple_of(4) {
            return Err(Error::BadFile {
                what: "mel filter bank",
                detail: alloc::format!("{} bytes is not a whole number of f32", bytes.len()).into(),
            });
        }
        let f = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        MelFrontEnd::new(cfg, f)
    }

    /// Frames `samples` holds without padding.
    pub fn frame_count(&self, samples: usize) -> usize {
        if samples < self.cfg.n_fft {
            0
        } else {
            (samples - self.cfg.n_fft) / self.cfg.hop + 1
        }
    }

    /// Appends the log-mel frames (dB, `bands` each) of `samples` to `out` and returns how
    /// many; the floor is `top_db` below the loudest value of this call.
    pub fn log_mel(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<usize> {
        let start = out.len();
        let frames = self.log_mel_unfloored(samples, out)?;
        let new = &mut out[start..];
        let floor = new.iter().copied().fold(f32::NEG_INFINITY, f32::max) - self.cfg.top_db;
        new.iter_mut().for_each(|v| *v = v.max(floor));
        Ok(frames)
    }

    /// Log-mel frames with only the absolute 1e-10 power floor, so a frame depends on its
    /// own samples alone (what a stream needs).
    pub fn log_mel_unfloored(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<usize> {
        if samples.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "audio samples".into(),
            });
        }
        let frames = self.frame_count(samples.len());
        out.reserve(frames * self.cfg.bands);
        for f in 0..frames {
            self.power_spectrum(&samples[f * self.cfg.hop..][..self.cfg.n_fft]);
            for b in 0..self.cfg.bands {
                let mut e = 0.0f32;
                for (k, p) in self.power.iter().enumerate() {
                    e += p * self.filters[k * self.cfg.bands + b];
                }
                out.push(10.0 * libm::log10f(e.max(1e-10)));
            }
        }
        Ok(frames)
    }

    /// [`log_mel`](Self::log_mel) scaled to the backbone's input (`scale·dB + offset`).
    pub fn features(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<usize> {
        let start = out.len();
        let n = self.log_mel(samples, out)?;
        let (s, o) = (self.cfg.scale, self.cfg.offset);
        out[start..].iter_mut().for_each(|v| *v = *v * s + o);
        Ok(n)
    }

    fn power_spectrum(&mut self, frame: &[f32]) {
        let n = self.cfg.n_fft;
        let bits = n.trailing_zeros();
        for i in 0..n {
            // Bit-reversed order in, natural order out.
            let j = if bits == 0 {
                0
            } else {
                i.reverse_bits() >> (usize::BITS - bits)
            };
            self.re[j] = frame[i] * self.window[i];
            self.im[j] = 0.0;
        }
        let mut len = 2;
        while len <= n {
            let step = n / len;
            for s in (0..n).step_by(len) {
                for k in 0..len / 2 {
                    let (c, sn) = self.twiddle[k * step];
                    let (a, b) = (s + k, s + k + len / 2);
                    let tr = self.re[b] * c - self.im[b] * sn;
                    let ti = self.re[b] * sn + self.im[b] * c;
                    self.re[b] = self.re[a] - tr;
                    self.im[b] = self.im[a] - ti;
                    self.re[a] += tr;
                    self.im[a] += ti;
                }
            }
            len *= 2;
        }
        for (k, p) in self.power.iter_mut().enumerate() {
            *p = self.re[k] * self.re[k] + self.im[k] * self.im[k];
        }
    }
}

/// Streams audio in chunks of any size into backbone windows: keeps the samples a frame
/// still needs and the last `window` feature frames, and yields a window every `stride`
/// new frames (openWakeWord: 76 frames, stride 8, i.e. one window per 80 ms).
///
/// A stream has no loudest value to hang the `top_db` floor on, so its frames keep only
/// the absolute power floor: they equal the one-shot [`MelFrontEnd::features`] wherever
/// that floor does not bind (any recording whose noise floor is within 80 dB of its peak),
/// and they never depend on how the audio was chunked.
#[derive(Clone, Debug)]
pub struct MelStream {
    pub front: MelFrontEnd,
    pub window: usize,
    pub stride: usize,
    pending: Vec<f32>,
    frames: Vec<f32>,
    since: usize,
    scratch: Vec<f32>,
}

impl MelStream {
    pub fn new(front: MelFrontEnd, window: usize, stride: usize) -> Result<MelStream> {
        if window == 0 || stride == 0 || stride > window {
            return Err(Error::Invalid {
                what: alloc::format!("mel stream: window {window}, stride {stride}"),
            });
        }
        Ok(MelStream {
            front,
            window,
            stride,
            pending: vec![],
            frames: vec![],
            since: 0,
            scratch: vec![],
        })
    }

    /// Forgets all audio (a new recording).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.frames.clear();
        self.since = 0;
    }

    /// Feeds samples; calls `ready` with each complete window (`window·bands` values,
    /// frame-major) that falls due, and returns how many did.
    pub fn push(
        &mut self,
        samples: &[f32],
        ready: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<usize> {
        let cfg = self.front.cfg;
        self.pending.extend_from_slice(samples);
        self.scratch.clear();
        let n = self
            .front
            .log_mel_unfloored(&self.pending, &mut self.scratch)?;
        let (sc, off) = (cfg.scale, cfg.offset);
        self.scratch.iter_mut().for_each(|v| *v = *v * sc + off);
        self.pending.drain(..n * cfg.hop);
        let mut emitted = 0;
        for f in self.scratch.chunks_exact(cfg.bands) {
            self.frames.extend_from_slice(f);
            let have = self.frames.len() / cfg.bands;
            if have > self.window {
                self.frames.drain(..cfg.bands);
            }
            self.since += 1;
            if have >= self.window && self.since >= self.stride {
                self.since = 0;
                ready(&self.frames)?;
                emitted += 1;
            }
        }
        Ok(emitted)
    }
}

/// The `frames`-frame window (of `bands` values per frame) with the largest sum, the part
/// of a clip a keyword sits in. `feat` must hold at least `frames` frames.
pub fn loudest_window(feat: &[f32], bands: usize, frames: usize) -> Option<&[f32]> {
    let total = feat.len() / bands.max(1);
    if bands == 0 || frames == 0 || total < frames {
        return None;
    }
    let energy: Vec<f32> = feat.chunks_exact(bands).map(|f| f.iter().sum()).collect();
    let mut sum: f32 = energy[..frames].iter().sum();
    let (mut best, mut at) = (sum, 0);
    for s in 1..=total - frames {
        sum += energy[s + frames - 1] - energy[s - 1];
        if sum > best {
            (best, at) = (sum, s);
        }
    }
    Some(&feat[at * bands..][..frames * bands])
}

/// Interleaved samples of `channels` channels → their mean per frame (mono).
pub fn mixdown(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    let k = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() * k)
        .collect()
}

/// Zero crossings of the resampling kernel on each side, in periods of the lower rate.
const SINC_ZEROS: f64 = 32.0;
/// Cutoff of the resampling kernel, as a fraction of the lower rate's Nyquist frequency.
const SINC_CUTOFF: f64 = 0.92;

/// A whole mono clip from `from` Hz to `to` Hz, band-limited: output sample `n` is the
/// clip at input time `t = n·from/to` through a windowed sinc (cutoff 0.92 of the lower
/// rate's Nyquist frequency, 32 zero crossings each side, 4-term Blackman-Harris window;
/// samples beyond the clip are 0). `ceil(len·to/from)` samples out. The rate ratio is
/// reduced to `p/q`, so the kernel is tabulated once per phase when there are at most
/// 4096 phases.
pub fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    if from == 0 || to == 0 {
        return Err(Error::Invalid {
            what: alloc::format!("resampling {from} Hz to {to} Hz: a rate of 0 Hz"),
        });
    }
    if from == to || x.is_empty() {
        return Ok(x.to_vec());
    }
    let g = gcd(from as u64, to as u64);
    let (p, q) = (to as u64 / g, from as u64 / g); // t = n·q/p input samples
    let scale = (to as f64 / from as f64).min(1.0);
    let fc = 0.5 * scale * SINC_CUTOFF; // cycles per input sample
    let reach = SINC_ZEROS / scale; // kernel half-width in input samples
    let m = libm::ceil(reach) as i64;
    // Taps for input samples k0 - m + 1 ..= k0 + m at fractional offset `frac`.
    let taps = |frac: f64| -> Vec<f64> {
        (-m + 1..=m)
            .map(|j| {
                let d = frac - j as f64; // t - k
                if libm::fabs(d) >= reach {
                    return 0.0;
                }
                let a = core::f64::consts::PI * 2.0 * fc * d;
                let sinc = if d == 0.0 { 1.0 } else { libm::sin(a) / a };
                let u = core::f64::consts::PI * d / reach;
                let w = 0.35875
                    + 0.48829 * libm::cos(u)
                    + 0.14128 * libm::cos(2.0 * u)
                    + 0.01168 * libm::cos(3.0 * u);
                2.0 * fc * sinc * w
            })
            .collect()
    };
    let table: Option<Vec<Vec<f64>>> =
        (p <= 4096).then(|| (0..p).map(|ph| taps(ph as f64 / p as f64)).collect());
    let n_out = (x.len() as u64 * p).div_ceil(q) as usize;
    let mut out = Vec::with_capacity(n_out);
    let mut scratch;
    for n in 0..n_out as u64 {
        let (k0, ph) = ((n * q / p) as i64, n * q % p);
        let t: &[f64] = match &table {
            Some(tab) => &tab[ph as usize],
            None => {
                scratch = taps(ph as f64 / p as f64);
                &scratch
            }
        };
        let mut acc = 0.0f64;
        for (i, &c) in t.iter().enumerate() {
            let k = k0 - m + 1 + i as i64;
            if (0..x.len() as i64).contains(&k) {
                acc += x[k as usize] as f64 * c;
            }
        }
        out.push(acc as f32);
    }
    Ok(out)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
