//! Examples loaded as the plan declares them (`preprocess` metadata): images (the `image`
//! crate), 16 kHz WAV clips (`hound`, then the log-mel front end stored with the plan) and
//! text files (the `tokenizers` crate with the tokenizer stored with the plan).

use crate::fewshot::{load_image, Image};
use edgetune::audio::{loudest_window, MelConfig, MelFrontEnd};
use edgetune::plan::Plan;
use edgetune::preprocess::{hex_f32, ImagePrep, Preprocess};
use edgetune::{Error, Result};
use std::path::Path;
use std::str::FromStr;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// One decoded example: an image (resized at cache time, so it can be augmented) or the
/// backbone's input tensors.
pub enum Sample {
    Image(Image),
    Inputs(Vec<Vec<f32>>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Role {
    Ids,
    Mask,
    Types,
}

pub enum Prep {
    Image(ImagePrep),
    Audio {
        front: Box<MelFrontEnd>,
        frames: usize,
    },
    Text {
        tok: Box<Tokenizer>,
        tokens: usize,
        roles: Vec<Role>,
    },
}

fn invalid(what: String) -> Error {
    Error::Invalid { what }
}

const HOW: &str = "compile with --preprocess image:SIZE:MEAN:STD, audio:oww:FRAMES --mel-filters FILE, or text:TOKENS --tokenizer FILE";

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
        match Preprocess::parse(decl).ok_or_else(|| {
            invalid(format!(
                "plan preprocessing '{decl}' not understood ({HOW})"
            ))
        })? {
            Preprocess::Image(p) => Prep::Image(p),
            Preprocess::Audio { frames } => {
                let cfg = MelConfig::OPENWAKEWORD;
                let bytes = plan.meta("mel_filters").and_then(hex_f32).ok_or_else(|| {
                    invalid(format!("audio plan carries no mel filter bank ({HOW})"))
                })?;
                if plan.inputs.len() != 1 {
                    return Err(invalid("an audio plan has one input".into()));
                }
                want("a log-mel window", frames * cfg.bands)?;
                Prep::Audio {
                    front: Box::new(MelFrontEnd::from_le_bytes(cfg, &bytes)?),
                    frames,
                }
            }
            Preprocess::Text { tokens } => {
                let json = plan
                    .meta("tokenizer")
                    .ok_or_else(|| invalid(format!("text plan carries no tokenizer ({HOW})")))?;
                let mut tok = Tokenizer::from_str(json)
                    .map_err(|e| invalid(format!("plan's tokenizer: {e}")))?;
                tok.with_truncation(Some(TruncationParams {
                    max_length: tokens,
                    ..Default::default()
                }))
                .map_err(|e| invalid(format!("plan's tokenizer: {e}")))?;
                tok.with_padding(Some(PaddingParams {
                    strategy: PaddingStrategy::Fixed(tokens),
                    ..Default::default()
                }));
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
                want("token sequences", tokens)?;
                Prep::Text {
                    tok: Box::new(tok),
                    tokens,
                    roles,
                }
            }
        },
    )
}

fn io(p: &Path, detail: String) -> Error {
    Error::Io {
        path: p.display().to_string(),
        detail,
    }
}

/// 16 kHz mono 16-bit PCM, in int16 units (what the openWakeWord front end expects).
fn read_wav(p: &Path) -> Result<Vec<f32>> {
    let mut r = hound::WavReader::open(p).map_err(|e| io(p, format!("unreadable WAV: {e}")))?;
    let s = r.spec();
    if s.sample_rate != 16_000 || s.channels != 1 || s.bits_per_sample != 16 {
        return Err(io(
            p,
            format!(
                "need 16 kHz mono 16-bit PCM, got {} Hz, {} channel(s), {} bits",
                s.sample_rate, s.channels, s.bits_per_sample
            ),
        ));
    }
    r.samples::<i16>()
        .map(|v| {
            v.map(|v| v as f32)
                .map_err(|e| io(p, format!("unreadable WAV: {e}")))
        })
        .collect()
}

impl Prep {
    /// Decodes one file as this plan's kind of input.
    pub fn load(&mut self, path: &Path) -> Result<Sample> {
        match self {
            Prep::Image(_) => Ok(Sample::Image(load_image(path)?)),
            Prep::Audio { front, frames } => {
                let mut x = read_wav(path)?;
                let cfg = front.cfg;
                let need = (*frames - 1) * cfg.hop + cfg.n_fft;
                if x.len() < need {
                    x.resize(need, 0.0);
                }
                let mut feat = Vec::new();
                front.features(&x, &mut feat)?;
                let w = loudest_window(&feat, cfg.bands, *frames)
                    .ok_or_else(|| io(path, "clip shorter than one window".into()))?;
                Ok(Sample::Inputs(vec![w.to_vec()]))
            }
            Prep::Text { tok, tokens, roles } => {
                let bytes = std::fs::read(path).map_err(|e| io(path, e.to_string()))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| io(path, "unreadable text: not UTF-8".into()))?;
                let e = tok
                    .encode(text, true)
                    .map_err(|e| io(path, format!("tokenizer: {e}")))?;
                let ids: Vec<f32> = e.get_ids().iter().map(|&v| v as f32).collect();
                let mask: Vec<f32> = e.get_attention_mask().iter().map(|&v| v as f32).collect();
                debug_assert_eq!(ids.len(), *tokens);
                Ok(Sample::Inputs(
                    roles
                        .iter()
                        .map(|r| match r {
                            Role::Ids => ids.clone(),
                            Role::Mask => mask.clone(),
                            Role::Types => vec![0.0; *tokens],
                        })
                        .collect(),
                ))
            }
        }
    }

    /// The backbone's input tensors for a sample (images resized and scaled here).
    pub fn inputs(&self, s: &Sample, out: &mut Vec<Vec<f32>>) -> Result<()> {
        match (self, s) {
            (Prep::Image(p), Sample::Image(im)) => {
                out.resize(1, Vec::new());
                p.apply(&im.px, im.w, im.h, im.c, &mut out[0]);
            }
            (_, Sample::Inputs(v)) => {
                out.clear();
                out.extend(v.iter().cloned());
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
