//! Every elementwise tier against the reference tier, driven by the registry: random
//! lengths and unaligned starts (proptest) plus the edges (0, 1, one below and above the
//! lane count). Integer outputs, and the f32 ops that do the reference's arithmetic in
//! the reference's order, must be bit-exact; the transcendental ones and the row
//! reductions are held to the bounds in `BOUNDS`.

use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::elementwise::Q8;
use edgetune_kernels::ops::{self, UnaryF32};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::registry::{KernelDesc, EW};
use edgetune_kernels::{ew::EwFns, ShapeError, Tier};
use half::f16;
use proptest::prelude::*;

type Desc = &'static KernelDesc<&'static EwFns>;

fn tiers() -> Vec<(Desc, Kernels)> {
    let cpu = Cpu::detect();
    let mut out = Vec::new();
    for d in EW.iter().filter(|d| d.tier != Tier::Reference) {
        if cpu.supports(d) {
            let mut k = Kernels::select(&cpu, Some(Tier::Reference));
            k.ew = d;
            out.push((d, k));
        } else {
            // Straight to stderr, past the harness's capture, once per kernel.
            use std::io::Write;
            static SEEN: std::sync::Mutex<Vec<&str>> = std::sync::Mutex::new(Vec::new());
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&d.name) {
                seen.push(d.name);
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIP {} (CPU lacks {:?})",
                    d.name,
                    d.features
                );
            }
        }
    }
    out
}

fn reference() -> Kernels {
    Kernels::select(&Cpu::detect(), Some(Tier::Reference))
}

fn lcg(seed: u64) -> impl FnMut() -> u32 {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    }
}

/// Values in [-span, span] plus zeros, tiny and huge values and both infinities'
/// neighbourhood, so range clamps are exercised.
fn f32s(n: usize, span: f32, seed: u64) -> Vec<f32> {
    let mut r = lcg(seed);
    (0..n)
        .map(|i| match r() % 23 {
            0 => 0.0,
            1 => -100.0,
            2 => 100.0,
            3 => 1e-30,
            _ if i % 2 == 0 => (r() % 20001) as f32 / 10000.0 * span - span,
            _ => ((r() % 2001) as f32 / 1000.0 - 1.0) * 0.5,
        })
        .collect()
}

