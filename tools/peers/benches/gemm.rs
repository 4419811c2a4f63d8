//! Single-thread GEMM throughput per tier with criterion, tract's matmul beside it:
//!   taskset -c 1 cargo bench -p edgetune-peers --bench gemm
//! Throughput is reported in elements/s with 2·m·n·k elements per product, so criterion's
//! "Gelem/s" reads as GFLOP/s (f32) or GOP/s (int8). `tools/gemm_table.py` tabulates it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::ops::{self, I8Dst, I8Quant};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::registry::{DW_I8, F32_GEMM, I8_GEMM};
use edgetune_kernels::{pack, Act, I8Out, Tier};
use std::time::Duration;

/// The kernels issue's shapes (m×n×k) and two EfficientNet-Lite0 1×1 convolutions
/// (its 3×3 depthwise is the `depthwise` group below).
const SHAPES: [(usize, usize, usize); 6] = [
    (256, 256, 256),
    (64, 768, 768),
    (197, 192, 768),
    (1, 1000, 1280),
    (3136, 144, 24),
    (784, 240, 40),
];

fn gemm(c: &mut Criterion) {
    let cpu = Cpu::detect();
    for &(m, n, k) in &SHAPES {
        let mut g = c.benchmark_group(format!("gemm_{m}x{n}x{k}"));
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let a = vec![0.5f32; m * k];
        let mut bp = vec![0.25f32; pack::packed_f32_len(k, n)];
        pack::pack_f32(&vec![0.25f32; k * n], k, n, &mut bp);
        let mut cf = vec![0f32; m * n];
        for d in F32_GEMM
            .iter()
            .filter(|d| cpu.supports(d) && d.tier != Tier::Reference)
        {
            let mut kern = Kernels::select(&cpu, None);
            kern.f32_gemm = d;
            g.bench_function(BenchmarkId::new("f32", d.name), |b| {
                b.iter(|| {
                    ops::gemm_f32(&kern, (m, n, k), &a, k, &bp, None, &mut cf, n, Act::None)
                        .unwrap()
                })
            });
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
        for d in I8_GEMM
            .iter()
            .filter(|d| cpu.supports(d) && d.tier != Tier::Reference)
        {
            let mut kern = Kernels::select(&cpu, None);
            kern.i8_gemm = d;
            g.bench_function(BenchmarkId::new("i8", d.name), |b| {
                b.iter(|| {
                    ops::gemm_i8(&kern, (m, n, k), &a8, k, &b8, &q, I8Dst::U8(&mut c8), n).unwrap()
                })
            });
        }
        for int8 in [false, true] {
            let model = edgetune_peers::matmul_model(m, n, k, int8).expect("tract matmul");
            let input = edgetune_peers::matmul_input(m, k, int8);
            let id = if int8 {
                "tract_u8xi8_qlinearmatmul"
            } else {
                "tract_matmul"
            };
            g.bench_function(BenchmarkId::new(if int8 { "i8" } else { "f32" }, id), |b| {
                b.iter(|| edgetune_peers::run1(&model, &input).unwrap())
            });
        }
        g.finish();
    }
}

/// EfficientNet-Lite0's 3×3 depthwise convolution at 56×56×144 (stride 1, pad 1), per
/// tier; 2·9 operations per output.
fn depthwise(c: &mut Criterion) {
    let cpu = Cpu::detect();
    let (h, w, ch) = (56, 56, 144);
    let geom = ConvGeom {
        h,
        w,
        ic: ch,
        oc: ch,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dil_h: 1,
        dil_w: 1,
        pad_top: 1,
        pad_left: 1,
        pad_bottom: 1,
        pad_right: 1,
        groups: ch,
    };
    let x: Vec<u8> = (0..h * w * ch).map(|i| (i * 31 % 251) as u8).collect();
    let wt: Vec<i16> = (0..9 * ch).map(|i| (i as i16 * 7 % 255) - 127).collect();
    let bias = vec![5i32; ch];
    let scale = vec![0.002f32; ch];
    let mut y = vec![0u8; h * w * ch];
    let mut g = c.benchmark_group(format!("gemm_dw3x3_{h}x{w}x{ch}"));
    g.throughput(Throughput::Elements(2 * 9 * (h * w * ch) as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for d in DW_I8.iter().filter(|d| cpu.supports(d)) {
        let mut kern = Kernels::select(&cpu, None);
        kern.dw_i8 = d;
        g.bench_function(BenchmarkId::new("dw_i8", d.name), |b| {
            b.iter(|| {
                ops::depthwise_i8(
                    &kern,
                    &geom,
                    &x,
                    3,
                    &wt,
                    Some(&bias),
                    &scale,
                    (0, 0, 255),
                    &mut y,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gemm, depthwise);
criterion_main!(benches);
