//! Input preprocessing declared by a backbone (stored in the plan's metadata as
//! `preprocess=image:SIZE:MEAN:STD`), so apps and the CLI do not hard-code it.

use alloc::vec::Vec;

/// How to turn an image into the backbone's input tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImagePrep {
    pub size: usize,
    pub mean: f32,
    pub std: f32,
}

impl ImagePrep {
    /// Parses `image:224:127:128`.
    pub fn parse(s: &str) -> Option<ImagePrep> {
        let mut it = s.split(':');
        if it.next()? != "image" {
            return None;
        }
        Some(ImagePrep {
            size: it.next()?.parse().ok()?,
            mean: it.next()?.parse().ok()?,
            std: it.next()?.parse().ok()?,
        })
    }

    pub fn to_meta(&self) -> alloc::string::String {
        alloc::format!("image:{}:{}:{}", self.size, self.mean, self.std)
    }

    /// Planar RGB (`channels` = 1 for grey, replicated to 3) of `w×h` bytes → NCHW f32.
    pub fn apply(&self, pixels: &[u8], w: usize, h: usize, channels: usize, out: &mut Vec<f32>) {
        let n = self.size;
        out.clear();
        out.resize(3 * n * n, 0.0);
        for c in 0..3 {
            let src_c = if channels == 1 { 0 } else { c };
            let plane: Vec<f32> = (0..w * h)
                .map(|i| pixels[i * channels + src_c] as f32)
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