/// A value's bits, every NaN as one: IEEE 754 leaves a new NaN's sign and payload open
/// (a 0/0 is 0xffc00000 on x86 hardware, either sign under Miri), so the bit-exact
/// comparisons hold NaNs to being NaN.
fn bits_or_nan(v: &f32) -> u32 {
    if v.is_nan() {
        f32::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = lcg(seed);
    (0..n).map(|_| r() as u8).collect()
}

/// Worst `|got − want| / max(1, |want|)`; infinities and NaNs must agree exactly.
fn worst(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut w = 0.0f64;
    for (i, (&g, &e)) in got.iter().zip(want).enumerate() {
        if !e.is_finite() || !g.is_finite() {
            assert!(
                g == e || (g.is_nan() && e.is_nan()),
                "element {i}: {g} vs {e}"
            );
            continue;
        }
        w = w.max((g as f64 - e as f64).abs() / (e.abs() as f64).max(1.0));
    }
    w
}

/// Bound on `worst` for the ops that are not bit-exact: polynomial `exp`/`erf` against
/// libm (sigmoid, GELU tanh) or a reordered sum (softmax, layer norm).
const BOUNDS: &[(UnaryF32, f64)] = &[
    (UnaryF32::Sigmoid, 1e-6),
    (UnaryF32::GeluErf, 2e-6),
    (UnaryF32::GeluTanh, 2e-6),
    (UnaryF32::Erf, 1e-6),
];
const EXACT: &[UnaryF32] = &[UnaryF32::Relu, UnaryF32::Relu6, UnaryF32::HardSwish];
const ROW_BOUND: f64 = 1e-5;
/// Layer norm: the mean and variance are summed in another order per tier, and the
/// normalised value is multiplied by gains up to 2 (seen: 1.1e-5 on NEON, 4×120).
const LN_BOUND: f64 = 3e-5;

/// Every op of tier `k` against the reference on `n` values starting `off` elements
/// into the buffers (unaligned starts).
fn check_all(d: Desc, k: &Kernels, n: usize, off: usize, seed: u64) {
    let r = reference();
    let name = d.name;
    let x = f32s(n + off, 9.0, seed);
    let x = &x[off..];

    for &f in EXACT {
        let (mut a, mut b) = (x.to_vec(), x.to_vec());
        ops::unary_f32(k, f, &mut a);
        ops::unary_f32(&r, f, &mut b);
        assert_eq!(
            a.iter().map(bits_or_nan).collect::<Vec<_>>(),
            b.iter().map(bits_or_nan).collect::<Vec<_>>(),
            "{name} {f:?} n={n}"
        );
    }
    for &(f, bound) in BOUNDS {
        let (mut a, mut b) = (x.to_vec(), x.to_vec());
        ops::unary_f32(k, f, &mut a);
        ops::unary_f32(&r, f, &mut b);
        let w = worst(&a, &b);
        assert!(w <= bound, "{name} {f:?} n={n}: {w:e} > {bound:e}");
    }

    let y2 = f32s(n + off, 5.0, seed ^ 7);
    let y2 = &y2[off..];
    type Bin = fn(&Kernels, &[f32], &[f32], &mut [f32]) -> Result<(), ShapeError>;
    let bins: [(&str, Bin); 4] = [
        ("add", ops::add_f32),
        ("mul", ops::mul_f32),
        ("sub", ops::sub_f32),
        ("div", ops::div_f32),
    ];
    for (op, f) in bins {
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        f(k, x, y2, &mut a).unwrap();
        f(&r, x, y2, &mut b).unwrap();
        assert_eq!(
            a.iter().map(bits_or_nan).collect::<Vec<_>>(),
            b.iter().map(bits_or_nan).collect::<Vec<_>>(),
            "{name} {op} n={n}"
        );
    }

    // DynamicQuantizeLinear's range: with NaNs among the values, all-positive and
    // all-negative runs (so 0 bounds one side).
    for shift in [0.0f32, 20.0, -20.0] {
        let mut v: Vec<f32> = x.iter().map(|a| a + shift).collect();
        for j in (3..v.len()).step_by(37) {
            v[j] = f32::NAN;
        }
        let (a, b) = (ops::range0_f32(k, &v), ops::range0_f32(&r, &v));
        assert!(
            a == b && !a.0.is_nan() && !a.1.is_nan(),
            "{name} range0 n={n} shift={shift}: {a:?} {b:?}"
        );
        assert!(a.0 <= 0.0 && a.1 >= 0.0);
    }

    // A table lookup of every byte value (the top bit picks the table's second half).
    let table = bytes(256, seed ^ 5);
    let codes = bytes(n + off, seed ^ 6);
    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
    ops::lut_u8(k, &codes[off..], 1, &table, &mut a).unwrap();
    ops::lut_u8(&r, &codes[off..], 1, &table, &mut b).unwrap();
    assert_eq!(a, b, "{name} lut_u8 n={n}");
    for (&c, &v) in codes[off..].iter().zip(&a) {
        assert_eq!(v, table[c as usize], "{name} lut_u8 n={n}");
    }

    // Quantised tensors: random scales and zero points, the full u8 range.
    let mut rr = lcg(seed ^ 99);
    let mut q = || Q8 {
        scale: 0.001 + (rr() % 1000) as f32 / 10_000.0,
        zero: (rr() % 256) as i32,
    };
    let (qa, qb, qy) = (q(), q(), q());
    let ua = bytes(n + off, seed ^ 1);
    let ub = bytes(n + off, seed ^ 2);
    let (ua, ub) = (&ua[off..], &ub[off..]);
    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
    ops::add_u8(k, ua, qa, ub, qb, &mut a, qy).unwrap();
    ops::add_u8(&r, ua, qa, ub, qb, &mut b, qy).unwrap();
    assert_eq!(a, b, "{name} add_u8 n={n} {qa:?} {qb:?} {qy:?}");

    let xs: Vec<f32> = x.iter().map(|v| v * 3.0).collect();
    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
    ops::quantize_u8(k, &xs, qa.scale * 10.0, qa.zero, &mut a).unwrap();
    ops::quantize_u8(&r, &xs, qa.scale * 10.0, qa.zero, &mut b).unwrap();
    assert_eq!(a, b, "{name} quantize_u8 n={n}");
    let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
    ops::quantize_i8(k, &xs, qa.scale * 10.0, qa.zero - 128, &mut a).unwrap();
    ops::quantize_i8(&r, &xs, qa.scale * 10.0, qa.zero - 128, &mut b).unwrap();
    assert_eq!(a, b, "{name} quantize_i8 n={n}");
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    ops::dequantize_u8(k, ua, qa.scale, qa.zero, &mut a).unwrap();
    ops::dequantize_u8(&r, ua, qa.scale, qa.zero, &mut b).unwrap();
    assert_eq!(a, b, "{name} dequantize_u8 n={n}");
    let ia: Vec<i8> = ua.iter().map(|&v| v as i8).collect();
    ops::dequantize_i8(k, &ia, qb.scale, qb.zero - 128, &mut a).unwrap();
    ops::dequantize_i8(&r, &ia, qb.scale, qb.zero - 128, &mut b).unwrap();
    assert_eq!(a, b, "{name} dequantize_i8 n={n}");

    let (mut h1, mut h2) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
    let wide: Vec<f32> = x.iter().map(|v| v * 7919.0).collect();
    ops::f32_to_f16(k, &wide, &mut h1).unwrap();
    ops::f32_to_f16(&r, &wide, &mut h2).unwrap();
    assert_eq!(
        h1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        h2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{name} f32_to_f16 n={n}"
    );
    let hs: Vec<f16> = ua
        .iter()
        .zip(ub)
        .map(|(&p, &q)| f16::from_bits(u16::from_le_bytes([p, q])))
        .collect();
    ops::f16_to_f32(k, &hs, &mut a).unwrap();
    ops::f16_to_f32(&r, &hs, &mut b).unwrap();
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "{name} f16_to_f32 n={n}");
}

