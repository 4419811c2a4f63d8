//! aarch64 tiers: NEON (always present on aarch64), dotprod (`sdot`/`udot` by `asm!`).

use crate::pack::{F32_NR, I8_NR};
use crate::tile::{drive_f32, drive_i8, i8_epi_scalar, load_a4};
use crate::{F32GemmArgs, I8GemmArgs};
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
