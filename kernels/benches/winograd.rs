//! Single-thread float 3×3 stride-1 convolutions, direct (im2col and the f32 GEMM) beside
//! Winograd's F(4×4, 3×3) (`winograd.rs`), on layers of YOLOv8n (320×320) and PP-OCRv4's
//! detector (480×640) (`cargo bench -p edgetune-kernels --features std --bench winograd`):
//! microseconds per call, warm (the same input and weights call after call) and cold
//! (each call timed alone after a walk over 64 MB, so that input, weights and scratch come
//! from memory), best of 7 rounds of 50 ms, the two forms alternating three times.
//! `WINO_BENCH=TEXT` times only the rows whose shape contains TEXT.

use edgetune_kernels::dispatch::Kernels;
use edgetune_kernels::ops;
use edgetune_kernels::pack::{pack_f32, packed_f32_len};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::winograd as wino;
use edgetune_kernels::Act;
use std::time::Instant;

/// Seconds of the fastest of 7 rounds of calls of `f` (at least 50 ms of them each), each
/// call timed on its own after `cold` has run (untimed).
fn best<F: FnMut(), C: FnMut()>(mut f: F, mut cold: C) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let (mut spent, mut n) = (0.0, 0);
        while spent < 0.05 {
            cold();
            let t = Instant::now();
            f();
            spent += t.elapsed().as_secs_f64();
            n += 1;
        }
        best = best.min(spent / n as f64);
    }
    best
}

fn main() {
    let kern = Kernels::detect();
    // (h, w, ic, oc): YOLOv8n's C2f and head layers, PP-OCRv4's detector head, and two
    // below the importer's thresholds (16 input channels; 9 tiles).
    let shapes = [
        (80, 80, 32, 32),
        (40, 40, 64, 64),
        (20, 20, 64, 64),
        (20, 20, 128, 128),
        (120, 160, 96, 24),
        (60, 80, 96, 24),
        (80, 80, 16, 16),
        (10, 10, 256, 256),
    ];
    let only = std::env::var("WINO_BENCH").unwrap_or_default();
    println!("f32 GEMM tier: {}", kern.f32_gemm.name);
    println!("| h×w ic→oc | direct µs | Winograd µs | ratio | direct µs, cold | Winograd µs, cold | ratio, cold |");
    println!("|---|---|---|---|---|---|---|");
    // A buffer larger than the last-level cache, walked (untimed) before each call so that
    // the call reads its input and weights from memory, as a network's layer does.
    let mut flush = vec![0u8; 64 << 20];
    for &(h, w, ic, oc) in &shapes {
        let name = format!("{h}×{w} {ic}→{oc}");
        if !name.contains(only.as_str()) {
            continue;
        }
        let g = ConvGeom {
            h,
            w,
            ic,
            oc,
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
            groups: 1,
        };
        let x: Vec<f32> = (0..h * w * ic)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..9 * ic * oc)
            .map(|i| ((i * 104_729) % 1000) as f32 / 5000.0 - 0.1)
            .collect();
        let bias = vec![0.1f32; oc];
        let mut direct_w = vec![0f32; packed_f32_len(9 * ic, oc)];
        pack_f32(&b, 9 * ic, oc, &mut direct_w);
        let mut u = vec![0f32; wino::weights_len(ic, oc)];
        wino::pack_weights(&b, ic, oc, &mut u);
        let mut y = vec![0f32; g.oh() * g.ow() * oc];
        let mut im2col = vec![0f32; ops::conv_scratch_len(&g)];
        let (th, tw) = wino::tiles(&g);
        let mut scratch = vec![0f32; wino::scratch_len(&g, th * tw)];
        let mut yw = vec![0f32; g.oh() * g.ow() * oc];
        let mut row = vec![];
        for flushed in [false, true] {
            let mut cold = || {
                if flushed {
                    for v in flush.iter_mut().step_by(64) {
                        *v = v.wrapping_add(1);
                    }
                }
            };
            let (mut d, mut wn) = (f64::MAX, f64::MAX);
            // The two forms alternate, three times each.
            for _ in 0..3 {
                d = d.min(best(
                    || {
                        ops::conv_f32(
                            &kern,
                            &g,
                            &x,
                            &direct_w,
                            Some(&bias),
                            Act::None,
                            &mut im2col,
                            &mut y,
                        )
                        .unwrap()
                    },
                    &mut cold,
                ));
                wn = wn.min(best(
                    || {
                        wino::conv3x3_f32(
                            &kern,
                            &g,
                            0..th,
                            &x,
                            &u,
                            Some(&bias),
                            Act::None,
                            &mut scratch,
                            &mut yw,
                        )
                        .unwrap()
                    },
                    &mut cold,
                ));
            }
            row.push(format!("{:.0} | {:.0} | {:.2}×", d * 1e6, wn * 1e6, d / wn));
        }
        println!("| {name} | {} | {} |", row[0], row[1]);
    }
}