/// Row and channel reductions on `rows × cols` (softmax, layer norm) and `hw × c`
/// (global average pool) shapes.
fn check_rows(d: Desc, k: &Kernels, rows: usize, cols: usize, seed: u64) {
    let r = reference();
    let name = d.name;
    let x = f32s(rows * cols, 12.0, seed);
    let (mut a, mut b) = (x.clone(), x.clone());
    ops::softmax(k, &mut a, cols).unwrap();
    ops::softmax(&r, &mut b, cols).unwrap();
    let w = worst(&a, &b);
    assert!(w <= ROW_BOUND, "{name} softmax {rows}x{cols}: {w:e}");

    let g = f32s(cols, 2.0, seed ^ 3);
    let be = f32s(cols, 1.0, seed ^ 4);
    let (mut a, mut b) = (x.clone(), x.clone());
    ops::layer_norm(k, &mut a, cols, &g, &be, 1e-5).unwrap();
    ops::layer_norm(&r, &mut b, cols, &g, &be, 1e-5).unwrap();
    let w = worst(&a, &b);
    assert!(w <= LN_BOUND, "{name} layer_norm {rows}x{cols}: {w:e}");

    // Global average pool: `rows` positions × `cols` channels.
    let (mut a, mut b) = (vec![0.0; cols], vec![0.0; cols]);
    if rows > 0 {
        ops::gap_f32(k, &x, rows, cols, &mut a).unwrap();
        ops::gap_f32(&r, &x, rows, cols, &mut b).unwrap();
        assert_eq!(a, b, "{name} gap_f32 {rows}x{cols}");
        let u = bytes(rows * cols, seed ^ 5);
        let mut rr = lcg(seed ^ 6);
        let qx = Q8 {
            scale: 0.01 + (rr() % 100) as f32 / 1000.0,
            zero: (rr() % 256) as i32,
        };
        let qy = Q8 {
            scale: 0.005 + (rr() % 100) as f32 / 2000.0,
            zero: (rr() % 256) as i32,
        };
        let (mut a, mut b) = (vec![0u8; cols], vec![0u8; cols]);
        ops::gap_u8(k, &u, rows, cols, qx, &mut a, qy).unwrap();
        ops::gap_u8(&r, &u, rows, cols, qx, &mut b, qy).unwrap();
        assert_eq!(a, b, "{name} gap_u8 {rows}x{cols}");
    }
}

