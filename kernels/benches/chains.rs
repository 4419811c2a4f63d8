//! Fused elementwise chains (`ops::program_f32`, the templates of `ew::prog`) against the
//! same ops one by one over blocks of 512 values, as the executor runs a chain no
//! template matches: microseconds per call, best of 5 rounds of 40 ms, single thread, the
//! two forms alternating. Sizes: YOLOv8n's SiLU maps, MiniLM's GELU (128 tokens × 1536),
//! PP-OCRv4's batch norm and hard swish maps.
//! `cargo bench -p edgetune-kernels --features std --bench chains`.

use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::ops::{self, UnaryF32};
use std::time::Instant;

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 0.04 {
        f();
        n += 1;
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

const BLOCK: usize = 512;

/// The ops one by one over each block: `f(block index, x block, registers, y block)`.
fn blocks(
    x: &[f32],
    y: &mut [f32],
    mut f: impl FnMut(usize, &[f32], &mut [[f32; BLOCK]; 3], &mut [f32]),
) {
    let mut regs = [[0.0f32; BLOCK]; 3];
    for (b, (xb, yb)) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)).enumerate() {
        f(b, xb, &mut regs, yb);
    }
}

fn main() {
    let cpu = Cpu::detect();
    let kern = Kernels::select(&cpu, None);
    if !ops::fused_programs(&kern) {
        println!("SKIP chains: the tier {} has no fused form", kern.ew.name);
        return;
    }
    println!("| chain | values | one by one µs | fused µs | speed-up |");
    println!("|---|---|---|---|---|");
    for (name, t, n) in [
        ("SiLU", 0usize, 102_400usize),
        ("SiLU", 0, 409_600),
        ("GELU with bias", 2, 196_608),
        ("batch norm, hard swish, batch norm", 3, 230_400),
        ("batch norm, hard swish, batch norm", 3, 2_457_600),
    ] {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 2001) as f32 / 1000.0 - 1.0) * 4.0)
            .collect();
        let bias: Vec<f32> = (0..1536).map(|i| (i as f32 * 0.01).sin() * 0.1).collect();
        let reps: Vec<f32> = (0..n).map(|i| bias[i % 1536]).collect();
        let k = |v: f32| [v; BLOCK];
        let mut y = vec![0.0f32; n];
        let (mut one, mut fused) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            one = one.min(time(|| match t {
                0 => blocks(&x, &mut y, |_, xb, r, yb| {
                    let l = xb.len();
                    r[0][..l].copy_from_slice(xb);
                    ops::unary_f32(&kern, UnaryF32::Sigmoid, &mut r[0][..l]);
                    ops::mul_f32(&kern, xb, &r[0][..l], yb).unwrap();
                }),
                2 => {
                    let (h, s2, one) = (k(0.5), k(std::f32::consts::SQRT_2), k(1.0));
                    blocks(&x, &mut y, |b, xb, r, yb| {
                        let l = xb.len();
                        let [r0, r1, r2] = r;
                        ops::add_f32(&kern, xb, &reps[b * BLOCK..][..l], &mut r0[..l]).unwrap();
                        ops::div_f32(&kern, &r0[..l], &s2[..l], &mut r1[..l]).unwrap();
                        ops::mul_f32(&kern, &r0[..l], &h[..l], &mut r2[..l]).unwrap();
                        ops::unary_f32(&kern, UnaryF32::Erf, &mut r1[..l]);
                        ops::add_f32(&kern, &r1[..l], &one[..l], &mut r0[..l]).unwrap();
                        ops::mul_f32(&kern, &r2[..l], &r0[..l], yb).unwrap();
                    })
                }
                _ => {
                    let (s, b0, three, six, s2, b2) =
                        (k(1.1), k(0.1), k(3.0), k(6.0), k(0.9), k(-0.2));
                    blocks(&x, &mut y, |_, xb, r, yb| {
                        let l = xb.len();
                        let [r0, r1, r2] = r;
                        ops::mul_f32(&kern, &s[..l], xb, &mut r0[..l]).unwrap();
                        ops::add_f32(&kern, &r0[..l], &b0[..l], &mut r1[..l]).unwrap();
                        ops::add_f32(&kern, &r1[..l], &three[..l], &mut r0[..l]).unwrap();
                        for (d, &v) in r2[..l].iter_mut().zip(&r0[..l]) {
                            // The executor's clamp: a NaN gives the bound.
                            #[allow(clippy::manual_clamp)]
                            let c = v.max(0.0).min(6.0);
                            *d = c;
                        }
                        ops::mul_f32(&kern, &r1[..l], &r2[..l], &mut r0[..l]).unwrap();
                        ops::div_f32(&kern, &r0[..l], &six[..l], &mut r2[..l]).unwrap();
                        ops::mul_f32(&kern, &s2[..l], &r2[..l], &mut r0[..l]).unwrap();
                        ops::add_f32(&kern, &r0[..l], &b2[..l], yb).unwrap();
                    })
                }
            }));
            fused = fused.min(time(|| {
                let done = match t {
                    0 => ops::program_f32(&kern, 0, &[&x], &[], &mut y),
                    2 => ops::program_f32(
                        &kern,
                        2,
                        &[&x, &reps],
                        &[std::f32::consts::SQRT_2, 0.5, 1.0],
                        &mut y,
                    ),
                    _ => ops::program_f32(
                        &kern,
                        3,
                        &[&x],
                        &[1.1, 0.1, 3.0, 0.0, 6.0, 6.0, 0.9, -0.2],
                        &mut y,
                    ),
                };
                assert!(done.unwrap());
            }));
        }
        println!(
            "| {name} | {n} | {one:.1} | {fused:.1} | {:.2}× |",
            one / fused
        );
    }
}
