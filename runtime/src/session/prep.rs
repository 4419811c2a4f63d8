//! Examples as the plan declares them (`preprocess` metadata): images (frames from an app,
//! or files decoded by the `image` crate with feature `files`), 16 kHz audio (PCM from an
//! app, or WAV files read by `hound`; then the log-mel front end stored with the plan) and
//! text (the `tokenizers` crate with the tokenizer stored with the plan, feature `text`).

use crate::audio::{loudest_window, MelConfig, MelFrontEnd};
use crate::features::TapReader;
pub use crate::frame::Image;
use crate::plan::Plan;
use crate::preprocess::{hex_f32, ImageSpec, Preprocess, AUDIO_STRIDE};
use crate::{Error, Result};
#[cfg(feature = "files")]
use std::path::Path;
#[cfg(feature = "text")]
use std::str::FromStr;
#[cfg(feature = "text")]
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// One decoded example: an image (resized at cache time, so it can be augmented), the
/// backbone's input tensors (one set per chunk of a long text, whose taps are their mean,
/// or per window of an audio context, whose taps follow each other), or the example's
/// taps themselves, as a stream gives them ([`Session::listen`](super::Session::listen)).
#[derive(Clone, Debug)]
pub enum Sample {
    Image(Image),
    Inputs(Vec<Vec<Vec<f32>>>),
    Taps(Vec<Vec<f32>>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Role {
    Ids,
    Mask,
    Types,
}

pub enum Prep {
    /// The plan declares no preprocessing: examples are its input tensors, prepared by
    /// the caller.
    Tensors,
    Image(ImageSpec),
    Audio {
        front: Box<MelFrontEnd>,
        frames: usize,
        /// Windows per example, [`AUDIO_STRIDE`] frames apart.
        context: usize,
    },
    #[cfg(feature = "text")]
    Text {
        tok: Box<Tokenizer>,
        tokens: usize,
        chunks: usize,
        roles: Vec<Role>,
    },
}

fn invalid(what: String) -> Error {
    Error::Invalid { what }
}

const HOW: &str = "compile with --preprocess 'image size=N ...' (or a preset: torchvision, tf-keras, paddle, yolo), audio:oww:FRAMES --mel-filters FILE, or text:TOKENS[:CHUNKS] --tokenizer FILE";

/// The preprocessing `plan` declares, with what it carries (filter bank, tokenizer).
pub fn prep_of(plan: &Plan) -> Result<Prep> {
    let decl = plan
        .meta("preprocess")
        .ok_or_else(|| invalid(format!("plan declares no preprocessing ({HOW})")))?;
    let want = |what: &str, n: usize| {
        let lens: Vec<usize> = plan
            .inputs
            .iter()
            .map(|p| plan.tensors[p.tensor as usize].len())
            .collect();
        if lens.iter().all(|&l| l == n) {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                op: format!("plan inputs for {what}"),
                expected: vec![n],
                got: lens,
            })
        }
    };
    Ok(
        match Preprocess::declare(decl).map_err(|e| {
            invalid(format!(
                "plan preprocessing '{decl}' not understood: {e} ({HOW})"
            ))
        })? {
            Preprocess::Image(p) => {
                if plan.inputs.len() != 1 {
                    return Err(invalid(format!(
                        "an image plan has one input, this one has {}",
                        plan.inputs.len()
                    )));
                }
                let t = &plan.tensors[plan.inputs[0].tensor as usize];
                let shape = t.logical_shape();
                if t.len() != p.tensor_len() || (shape.len() == 4 && shape[..] != p.shape()[..]) {
                    return Err(invalid(format!(
                        "plan input '{}' has shape {shape:?} but the preprocessing declares {:?} (fields size, order and layout): {p}",
                        plan.inputs[0].name,
                        p.shape()
                    )));
                }
                Prep::Image(p)
            }
            Preprocess::Audio { frames, context } => {
                let cfg = MelConfig::OPENWAKEWORD;
                let bytes = plan.meta("mel_filters").and_then(hex_f32).ok_or_else(|| {
                    invalid(format!("audio plan carries no mel filter bank ({HOW})"))
                })?;
                if plan.inputs.len() != 1 {
                    return Err(invalid("an audio plan has one input".into()));
                }
                want("a log-mel window", frames * cfg.bands)?;
                if context > 1 && frames < AUDIO_STRIDE {
                    return Err(invalid(format!(
                        "an audio context steps {AUDIO_STRIDE} frames between windows of {frames}: windows need at least {AUDIO_STRIDE} frames"
                    )));
                }
                Prep::Audio {
                    front: Box::new(MelFrontEnd::from_le_bytes(cfg, &bytes)?),
                    frames,
                    context,
                }
            }
            #[cfg(not(feature = "text"))]
            Preprocess::Text { .. } => {
                return Err(invalid(
                    "a text plan needs edgetune built with feature `text`".into(),
                ))
            }
            #[cfg(feature = "text")]
            Preprocess::Text { tokens, chunks } => {
                let json = plan
                    .meta("tokenizer")
                    .ok_or_else(|| invalid(format!("text plan carries no tokenizer ({HOW})")))?;
                let roles: Vec<Role> = plan
                    .inputs
                    .iter()
                    .map(|p| {
                        let n = p.name.to_ascii_lowercase();
                        if n.contains("mask") {
                            Role::Mask
                        } else if n.contains("type") {
                            Role::Types
                        } else {
                            Role::Ids
                        }
                    })
                    .collect();
                if roles.iter().filter(|&&r| r == Role::Ids).count() != 1 {
                    return Err(invalid(format!(
                        "text plan inputs {:?}: need exactly one token-id input (the others named *mask* or *type*)",
                        plan.inputs.iter().map(|p| &p.name).collect::<Vec<_>>()
                    )));
                }
                // `text` without a count: the model's own sequence length.
                let tokens = if tokens == 0 {
                    plan.tensors[plan.inputs[0].tensor as usize].len()
                } else {
                    tokens
                };
                want("token sequences", tokens)?;
                Prep::text_json(json, tokens, chunks, roles)?
            }
        },
    )
}