fn check_max_pool(d: Desc, k: &Kernels, g: ConvGeom, seed: u64) {
    let r = reference();
    let x = f32s(g.h * g.w * g.ic, 4.0, seed);
    let n = g.oh() * g.ow() * g.ic;
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    ops::max_pool_f32(k, &g, &x, &mut a).unwrap();
    ops::max_pool_f32(&r, &g, &x, &mut b).unwrap();
    assert_eq!(a, b, "{} max_pool_f32 {g:?}", d.name);
    let u = bytes(g.h * g.w * g.ic, seed ^ 11);
    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
    ops::max_pool_u8(k, &g, &u, &mut a).unwrap();
    ops::max_pool_u8(&r, &g, &u, &mut b).unwrap();
    assert_eq!(a, b, "{} max_pool_u8 {g:?}", d.name);
}

fn pool(h: usize, w: usize, c: usize, kk: usize, stride: usize, pad: usize) -> ConvGeom {
    ConvGeom {
        h,
        w,
        ic: c,
        oc: c,
        kh: kk,
        kw: kk,
        stride_h: stride,
        stride_w: stride,
        dil_h: 1,
        dil_w: 1,
        pad_top: pad,
        pad_left: pad,
        pad_bottom: pad,
        pad_right: pad,
        groups: c,
    }
}

#[test]
fn ew_edges() {
    let ts = tiers();
    for (d, k) in &ts {
        for n in [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100] {
            for off in [0, 1, 3] {
                check_all(d, k, n, off, n as u64 * 31 + off as u64);
            }
        }
        for (rows, cols) in [(1, 1), (3, 1), (1, 7), (2, 8), (3, 9), (4, 384), (2, 1000)] {
            check_rows(d, k, rows, cols, (rows * 1000 + cols) as u64);
        }
        for g in [
            pool(5, 5, 3, 3, 1, 1),
            pool(8, 8, 16, 3, 2, 1),
            pool(7, 6, 9, 2, 2, 0),
            pool(1, 1, 17, 1, 1, 0),
        ] {
            check_max_pool(d, k, g, g.ic as u64);
        }
    }
}

