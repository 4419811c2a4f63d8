//! Portable tier: `wide` vectors and fixed-size blocks the compiler vectorises; runs on
//! every target and is the Cortex-M fallback.

use crate::pack::{F32_NR, I8_NR};
use crate::tile::{drive_f32, drive_i8, i8_epi_scalar, load_a4};
use crate::{DwI8Args, F32GemmArgs, I8GemmArgs};
use wide::{f32x8, i32x8};

unsafe fn f32_micro_4x16(
    k: usize,
    a: &[*const f32; 4],
    b: *const f32,
    acc: &mut [[f32; F32_NR]; 4],
) {
    let mut c = [[f32x8::ZERO; 2]; 4];
    for kk in 0..k {
        let bp = b.add(kk * F32_NR);
        let b0 = f32x8::from(*(bp as *const [f32; 8]));
        let b1 = f32x8::from(*(bp.add(8) as *const [f32; 8]));
        for r in 0..4 {
            let av = f32x8::splat(*a[r].add(kk));
            c[r][0] = av.mul_add(b0, c[r][0]);
            c[r][1] = av.mul_add(b1, c[r][1]);
        }
    }
    for r in 0..4 {
        acc[r][..8].copy_from_slice(&c[r][0].to_array());
        acc[r][8..].copy_from_slice(&c[r][1].to_array());
    }
}

/// # Safety
/// `args` describes valid buffers.
pub unsafe fn f32_gemm_4x16__portable(args: &F32GemmArgs) {
    drive_f32::<4>(args, f32_micro_4x16)
}

unsafe fn i8_micro_4x16(
    k: usize,
    a: &[*const u8; 4],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 4],
) {
    for g in 0..k.div_ceil(4) {
        let w = &*(b.add(g * 64) as *const [i8; 64]);
        for r in 0..4 {
            let av = load_a4(a[r], g, k, flip).to_ne_bytes();
            for j in 0..I8_NR {
                let mut s = 0i32;
                for q in 0..4 {
                    s += av[q] as i32 * w[j * 4 + q] as i32;
                }
                acc[r][j] += s;
            }
        }
    }
}

/// # Safety
/// `args` describes valid buffers.
pub unsafe fn i8_gemm_4x16__portable(args: &I8GemmArgs) {
    drive_i8::<4>(args, i8_micro_4x16, i8_epi_scalar)
}

/// Depthwise int8, eight channels at a time in `i32x8`.
///
/// # Safety
/// `args` describes valid buffers (checked by [`crate::ops::depthwise_i8`]).
pub unsafe fn dw_i8_8c__portable(a: &DwI8Args) {
    let zero = i32x8::splat(a.x_zero);
    for oy in 0..a.oh {
        for ox in 0..a.ow {
            let mut c0 = 0;
            while c0 < a.c {
                let nc = (a.c - c0).min(8);
                let mut acc = i32x8::ZERO;
                for ky in 0..a.kh {
                    let iy = (oy * a.stride + ky) as isize - a.pad_top as isize;
                    if iy < 0 || iy >= a.h as isize {
                        continue;
                    }
                    for kx in 0..a.kw {
                        let ix = (ox * a.stride + kx) as isize - a.pad_left as isize;
                        if ix < 0 || ix >= a.w as isize {
                            continue;
                        }
                        let xp = a.x.add((iy as usize * a.w + ix as usize) * a.c + c0);
                        let wp = a.weights.add((ky * a.kw + kx) * a.c + c0);
                        let mut xv = [0i32; 8];
                        let mut wv = [0i32; 8];
                        for i in 0..nc {
                            xv[i] = *xp.add(i) as i32;
                            wv[i] = *wp.add(i) as i32;
                        }
                        acc += (i32x8::from(xv) - zero) * i32x8::from(wv);
                    }
                }
                let acc = acc.to_array();
                for i in 0..nc {
                    let ch = c0 + i;
                    let t = acc[i] + if a.bias.is_null() { 0 } else { *a.bias.add(ch) };
                    let y = crate::quant::requant(
                        t as f32 * *a.scale.add(ch),
                        a.y_zero,
                        a.qmin,
                        a.qmax,
                    );
                    *a.y.add((oy * a.ow + ox) * a.c + ch) = y as u8;
                }
                c0 += 8;
            }
        }
    }
}
