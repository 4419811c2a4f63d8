//! Input preprocessing declared by a backbone (stored in the plan's metadata as
//! `preprocess=image:SIZE:MEAN:STD`, `audio:oww:FRAMES` or `text:TOKENS[:CHUNKS]`), so apps and the
//! CLI do not hard-code it. Audio plans carry their mel filter bank (metadata
//! `mel_filters`, hex of little-endian f32) and text plans their tokenizer
//! (`tokenizer`, the tokenizer.json text).

use alloc::vec::Vec;

/// The kinds of input a backbone declares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Preprocess {
    Image(ImagePrep),
    /// 16 kHz mono speech → openWakeWord's log-mel front end → the `frames`-frame window
    /// with the most energy (clips shorter than a window are padded with silence).
    Audio {
        frames: usize,
    },
    /// Text → the plan's tokenizer → `tokens` ids (padded), attention mask and token
    /// types, bound to the inputs by name. A longer text is cut into up to `chunks`
    /// consecutive windows of `tokens` (each with the tokenizer's special tokens), each
    /// runs through the backbone and the example's taps are their mean; the rest is
    /// dropped. One window reads a news article's first ~90 words only.
    Text {
        tokens: usize,
        chunks: usize,
    },
}

impl Preprocess {
    pub fn parse(s: &str) -> Option<Preprocess> {
        if let Some(p) = ImagePrep::parse(s) {
            return Some(Preprocess::Image(p));
        }
        let mut it = s.split(':');
        let kind = it.next()?;
        let p = match (kind, it.next(), it.next(), it.next()) {
            ("audio", Some("oww"), Some(n), None) => Preprocess::Audio {
                frames: n.parse().ok().filter(|n| (1..=4096).contains(n))?,
            },
            ("text", Some(n), c, None) => Preprocess::Text {
                tokens: n.parse().ok().filter(|n| (3..=8192).contains(n))?,
                chunks: match c {
                    None => 1,
                    Some(c) => c.parse().ok().filter(|c| (1..=64).contains(c))?,
                },
            },
            _ => return None,
        };
        Some(p)
    }
}

/// Hex of little-endian f32 values (how a plan's metadata carries a filter bank).
pub fn f32_hex(v: &[f32]) -> alloc::string::String {
    let mut s = alloc::string::String::with_capacity(v.len() * 8);
    for b in v.iter().flat_map(|x| x.to_le_bytes()) {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

/// Inverse of [`f32_hex`]; `None` on odd lengths or non-hex characters.
pub fn hex_f32(s: &str) -> Option<Vec<u8>> {
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let b = s.as_bytes();
    if !b.len().is_multiple_of(8) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect()
}

/// How to turn an image into the backbone's input tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImagePrep {
    pub size: usize,
    pub mean: f32,
    pub std: f32,
    /// Channels of the input tensor: 3 (RGB; grey images replicated) or 1 (grey; RGB
    /// images averaged).
    pub channels: usize,
}

impl ImagePrep {
    /// Parses `image:SIZE:MEAN:STD[:CHANNELS]`, e.g. `image:224:127:128` (RGB) or
    /// `image:28:127:128:1` (grey).
    pub fn parse(s: &str) -> Option<ImagePrep> {
        let mut it = s.split(':');
        if it.next()? != "image" {
            return None;
        }
        let p = ImagePrep {
            size: it.next()?.parse().ok()?,
            mean: it.next()?.parse().ok()?,
            std: it.next()?.parse().ok()?,
            channels: it.next().map_or(Some(3), |c| c.parse().ok())?,
        };
        let ok = (1..=4096).contains(&p.size)
            && matches!(p.channels, 1 | 3)
            && p.std.is_finite()
            && p.std != 0.0
            && p.mean.is_finite()
            && it.next().is_none();
        ok.then_some(p)
    }

    pub fn to_meta(&self) -> alloc::string::String {
        if self.channels == 3 {
            alloc::format!("image:{}:{}:{}", self.size, self.mean, self.std)
        } else {
            alloc::format!(
                "image:{}:{}:{}:{}",
                self.size,
                self.mean,
                self.std,
                self.channels
            )
        }
    }

    /// Interleaved pixels (`channels` = 1 grey or 3 RGB) of `w×h` → NCHW f32 with
    /// `self.channels` planes.
    pub fn apply(&self, pixels: &[u8], w: usize, h: usize, channels: usize, out: &mut Vec<f32>) {
        let n = self.size;
        out.clear();
        out.resize(self.channels * n * n, 0.0);
        for c in 0..self.channels {
            let plane: Vec<f32> = (0..w * h)
                .map(|i| {
                    let px = &pixels[i * channels..][..channels];
                    if channels == 1 {
                        px[0] as f32
                    } else if self.channels == 1 {
                        px.iter().map(|&v| v as f32).sum::<f32>() / channels as f32
                    } else {
                        px[c] as f32
                    }
                })
                .collect();
            let dst = &mut out[c * n * n..][..n * n];
            resize_bilinear(&plane, w, h, n, dst);
            dst.iter_mut()
                .for_each(|v| *v = (*v - self.mean) / self.std);
        }
    }
}

fn coords(n_out: usize, n_in: usize) -> Vec<(usize, usize, f32)> {
    let ratio = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|i| {
            let s = ((i as f32 + 0.5) * ratio - 0.5).clamp(0.0, (n_in - 1) as f32);
            let i0 = libm::floorf(s) as usize;
            (i0, (i0 + 1).min(n_in - 1), s - i0 as f32)
        })
        .collect()
}

/// Half-pixel bilinear resize of one plane to `n×n` (the formula tools/convert.py uses).
pub fn resize_bilinear(src: &[f32], w: usize, h: usize, n: usize, dst: &mut [f32]) {
    let ys = coords(n, h);
    let xs = coords(n, w);
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bot = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            dst[oy * n + ox] = top * (1.0 - fy) + bot * fy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_declarations_parse_with_optional_chunks() {
        let t = |tokens, chunks| Some(Preprocess::Text { tokens, chunks });
        assert_eq!(Preprocess::parse("text:128"), t(128, 1));
        assert_eq!(Preprocess::parse("text:128:8"), t(128, 8));
        for bad in [
            "text",
            "text:",
            "text:2",
            "text:128:0",
            "text:128:65",
            "text:128:x",
            "text:128:8:1",
        ] {
            assert_eq!(Preprocess::parse(bad), None, "{bad}");
        }
    }
}