/// A deliberately wrong length is refused, not read past.
#[test]
fn ew_lengths_are_checked() {
    let k = Kernels::detect();
    let mut y = vec![0.0; 3];
    assert!(ops::add_f32(&k, &[1.0; 4], &[1.0; 4], &mut y).is_err());
    assert!(ops::softmax(&k, &mut [0.0; 5], 2).is_err());
    assert!(ops::softmax(&k, &mut [0.0; 5], 0).is_err());
    assert!(ops::layer_norm(&k, &mut [0.0; 8], 4, &[1.0; 3], &[0.0; 4], 1e-5).is_err());
    let q = Q8 {
        scale: 1.0,
        zero: 0,
    };
    assert!(ops::gap_u8(&k, &[0; 5], 2, 3, q, &mut [0; 3], q).is_err());
    assert!(ops::max_pool_f32(&k, &pool(4, 4, 2, 3, 1, 1), &[0.0; 31], &mut [0.0; 32]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn ew_random(n in 0usize..300, off in 0usize..8, seed in any::<u64>()) {
        for (d, k) in &tiers() {
            check_all(d, k, n, off, seed);
        }
    }

    #[test]
    fn ew_rows_random(rows in 0usize..6, cols in 1usize..200, seed in any::<u64>()) {
        for (d, k) in &tiers() {
            check_rows(d, k, rows, cols, seed);
        }
    }

    #[test]
    fn ew_max_pool_random(h in 1usize..9, w in 1usize..9, c in 1usize..20, kk in 1usize..4,
                          stride in 1usize..3, seed in any::<u64>()) {
        let pad = kk / 2;
        for (d, k) in &tiers() {
            check_max_pool(d, k, pool(h, w, c, kk, stride, pad), seed);
        }
    }
}

/// Tiers whose `mul_add` is fused: their erf is the reference's, bit for bit.
const FUSED: &[&str] = &[
    "ew_8__avx2",
    "ew_16__avx512",
    "ew_16__avx512vbmi",
    "ew_4__neon",
];

/// GELU's erf feeds a dynamically quantised GEMM in MiniLM: a code that flips at a
/// rounding boundary moves the sentence embedding. The reference erf gives onnxruntime's
/// bits (its x86-64 FMA kernel, `tools/make_erf_golden.py`), and so do the tiers that fuse
/// multiply-adds, GELU included; the others stay within 2 ulp.
#[test]
fn erf_is_onnxruntimes() {
    let golden: Vec<f32> = include_bytes!("data/erf_onnxruntime.bin")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (gx, gy): (Vec<f32>, Vec<f32>) = golden.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
    let bad: Vec<_> = gx
        .iter()
        .zip(&gy)
        .filter(|&(&x, &y)| edgetune_kernels::elementwise::erf1(x).to_bits() != y.to_bits())
        .take(10)
        .collect();
    assert!(
        bad.is_empty(),
        "reference erf differs from onnxruntime's: {bad:?}"
    );

    let mut xs: Vec<f32> = (0..400_000).map(|i| -6.0 + i as f32 * 3e-5).collect();
    xs.extend(&gx);
    // Subnormals are flushed by armv7 NEON; NaN is checked below.
    xs.retain(|v| *v == 0.0 || v.is_normal() || v.is_infinite());
    let want: Vec<f32> = xs
        .iter()
        .map(|&x| edgetune_kernels::elementwise::erf1(x))
        .collect();
    let gelu_want: Vec<f32> = xs
        .iter()
        .map(|&x| edgetune_kernels::elementwise::gelu_erf1(x))
        .collect();
    for (d, k) in &tiers() {
        let mut a = xs.clone();
        ops::unary_f32(k, UnaryF32::Erf, &mut a);
        let mut g = xs.clone();
        ops::unary_f32(k, UnaryF32::GeluErf, &mut g);
        let ulps = |got: &[f32], want: &[f32]| {
            got.iter()
                .zip(want)
                .map(|(g, w)| (g.to_bits() as i64 - w.to_bits() as i64).abs())
                .max()
                .unwrap_or(0)
        };
        let (e, ge) = (ulps(&a, &want), ulps(&g, &gelu_want));
        eprintln!("{}: erf within {e} ulp of the reference", d.name);
        if FUSED.contains(&d.name) {
            assert_eq!(e, 0, "{}: erf differs from the reference", d.name);
            assert_eq!(ge, 0, "{}: GELU differs from the reference", d.name);
        } else {
            assert!(e <= 2, "{}: erf {e} ulp from the reference", d.name);
        }
    }
    let mut nan = [f32::NAN; 9];
    for (d, k) in &tiers() {
        ops::unary_f32(k, UnaryF32::Erf, &mut nan);
        assert!(nan.iter().all(|v| v.is_nan()), "{}: erf(NaN)", d.name);
    }
}

/// The transpose of every tier gives the reference's values (a copy: bit-exact) on
/// matrices with and without whole 8 × 8 blocks and runs of them, from any first column
/// and for any number of columns `y` holds; and each value is where the definition puts
/// it.
#[test]
fn transpose_matches_the_reference_on_every_tier() {
    let shapes = [
        (1, 1),
        (8, 8),
        (16, 24),
        (7, 9),
        (17, 33),
        (64, 49),
        (49, 1152),
        (3, 100),
        // Three planes into triples (an RGB image to NHWC).
        (3, 1001),
        // More rows than one run of blocks down the rows (128), with a partial run.
        (300, 28),
        (1030, 24),
    ];
    for (rows, cols) in shapes {
        let x = f32s(rows * cols, 3.0, (rows * 1000 + cols) as u64);
        for (c0, k) in [
            (0, cols),
            (cols / 3, cols - cols / 3),
            (cols / 2, cols.div_ceil(4)),
        ] {
            let mut want = vec![f32::NAN; k * rows];
            ops::transpose_f32(&reference(), &x, rows, cols, c0, &mut want).unwrap();
            for (c, col) in want.chunks(rows.max(1)).enumerate() {
                for (r, v) in col.iter().enumerate() {
                    assert_eq!(v.to_bits(), x[r * cols + c0 + c].to_bits());
                }
            }
            for (d, k) in tiers() {
                let mut got = vec![f32::NAN; want.len()];
                ops::transpose_f32(&k, &x, rows, cols, c0, &mut got).unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} {rows}×{cols} from column {c0}",
                    d.name
                );
            }
        }
    }
    // The packing of a transpose by whole-panel transposes: the scalar packing's values,
    // on whole and partial panels.
    for (n, k) in [(16, 1), (16, 9), (33, 64), (40, 130), (7, 5), (1152, 24)] {
        let a = f32s(n * k, 3.0, (n * 7 + k) as u64);
        let mut want = vec![f32::NAN; edgetune_kernels::pack::packed_f32_len(k, n)];
        edgetune_kernels::pack::pack_f32_t(&a, n, k, &mut want);
        let all = std::iter::once(("reference", reference()));
        for (d, kern) in all.chain(tiers().into_iter().map(|(d, k)| (d.name, k))) {
            let mut got = vec![f32::NAN; want.len()];
            ops::pack_f32_t(&kern, &a, n, k, &mut got);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "pack_f32_t {n}×{k} on {d}"
            );
        }
    }
    // A matrix longer than x holds, or a first column past the last, is refused.
    let mut y = vec![0.0; 8];
    assert!(ops::transpose_f32(&reference(), &[0.0; 7], 2, 4, 0, &mut y).is_err());
    assert!(ops::transpose_f32(&reference(), &[0.0; 8], 2, 4, 5, &mut y).is_err());
}

