use crate::quant::requant;
use crate::DwI8Args;

/// # Safety
/// `args` describes valid buffers (checked by [`crate::ops::depthwise_i8`]).
pub unsafe fn dw_i8__reference(a: &DwI8Args) {
    for oy in 0..a.oh {
        for ox in 0..a.ow {
            for ch in 0..a.c {
                let mut acc = 0i32;
                for ky in 0..a.kh {
                    for kx in 0..a.kw {
                        let iy = (oy * a.stride + ky) as isize - a.pad_top as isize;
                        let ix = (ox * a.stride + kx) as isize - a.pad_left as isize;
                        if iy < 0 || ix < 0 || iy >= a.h as isize || ix >= a.w as isize {
                            continue;
                        }
                        let x = *a.x.add((iy as usize * a.w + ix as usize) * a.c + ch) as i32
                            - a.x_zero;
                        acc += x * *a.weights.add((ky * a.kw + kx) * a.c + ch) as i32;
                    }
                }
                let t = acc + if a.bias.is_null() { 0 } else { *a.bias.add(ch) };
                let y = requant(t as f32 * *a.scale.add(ch), a.y_zero, a.qmin, a.qmax);
                *a.y.add((oy * a.ow + ox) * a.c + ch) = y as u8;
            }
        }
    }
}

/// Geometry of a 2-D convolution over NHWC data with weights `[oc][kh][kw][ic/groups]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub h: usize,
    pub w: usize,
    pub ic: usize,
    pub oc: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
    pub groups: usize,
}

impl ConvGeom {
    /// A 1×1 convolution (a GEMM over `h·w` pixels): stride 1, no dilation, padding or
    /// groups.
    pub const fn pointwise(h: usize, w: usize, ic: usize, oc: usize) -> ConvGeom {
        ConvGeom {
            h,
            w,
            ic,
            oc,
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            dil_h: 1,
            dil_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
            groups: 1,
        }
    }

    pub fn oh(&self) -> usize {
        (self.h + self.pad_top + self.pad_bottom - self.dil_h * (self.kh - 1) - 1) / self.stride_h
            + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + self.pad_left + self.pad_right - self.dil_w * (self.kw - 1) - 1) / self.stride_w
            + 1
    }
    /// Input coordinate of output `(oy, ox)` tap `(ky, kx)`, or None in the padding.
    #[inline]
    pub fn src(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride_h + ky * self.dil_h) as isize - self.pad_top as isize;
        let ix = (ox * self.stride_w + kx * self.dil_w) as isize - self.pad_left as isize;
        if iy < 0 || ix < 0 || iy >= self.h as isize || ix >= self.w as isize {
            None
        } else {
            Some((iy as usize, ix as usize))
        }
    }
}

/// Naive grouped int8 convolution with per-output-channel requantisation to u8.
#[allow(clippy::too_many_arguments)]
pub fn conv_i8_naive(
    g: &ConvGeom,
    x: &[u8],
    x_zero: i32,
    w: &[i8],
    bias: &[i32],
    scale: &[f32],
    y_zero: i32,
    y: &mut [u8],
) {
    let (icg, ocg) = (g.ic / g.groups, g.oc / g.groups);
    for oy in 0..g.oh() {
        for ox in 0..g.ow() {
            for o in 0..g.oc {
                let grp = o / ocg;
                let mut acc = 0i32;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let Some((iy, ix)) = g.src(oy, ox, ky, kx) else {
                            continue;
                        };
                        for i in 0..icg {
                            let xv = x[(iy * g.w + ix) * g.ic + grp * icg + i] as i32 - x_zero;
                            acc += xv * w[((o * g.kh + ky) * g.kw + kx) * icg + i] as i32;
                        }
                    }
                }
                let t = acc + bias.get(o).copied().unwrap_or(0);
                y[(oy * g.ow() + ox) * g.oc + o] =
                    requant(t as f32 * scale[o], y_zero, 0, 255) as u8;
            }
        }
    }
}

/// Naive grouped f32 convolution with bias and clamp.
pub fn conv_f32_naive(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    lo: f32,
    hi: f32,
    y: &mut [f32],
) {
    let (icg, ocg) = (g.ic / g.groups, g.oc / g.groups);
    for oy in 0..g.oh() {
        for ox in 0..g.ow() {
            for o in 0..g.oc {
                let grp = o / ocg;
                let mut acc = bias.get(o).copied().unwrap_or(0.0);
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let Some((iy, ix)) = g.src(oy, ox, ky, kx) else {
                            continue;
                        };
                        for i in 0..icg {
                            acc += x[(iy * g.w + ix) * g.ic + grp * icg + i]
                                * w[((o * g.kh + ky) * g.kw + kx) * icg + i];
                        }
                    }
                }
                y[(oy * g.ow() + ox) * g.oc + o] = acc.max(lo).min(hi);
            }
        }
    }
}
