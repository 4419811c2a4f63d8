//! armv7 (A-profile, 32-bit) NEON tier. On stable Rust both `core::arch::arm` and the
//! `neon` target feature are unstable for 32-bit ARM, so the micro-kernel is one `asm!`
//! block with its own loop that enables NEON for the assembler (`.fpu neon`); the tier is
//! picked only when the kernel reports NEON (`HWCAP_NEON`).

mod ew;
pub use ew::EW_NEON;

use crate::pack::{F32_NR, I8_NR};
use crate::tile::{drive_f32, drive_i8, i8_epi_scalar, load_a4};
use crate::{DwI8Args, F32GemmArgs, I8GemmArgs};

/// 4×16 tile as two passes of 4×8: eight q accumulators (q8-q15 = d16-d31), the B row in
/// q0-q1 and the four A values in d4-d5, `vmla.f32` by scalar. d16-d31 cannot be named as
/// clobbers where the baseline is VFPv3-D16, so the block saves and restores them itself.
///
/// # Safety
/// The CPU has NEON; pointers as in [`crate::tile::drive_f32`].
unsafe fn f32_micro_4x16(
    k: usize,
    a: &[*const f32; 4],
    b: *const f32,
    acc: &mut [[f32; F32_NR]; 4],
) {
    if k == 0 {
        return;
    }
    for half in 0..2 {
        // SAFETY: `b` is a packed panel of `k` rows of 16 floats (8 read per row from
        // column `half·8`), each `a[r]` has `k` readable floats, and `acc` is 4 rows of 16
        // floats whose columns `half·8..half·8+8` are written with a 64-byte row stride.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "vpush {{d16-d31}}",
                "vmov.i32 q8, #0",
                "vmov.i32 q9, #0",
                "vmov.i32 q10, #0",
                "vmov.i32 q11, #0",
                "vmov.i32 q12, #0",
                "vmov.i32 q13, #0",
                "vmov.i32 q14, #0",
                "vmov.i32 q15, #0",
                "2:",
                "vld1.32 {{d0-d3}}, [{b}], {bs}",
                "vld1.32 {{d4[0]}}, [{a0}]!",
                "vld1.32 {{d4[1]}}, [{a1}]!",
                "vld1.32 {{d5[0]}}, [{a2}]!",
                "vld1.32 {{d5[1]}}, [{a3}]!",
                "vmla.f32 q8, q0, d4[0]",
                "vmla.f32 q9, q1, d4[0]",
                "vmla.f32 q10, q0, d4[1]",
                "vmla.f32 q11, q1, d4[1]",
                "vmla.f32 q12, q0, d5[0]",
                "vmla.f32 q13, q1, d5[0]",
                "vmla.f32 q14, q0, d5[1]",
                "vmla.f32 q15, q1, d5[1]",
                "subs {k}, {k}, #1",
                "bne 2b",
                "vst1.32 {{d16-d19}}, [{c}], {bs}",
                "vst1.32 {{d20-d23}}, [{c}], {bs}",
                "vst1.32 {{d24-d27}}, [{c}], {bs}",
                "vst1.32 {{d28-d31}}, [{c}], {bs}",
                "vpop {{d16-d31}}",
                k = inout(reg) k => _,
                b = inout(reg) b.add(half * 8) => _,
                a0 = inout(reg) a[0] => _,
                a1 = inout(reg) a[1] => _,
                a2 = inout(reg) a[2] => _,
                a3 = inout(reg) a[3] => _,
                c = inout(reg) acc.as_mut_ptr().cast::<f32>().add(half * 8) => _,
                bs = in(reg) F32_NR * 4,
                out("d0") _, out("d1") _, out("d2") _,
                out("d3") _, out("d4") _, out("d5") _,
            );
        }
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has NEON.
pub unsafe fn f32_gemm_4x16__neon(args: &F32GemmArgs) {
    drive_f32::<4>(args, f32_micro_4x16)
}

