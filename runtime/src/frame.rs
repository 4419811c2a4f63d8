//! Camera frames and decoded pictures as the one pixel layout the preprocessing reads:
//! interleaved RGB (or grey) rows of `w` pixels, upright. From there the plan's declared
//! policy ([`ImageSpec::apply`]: resize, crop or letterbox, filter, channel order, layout,
//! mean and std) is the same code for frames and for files.
//!
//! Apps hand over what their camera or decoder gives: RGB/BGR, RGBA/BGRA (Android
//! `Bitmap`, iOS `CVPixelBuffer` in 32BGRA), grey, or YUV 4:2:0 with interleaved chroma
//! (NV21 from Android's camera, NV12 from iOS/CameraX), rows `stride` bytes apart, and the
//! clockwise rotation that makes the picture upright (Android's `rotationDegrees`).

use crate::error::{Error, Result};
use crate::preprocess::ImageSpec;
use alloc::vec::Vec;

/// Decoded pixels: `c` interleaved bytes per pixel (1 grey, 3 RGB), `w × h`, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub px: Vec<u8>,
    pub w: usize,
    pub h: usize,
    pub c: usize,
}

/// How a frame's bytes are laid out. The values are the C ABI's (`ET_PIXEL_*`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb = 0,
    Rgba = 1,
    Bgra = 2,
    Grey = 3,
    /// Y plane, then rows of interleaved V,U at half resolution (Android camera).
    Nv21 = 4,
    /// Y plane, then rows of interleaved U,V at half resolution.
    Nv12 = 5,
    Bgr = 6,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 7] = [
        PixelFormat::Rgb,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Grey,
        PixelFormat::Nv21,
        PixelFormat::Nv12,
        PixelFormat::Bgr,
    ];

    pub fn from_u32(v: u32) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| *f as u32 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb => "rgb",
            PixelFormat::Rgba => "rgba",
            PixelFormat::Bgra => "bgra",
            PixelFormat::Grey => "grey",
            PixelFormat::Nv21 => "nv21",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Bgr => "bgr",
        }
    }

    pub fn parse(s: &str) -> Option<PixelFormat> {
        PixelFormat::ALL
            .into_iter()
            .find(|f| f.name() == s || (s == "gray" && *f == PixelFormat::Grey))
    }

    /// Bytes per pixel of a packed format (the Y plane for the YUV formats).
    fn bytes(self) -> usize {
        match self {
            PixelFormat::Rgb | PixelFormat::Bgr => 3,
            PixelFormat::Rgba | PixelFormat::Bgra => 4,
            PixelFormat::Grey | PixelFormat::Nv21 | PixelFormat::Nv12 => 1,
        }
    }

    fn is_yuv(self) -> bool {
        matches!(self, PixelFormat::Nv21 | PixelFormat::Nv12)
    }
}

fn bad(what: alloc::string::String) -> Error {
    Error::Invalid { what }
}

/// Bytes a `w × h` frame with rows `stride` bytes apart needs (0 = packed rows).
pub fn frame_len(format: PixelFormat, w: usize, h: usize, stride: usize) -> Option<usize> {
    let row = w.checked_mul(format.bytes())?;
    let stride = if stride == 0 { row } else { stride };
    if stride < row || w == 0 || h == 0 {
        return None;
    }
    let luma = stride.checked_mul(h - 1)?.checked_add(row)?;
    if !format.is_yuv() {
        return Some(luma);
    }
    // Chroma rows follow a full Y plane of `h` strided rows.
    let ch = h.div_ceil(2);
    stride
        .checked_mul(h)?
        .checked_add(stride.checked_mul(ch - 1)?)?
        .checked_add(2 * w.div_ceil(2))
}

/// Full-range BT.601 (JFIF), what Android's and iOS's camera YUV outputs use.
fn yuv_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let (y, u, v) = (y as f32, u as f32 - 128.0, v as f32 - 128.0);
    let c = |x: f32| libm::roundf(x).clamp(0.0, 255.0) as u8;
    [
        c(y + 1.402 * v),
        c(y - 0.344_136 * u - 0.714_136 * v),
        c(y + 1.772 * u),
    ]
}

