//! Elementwise, reduction and (de)quantisation throughput per tier, single thread, at the
//! sizes the bundled backbones run (EfficientNet-Lite0, MiniLM). Prints million elements
//! per second and the speed-up over the reference tier measured in the same run.
//! `cargo bench -p edgetune-kernels --features std --bench ew [-- FILTER]`; runs under qemu
//! for the cross targets too (emulated times compare tiers with each other only).

use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::elementwise::Q8;
use edgetune_kernels::ops::{self, UnaryF32};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::registry::EW;
use half::f16;
use std::time::Instant;

fn secs<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < 0.04 {
            f();
            n += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    best
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let cpu = Cpu::detect();
    let tiers: Vec<_> = EW.iter().filter(|d| cpu.supports(d)).collect();
    let f = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 2001) as f32 / 1000.0 - 1.0) * 4.0)
            .collect()
    };
    let b = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 131 % 251) as u8).collect() };
    let q = |s: f32, z: i32| Q8 { scale: s, zero: z };

    // (name, elements, op on one kernel table)
    type Case<'a> = (&'static str, usize, Box<dyn FnMut(&Kernels) + 'a>);
    let n_act = 112 * 112 * 32;
    let n_tok = 128 * 1536;
    let xb = f(n_act);
    let mut ya = vec![0.0f32; n_act];
    let (ua, ub) = (b(56 * 56 * 24), b(56 * 56 * 24));
    let mut uy = vec![0u8; ua.len()];
    let ug = b(7 * 7 * 1280);
    let mut gy = vec![0u8; 1280];
    let fg = f(7 * 7 * 1280);
    let mut fgy = vec![0.0f32; 1280];
    let mut att = f(12 * 128 * 128);
    let mut ln = f(128 * 384);
    let (gam, bet) = (f(384), f(384));
    let img = f(224 * 224 * 3);
    let mut qimg = vec![0u8; img.len()];
    let mut dimg = vec![0.0f32; img.len()];
    let mut h = vec![f16::ZERO; n_act];
    let pg = ConvGeom {
        h: 112,
        w: 112,
        ic: 64,
        oc: 64,
        kh: 3,
        kw: 3,
        stride_h: 2,
        stride_w: 2,
        dil_h: 1,
        dil_w: 1,
        pad_top: 1,
        pad_left: 1,
        pad_bottom: 1,
        pad_right: 1,
        groups: 64,
    };
    let px = f(112 * 112 * 64);
    let mut py = vec![0.0f32; 56 * 56 * 64];

    let mut cases: Vec<Case> = vec![
        (
            "add_f32",
            n_act,
            Box::new(|k| ops::add_f32(k, &xb, &xb, &mut ya).unwrap()),
        ),
        (
            "relu6",
            n_act,
            Box::new({
                let mut v = f(n_act);
                move |k| ops::unary_f32(k, UnaryF32::Relu6, &mut v)
            }),
        ),
        (
            "hard_swish",
            n_act,
            Box::new({
                let mut v = f(n_act);
                move |k| ops::unary_f32(k, UnaryF32::HardSwish, &mut v)
            }),
        ),
        (
            "sigmoid",
            n_act,
            Box::new({
                let mut v = f(n_act);
                move |k| ops::unary_f32(k, UnaryF32::Sigmoid, &mut v)
            }),
        ),
        (
            "gelu_erf",
            n_tok,
            Box::new({
                let mut v = f(n_tok);
                move |k| ops::unary_f32(k, UnaryF32::GeluErf, &mut v)
            }),
        ),
        (
            "erf",
            n_tok,
            Box::new({
                let mut v = f(n_tok);
                move |k| ops::unary_f32(k, UnaryF32::Erf, &mut v)
            }),
        ),
        (
            "gelu_tanh",
            n_tok,
            Box::new({
                let mut v = f(n_tok);
                move |k| ops::unary_f32(k, UnaryF32::GeluTanh, &mut v)
            }),
        ),
        (
            "add_u8",
            ua.len(),
            Box::new(|k| {
                ops::add_u8(
                    k,
                    &ua,
                    q(0.05, 120),
                    &ub,
                    q(0.03, 128),
                    &mut uy,
                    q(0.06, 125),
                )
                .unwrap()
            }),
        ),
        (
            "gap_u8 7x7x1280",
            ug.len(),
            Box::new(|k| ops::gap_u8(k, &ug, 49, 1280, q(0.05, 3), &mut gy, q(0.02, 0)).unwrap()),
        ),
        (
            "gap_f32 7x7x1280",
            fg.len(),
            Box::new(|k| ops::gap_f32(k, &fg, 49, 1280, &mut fgy).unwrap()),
        ),
        (
            "max_pool_f32 3x3/2",
            px.len(),
            Box::new(|k| ops::max_pool_f32(k, &pg, &px, &mut py).unwrap()),
        ),
        (
            "softmax 1536x128",
            att.len(),
            Box::new(|k| ops::softmax(k, &mut att, 128).unwrap()),
        ),
        (
            "layer_norm 128x384",
            ln.len(),
            Box::new(|k| ops::layer_norm(k, &mut ln, 384, &gam, &bet, 1e-12).unwrap()),
        ),
        (
            "quantize_u8",
            img.len(),
            Box::new(|k| ops::quantize_u8(k, &img, 0.02, 128, &mut qimg).unwrap()),
        ),
        (
            "dequantize_u8",
            img.len(),
            Box::new(|k| ops::dequantize_u8(k, &ua, 0.02, 128, &mut dimg[..ua.len()]).unwrap()),
        ),
        (
            "f32_to_f16",
            n_act,
            Box::new(|k| ops::f32_to_f16(k, &xb, &mut h).unwrap()),
        ),
    ];
    println!("| op | elements | {} |", {
        let v: Vec<String> = tiers
            .iter()
            .map(|d| format!("{} Melem/s (×ref)", d.name))
            .collect();
        v.join(" | ")
    });
    println!("|---|---|{}", "---|".repeat(tiers.len()));
    for (name, n, op) in cases.iter_mut() {
        if !name.contains(filter.as_str()) {
            continue;
        }
        let mut cols = Vec::new();
        let mut base = 0.0;
        for d in &tiers {
            let mut k = Kernels::select(&cpu, None);
            k.ew = d;
            let t = secs(|| op(&k));
            if base == 0.0 {
                base = t;
            }
            cols.push(format!("{:.0} ({:.1}×)", *n as f64 / t / 1e6, base / t));
        }
        println!("| {name} | {n} | {} |", cols.join(" | "));
    }
}
