//! aarch64 tiers: NEON (always present on aarch64), dotprod (`sdot` by `asm!`), i8mm
//! (`usmmla` by `asm!`). All int8 tiers read the same packed layout
//! (`panel[k/4][16 columns][4 bytes]`), so one plan runs on every tier.

mod ew;
pub use ew::EW_NEON;

use crate::pack::{F32_NR, I8_NR};
use crate::tile::{drive_f32, drive_i8, i8_epi_scalar, load_a4};
use crate::{DwI8Args, F32GemmArgs, I8GemmArgs};
use core::arch::aarch64::*;

#[target_feature(enable = "neon")]
unsafe fn f32_micro_8x16(
    k: usize,
    a: &[*const f32; 8],
    b: *const f32,
    acc: &mut [[f32; F32_NR]; 8],
) {
    let mut c = [[vdupq_n_f32(0.0); 4]; 8];
    for kk in 0..k {
        let bp = b.add(kk * F32_NR);
        let bv = [
            vld1q_f32(bp),
            vld1q_f32(bp.add(4)),
            vld1q_f32(bp.add(8)),
            vld1q_f32(bp.add(12)),
        ];
        for r in 0..8 {
            let av = vdupq_n_f32(*a[r].add(kk));
            for q in 0..4 {
                c[r][q] = vfmaq_f32(c[r][q], av, bv[q]);
            }
        }
    }
    for r in 0..8 {
        for q in 0..4 {
            vst1q_f32(acc[r].as_mut_ptr().add(q * 4), c[r][q]);
        }
    }
}

/// # Safety
/// `args` describes valid buffers.
pub unsafe fn f32_gemm_8x16__neon(args: &F32GemmArgs) {
    drive_f32::<8>(args, f32_micro_8x16)
}