#[cfg(feature = "files")]
fn io(p: &Path, detail: String) -> Error {
    Error::Io {
        path: p.display().to_string(),
        detail,
    }
}

/// A WAV file (8/16/24/32-bit integer or 32-bit float PCM, any rate, any number of
/// channels) as 16 kHz mono in int16 units (what the openWakeWord front end expects):
/// the channels averaged, then resampled ([`crate::audio::resample`]).
#[cfg(feature = "files")]
pub fn read_wav(p: &Path) -> Result<Vec<f32>> {
    let mut r = hound::WavReader::open(p).map_err(|e| io(p, format!("unreadable WAV: {e}")))?;
    let s = r.spec();
    let unreadable = |e: hound::Error| io(p, format!("unreadable WAV: {e}"));
    let x: Vec<f32> = match (s.sample_format, s.bits_per_sample) {
        (hound::SampleFormat::Int, b @ 8..=32) => {
            let k = 2f32.powi(16 - b as i32);
            r.samples::<i32>()
                .map(|v| v.map(|v| v as f32 * k).map_err(unreadable))
                .collect::<Result<_>>()?
        }
        (hound::SampleFormat::Float, 32) => r
            .samples::<f32>()
            .map(|v| v.map(|v| v * 32768.0).map_err(unreadable))
            .collect::<Result<_>>()?,
        (f, b) => {
            return Err(io(
                p,
                format!(
                "unsupported WAV samples: {b}-bit {f:?} (need 8 to 32-bit integer or 32-bit float)"
            ),
            ))
        }
    };
    if s.channels == 0 || s.sample_rate == 0 {
        return Err(io(p, "WAV with no channels or a rate of 0 Hz".into()));
    }
    let mono = crate::audio::mixdown(&x, s.channels as usize);
    crate::audio::resample(&mono, s.sample_rate, 16_000).map_err(|e| match e {
        Error::Invalid { what } => io(p, what),
        e => e,
    })
}

