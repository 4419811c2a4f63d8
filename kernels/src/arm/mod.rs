//! armv7 (A-profile, 32-bit) NEON tier. On stable Rust both `core::arch::arm` and the
//! `neon` target feature are unstable for 32-bit ARM, so the micro-kernel is one `asm!`
//! block with its own loop that enables NEON for the assembler (`.fpu neon`); the tier is
//! picked only when the kernel reports NEON (`HWCAP_NEON`).

use crate::pack::F32_NR;
use crate::tile::drive_f32;
use crate::F32GemmArgs;

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
