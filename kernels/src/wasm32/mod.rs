//! WebAssembly `simd128` tier. Wasm has no run-time feature detection: a module either
//! validates with SIMD instructions or not at all, so this tier exists only in builds with
//! `-C target-feature=+simd128`, and dispatch sees the feature from `cfg`. Builds without
//! it run the portable tier. The int8 kernels read the same packed layout as every other
//! tier (`panel[k/4][16 columns][4 bytes]`).

mod ew;
pub use ew::EW_SIMD128;

use crate::pack::{F32_NR, I8_NR};
use crate::tile::{drive_f32, drive_i8, i8_epi_scalar, load_a4};
use crate::{DwI8Args, F32GemmArgs, I8GemmArgs, I8Out};
use core::arch::wasm32::*;

/// 4×16 f32 tile: four f32x4 accumulators per row. simd128 has no fused multiply-add, so
/// each step is a multiply and an add (within the f32 tier bound of the tests).
///
/// # Safety
/// Pointers as in [`crate::tile::drive_f32`].
unsafe fn f32_micro_4x16(
    k: usize,
    a: &[*const f32; 4],
    b: *const f32,
    acc: &mut [[f32; F32_NR]; 4],
) {
    let mut c = [[f32x4_splat(0.0); 4]; 4];
    for kk in 0..k {
        let bp = b.add(kk * F32_NR) as *const v128;
        let bv = [
            v128_load(bp),
            v128_load(bp.add(1)),
            v128_load(bp.add(2)),
            v128_load(bp.add(3)),
        ];
        for r in 0..4 {
            let av = f32x4_splat(*a[r].add(kk));
            for q in 0..4 {
                c[r][q] = f32x4_add(c[r][q], f32x4_mul(av, bv[q]));
            }
        }
    }
    for r in 0..4 {
        for q in 0..4 {
            v128_store(acc[r].as_mut_ptr().add(q * 4) as *mut v128, c[r][q]);
        }
    }
}

/// # Safety
/// `args` describes valid buffers.
pub unsafe fn f32_gemm_4x16__simd128(args: &F32GemmArgs) {
    drive_f32::<4>(args, f32_micro_4x16)
}

/// 4×16 int8 tile. A packed group holds, per column, 4 reduction bytes; a 16-byte load
/// is 4 columns, widened to i16 as two vectors of 2 columns × 4 bytes. The row's 4
/// activation bytes are widened to i16 and repeated twice, and `i32x4.dot_i16x8_s`
/// multiplies them pairwise: lanes hold (k0+k1, k2+k3) of two columns. The pairs are
/// summed at the end. u8 and i8 both fit i16, and a pair's sum fits i32: exact.
///
/// # Safety
/// Pointers as in [`crate::tile::drive_i8`].
unsafe fn i8_micro_4x16(
    k: usize,
    a: &[*const u8; 4],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 4],
) {
    let mut c = [[i32x4_splat(0); 8]; 4];
    for g in 0..k.div_ceil(4) {
        let bp = b.add(g * 64) as *const v128;
        let mut w = [i32x4_splat(0); 8];
        for q in 0..4 {
            let v = v128_load(bp.add(q));
            w[2 * q] = i16x8_extend_low_i8x16(v);
            w[2 * q + 1] = i16x8_extend_high_i8x16(v);
        }
        for r in 0..4 {
            let av = u16x8_extend_low_u8x16(u32x4_splat(load_a4(a[r], g, k, flip)));
            for q in 0..8 {
                c[r][q] = i32x4_add(c[r][q], i32x4_dot_i16x8(av, w[q]));
            }
        }
    }
    for r in 0..4 {
        for q in 0..4 {
            let (x, y) = (c[r][2 * q], c[r][2 * q + 1]);
            let s = i32x4_add(
                i32x4_shuffle::<0, 2, 4, 6>(x, y),
                i32x4_shuffle::<1, 3, 5, 7>(x, y),
            );
            v128_store(acc[r].as_mut_ptr().add(q * 4) as *mut v128, s);
        }
    }
}

/// Requantises four i32 sums scaled to f32 as [`crate::quant::requant`] does: clamp
/// (`pmax`/`pmin` equal `f32::max`/`min` on the finite values here; the scalar forms
/// are calls to `fmaxf`/`fminf` in wasm, which lacks that NaN rule), round half to even
/// (`nearest`), add the zero point.
#[inline(always)]
fn requant4(v: v128, lo: v128, hi: v128, zero: v128) -> v128 {
    let v = f32x4_nearest(f32x4_pmin(f32x4_pmax(v, lo), hi));
    i32x4_add(i32x4_trunc_sat_f32x4(v), zero)
}

/// Stores four requantised lanes (within `qmin..=qmax`, so the narrowing is exact) as
/// u8 or i8.
///
/// # Safety
/// `p` is writable for 4 bytes.
#[inline(always)]
unsafe fn store4(q: v128, signed: bool, p: *mut u8) {
    let b = if signed {
        let h = i16x8_narrow_i32x4(q, q);
        i8x16_narrow_i16x8(h, h)
    } else {
        let h = u16x8_narrow_i32x4(q, q);
        u8x16_narrow_i16x8(h, h)
    };
    (p as *mut u32).write_unaligned(u32x4_extract_lane::<0>(b));
}