/// Converts a frame to upright interleaved RGB (grey frames stay one channel), rotating
/// clockwise by `rotation` degrees (0, 90, 180 or 270).
pub fn frame_to_image(
    px: &[u8],
    format: PixelFormat,
    w: usize,
    h: usize,
    stride: usize,
    rotation: u32,
) -> Result<Image> {
    let need = frame_len(format, w, h, stride).ok_or_else(|| {
        bad(alloc::format!(
            "{} frame {w}x{h} with row stride {stride}: empty, or rows shorter than {} bytes",
            format.name(),
            w.saturating_mul(format.bytes())
        ))
    })?;
    if px.len() < need {
        return Err(Error::ShapeMismatch {
            op: alloc::format!("{} frame {w}x{h}", format.name()),
            expected: alloc::vec![need],
            got: alloc::vec![px.len()],
        });
    }
    if !matches!(rotation, 0 | 90 | 180 | 270) {
        return Err(bad(alloc::format!(
            "rotation {rotation}: must be 0, 90, 180 or 270 degrees"
        )));
    }
    let stride = if stride == 0 {
        w * format.bytes()
    } else {
        stride
    };
    let c = if format == PixelFormat::Grey { 1 } else { 3 };
    let mut out = alloc::vec![0u8; w * h * c];
    for y in 0..h {
        let row = &px[y * stride..];
        let dst = &mut out[y * w * c..][..w * c];
        match format {
            PixelFormat::Grey => dst.copy_from_slice(&row[..w]),
            PixelFormat::Rgb => dst.copy_from_slice(&row[..w * 3]),
            PixelFormat::Bgr => {
                for (d, s) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                    d.copy_from_slice(&[s[2], s[1], s[0]]);
                }
            }
            PixelFormat::Rgba => {
                for (d, s) in dst.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    d.copy_from_slice(&s[..3]);
                }
            }
            PixelFormat::Bgra => {
                for (d, s) in dst.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    d.copy_from_slice(&[s[2], s[1], s[0]]);
                }
            }
            PixelFormat::Nv21 | PixelFormat::Nv12 => {
                let uv = &px[stride * h + (y / 2) * stride..];
                for x in 0..w {
                    let (a, b) = (uv[(x / 2) * 2], uv[(x / 2) * 2 + 1]);
                    let (u, v) = if format == PixelFormat::Nv21 {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    dst[x * 3..][..3].copy_from_slice(&yuv_rgb(row[x], u, v));
                }
            }
        }
    }
    Ok(rotate(Image { px: out, w, h, c }, rotation))
}

/// A frame straight to the input tensor `spec` declares: [`frame_to_image`], then
/// [`ImageSpec::apply`], the code a decoded file goes through.
#[allow(clippy::too_many_arguments)]
pub fn frame_tensor(
    px: &[u8],
    format: PixelFormat,
    w: usize,
    h: usize,
    stride: usize,
    rotation: u32,
    spec: &ImageSpec,
    out: &mut Vec<f32>,
) -> Result<()> {
    let im = frame_to_image(px, format, w, h, stride, rotation)?;
    spec.apply(&im.px, im.w, im.h, im.c, out)
}