/// 2×16 int8 tile: per group of 4 reductions, `vld4.8` splits the packed panel into one
/// register per reduction index (16 columns in two halves), `vmovl.s8` widens the weights
/// and `vmlal.s16` by scalar lane adds each activation's products (u8 widened to i16: exact).
/// Accumulators q8-q15 (saved by the block, as in the f32 kernel); activations in d0-d1
/// (16-bit scalars must sit in d0-d7); weights in d2-d9, widened in d10-d13.
/// Groups past the last full one (k % 4) are added in Rust from the zero-padded panel.
///
/// # Safety
/// The CPU has NEON; pointers as in [`crate::tile::drive_i8`].
unsafe fn i8_micro_2x16(
    k: usize,
    a: &[*const u8; 2],
    flip: bool,
    b: *const i8,
    acc: &mut [[i32; I8_NR]; 2],
) {
    let full = k / 4;
    if full > 0 {
        // SAFETY: `b` holds `full` groups of 64 bytes, each `a[r]` has `4·full ≤ k`
        // readable bytes (`ldr` may be unaligned on ARMv7 Linux), and `acc` is 2 rows of
        // 16 i32 written contiguously (128 bytes).
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "vpush {{d16-d31}}",
                "vdup.8 d14, {m}",
                "vmov.i32 q8, #0",
                "vmov.i32 q9, #0",
                "vmov.i32 q10, #0",
                "vmov.i32 q11, #0",
                "vmov.i32 q12, #0",
                "vmov.i32 q13, #0",
                "vmov.i32 q14, #0",
                "vmov.i32 q15, #0",
                "2:",
                "vld4.8 {{d2, d3, d4, d5}}, [{b}]!",
                "vld4.8 {{d6, d7, d8, d9}}, [{b}]!",
                "ldr {t}, [{a0}], #4",
                "vmov.32 d0[0], {t}",
                "ldr {t}, [{a1}], #4",
                "vmov.32 d0[1], {t}",
                "veor d0, d0, d14",
                "vmovl.u8 q0, d0",
                "vmovl.s8 q5, d2",
                "vmovl.s8 q6, d6",
                "vmlal.s16 q8, d10, d0[0]",
                "vmlal.s16 q9, d11, d0[0]",
                "vmlal.s16 q10, d12, d0[0]",
                "vmlal.s16 q11, d13, d0[0]",
                "vmlal.s16 q12, d10, d1[0]",
                "vmlal.s16 q13, d11, d1[0]",
                "vmlal.s16 q14, d12, d1[0]",
                "vmlal.s16 q15, d13, d1[0]",
                "vmovl.s8 q5, d3",
                "vmovl.s8 q6, d7",
                "vmlal.s16 q8, d10, d0[1]",
                "vmlal.s16 q9, d11, d0[1]",
                "vmlal.s16 q10, d12, d0[1]",
                "vmlal.s16 q11, d13, d0[1]",
                "vmlal.s16 q12, d10, d1[1]",
                "vmlal.s16 q13, d11, d1[1]",
                "vmlal.s16 q14, d12, d1[1]",
                "vmlal.s16 q15, d13, d1[1]",
                "vmovl.s8 q5, d4",
                "vmovl.s8 q6, d8",
                "vmlal.s16 q8, d10, d0[2]",
                "vmlal.s16 q9, d11, d0[2]",
                "vmlal.s16 q10, d12, d0[2]",
                "vmlal.s16 q11, d13, d0[2]",
                "vmlal.s16 q12, d10, d1[2]",
                "vmlal.s16 q13, d11, d1[2]",
                "vmlal.s16 q14, d12, d1[2]",
                "vmlal.s16 q15, d13, d1[2]",
                "vmovl.s8 q5, d5",
                "vmovl.s8 q6, d9",
                "vmlal.s16 q8, d10, d0[3]",
                "vmlal.s16 q9, d11, d0[3]",
                "vmlal.s16 q10, d12, d0[3]",
                "vmlal.s16 q11, d13, d0[3]",
                "vmlal.s16 q12, d10, d1[3]",
                "vmlal.s16 q13, d11, d1[3]",
                "vmlal.s16 q14, d12, d1[3]",
                "vmlal.s16 q15, d13, d1[3]",
                "subs {k}, {k}, #1",
                "bne 2b",
                "vst1.32 {{d16-d19}}, [{c}]!",
                "vst1.32 {{d20-d23}}, [{c}]!",
                "vst1.32 {{d24-d27}}, [{c}]!",
                "vst1.32 {{d28-d31}}, [{c}]",
                "vpop {{d16-d31}}",
                k = inout(reg) full => _,
                b = inout(reg) b => _,
                a0 = inout(reg) a[0] => _,
                a1 = inout(reg) a[1] => _,
                c = inout(reg) acc.as_mut_ptr().cast::<i32>() => _,
                m = in(reg) if flip { 0x80u32 } else { 0 },
                t = out(reg) _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                out("d12") _, out("d13") _, out("d14") _,
            );
        }
    }
    if full * 4 < k {
        // SAFETY: the panel is zero padded to whole groups; `load_a4` reads only `k` bytes.
        let w = unsafe { &*(b.add(full * 64) as *const [i8; 64]) };
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `a[r]` has `k` readable bytes.
            let av = unsafe { load_a4(a[r], full, k, flip) }.to_ne_bytes();
            for (j, v) in row.iter_mut().enumerate() {
                for q in 0..4 {
                    *v += av[q] as i32 * w[j * 4 + q] as i32;
                }
            }
        }
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has NEON.
pub unsafe fn i8_gemm_2x16__neon(args: &I8GemmArgs) {
    drive_i8::<2>(args, i8_micro_2x16, i8_epi_scalar)
}

