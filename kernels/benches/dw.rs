//! Single-thread int8 and float depthwise throughput per tier on EfficientNet-Lite0's depthwise
//! layers (`cargo bench -p edgetune-kernels --features std --bench dw`): microseconds per
//! call, best of 7 rounds of 50 ms. `DW_BENCH=TEXT` times only the rows whose kernel name or
//! shape contains TEXT (for profiling one kernel on one layer).

use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::ops;
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::registry::{DW_I8, EW};
use edgetune_kernels::Tier;
use std::time::Instant;

fn time<F: FnMut()>(mut f: F) -> f64 {
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
    best * 1e6
}

fn main() {
    let cpu = Cpu::detect();
    // (h = w, channels, kernel, stride)
    let shapes = [
        (112, 32, 3, 1),
        (112, 96, 3, 2),
        (56, 144, 3, 1),
        (56, 144, 5, 2),
        (28, 240, 5, 1),
        (14, 480, 3, 1),
        (14, 672, 5, 1),
        (7, 1152, 5, 1),
    ];
    let only = std::env::var("DW_BENCH").unwrap_or_default();
    println!("| kernel | h×w×c k s | µs |");
    println!("|---|---|---|");
    for &(hw, c, k, s) in &shapes {
        let p = k / 2;
        let g = ConvGeom {
            h: hw,
            w: hw,
            ic: c,
            oc: c,
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            pad_top: p,
            pad_left: p,
            pad_bottom: p,
            pad_right: p,
            dil_h: 1,
            dil_w: 1,
            groups: c,
        };
        let x: Vec<u8> = (0..hw * hw * c).map(|i| (i * 7 % 251) as u8).collect();
        let w: Vec<i16> = (0..k * k * c)
            .map(|i| (i * 13 % 255) as i16 - 127)
            .collect();
        let bias = vec![100i32; c];
        let scale = vec![0.001f32; c];
        let mut y = vec![0u8; g.oh() * g.ow() * c];
        for d in DW_I8
            .iter()
            .filter(|d| cpu.supports(d) && d.tier != Tier::Reference)
        {
            let row = format!("| {} | {hw}×{hw}×{c} k{k} s{s} |", d.name);
            if !row.contains(only.as_str()) {
                continue;
            }
            let mut kern = Kernels::select(&cpu, None);
            kern.dw_i8 = d;
            let us = time(|| {
                ops::depthwise_i8(
                    &kern,
                    &g,
                    &x,
                    128,
                    &w,
                    Some(&bias),
                    &scale,
                    (3, 0, 255),
                    &mut y,
                )
                .unwrap()
            });
            println!("{row} {us:.1} |");
        }
        // The float depthwise of each elementwise tier on the same layer.
        let xf: Vec<f32> = x.iter().map(|&v| v as f32 / 64.0 - 2.0).collect();
        let wf: Vec<f32> = w.iter().map(|&v| v as f32 / 256.0).collect();
        let bf = vec![0.25f32; c];
        let mut yf = vec![0f32; y.len()];
        for d in EW
            .iter()
            .filter(|d| cpu.supports(d) && d.tier != Tier::Reference)
        {
            let row = format!("| {} f32 | {hw}×{hw}×{c} k{k} s{s} |", d.name);
            if !row.contains(only.as_str()) {
                continue;
            }
            let mut kern = Kernels::select(&cpu, None);
            kern.ew = d;
            let us = time(|| ops::depthwise_f32(&kern, &g, &xf, &wf, &bf, &mut yf).unwrap());
            println!("{row} {us:.1} |");
        }
    }
}