/// Decodes an image file (PNG, JPEG) to RGB, turned upright by its EXIF orientation.
#[cfg(feature = "files")]
pub fn load_image(path: &Path) -> Result<Image> {
    use image::ImageDecoder;
    let bad = |e: String| Error::Io {
        path: path.display().to_string(),
        detail: format!("unreadable image: {e}"),
    };
    let mut dec = image::ImageReader::open(path)
        .map_err(|e| bad(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .into_decoder()
        .map_err(|e| bad(e.to_string()))?;
    let orient = dec
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(dec).map_err(|e| bad(e.to_string()))?;
    img.apply_orientation(orient);
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Image {
        px: rgb.into_raw(),
        w: w as usize,
        h: h as usize,
        c: 3,
    })
}

#[cfg(feature = "text")]
impl Prep {
    /// A text front end from a tokenizer.json (any model the `tokenizers` crate loads:
    /// WordPiece, BPE, Unigram, ...): windows of `tokens` ids with the tokenizer's special
    /// tokens, padded with its own pad token (its padding settings, else `[PAD]` or
    /// `<pad>` if the vocabulary has one, else id 0), up to `chunks` windows, the inputs
    /// bound by `roles`. The tokenizer's own truncation length gives way to `tokens`, the
    /// model's.
    pub fn text_json(json: &str, tokens: usize, chunks: usize, roles: Vec<Role>) -> Result<Prep> {
        if !(1..=8192).contains(&tokens) || chunks == 0 {
            return Err(invalid(format!(
                "text front end: {tokens} tokens, {chunks} chunks"
            )));
        }
        let mut tok =
            Tokenizer::from_str(json).map_err(|e| invalid(format!("plan's tokenizer: {e}")))?;
        tok.with_truncation(Some(TruncationParams {
            max_length: tokens,
            ..Default::default()
        }))
        .map_err(|e| invalid(format!("plan's tokenizer: {e}")))?;
        let mut pad = tok.get_padding().cloned().unwrap_or_else(|| {
            let mut p = PaddingParams::default();
            if let Some((t, id)) = ["[PAD]", "<pad>"]
                .iter()
                .find_map(|t| tok.token_to_id(t).map(|id| (*t, id)))
            {
                p.pad_token = t.to_string();
                p.pad_id = id;
            }
            p
        });
        pad.strategy = PaddingStrategy::Fixed(tokens);
        pad.pad_to_multiple_of = None;
        tok.with_padding(Some(pad));
        Ok(Prep::Text {
            tok: Box::new(tok),
            tokens,
            chunks,
            roles,
        })
    }
}

fn unsupported_input(what: &str) -> Error {
    invalid(format!("{what} given to a plan that does not take it"))
}

impl Prep {
    /// Decodes one file as this plan's kind of input.
    #[cfg(feature = "files")]
    pub fn load(&mut self, path: &Path) -> Result<Sample> {
        match self {
            Prep::Image(_) => Ok(Sample::Image(load_image(path)?)),
            Prep::Audio { .. } => self.audio(&read_wav(path)?).map_err(|e| match e {
                Error::Invalid { what } => io(path, what),
                e => e,
            }),
            Prep::Tensors => Err(io(
                path,
                format!("the plan declares no preprocessing, so files cannot be read ({HOW})"),
            )),
            #[cfg(feature = "text")]
            Prep::Text { .. } => {
                let bytes = std::fs::read(path).map_err(|e| io(path, e.to_string()))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| io(path, "unreadable text: not UTF-8".into()))?;
                self.text(&text).map_err(|e| match e {
                    Error::Invalid { what } => io(path, what),
                    e => e,
                })
            }
        }
    }

    /// An image (already decoded or converted from a camera frame).
    pub fn image(&self, im: Image) -> Result<Sample> {
        match self {
            Prep::Image(_)
                if im.w > 0
                    && im.h > 0
                    && matches!(im.c, 1 | 3)
                    && im.px.len() == im.w * im.h * im.c =>
            {
                Ok(Sample::Image(im))
            }
            Prep::Image(_) => Err(invalid(format!(
                "image of {}x{}x{} with {} bytes",
                im.w,
                im.h,
                im.c,
                im.px.len()
            ))),
            _ => Err(unsupported_input("an image")),
        }
    }

    /// 16 kHz mono audio in int16 units (PCM i16 samples as f32): the log-mel window
    /// with the most energy; with a context, the run of `context` windows (80 ms apart)
    /// with the most energy.
    pub fn audio(&mut self, pcm: &[f32]) -> Result<Sample> {
        let Prep::Audio {
            front,
            frames,
            context,
        } = self
        else {
            return Err(unsupported_input("audio"));
        };
        let (frames, context) = (*frames, *context);
        let span = frames + AUDIO_STRIDE * (context - 1);
        if pcm.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "audio samples".into(),
            });
        }
        let mut x = pcm.to_vec();
        let cfg = front.cfg;
        let need = (span - 1) * cfg.hop + cfg.n_fft;
        if x.len() < need {
            x.resize(need, 0.0);
        }
        let mut feat = Vec::new();
        front.features(&x, &mut feat)?;
        let w = loudest_window(&feat, cfg.bands, span)
            .ok_or_else(|| invalid("clip shorter than one window".into()))?;
        Ok(Sample::Inputs(
            (0..context)
                .map(|k| vec![w[k * AUDIO_STRIDE * cfg.bands..][..frames * cfg.bands].to_vec()])
                .collect(),
        ))
    }

    /// UTF-8 text: token ids, attention mask and token types per window.
    #[cfg(feature = "text")]
    pub fn text(&self, text: &str) -> Result<Sample> {
        match self {
            Prep::Text {
                tok,
                tokens,
                chunks,
                roles,
            } => {
                let e = tok
                    .encode(text, true)
                    .map_err(|e| invalid(format!("tokenizer: {e}")))?;
                // The tokenizer cuts a long text into windows (`overflowing`), each with
                // its special tokens and padded to `tokens`.
                let windows = std::iter::once(&e).chain(e.get_overflowing().iter());
                Ok(Sample::Inputs(
                    windows
                        .take(*chunks)
                        .map(|w| {
                            let ids: Vec<f32> = w.get_ids().iter().map(|&v| v as f32).collect();
                            let mask: Vec<f32> =
                                w.get_attention_mask().iter().map(|&v| v as f32).collect();
                            let types: Vec<f32> =
                                w.get_type_ids().iter().map(|&v| v as f32).collect();
                            debug_assert_eq!(ids.len(), *tokens);
                            roles
                                .iter()
                                .map(|r| match r {
                                    Role::Ids => ids.clone(),
                                    Role::Mask => mask.clone(),
                                    Role::Types => types.clone(),
                                })
                                .collect()
                        })
                        .collect(),
                ))
            }
            _ => Err(unsupported_input("text")),
        }
    }

    /// Runs `s` through the backbone and leaves its taps in `outs`: the mean over the
    /// chunks of a long text. `input` is scratch for the input tensors.
    pub fn run_taps(
        &self,
        rd: &mut TapReader,
        s: &Sample,
        input: &mut Vec<Vec<f32>>,
        outs: &mut [Vec<f32>],
    ) -> Result<()> {
        if let Sample::Taps(t) = s {
            let expected: Vec<usize> = rd.shapes.iter().map(|s| s.1.len()).collect();
            let got: Vec<usize> = t.iter().map(|v| v.len()).collect();
            if got != expected || outs.len() != t.len() {
                return Err(Error::ShapeMismatch {
                    op: "taps of an example".into(),
                    expected,
                    got,
                });
            }
            if t.iter().flatten().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    what: "taps".into(),
                });
            }
            for (o, v) in outs.iter_mut().zip(t) {
                o.clear();
                o.extend_from_slice(v);
            }
            return Ok(());
        }
        if rd.context > 1 {
            return self.run_context(rd, s, input, outs);
        }
        let sets: &[Vec<Vec<f32>>] = match s {
            Sample::Inputs(sets) if sets.len() > 1 => sets,
            _ => {
                self.inputs(s, 0, input)?;
                let refs: Vec<&[f32]> = input.iter().map(|v| &v[..]).collect();
                rd.run_inputs(&refs, outs)?;
                self.zero_padding(rd, input, outs);
                return Ok(());
            }
        };
        let mut sum: Vec<Vec<f32>> = outs.iter().map(|o| vec![0.0; o.len()]).collect();
        for c in 0..sets.len() {
            self.inputs(s, c, input)?;
            let refs: Vec<&[f32]> = input.iter().map(|v| &v[..]).collect();
            rd.run_inputs(&refs, outs)?;
            self.zero_padding(rd, input, outs);
            for (a, o) in sum.iter_mut().zip(outs.iter()) {
                a.iter_mut().zip(o).for_each(|(a, o)| *a += o);
            }
        }
        let k = 1.0 / sets.len() as f32;
        for (o, a) in outs.iter_mut().zip(&sum) {
            o.iter_mut().zip(a).for_each(|(o, a)| *o = a * k);
        }
        Ok(())
    }

    /// An audio context: each window through the backbone, its taps one after another.
    fn run_context(
        &self,
        rd: &mut TapReader,
        s: &Sample,
        input: &mut Vec<Vec<f32>>,
        outs: &mut [Vec<f32>],
    ) -> Result<()> {
        let n = match s {
            Sample::Inputs(sets) => sets.len(),
            _ => 1,
        };
        if n != rd.context {
            return Err(Error::ShapeMismatch {
                op: "windows of an audio context".into(),
                expected: vec![rd.context],
                got: vec![n],
            });
        }
        let mut one: Vec<Vec<f32>> = vec![Vec::new(); outs.len()];
        for (o, &len) in outs.iter_mut().zip(&rd.single) {
            o.resize(rd.context * len, 0.0);
        }
        for k in 0..n {
            self.inputs(s, k, input)?;
            let refs: Vec<&[f32]> = input.iter().map(|v| &v[..]).collect();
            rd.run_inputs(&refs, &mut one)?;
            for (o, v) in outs.iter_mut().zip(&one) {
                o[k * v.len()..][..v.len()].copy_from_slice(v);
            }
        }
        Ok(())
    }

    /// Backbone runs per example: the windows of an audio context, else 1.
    pub fn context(&self) -> usize {
        match self {
            Prep::Audio { context, .. } => *context,
            _ => 1,
        }
    }

    /// Text: the token-state taps (one row per token of the window) read zeros at the
    /// padding positions, so that what a head learns from them does not depend on how
    /// much of the window the text fills.
    fn zero_padding(&self, rd: &TapReader, input: &[Vec<f32>], outs: &mut [Vec<f32>]) {
        #[cfg(feature = "text")]
        if let Prep::Text { tokens, roles, .. } = self {
            let Some(mask) = roles
                .iter()
                .position(|r| *r == Role::Mask)
                .and_then(|i| input.get(i))
            else {
                return;
            };
            for (o, (_, t)) in outs.iter_mut().zip(&rd.shapes) {
                if t.tokens == *tokens && t.tokens > 1 && mask.len() == t.tokens {
                    for (row, &m) in o.chunks_exact_mut(t.dim).zip(mask) {
                        if m == 0.0 {
                            row.fill(0.0);
                        }
                    }
                }
            }
        }
        #[cfg(not(feature = "text"))]
        let _ = (rd, input, outs);
    }

    /// The backbone's input tensors for chunk `chunk` of a sample (images resized and
    /// scaled here).
    pub fn inputs(&self, s: &Sample, chunk: usize, out: &mut Vec<Vec<f32>>) -> Result<()> {
        match (self, s) {
            (Prep::Image(p), Sample::Image(im)) => {
                out.resize(1, Vec::new());
                p.apply(&im.px, im.w, im.h, im.c, &mut out[0])?;
            }
            (_, Sample::Inputs(sets)) => {
                out.clear();
                out.extend(sets.get(chunk).into_iter().flatten().cloned());
            }
            (_, Sample::Taps(_)) => {
                return Err(invalid(
                    "an example given as taps has no input tensors".into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "an image given to a plan that is not for images".into(),
                ))
            }
        }
        if out.iter().flatten().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "input".into(),
            });
        }
        Ok(())
    }

    pub fn is_image(&self) -> bool {
        matches!(self, Prep::Image(_))
    }
}

