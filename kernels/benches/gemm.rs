//! Single-thread GEMM throughput per tier without dependencies, for cross targets under
//! qemu (`cargo bench -p edgetune-kernels --features std --target armv7-unknown-linux-gnueabihf`):
//! prints GFLOP/s (f32) and GOP/s (int8, 2 ops per multiply-add). Emulated times compare
//! tiers with each other only. On the host, `tools/bench_gemm.sh` (criterion, with tract and
//! OpenBLAS beside) is the benchmark of record. `GEMM_BENCH=TEXT` times only the rows whose
//! kernel name or shape (`m×n×k`) contains TEXT.

use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::ops::{self, I8Dst, I8Quant};
use edgetune_kernels::registry::{F32_GEMM, I8_GEMM, I8_GEMM_SAT};
use edgetune_kernels::{pack, Act, I8Out, Tier};
use std::time::Instant;

fn time<F: FnMut()>(ops: f64, mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < 0.05 {
            f();
            n += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    ops / best / 1e9
}

fn main() {
    let cpu = Cpu::detect();
    let shapes = [
        (256, 256, 256),
        (64, 768, 768),
        (197, 768, 192),
        (1, 1000, 1280),
        (3136, 144, 24),
        (784, 240, 40),
        // EfficientNet-Lite0's 1×1 layers: 16 → 96 over 112×112, 1152 → 320 over 7×7.
        (12544, 96, 16),
        (49, 320, 1152),
        // The tail trainer's 1×1 layers over a batch of 10 (7×7 tokens each): forward,
        // input gradient, weight gradient.
        (490, 1152, 192),
        (490, 192, 1152),
        (1152, 320, 490),
        // MiniLM-L6's feed-forward layers over 128 tokens (B larger than L2).
        (128, 1536, 384),
        (128, 384, 1536),
    ];
    let only = std::env::var("GEMM_BENCH").unwrap_or_default();
    let wanted = |name: &str, shape: &str| name.contains(&only) || shape.contains(&only);
    println!("| kernel | m×n×k | G(FL)OP/s |");
    println!("|---|---|---|");
    for &(m, n, k) in &shapes {
        let shape = format!("{m}×{n}×{k}");
        let a = vec![0.5f32; m * k];
        let mut bp = vec![0.25f32; pack::packed_f32_len(k, n)];
        pack::pack_f32(&vec![0.25f32; k * n], k, n, &mut bp);
        let mut c = vec![0f32; m * n];
        for d in F32_GEMM
            .iter()
            .filter(|d| cpu.supports(d) && d.tier != Tier::Reference && wanted(d.name, &shape))
        {
            let mut kern = Kernels::select(&cpu, None);
            kern.f32_gemm = d;
            let g = time(2.0 * (m * n * k) as f64, || {
                ops::gemm_f32(&kern, (m, n, k), &a, k, &bp, None, &mut c, n, Act::None).unwrap()
            });
            println!("| {} | {shape} | {g:.1} |", d.name);
        }
        let a8 = vec![3u8; m * k];
        let mut b8 = vec![0i8; pack::packed_i8_len(k, n)];
        let mut cs = vec![0i32; pack::i8_cols(n)];
        pack::pack_i8(&vec![1i8; k * n], k, n, &mut b8, &mut cs);
        let scale = vec![0.01f32; n];
        let q = I8Quant {
            a_zero: 3,
            a_signed: false,
            colsum: &cs,
            bias: None,
            scale: &scale,
            out: I8Out::U8,
            y_zero: 0,
            qmin: 0,
            qmax: 255,
        };
        let mut c8 = vec![0u8; m * n];
        // The exact family, then the saturating one (`EDGETUNE_INT8=saturating`).
        for d in I8_GEMM
            .iter()
            .chain(I8_GEMM_SAT)
            .filter(|d| cpu.supports(d) && d.tier != Tier::Reference && wanted(d.name, &shape))
        {
            let mut kern = Kernels::select(&cpu, None);
            kern.i8_gemm = d;
            let g = time(2.0 * (m * n * k) as f64, || {
                ops::gemm_i8(&kern, (m, n, k), &a8, k, &b8, &q, I8Dst::U8(&mut c8), n).unwrap()
            });
            println!("| {} | {shape} | {g:.1} |", d.name);
        }
    }
}