/// simd128 form of [`crate::quant::i8_epilogue`], four columns at a time (the last
/// `ncols % 4` columns of an edge tile take the scalar path); the same operations in the
/// same order, so bit-identical.
///
/// # Safety
/// `row < m`, `col0 + ncols ≤ n`, buffers valid.
unsafe fn i8_epi_simd128(
    args: &I8GemmArgs,
    row: usize,
    col0: usize,
    ncols: usize,
    acc: &[i32; I8_NR],
) {
    let zero = i32x4_splat(crate::quant::effective_a_zero(args));
    let lo = f32x4_splat((args.qmin - args.y_zero) as f32);
    let hi = f32x4_splat((args.qmax - args.y_zero) as f32);
    let yz = i32x4_splat(args.y_zero);
    let idx = row * args.ldc + col0;
    let full = ncols - ncols % 4;
    for j in (0..full).step_by(4) {
        let col = col0 + j;
        let colsum = v128_load(args.colsum.add(col) as *const v128);
        let mut t = i32x4_sub(
            v128_load(acc.as_ptr().add(j) as *const v128),
            i32x4_mul(colsum, zero),
        );
        if !args.bias.is_null() {
            t = i32x4_add(t, v128_load(args.bias.add(col) as *const v128));
        }
        let v = f32x4_mul(
            f32x4_convert_i32x4(t),
            v128_load(args.scale.add(col) as *const v128),
        );
        match args.out {
            I8Out::F32 => v128_store((args.c as *mut f32).add(idx + j) as *mut v128, v),
            I8Out::U8 => store4(requant4(v, lo, hi, yz), false, args.c.add(idx + j)),
            I8Out::I8 => store4(requant4(v, lo, hi, yz), true, args.c.add(idx + j)),
        }
    }
    if full < ncols {
        let mut rest = [0i32; I8_NR];
        rest[..ncols - full].copy_from_slice(&acc[full..ncols]);
        i8_epi_scalar(args, row, col0 + full, ncols - full, &rest);
    }
}

/// # Safety
/// `args` describes valid buffers.
pub unsafe fn i8_gemm_4x16__simd128(args: &I8GemmArgs) {
    drive_i8::<4>(args, i8_micro_4x16, i8_epi_simd128)
}

/// Depthwise int8, 8 channels per step: the activations widened to i16 minus the zero
/// point (u8 − zero lies in −255..=255: exact), multiplied by the i16 weights into two
/// i32x4 (`extmul`), summed in i32 as the reference does. Taps outside the input are
/// skipped by bounds, channel tails read through a copy with zero weights; the
/// requantisation is `requant4` (the scalar definition on channel tails), bit-identical.
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]).
pub unsafe fn dw_i8_8c__simd128(a: &DwI8Args) {
    let zero = i16x8_splat(a.x_zero as i16);
    let lo = f32x4_splat((a.qmin - a.y_zero) as f32);
    let hi = f32x4_splat((a.qmax - a.y_zero) as f32);
    let yz = i32x4_splat(a.y_zero);
    for oy in 0..a.oh {
        let (y0, ky0, ky1) = DwI8Args::taps_inside(oy, a.stride, a.pad_top, a.h, a.kh);
        for ox in 0..a.ow {
            let (x0, kx0, kx1) = DwI8Args::taps_inside(ox, a.stride, a.pad_left, a.w, a.kw);
            let out = (oy * a.ow + ox) * a.c;
            for c0 in (0..a.c).step_by(8) {
                let nc = (a.c - c0).min(8);
                let (mut acc0, mut acc1) = (i32x4_splat(0), i32x4_splat(0));
                for ky in ky0..ky1 {
                    let iy = (y0 + ky as isize) as usize;
                    for kx in kx0..kx1 {
                        let ix = (x0 + kx as isize) as usize;
                        let xp = a.x.add((iy * a.w + ix) * a.c + c0);
                        let wp = a.weights.add((ky * a.kw + kx) * a.c + c0);
                        let (xv, wv) = if nc == 8 {
                            (u16x8_load_extend_u8x8(xp), v128_load(wp as *const v128))
                        } else {
                            let mut xb = [0u8; 8];
                            let mut wb = [0i16; 8];
                            for i in 0..nc {
                                xb[i] = *xp.add(i);
                                wb[i] = *wp.add(i);
                            }
                            (
                                u16x8_load_extend_u8x8(xb.as_ptr()),
                                v128_load(wb.as_ptr() as *const v128),
                            )
                        };
                        let xs = i16x8_sub(xv, zero);
                        acc0 = i32x4_add(acc0, i32x4_extmul_low_i16x8(xs, wv));
                        acc1 = i32x4_add(acc1, i32x4_extmul_high_i16x8(xs, wv));
                    }
                }
                if nc == 8 {
                    let (mut t0, mut t1) = (acc0, acc1);
                    if !a.bias.is_null() {
                        t0 = i32x4_add(t0, v128_load(a.bias.add(c0) as *const v128));
                        t1 = i32x4_add(t1, v128_load(a.bias.add(c0 + 4) as *const v128));
                    }
                    let sp = a.scale.add(c0);
                    let v0 = f32x4_mul(f32x4_convert_i32x4(t0), v128_load(sp as *const v128));
                    let v1 =
                        f32x4_mul(f32x4_convert_i32x4(t1), v128_load(sp.add(4) as *const v128));
                    let yp = a.y.add(out + c0);
                    store4(requant4(v0, lo, hi, yz), false, yp);
                    store4(requant4(v1, lo, hi, yz), false, yp.add(4));
                    continue;
                }
                let mut sums = [0i32; 8];
                v128_store(sums.as_mut_ptr() as *mut v128, acc0);
                v128_store(sums.as_mut_ptr().add(4) as *mut v128, acc1);
                for (i, &v) in sums.iter().enumerate().take(nc) {
                    let ch = c0 + i;
                    let t = v + if a.bias.is_null() { 0 } else { *a.bias.add(ch) };
                    let y = crate::quant::requant(
                        t as f32 * *a.scale.add(ch),
                        a.y_zero,
                        a.qmin,
                        a.qmax,
                    );
                    *a.y.add(out + ch) = y as u8;
                }
            }
        }
    }
}
