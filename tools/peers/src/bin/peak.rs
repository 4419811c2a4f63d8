//! Single-core compute peak of this CPU, measured with hand-written loops of independent
//! instructions (inline asm, so the compiler can neither drop nor fold them): the f32 FMA,
//! the exact int8 sequence edgetune's AVX2 kernel issues (`vpmaddwd` on operands widened
//! to 16 bits, then `vpaddd`), and the saturating one onnxruntime's AVX2 path uses
//! (`vpmaddubsw` u8×i8 pairs, `vpmaddwd` by ones, `vpaddd`); on AVX-512 VNNI also the
//! 512-bit `vpdpbusd` (u8×i8 quads, the int8 GEMM's product) and `vpdpwssd` (i16 pairs,
//! the int8 depthwise's). The ceiling the GEMM benchmark's fractions of peak refer to.
//! Run pinned: `taskset -c 1 peak`.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::time::Instant;

    const ITERS: u64 = 50_000_000;

    /// 10 independent FMAs per iteration: 160 flops.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_loop(n: u64) {
        // SAFETY: register-only arithmetic on ymm0-ymm11 (declared clobbered) and a loop
        // counter; AVX2 and FMA are enabled for this function and detected by the caller.
        unsafe {
            asm!(
                "vxorps ymm0, ymm0, ymm0", "vxorps ymm1, ymm1, ymm1", "vxorps ymm2, ymm2, ymm2",
                "vxorps ymm3, ymm3, ymm3", "vxorps ymm4, ymm4, ymm4", "vxorps ymm5, ymm5, ymm5",
                "vxorps ymm6, ymm6, ymm6", "vxorps ymm7, ymm7, ymm7", "vxorps ymm8, ymm8, ymm8",
                "vxorps ymm9, ymm9, ymm9", "vxorps ymm10, ymm10, ymm10", "vxorps ymm11, ymm11, ymm11",
                "2:",
                "vfmadd231ps ymm0, ymm10, ymm11", "vfmadd231ps ymm1, ymm10, ymm11",
                "vfmadd231ps ymm2, ymm10, ymm11", "vfmadd231ps ymm3, ymm10, ymm11",
                "vfmadd231ps ymm4, ymm10, ymm11", "vfmadd231ps ymm5, ymm10, ymm11",
                "vfmadd231ps ymm6, ymm10, ymm11", "vfmadd231ps ymm7, ymm10, ymm11",
                "vfmadd231ps ymm8, ymm10, ymm11", "vfmadd231ps ymm9, ymm10, ymm11",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) n => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
                out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
                out("ymm10") _, out("ymm11") _,
                options(nomem, nostack),
            );
        }
    }

    /// 6 × (`vpmaddwd` + `vpaddd`) per iteration: 6·16 exact multiply-adds, 192 ops.
    #[target_feature(enable = "avx2")]
    unsafe fn i16_loop(n: u64) {
        // SAFETY: as in `fma_loop`; AVX2 detected by the caller.
        unsafe {
            asm!(
                "vpxor ymm14, ymm14, ymm14", "vpxor ymm15, ymm15, ymm15",
                "2:",
                "vpmaddwd ymm6, ymm14, ymm15", "vpaddd ymm0, ymm0, ymm6",
                "vpmaddwd ymm7, ymm14, ymm15", "vpaddd ymm1, ymm1, ymm7",
                "vpmaddwd ymm8, ymm14, ymm15", "vpaddd ymm2, ymm2, ymm8",
                "vpmaddwd ymm9, ymm14, ymm15", "vpaddd ymm3, ymm3, ymm9",
                "vpmaddwd ymm10, ymm14, ymm15", "vpaddd ymm4, ymm4, ymm10",
                "vpmaddwd ymm11, ymm14, ymm15", "vpaddd ymm5, ymm5, ymm11",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) n => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
                out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
                out("ymm10") _, out("ymm11") _, out("ymm14") _, out("ymm15") _,
                options(nomem, nostack),
            );
        }
    }

    /// 4 × (`vpmaddubsw` + `vpmaddwd` + `vpaddd`) per iteration: 4·32 u8×i8
    /// multiply-adds (pair sums saturate at i16), 256 ops.
    #[target_feature(enable = "avx2")]
    unsafe fn u8i8_loop(n: u64) {
        // SAFETY: as in `fma_loop`; AVX2 detected by the caller.
        unsafe {
            asm!(
                "vpxor ymm13, ymm13, ymm13", "vpxor ymm14, ymm14, ymm14", "vpxor ymm15, ymm15, ymm15",
                "2:",
                "vpmaddubsw ymm4, ymm14, ymm15", "vpmaddwd ymm8, ymm4, ymm13", "vpaddd ymm0, ymm0, ymm8",
                "vpmaddubsw ymm5, ymm14, ymm15", "vpmaddwd ymm9, ymm5, ymm13", "vpaddd ymm1, ymm1, ymm9",
                "vpmaddubsw ymm6, ymm14, ymm15", "vpmaddwd ymm10, ymm6, ymm13", "vpaddd ymm2, ymm2, ymm10",
                "vpmaddubsw ymm7, ymm14, ymm15", "vpmaddwd ymm11, ymm7, ymm13", "vpaddd ymm3, ymm3, ymm11",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) n => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
                out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
                out("ymm10") _, out("ymm11") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                options(nomem, nostack),
            );
        }
    }

    /// 10 independent 512-bit `vpdpbusd`, `vpdpwssd` or `vfmadd231ps` per iteration.
    macro_rules! vnni_loop {
        ($name:ident, $ins:literal) => {
            #[target_feature(enable = "avx512f,avx512vnni")]
            unsafe fn $name(n: u64) {
                // SAFETY: register-only arithmetic on zmm0-zmm11 (declared clobbered) and
                // a loop counter; AVX-512F and VNNI are enabled here and detected by the
                // caller.
                unsafe {
                    asm!(
                        "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
                        "2:",
                        concat!($ins, " zmm0, zmm10, zmm11"), concat!($ins, " zmm1, zmm10, zmm11"),
                        concat!($ins, " zmm2, zmm10, zmm11"), concat!($ins, " zmm3, zmm10, zmm11"),
                        concat!($ins, " zmm4, zmm10, zmm11"), concat!($ins, " zmm5, zmm10, zmm11"),
                        concat!($ins, " zmm6, zmm10, zmm11"), concat!($ins, " zmm7, zmm10, zmm11"),
                        concat!($ins, " zmm8, zmm10, zmm11"), concat!($ins, " zmm9, zmm10, zmm11"),
                        "dec {n}",
                        "jnz 2b",
                        n = inout(reg) n => _,
                        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
                        out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
                        out("zmm10") _, out("zmm11") _,
                        options(nomem, nostack),
                    );
                }
            }
        };
    }
    vnni_loop!(dpbusd_loop, "vpdpbusd");
    vnni_loop!(fma512_loop, "vfmadd231ps");
    vnni_loop!(dpwssd_loop, "vpdpwssd");

    fn rate(ops_per_iter: u64, f: impl Fn(u64)) -> f64 {
        f(ITERS / 10);
        let t = Instant::now();
        f(ITERS);
        (ops_per_iter * ITERS) as f64 / t.elapsed().as_secs_f64() / 1e9
    }

    pub fn run() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            println!("peak: needs AVX2+FMA");
            return;
        }
        let f = rate(160, |n| {
            // SAFETY: AVX2 and FMA were detected above.
            unsafe { fma_loop(n) }
        });
        let w = rate(192, |n| {
            // SAFETY: AVX2 was detected above.
            unsafe { i16_loop(n) }
        });
        let b = rate(256, |n| {
            // SAFETY: AVX2 was detected above.
            unsafe { u8i8_loop(n) }
        });
        println!("peak f32 (vfmadd231ps ymm, 10 independent): {f:.1} GFLOP/s");
        println!("peak int8 exact (vpmaddwd + vpaddd on 16-bit operands): {w:.1} GOP/s");
        println!("peak int8 saturating (vpmaddubsw + vpmaddwd + vpaddd): {b:.1} GOP/s");
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
            // A multiply and an add per lane product: 10 × 64 × 2 and 10 × 32 × 2.
            let q = rate(1280, |n| {
                // SAFETY: AVX-512F and VNNI were detected above.
                unsafe { dpbusd_loop(n) }
            });
            let p = rate(640, |n| {
                // SAFETY: as above.
                unsafe { dpwssd_loop(n) }
            });
            let f = rate(320, |n| {
                // SAFETY: as above (AVX-512F).
                unsafe { fma512_loop(n) }
            });
            println!("peak f32 AVX-512 (vfmadd231ps zmm, 10 independent): {f:.1} GFLOP/s");
            println!("peak int8 AVX-512 VNNI (vpdpbusd zmm, u8 x i8 quads): {q:.1} GOP/s");
            println!("peak int16 AVX-512 VNNI (vpdpwssd zmm, i16 pairs): {p:.1} GOP/s");
        }
        println!(
            "avx512f: {}, avx512vnni: {}, avxvnni: {}",
            is_x86_feature_detected!("avx512f"),
            is_x86_feature_detected!("avx512vnni"),
            is_x86_feature_detected!("avxvnni")
        );
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::run();
    #[cfg(not(target_arch = "x86_64"))]
    println!("peak: x86-64 only");
}