/// The float depthwise of every tier gives the reference's bits (bias, then the taps
/// inside the image in order), on maps wide enough for its runs of pixels, channel counts
/// below, on and off each vector width, strides, dilation, uneven padding, kernels larger
/// than the map, with and without a bias; and the reference is the definition.
#[test]
fn depthwise_f32_matches_the_reference_on_every_tier() {
    type Case = (usize, usize, usize, usize, usize, usize, [usize; 4], bool);
    let cases: [Case; 14] = [
        (13, 29, 24, 3, 1, 1, [1, 1, 1, 1], true),
        // A small map, most pixels one at a time: channel blocks four at once, then the
        // rest, the last block overlapping the one before.
        (9, 9, 70, 5, 1, 1, [2, 2, 2, 2], true),
        (17, 17, 40, 5, 1, 1, [2, 2, 2, 2], false),
        (12, 31, 16, 3, 2, 1, [0, 1, 1, 0], true),
        (10, 40, 7, 3, 1, 1, [1, 1, 1, 1], true),
        (11, 23, 33, 3, 1, 2, [2, 2, 2, 2], true),
        (9, 9, 64, 7, 1, 1, [3, 3, 3, 3], true),
        (6, 50, 3, 1, 1, 1, [0, 0, 0, 0], false),
        (3, 4, 20, 5, 1, 1, [2, 2, 2, 2], true),
        (8, 26, 17, 5, 2, 1, [1, 2, 2, 1], false),
        // Channel counts dividing the vector width, one column stride: runs along the row.
        (12, 30, 8, 3, 1, 1, [1, 1, 1, 1], true),
        (9, 21, 4, 5, 1, 1, [2, 2, 2, 2], false),
        (7, 19, 2, 3, 1, 2, [2, 1, 2, 1], true),
        (8, 33, 1, 3, 1, 1, [0, 1, 0, 1], true),
    ];
    for (i, &(h, w, c, k, s, d, [pt, pl, pb, pr], with_bias)) in cases.iter().enumerate() {
        if cfg!(miri) && h * w * c > 2000 {
            continue;
        }
        let g = ConvGeom {
            h,
            w,
            ic: c,
            oc: c,
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            dil_h: d,
            dil_w: d,
            pad_top: pt,
            pad_left: pl,
            pad_bottom: pb,
            pad_right: pr,
            groups: c,
        };
        let x = f32s(h * w * c, 3.0, 100 + i as u64);
        let wt = f32s(k * k * c, 1.0, 200 + i as u64);
        let bias = if with_bias {
            f32s(c, 1.0, 300 + i as u64)
        } else {
            vec![]
        };
        let (oh, ow) = (g.oh(), g.ow());
        let mut want = vec![f32::NAN; oh * ow * c];
        ops::depthwise_f32(&reference(), &g, &x, &wt, &bias, &mut want).unwrap();
        // The reference is the definition.
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut v = bias.get(ch).copied().unwrap_or(0.0);
                    for ky in 0..k {
                        for kx in 0..k {
                            if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                v += wt[(ky * k + kx) * c + ch] * x[(iy * w + ix) * c + ch];
                            }
                        }
                    }
                    let got = want[(oy * ow + ox) * c + ch];
                    assert_eq!(got.to_bits(), v.to_bits(), "case {i} ({oy}, {ox}, {ch})");
                }
            }
        }
        for (dsc, kern) in tiers() {
            let mut got = vec![f32::NAN; want.len()];
            ops::depthwise_f32(&kern, &g, &x, &wt, &bias, &mut got).unwrap();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}: case {i} {g:?}",
                dsc.name
            );
        }
    }
    // Weights or bias shorter than the geometry: an error, nothing written.
    let g = pool(4, 4, 3, 3, 1, 1);
    let mut y = vec![0.0; 4 * 4 * 3];
    assert!(ops::depthwise_f32(&reference(), &g, &[0.0; 48], &[0.0; 26], &[], &mut y).is_err());
    assert!(
        ops::depthwise_f32(&reference(), &g, &[0.0; 48], &[0.0; 27], &[0.0; 2], &mut y).is_err()
    );
    assert!(y.iter().all(|v| *v == 0.0));
    // Not one group per channel.
    let mut g1 = g;
    g1.groups = 1;
    assert!(ops::depthwise_f32(&reference(), &g1, &[0.0; 48], &[0.0; 27], &[], &mut y).is_err());
    assert!(y.iter().all(|v| *v == 0.0));
}

/// A row of softmax whose values are all -inf (a fully masked attention row) is NaN on
/// every tier, as in the reference and in ONNX (`exp(-inf - -inf)`): models test for it
/// with IsNaN. Rows of every length, so both the vector body and the scalar tail see it.
#[test]
fn softmax_of_a_fully_masked_row_is_nan_on_every_tier() {
    let r = reference();
    for (d, k) in tiers() {
        for cols in [1usize, 7, 8, 16, 40, 64] {
            let mut x = vec![f32::NEG_INFINITY; 2 * cols];
            // The second row is ordinary.
            for (i, v) in x[cols..].iter_mut().enumerate() {
                *v = i as f32 * 0.1;
            }
            let mut want = x.clone();
            ops::softmax(&r, &mut want, cols).unwrap();
            ops::softmax(&k, &mut x, cols).unwrap();
            assert!(want[..cols].iter().all(|v| v.is_nan()), "reference");
            assert!(
                x[..cols].iter().all(|v| v.is_nan()),
                "{} cols {cols}: {:?}",
                d.name,
                &x[..cols.min(8)]
            );
            assert!(worst(&x[cols..], &want[cols..]) <= ROW_BOUND, "{}", d.name);
        }
    }
}