/// Adds one row of `n ≥ 1` depthwise taps for 8 channels to `acc`: `vld1.8` the
/// activations, `vmovl.u8` and subtract the zero point as i16, `vmlal.s16` with the i16
/// weights, summed in i32 as the reference does.
/// Accumulators in q2-q3 between memory and registers, the zero point in q4.
///
/// # Safety
/// The CPU has NEON; `x` and `w` point at `n` taps of 8 readable channels `c` apart (`w`
/// in i16 units), 2-byte aligned `w`.
unsafe fn dw_row_8c(
    x: *const u8,
    w: *const i16,
    n: usize,
    c: usize,
    zero: i32,
    acc: &mut [i32; 8],
) {
    // SAFETY: per the contract above; `acc` is 8 contiguous i32.
    unsafe {
        core::arch::asm!(
            ".fpu neon",
            "vld1.32 {{d4-d7}}, [{acc}]",
            "vdup.16 q4, {z}",
            "2:",
            "vld1.8 {{d0}}, [{x}], {cx}",
            "vld1.16 {{d2, d3}}, [{w}], {cw}",
            "vmovl.u8 q0, d0",
            "vsub.i16 q0, q0, q4",
            "vmlal.s16 q2, d0, d2",
            "vmlal.s16 q3, d1, d3",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vst1.32 {{d4-d7}}, [{acc}]",
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) n => _,
            cx = in(reg) c,
            cw = in(reg) 2 * c,
            z = in(reg) zero,
            acc = in(reg) acc.as_mut_ptr(),
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _,
        );
    }
}

/// Depthwise int8, 8 channels per step with NEON taps (`dw_row_8c`); channels past the
/// last multiple of 8 and the requantisation are the portable tier's scalar code, so the
/// output is bit-identical to the reference.
///
/// # Safety
/// `a` describes valid buffers (checked by [`crate::ops::depthwise_i8`]); the CPU has NEON.
pub unsafe fn dw_i8_8c__neon(a: &DwI8Args) {
    let full = a.c - a.c % 8;
    for oy in 0..a.oh {
        let (y0, ky0, ky1) = DwI8Args::taps_inside(oy, a.stride, a.pad_top, a.h, a.kh);
        for ox in 0..a.ow {
            let (x0, kx0, kx1) = DwI8Args::taps_inside(ox, a.stride, a.pad_left, a.w, a.kw);
            let out = (oy * a.ow + ox) * a.c;
            for c0 in (0..a.c).step_by(8) {
                let nc = (a.c - c0).min(8);
                let mut acc = [0i32; 8];
                for ky in ky0..ky1 {
                    let iy = (y0 + ky as isize) as usize;
                    let ix = (x0 + kx0 as isize) as usize;
                    let xp = a.x.add((iy * a.w + ix) * a.c + c0);
                    let wp = a.weights.add((ky * a.kw + kx0) * a.c + c0);
                    if c0 < full && kx1 > kx0 {
                        dw_row_8c(xp, wp, kx1 - kx0, a.c, a.x_zero, &mut acc);
                    } else {
                        for t in 0..kx1.saturating_sub(kx0) {
                            for (i, v) in acc.iter_mut().enumerate().take(nc) {
                                let xv = *xp.add(t * a.c + i) as i32 - a.x_zero;
                                *v += xv * *wp.add(t * a.c + i) as i32;
                            }
                        }
                    }
                }
                for (i, &v) in acc.iter().enumerate().take(nc) {
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

/// `HWCAP_NEON` from the auxiliary vector (`std::arch::is_arm_feature_detected!` is
/// unstable).
#[cfg(feature = "std")]
pub fn detect_neon() -> bool {
    const AT_HWCAP: u32 = 16;
    const HWCAP_NEON: u32 = 1 << 12;
    let Ok(aux) = std::fs::read("/proc/self/auxv") else {
        return cfg!(target_feature = "neon");
    };
    aux.chunks_exact(8)
        .map(|p| {
            (
                u32::from_le_bytes([p[0], p[1], p[2], p[3]]),
                u32::from_le_bytes([p[4], p[5], p[6], p[7]]),
            )
        })
        .find(|&(key, _)| key == AT_HWCAP)
        .is_some_and(|(_, v)| v & HWCAP_NEON != 0)
}
