//! Every kernel of every tier against its reference, driven by the registry: random
//! shapes (proptest) plus the edges (k = 0, 1, odd; m and n below the tile; strides wider
//! than the rows). Int8 results must be bit-exact; f32 within a relative bound.

use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::ops::{self, I8Dst, I8Quant};
use edgetune_kernels::pack;
use edgetune_kernels::reference::{conv_i8_naive, ConvGeom};
use edgetune_kernels::registry::{KernelDesc, DW_I8, F32_GEMM, I8_GEMM, I8_GEMM_SAT};
use edgetune_kernels::{Act, I8Out};
use proptest::prelude::*;

fn cpu() -> Cpu {
    Cpu::detect()
}

fn runnable<F>(d: &KernelDesc<F>) -> bool {
    let ok = cpu().supports(d);
    if !ok {
        // Written to the stream directly, not through `println!`, so the test harness
        // does not capture it: a skipped tier is visible in every run.
        // Once per kernel, however many cases ask.
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
    ok
}

/// Kernels with one family forced to `d` and the rest at reference.
fn with_f32(d: &'static KernelDesc<edgetune_kernels::F32GemmFn>) -> Kernels {
    let mut k = Kernels::select(&cpu(), Some(edgetune_kernels::Tier::Reference));
    k.f32_gemm = d;
    k
}

fn with_i8(d: &'static KernelDesc<edgetune_kernels::I8GemmFn>) -> Kernels {
    let mut k = Kernels::select(&cpu(), Some(edgetune_kernels::Tier::Reference));
    k.i8_gemm = d;
    k
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

/// Relative bound for f32: reordering a k-term sum changes it by at most ~k·ε·Σ|a·b|.
fn check_f32(m: usize, n: usize, k: usize, lda: usize, act: Act, seed: u64) {
    let mut r = lcg(seed);
    let a: Vec<f32> = (0..m.max(1) * lda)
        .map(|_| (r() % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|_| (r() % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let bias: Vec<f32> = (0..n).map(|_| (r() % 200) as f32 / 100.0 - 1.0).collect();
    let mut bp = vec![0.0; pack::packed_f32_len(k, n)];
    pack::pack_f32(&b, k, n, &mut bp);
    let reference = with_f32(&F32_GEMM[0]);
    let mut want = vec![0.0; m * n];
    ops::gemm_f32(
        &reference,
        (m, n, k),
        &a,
        lda,
        &bp,
        Some(&bias),
        &mut want,
        n,
        act,
    )
    .unwrap();
    for d in F32_GEMM.iter().filter(|d| runnable(d)) {
        let mut got = vec![f32::NAN; m * n];
        ops::gemm_f32(
            &with_f32(d),
            (m, n, k),
            &a,
            lda,
            &bp,
            Some(&bias),
            &mut got,
            n,
            act,
        )
        .unwrap();
        for i in 0..m * n {
            let tol = 1e-5 * (k as f32 + 1.0) * 2.0;
            assert!(
                (got[i] - want[i]).abs() <= tol * want[i].abs().max(1.0),
                "{} m{m} n{n} k{k}: [{i}] {} vs {}",
                d.name,
                got[i],
                want[i]
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_i8(m: usize, n: usize, k: usize, lda: usize, signed: bool, out: I8Out, seed: u64) {
    let mut r = lcg(seed);
    let a: Vec<u8> = (0..m.max(1) * lda).map(|_| r() as u8).collect();
    let b: Vec<i8> = (0..k * n).map(|_| r() as i8).collect();
    let bias: Vec<i32> = (0..n).map(|_| (r() % 20000) as i32 - 10000).collect();
    // About half the cases have scales of 1 or more (the tiers' float clamp rather than
    // the integer one), about half a clamp inside the type's range (as ReLU or ReLU6
    // give).
    let h = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
    let big = h & 1 == 1;
    let scale: Vec<f32> = (0..n)
        .map(|_| {
            let s = 1e-4 + (r() % 1000) as f32 * 1e-6;
            if big {
                s * 1e4
            } else {
                s
            }
        })
        .collect();
    let mut bp = vec![0; pack::packed_i8_len(k, n)];
    let mut colsum = vec![0; pack::i8_cols(n)];
    pack::pack_i8(&b, k, n, &mut bp, &mut colsum);
    let tight = h & 2 == 2;
    let (qmin, qmax) = match (out == I8Out::I8, tight) {
        (true, false) => (-128, 127),
        (true, true) => (-100, 90),
        (false, false) => (0, 255),
        (false, true) => (7, 200),
    };
    let q = I8Quant {
        a_zero: if signed { -3 } else { 121 },
        a_signed: signed,
        colsum: &colsum,
        bias: Some(&bias),
        scale: &scale,
        out,
        y_zero: 7,
        qmin,
        qmax,
    };
    let run = |kern: &Kernels| -> Vec<u32> {
        match out {
            I8Out::F32 => {
                let mut c = vec![0f32; m * n];
                ops::gemm_i8(kern, (m, n, k), &a, lda, &bp, &q, I8Dst::F32(&mut c), n).unwrap();
                c.iter().map(|v| v.to_bits()).collect()
            }
            I8Out::U8 => {
                let mut c = vec![0u8; m * n];
                ops::gemm_i8(kern, (m, n, k), &a, lda, &bp, &q, I8Dst::U8(&mut c), n).unwrap();
                c.iter().map(|&v| v as u32).collect()
            }
            I8Out::I8 => {
                let mut c = vec![0i8; m * n];
                ops::gemm_i8(kern, (m, n, k), &a, lda, &bp, &q, I8Dst::I8(&mut c), n).unwrap();
                c.iter().map(|&v| v as u8 as u32).collect()
            }
        }
    };
    // The exact family and the saturating one, each against its own reference (random
    // bytes make saturated pairs common).
    for table in [I8_GEMM, I8_GEMM_SAT] {
        let want = run(&with_i8(&table[0]));
        for d in table.iter().filter(|d| runnable(d)) {
            assert_eq!(
                run(&with_i8(d)),
                want,
                "{} m{m} n{n} k{k} signed {signed} {out:?}",
                d.name
            );
        }
    }
}

#[test]
fn gemm_edges() {
    for &(m, n, k) in [
        (1, 1, 0),
        (1, 1, 1),
        (3, 5, 1),
        (5, 17, 3),
        (13, 16, 7),
        (1, 1000, 1280),
        (25, 33, 64),
        (12, 48, 129),
        // Several row tiles over several of the f32 driver's column blocks.
        (14, 400, 200),
        // Every size of the last row block (tiles of 12, 8, 4, 2 and 1 rows on AVX-512),
        // with k not a multiple of 4; 49 is a 7×7 map's pixels.
        (2, 20, 9),
        (4, 16, 5),
        (7, 31, 13),
        (8, 16, 4),
        (10, 18, 11),
        (11, 1, 3),
        (21, 40, 17),
        (49, 64, 38),
        // Reductions of a 5×5 convolution over 104 channels (k = 2600) and one past the
        // longest the AVX2 tier widens on the stack (4096).
        (7, 20, 2600),
        (5, 17, 4097),
        // Several row tiles, a long reduction whose panels (64 KB each) outgrow L1, the
        // last panel half full.
        (13, 72, 4000),
    ]
    .iter()
    // Under Miri (interpreted, slow) the small shapes cover every code path of the
    // reference and portable tiers.
    .filter(|s| !cfg!(miri) || s.0 * s.1 * s.2 < 300)
    {
        for act in [Act::None, Act::Relu, Act::Relu6, Act::Clamp(-0.5, 0.25)] {
            check_f32(m, n, k, k + 3, act, (m * n + k) as u64);
        }
        for out in [I8Out::U8, I8Out::I8, I8Out::F32] {
            check_i8(m, n, k, k + 5, false, out, (m + n * k) as u64);
            check_i8(m, n, k, k, true, out, (m * 7 + k) as u64);
        }
    }
}

/// `A·B` as f32 (zero points 0, scales 1, no bias) with A all `a` and B all `w`, on `d`.
fn constant_gemm(
    d: &'static KernelDesc<edgetune_kernels::I8GemmFn>,
    (m, n, k): (usize, usize, usize),
    a: u8,
    w: i8,
) -> Vec<f32> {
    let av = vec![a; m * k];
    let b = vec![w; k * n];
    let mut bp = vec![0; pack::packed_i8_len(k, n)];
    let mut colsum = vec![0; pack::i8_cols(n)];
    pack::pack_i8(&b, k, n, &mut bp, &mut colsum);
    let scale = vec![1.0f32; n];
    let q = I8Quant {
        a_zero: 0,
        a_signed: false,
        colsum: &colsum,
        bias: None,
        scale: &scale,
        out: I8Out::F32,
        y_zero: 0,
        qmin: 0,
        qmax: 255,
    };
    let mut c = vec![0f32; m * n];
    ops::gemm_i8(
        &with_i8(d),
        (m, n, k),
        &av,
        k,
        &bp,
        &q,
        I8Dst::F32(&mut c),
        n,
    )
    .unwrap();
    c
}

/// The accumulator at the extremes: all-255 × all-127 (and -128) at the deepest k.
#[test]
#[cfg_attr(miri, ignore = "k = 32768 is too slow interpreted; runs natively")]
fn i8_extremes_do_not_overflow() {
    let (m, n, k) = (2, 3, edgetune_kernels::I8_MAX_K);
    for w in [127i8, -128] {
        for d in I8_GEMM.iter().filter(|d| runnable(d)) {
            let c = constant_gemm(d, (m, n, k), 255, w);
            let exact = 255i64 * w as i64 * k as i64;
            assert!(
                c.iter().all(|&v| v as i64 == exact),
                "{}: {} vs {exact}",
                d.name,
                c[0]
            );
        }
    }
}

/// The saturating family's reference is the exact GEMM while no pair can leave i16
/// (|w| ≤ 64: 255·128 < 32768) and differs once one does.
#[test]
fn saturating_reference_saturates_only_out_of_range_pairs() {
    let (m, n, k) = (3, 5, 9);
    let run = |w: i8, a: u8| -> Vec<f32> {
        [&I8_GEMM[0], &I8_GEMM_SAT[0]]
            .iter()
            .map(|d| constant_gemm(d, (m, n, k), a, w)[0])
            .collect()
    };
    for (w, a) in [(64, 255), (-64, 255), (127, 128), (-128, 127)] {
        let [exact, sat] = run(w, a)[..] else {
            unreachable!()
        };
        assert_eq!(exact, (w as i32 * a as i32 * k as i32) as f32);
        assert_eq!(sat, exact, "w {w} a {a}");
    }
    // 255·127·2 = 64770 → 32767 per pair; 4 pairs and a lone last product of k = 9.
    let [exact, sat] = run(127, 255)[..] else {
        unreachable!()
    };
    assert_eq!(exact, (255 * 127 * 9) as f32);
    assert_eq!(sat, (32767 * 4 + 255 * 127) as f32);
}

#[test]
fn conv_i8_im2col_matches_naive_conv() {
    let mut r = lcg(9);
    for &(h, w, ic, oc, kh, s, p, d) in &[
        (9, 7, 3, 8, 3, 2, 1, 1),
        (6, 6, 5, 17, 1, 1, 0, 1),
        (5, 8, 4, 9, 5, 1, 2, 1),
        (4, 4, 2, 3, 1, 2, 0, 1),
        // Dilated: kernel rows are not adjacent pixels.
        (9, 10, 3, 5, 3, 1, 2, 2),
        // Kernel rows of 5, 6, 7, 40, 100 and 150 bytes (each width of the run copies).
        (7, 9, 5, 4, 1, 2, 0, 1),
        (8, 9, 2, 5, 3, 1, 1, 1),
        (7, 9, 7, 4, 1, 2, 1, 1),
        (9, 11, 8, 6, 5, 1, 2, 1),
        (8, 10, 20, 6, 5, 2, 1, 1),
        (7, 9, 50, 5, 3, 1, 0, 1),
    ] {
        let g = square(h, w, ic, oc, kh, s, p, d);
        let x: Vec<u8> = (0..h * w * ic).map(|_| r() as u8).collect();
        let wt: Vec<i8> = (0..oc * kh * kh * ic).map(|_| r() as i8).collect();
        let bias: Vec<i32> = (0..oc).map(|_| (r() % 2000) as i32 - 1000).collect();
        let scale: Vec<f32> = (0..oc).map(|_| 1e-3 + (r() % 100) as f32 * 1e-5).collect();
        let mut want = vec![0u8; g.oh() * g.ow() * oc];
        conv_i8_naive(&g, &x, 100, &wt, &bias, &scale, 10, &mut want);
        let kdim = kh * kh * ic;
        let mut bp = vec![0; pack::packed_i8_len(kdim, oc)];
        let mut colsum = vec![0; pack::i8_cols(oc)];
        pack::pack_i8_with(kdim, oc, |kk, o| wt[o * kdim + kk], &mut bp, &mut colsum);
        let q = I8Quant {
            a_zero: 100,
            a_signed: false,
            colsum: &colsum,
            bias: Some(&bias),
            scale: &scale,
            out: I8Out::U8,
            y_zero: 10,
            qmin: 0,
            qmax: 255,
        };
        for d in I8_GEMM.iter().filter(|d| runnable(d)) {
            let mut got = vec![0u8; want.len()];
            let mut scratch = vec![0u8; ops::conv_scratch_len(&g)];
            ops::conv_i8(
                &with_i8(d),
                &g,
                &x,
                &bp,
                &q,
                &mut scratch,
                I8Dst::U8(&mut got),
            )
            .unwrap();
            assert_eq!(got, want, "{} {g:?}", d.name);
        }
    }
}

/// A dense convolution's geometry with a square kernel, stride, padding and dilation.
#[allow(clippy::too_many_arguments)]
fn square(
    h: usize,
    w: usize,
    ic: usize,
    oc: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
) -> ConvGeom {
    ConvGeom {
        h,
        w,
        ic,
        oc,
        kh: k,
        kw: k,
        stride_h: s,
        stride_w: s,
        dil_h: d,
        dil_w: d,
        pad_top: p,
        pad_left: p,
        pad_bottom: p,
        pad_right: p,
        groups: 1,
    }
}

/// The float convolution's im2col against columns built tap by tap from the geometry, each
/// multiplied by the same tier's GEMM: bit-identical, for kernel rows of 4 to 144 bytes
/// (each width of the run copies), strided, padded and dilated.
#[test]
fn conv_f32_im2col_matches_the_gemm_of_naive_columns() {
    let mut r = lcg(21);
    for &(h, w, ic, oc, kh, s, p, d) in &[
        (9, 7, 1, 8, 1, 2, 0, 1),
        (9, 8, 1, 5, 3, 1, 1, 1),
        (8, 8, 1, 6, 5, 2, 2, 1),
        (10, 9, 2, 4, 3, 2, 1, 1),
        (12, 11, 3, 10, 3, 1, 0, 1),
        (13, 12, 3, 24, 5, 2, 2, 1),
        (9, 9, 5, 7, 5, 1, 2, 1),
        (8, 9, 8, 17, 3, 1, 1, 1),
        (9, 8, 12, 9, 3, 2, 1, 1),
        (9, 10, 3, 5, 3, 1, 2, 2),
    ] {
        let g = square(h, w, ic, oc, kh, s, p, d);
        let unit = |r: &mut dyn FnMut() -> u32| (r() % 2001) as f32 / 1000.0 - 1.0;
        let x: Vec<f32> = (0..h * w * ic).map(|_| unit(&mut r)).collect();
        let kdim = kh * kh * ic;
        let b: Vec<f32> = (0..kdim * oc).map(|_| unit(&mut r)).collect();
        let bias: Vec<f32> = (0..oc).map(|_| unit(&mut r)).collect();
        let mut bp = vec![0.0; pack::packed_f32_len(kdim, oc)];
        pack::pack_f32(&b, kdim, oc, &mut bp);
        let m = g.oh() * g.ow();
        let mut cols = vec![0.0f32; m * kdim];
        for oy in 0..g.oh() {
            for ox in 0..g.ow() {
                for ky in 0..kh {
                    for kx in 0..kh {
                        if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                            let at = (oy * g.ow() + ox) * kdim + (ky * kh + kx) * ic;
                            cols[at..at + ic].copy_from_slice(&x[(iy * w + ix) * ic..][..ic]);
                        }
                    }
                }
            }
        }
        let act = Act::Clamp(-0.8, 0.9);
        for d in F32_GEMM.iter().filter(|d| runnable(d)) {
            let k = with_f32(d);
            let mut want = vec![0.0f32; m * oc];
            ops::gemm_f32(
                &k,
                (m, oc, kdim),
                &cols,
                kdim,
                &bp,
                Some(&bias),
                &mut want,
                oc,
                act,
            )
            .unwrap();
            let mut got = vec![0.0f32; m * oc];
            let mut scratch = vec![0.0f32; ops::conv_scratch_len(&g)];
            ops::conv_f32(&k, &g, &x, &bp, Some(&bias), act, &mut scratch, &mut got).unwrap();
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} {g:?}", d.name);
        }
    }
}

fn check_dw(h: usize, w: usize, c: usize, k: usize, s: usize, p: usize, seed: u64) {
    let mut r = lcg(seed);
    let g = ConvGeom {
        h,
        w,
        ic: c,
        oc: c,
        kh: k,
        kw: k,
        stride_h: s,
        stride_w: s,
        dil_h: 1,
        dil_w: 1,
        pad_top: p,
        pad_left: p,
        pad_bottom: p,
        pad_right: p,
        groups: c,
    };
    let x: Vec<u8> = (0..h * w * c).map(|_| r() as u8).collect();
    // Every fifth case has weights beyond i8 (a u8 zero point taken off), which the VNNI
    // quad kernel leaves to the row pairs; zero points at both ends and between.
    let wide = seed.is_multiple_of(5);
    let wt: Vec<i16> = (0..k * k * c)
        .map(|_| {
            if wide {
                (r() % 511) as i16 - 255
            } else {
                r() as i8 as i16
            }
        })
        .collect();
    let xz = [128, 0, 255, 17][(seed / 5 % 4) as usize];
    let bias: Vec<i32> = (0..c).map(|_| (r() % 2000) as i32 - 1000).collect();
    let scale: Vec<f32> = (0..c).map(|_| 1e-3 + (r() % 100) as f32 * 1e-5).collect();
    let mut want = vec![0u8; g.oh() * g.ow() * c];
    let mut kern = Kernels::select(&cpu(), Some(edgetune_kernels::Tier::Reference));
    ops::depthwise_i8(
        &kern,
        &g,
        &x,
        xz,
        &wt,
        Some(&bias),
        &scale,
        (3, 0, 255),
        &mut want,
    )
    .unwrap();
    for d in DW_I8.iter().filter(|d| runnable(d)) {
        kern.dw_i8 = d;
        let mut got = vec![0u8; want.len()];
        ops::depthwise_i8(
            &kern,
            &g,
            &x,
            xz,
            &wt,
            Some(&bias),
            &scale,
            (3, 0, 255),
            &mut got,
        )
        .unwrap();
        assert_eq!(got, want, "{} h{h} w{w} c{c} k{k} s{s} p{p}", d.name);
    }
}

#[test]
fn depthwise_edges() {
    for &(h, w, c, k, s, p) in [
        (1, 1, 1, 1, 1, 0),
        (7, 5, 3, 3, 1, 1),
        (8, 8, 17, 3, 2, 1),
        (9, 9, 40, 5, 2, 2),
        (6, 4, 64, 5, 1, 2),
        // Rows wider than a 16-column chunk, 7×7 (four kernel row pairs), 9×9 (more
        // row pairs than the row-pair kernels take).
        (3, 40, 19, 3, 1, 1),
        (4, 37, 33, 5, 2, 2),
        (2, 70, 16, 3, 2, 1),
        (9, 20, 16, 7, 1, 3),
        (10, 10, 5, 9, 1, 4),
        // A map beyond L2 (output rows outermost in the quad kernel), with and without
        // i8 weights.
        (96, 96, 64, 3, 1, 1),
        (60, 90, 100, 5, 2, 2),
        (70, 70, 50, 3, 2, 1),
        // Beyond L2 with an odd number of rows (3×3 stride-1 rows go in pairs).
        (95, 70, 48, 3, 1, 1),
        // No padding (every column inside the image), and channels not a multiple of 16.
        (8, 8, 20, 3, 2, 0),
        (9, 11, 33, 5, 1, 0),
        (5, 6, 7, 3, 1, 0),
    ]
    .iter()
    .filter(|s| !cfg!(miri) || s.0 * s.1 * s.2 < 400)
    {
        check_dw(h, w, c, k, s, p, (h * c + k) as u64);
    }
}

#[test]
fn shape_errors_are_reported_not_undefined() {
    let k = Kernels::select(&cpu(), None);
    let bp = vec![0.0; pack::packed_f32_len(4, 4)];
    let mut c = vec![0.0; 3];
    let err =
        ops::gemm_f32(&k, (2, 4, 4), &[0.0; 8], 4, &bp, None, &mut c, 4, Act::None).unwrap_err();
    assert_eq!(err.what, "c");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn gemm_random(m in 1usize..40, n in 1usize..70, k in 0usize..90, pad in 0usize..5, seed in any::<u64>()) {
        check_f32(m, n, k, k + pad, Act::None, seed);
        check_i8(m, n, k, k + pad, seed % 2 == 0, if seed % 3 == 0 { I8Out::F32 } else { I8Out::U8 }, seed);
    }

    #[test]
    fn depthwise_random(h in 1usize..12, w in 1usize..40, c in 1usize..40, k in prop::sample::select(vec![1usize, 3, 5]), s in 1usize..3, seed in any::<u64>()) {
        let p = k / 2;
        check_dw(h.max(k - 2 * p), w.max(k - 2 * p), c, k, s, p, seed);
    }
}

/// On every f32 tier, a GEMM of a few rows gives the bits those rows get inside a GEMM of
/// many (each sum over k in the same order whether the tile holds 1, 2, 4 or 12 rows and
/// whether it walks one panel at a time or several side by side), for panel counts that
/// fill the groups of panels, leave some over, and end in a partial panel.
#[test]
fn f32_rows_of_few_equal_rows_of_many() {
    let mut r = lcg(77);
    for &(n, k) in &[
        (128usize, 1536usize),
        (131, 40),
        (16, 7),
        (200, 96),
        (40, 1),
    ] {
        let m = 24;
        let a: Vec<f32> = (0..m * k)
            .map(|_| (r() % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|_| (r() % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..n).map(|_| (r() % 200) as f32 / 100.0 - 1.0).collect();
        let mut bp = vec![0.0; pack::packed_f32_len(k, n)];
        pack::pack_f32(&b, k, n, &mut bp);
        for d in F32_GEMM.iter().filter(|d| runnable(d)) {
            let kern = with_f32(d);
            let mut all = vec![0.0f32; m * n];
            ops::gemm_f32(
                &kern,
                (m, n, k),
                &a,
                k,
                &bp,
                Some(&bias),
                &mut all,
                n,
                Act::None,
            )
            .unwrap();
            for few in [1usize, 2, 3, 4, 5, 8] {
                for first in [0usize, 7, m - few] {
                    let mut got = vec![f32::NAN; few * n];
                    let rows = &a[first * k..(first + few) * k];
                    ops::gemm_f32(
                        &kern,
                        (few, n, k),
                        rows,
                        k,
                        &bp,
                        Some(&bias),
                        &mut got,
                        n,
                        Act::None,
                    )
                    .unwrap();
                    let want = &all[first * n..(first + few) * n];
                    assert!(
                        got.iter()
                            .zip(want)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{} n{n} k{k}: rows {first}..{} alone differ",
                        d.name,
                        first + few
                    );
                }
            }
        }
    }
}