#[cfg(all(test, feature = "text", feature = "files"))]
mod tests {
    use super::*;

    fn text_prep(tokens: usize, chunks: usize) -> Prep {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/minilm_tokenizer.json"
        );
        let mut tok = Tokenizer::from_file(path).unwrap();
        tok.with_truncation(Some(TruncationParams {
            max_length: tokens,
            ..Default::default()
        }))
        .unwrap();
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(tokens),
            ..Default::default()
        }));
        Prep::Text {
            tok: Box::new(tok),
            tokens,
            chunks,
            roles: vec![Role::Ids, Role::Mask, Role::Types],
        }
    }

    #[test]
    fn long_texts_become_consecutive_windows() {
        let text = "The striker scored twice in the second half and the home side won the \
                    match while our goalkeeper saved a penalty in the final minute of the \
                    cup tie before the tennis champion came back to win the final set.";
        // Oracle: the same tokenizer without truncation or padding.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/minilm_tokenizer.json"
        );
        let mut plain = Tokenizer::from_file(path).unwrap();
        plain.with_truncation(None).unwrap();
        plain.with_padding(None);
        let all = plain.encode(text, true).unwrap().get_ids().to_vec();
        let (cls, sep) = (all[0] as f32, all[all.len() - 1] as f32);
        let body: Vec<f32> = all[1..all.len() - 1].iter().map(|&v| v as f32).collect();
        let d = std::env::temp_dir().join(format!("edgetune-windows-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("t.txt");
        std::fs::write(&f, text).unwrap();
        let tokens = 16;
        let need = body.len().div_ceil(tokens - 2);
        assert!(need >= 3, "the text spans {need} windows");
        for chunks in [1, 2, need, need + 5] {
            let Sample::Inputs(sets) = text_prep(tokens, chunks).load(&f).unwrap() else {
                panic!("text gives input tensors")
            };
            assert_eq!(sets.len(), chunks.min(need));
            for (w, set) in sets.iter().enumerate() {
                let (ids, mask) = (&set[0], &set[1]);
                let part = &body[(w * (tokens - 2)).min(body.len())..]
                    [..(tokens - 2).min(body.len() - (w * (tokens - 2)).min(body.len()))];
                assert_eq!(ids.len(), tokens);
                assert_eq!(ids[0], cls);
                assert_eq!(&ids[1..1 + part.len()], part, "window {w}");
                assert_eq!(ids[1 + part.len()], sep);
                let real = part.len() + 2;
                assert!(mask[..real].iter().all(|&m| m == 1.0));
                assert!(mask[real..].iter().all(|&m| m == 0.0));
                assert!(set[2].iter().all(|&t| t == 0.0));
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