/// Rotates clockwise by 0, 90, 180 or 270 degrees.
pub fn rotate(im: Image, rotation: u32) -> Image {
    let (w, h, c) = (im.w, im.h, im.c);
    let (ow, oh) = if rotation % 180 == 90 { (h, w) } else { (w, h) };
    // Source pixel of output pixel (x, y).
    let src = |x: usize, y: usize| match rotation {
        90 => (y, h - 1 - x),
        180 => (w - 1 - x, h - 1 - y),
        270 => (w - 1 - y, x),
        _ => (x, y),
    };
    if rotation == 0 {
        return im;
    }
    let mut px = alloc::vec![0u8; im.px.len()];
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = src(x, y);
            px[(y * ow + x) * c..][..c].copy_from_slice(&im.px[(sy * w + sx) * c..][..c]);
        }
    }
    Image {
        px,
        w: ow,
        h: oh,
        c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(w: usize, h: usize) -> Image {
        let px = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        Image { px, w, h, c: 3 }
    }

    /// Packs `im` in `format` with `pad` spare bytes per row.
    fn pack(im: &Image, format: PixelFormat, pad: usize) -> (Vec<u8>, usize) {
        let stride = im.w * format.bytes() + pad;
        let mut v = alloc::vec![0xeeu8; stride * im.h];
        for y in 0..im.h {
            for x in 0..im.w {
                let p = &im.px[(y * im.w + x) * 3..][..3];
                let d = &mut v[y * stride + x * format.bytes()..];
                match format {
                    PixelFormat::Rgb => d[..3].copy_from_slice(p),
                    PixelFormat::Bgr => d[..3].copy_from_slice(&[p[2], p[1], p[0]]),
                    PixelFormat::Rgba => d[..4].copy_from_slice(&[p[0], p[1], p[2], 255]),
                    PixelFormat::Bgra => d[..4].copy_from_slice(&[p[2], p[1], p[0], 7]),
                    _ => unreachable!(),
                }
            }
        }
        (v, stride)
    }

    #[test]
    fn packed_formats_with_padded_rows_give_the_same_rgb() {
        let im = rgb(7, 5);
        for f in [
            PixelFormat::Rgb,
            PixelFormat::Bgr,
            PixelFormat::Rgba,
            PixelFormat::Bgra,
        ] {
            for pad in [0, 3, 16] {
                let (v, stride) = pack(&im, f, pad);
                let got = frame_to_image(&v, f, 7, 5, stride, 0).unwrap();
                assert_eq!(got, im, "{f:?} pad {pad}");
            }
        }
    }

    #[test]
    fn rotations_compose_and_90_maps_bottom_left_to_top_left() {
        let im = rgb(4, 3);
        let r90 = rotate(im.clone(), 90);
        assert_eq!((r90.w, r90.h), (3, 4));
        assert_eq!(&r90.px[..3], &im.px[(2 * 4) * 3..][..3]);
        let r360 = rotate(rotate(rotate(r90.clone(), 90), 90), 90);
        assert_eq!(r360, im);
        assert_eq!(rotate(rotate(im.clone(), 180), 180), im);
        assert_eq!(rotate(r90, 270), im);
    }

    /// NV21/NV12 of a picture whose 2x2 blocks share one colour: the conversion recovers
    /// each pixel within the rounding of the YUV round trip.
    #[test]
    fn nv21_and_nv12_round_trip_within_rounding() {
        let (w, h) = (6, 4);
        let block =
            |x: usize, y: usize| [(x / 2 * 60 + 20) as f32, (y / 2 * 90 + 30) as f32, 140.0];
        let mut want = alloc::vec![];
        for y in 0..h {
            for x in 0..w {
                want.extend(block(x, y).map(|v| v as u8));
            }
        }
        for f in [PixelFormat::Nv21, PixelFormat::Nv12] {
            let stride = w + 2;
            let mut v = alloc::vec![0u8; stride * h + stride * (h / 2)];
            for y in 0..h {
                for x in 0..w {
                    let [r, g, b] = block(x, y);
                    let yy = 0.299 * r + 0.587 * g + 0.114 * b;
                    v[y * stride + x] = libm::roundf(yy) as u8;
                    if x % 2 == 0 && y % 2 == 0 {
                        let u = libm::roundf((b - yy) / 1.772 + 128.0) as u8;
                        let vv = libm::roundf((r - yy) / 1.402 + 128.0) as u8;
                        let o = stride * h + (y / 2) * stride + x;
                        let (a, b2) = if f == PixelFormat::Nv21 {
                            (vv, u)
                        } else {
                            (u, vv)
                        };
                        v[o] = a;
                        v[o + 1] = b2;
                    }
                }
            }
            let got = frame_to_image(&v, f, w, h, stride, 0).unwrap();
            for (g, e) in got.px.iter().zip(&want) {
                assert!((*g as i32 - *e as i32).abs() <= 2, "{f:?}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn short_buffers_and_bad_arguments_are_typed_errors() {
        let v = alloc::vec![0u8; 10];
        assert!(matches!(
            frame_to_image(&v, PixelFormat::Rgb, 4, 4, 0, 0),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(frame_to_image(&v, PixelFormat::Rgb, 1, 1, 0, 45).is_err());
        assert!(frame_to_image(&v, PixelFormat::Rgba, 2, 1, 5, 0).is_err());
        assert!(frame_to_image(&v, PixelFormat::Grey, 0, 1, 0, 0).is_err());
        assert!(frame_len(PixelFormat::Rgb, usize::MAX, 2, 0).is_none());
    }
}