/// `acc += udot(a, b)` lanes. u8·i8 has no dotprod instruction below i8mm (`usdot`),
/// so the activations are shifted to i8 (`a - 128`) and `sdot` is used; the shift is
/// undone from the column sums: Σ a·w = Σ (a-128)·w + 128·Σ w.
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    core::arch::asm!("sdot {r:v}.4s, {a:v}.16b, {b:v}.16b", r = inout(vreg) r, a = in(vreg) a, b = in(vreg) b, options(pure, nomem, nostack));
    r
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn i8_micro_8x16_dot(
    k: usize,
    a: &[*const u8; 8],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 8],
) {
    let mut c = [[vdupq_n_s32(0); 4]; 8];
    let mut wsum = [vdupq_n_s32(0); 4];
    let ones = vdupq_n_s8(1);
    for g in 0..k.div_ceil(4) {
        let bp = b.add(g * 64);
        let w = [
            vld1q_s8(bp),
            vld1q_s8(bp.add(16)),
            vld1q_s8(bp.add(32)),
            vld1q_s8(bp.add(48)),
        ];
        for q in 0..4 {
            wsum[q] = sdot(wsum[q], ones, w[q]);
        }
        for r in 0..8 {
            // Flip to signed: u8 a becomes a-128; i8 data (already flipped by load_a4) back.
            let av = load_a4(a[r], g, k, flip) ^ 0x8080_8080;
            let av = vreinterpretq_s8_u32(vdupq_n_u32(av));
            for q in 0..4 {
                c[r][q] = sdot(c[r][q], av, w[q]);
            }
        }
    }
    for r in 0..8 {
        for q in 0..4 {
            let v = vaddq_s32(c[r][q], vshlq_n_s32::<7>(wsum[q]));
            vst1q_s32(acc[r].as_mut_ptr().add(q * 4), v);
        }
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has dotprod.
pub unsafe fn i8_gemm_8x16__neondot(args: &I8GemmArgs) {
    drive_i8::<8>(args, i8_micro_8x16_dot, i8_epi_scalar)
}

/// Widening multiply-accumulate tier for cores without dotprod (Cortex-A53/A55 class):
/// `vld4q_s8` de-interleaves a packed group into four k-slices of 16 columns, and
/// `smlal` by lane multiplies them with the u8 activations widened to i16.
#[target_feature(enable = "neon")]
unsafe fn i8_micro_4x16_neon(
    k: usize,
    a: &[*const u8; 4],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 4],
) {
    let mut c = [[vdupq_n_s32(0); 4]; 4];
    for g in 0..k.div_ceil(4) {
        let w = vld4q_s8(b.add(g * 64));
        // bk[kk][q]: columns 4q..4q+4 of reduction step 4g+kk, as i16.
        let wide = |v: int8x16_t| {
            let lo = vmovl_s8(vget_low_s8(v));
            let hi = vmovl_s8(vget_high_s8(v));
            [
                vget_low_s16(lo),
                vget_high_s16(lo),
                vget_low_s16(hi),
                vget_high_s16(hi),
            ]
        };
        let bk = [wide(w.0), wide(w.1), wide(w.2), wide(w.3)];
        for r in 0..4 {
            let av = vcreate_u8(load_a4(a[r], g, k, flip) as u64);
            // u8 values widened to i16 stay non-negative: 0..=255.
            let av = vget_low_s16(vreinterpretq_s16_u16(vmovl_u8(av)));
            for q in 0..4 {
                let mut s = c[r][q];
                s = vmlal_lane_s16::<0>(s, bk[0][q], av);
                s = vmlal_lane_s16::<1>(s, bk[1][q], av);
                s = vmlal_lane_s16::<2>(s, bk[2][q], av);
                s = vmlal_lane_s16::<3>(s, bk[3][q], av);
                c[r][q] = s;
            }
        }
    }
    for r in 0..4 {
        for q in 0..4 {
            vst1q_s32(acc[r].as_mut_ptr().add(q * 4), c[r][q]);
        }
    }
}

/// # Safety
/// `args` describes valid buffers.
pub unsafe fn i8_gemm_4x16__neon(args: &I8GemmArgs) {
    drive_i8::<4>(args, i8_micro_4x16_neon, i8_epi_scalar)
}

/// `acc(2×2) += a(2×8 u8) · b(2×8 i8)ᵀ`: one `usmmla`, 32 multiply-adds.
#[target_feature(enable = "neon,i8mm")]
unsafe fn usmmla(acc: int32x4_t, a: uint8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    core::arch::asm!("usmmla {r:v}.4s, {a:v}.16b, {b:v}.16b", r = inout(vreg) r, a = in(vreg) a, b = in(vreg) b, options(pure, nomem, nostack));
    r
}

/// Two packed groups (8 reduction bytes) of one row as the `usmmla` row operand half.
#[inline(always)]
unsafe fn load_a8(a: *const u8, g: usize, groups: usize, k: usize, flip: bool) -> u64 {
    let lo = load_a4(a, g, k, flip) as u64;
    let hi = if g + 1 < groups {
        load_a4(a, g + 1, k, flip) as u64
    } else {
        0
    };
    lo | hi << 32
}

/// 8×16 tile in two passes of 8 columns (16 accumulators of 2×2 each). Pairs of packed
/// groups are zipped per column pair (`zip1`/`zip2` on 32-bit lanes) into the 2×8 column
/// operand; activations are u8 (`usmmla` is unsigned × signed), so no zero-point shift.
#[target_feature(enable = "neon,i8mm")]
unsafe fn i8_micro_8x16_mmla(
    k: usize,
    a: &[*const u8; 8],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 8],
) {
    let groups = k.div_ceil(4);
    for half in 0..2 {
        let mut c = [[vdupq_n_s32(0); 4]; 4];
        let mut g = 0;
        while g < groups {
            let p0 = b.add(g * 64 + half * 32);
            let w0 = [
                vld1q_s32(p0 as *const i32),
                vld1q_s32(p0.add(16) as *const i32),
            ];
            let w1 = if g + 1 < groups {
                let p1 = b.add((g + 1) * 64 + half * 32);
                [
                    vld1q_s32(p1 as *const i32),
                    vld1q_s32(p1.add(16) as *const i32),
                ]
            } else {
                [vdupq_n_s32(0); 2]
            };
            let bq = [
                vreinterpretq_s8_s32(vzip1q_s32(w0[0], w1[0])),
                vreinterpretq_s8_s32(vzip2q_s32(w0[0], w1[0])),
                vreinterpretq_s8_s32(vzip1q_s32(w0[1], w1[1])),
                vreinterpretq_s8_s32(vzip2q_s32(w0[1], w1[1])),
            ];
            for p in 0..4 {
                let r0 = load_a8(a[2 * p], g, groups, k, flip);
                let r1 = load_a8(a[2 * p + 1], g, groups, k, flip);
                let av = vcombine_u8(vcreate_u8(r0), vcreate_u8(r1));
                for q in 0..4 {
                    c[p][q] = usmmla(c[p][q], av, bq[q]);
                }
            }
            g += 2;
        }
        for p in 0..4 {
            for q in 0..4 {
                let col = half * 8 + 2 * q;
                vst1_s32(acc[2 * p].as_mut_ptr().add(col), vget_low_s32(c[p][q]));
                vst1_s32(acc[2 * p + 1].as_mut_ptr().add(col), vget_high_s32(c[p][q]));
            }
        }
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has i8mm.
pub unsafe fn i8_gemm_8x16__i8mm(args: &I8GemmArgs) {
    drive_i8::<8>(args, i8_micro_8x16_mmla, i8_epi_scalar)
}

/// Depthwise int8, 8 channels per step: `x - x_zero` widened to i16, `smlal`/`smlal2`
/// with the i16 weights into two i32x4, then the requantisation in NEON (`fcvtns` rounds
/// half to even, as [`crate::quant::requant`] does). Channel tails go through a copy.
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]).
#[target_feature(enable = "neon")]
pub unsafe fn dw_i8_8c__neon(a: &DwI8Args) {
    let zero = vdupq_n_s16(a.x_zero as i16);
    let lo = vdupq_n_f32((a.qmin - a.y_zero) as f32);
    let hi = vdupq_n_f32((a.qmax - a.y_zero) as f32);
    let yz = vdupq_n_s32(a.y_zero);
    for oy in 0..a.oh {
        for ox in 0..a.ow {
            let mut c0 = 0;
            while c0 < a.c {
                let nc = (a.c - c0).min(8);
                let (mut acc0, mut acc1) = (vdupq_n_s32(0), vdupq_n_s32(0));
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
                        let (xv, wv) = if nc == 8 {
                            (vld1_u8(xp), vld1q_s16(wp))
                        } else {
                            let mut xb = [a.x_zero as u8; 8];
                            let mut wb = [0i16; 8];
                            for i in 0..nc {
                                xb[i] = *xp.add(i);
                                wb[i] = *wp.add(i);
                            }
                            (vld1_u8(xb.as_ptr()), vld1q_s16(wb.as_ptr()))
                        };
                        // u8 - zero lies in -255..=255: exact in i16.
                        let xs = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(xv)), zero);
                        acc0 = vmlal_s16(acc0, vget_low_s16(xs), vget_low_s16(wv));
                        acc1 = vmlal_high_s16(acc1, xs, wv);
                    }
                }
                let mut out = [0u8; 8];
                let mut bias = [0i32; 8];
                let mut scale = [0f32; 8];
                for i in 0..nc {
                    bias[i] = if a.bias.is_null() {
                        0
                    } else {
                        *a.bias.add(c0 + i)
                    };
                    scale[i] = *a.scale.add(c0 + i);
                }
                let q = |acc: int32x4_t, j: usize| {
                    let t = vaddq_s32(acc, vld1q_s32(bias.as_ptr().add(j)));
                    let f = vmulq_f32(vcvtq_f32_s32(t), vld1q_f32(scale.as_ptr().add(j)));
                    let f = vminq_f32(vmaxq_f32(f, lo), hi);
                    vaddq_s32(vcvtnq_s32_f32(f), yz)
                };
                let (r0, r1) = (q(acc0, 0), q(acc1, 4));
                // Values are within qmin..=qmax ⊂ 0..=255: the saturating narrows are exact.
                let r = vqmovn_u16(vcombine_u16(vqmovun_s32(r0), vqmovun_s32(r1)));
                vst1_u8(out.as_mut_ptr(), r);
                let yp = a.y.add((oy * a.ow + ox) * a.c + c0);
                core::ptr::copy_nonoverlapping(out.as_ptr(), yp, nc);
                c0 += 8;
            }
        }
    }
}
