//! The tail's elementwise and depthwise passes over `[rows][channels]` buffers, each
//! compiled for the widest x86 vectors the kernel tier uses (`widened!`: the same source
//! and so the same bits on every tier) and free of data-dependent branches so that they
//! vectorise.

use super::net::DwGeom;
use crate::exec::widened;
use crate::par::Par;
use alloc::vec::Vec;
use edgetune_kernels::Kernels;

/// `g` where the clamp let `y` through (`lo < y < hi`), else 0; no branch.
#[inline(always)]
fn passed(y: f32, lo: f32, hi: f32, g: f32) -> f32 {
    if (y > lo) & (y < hi) {
        g
    } else {
        0.0
    }
}

/// `y = clamp(γ·z + b)` per channel row (`γ` empty: 1).
#[inline(always)]
fn affine_body(z: &[f32], gam: &[f32], b: &[f32], lo: f32, hi: f32, y: &mut [f32]) {
    let c = b.len();
    if c == 0 {
        return;
    }
    if gam.len() == c {
        for (yo, zo) in y.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
            let (yo, zo) = (&mut yo[..c], &zo[..c]);
            for ch in 0..c {
                yo[ch] = (gam[ch] * zo[ch] + b[ch]).clamp(lo, hi);
            }
        }
    } else {
        for (yo, zo) in y.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
            let (yo, zo) = (&mut yo[..c], &zo[..c]);
            for ch in 0..c {
                yo[ch] = (zo[ch] + b[ch]).clamp(lo, hi);
            }
        }
    }
}

/// Turns the output gradient of `y = clamp(γ·z + b)` into `dz` in place for a window of
/// `cw` channels starting at `c0`: `g` holds each row's window, `y` and `z` whole rows of
/// `ld` values. Adds the bias gradient into `gb` and the scale gradient into `gg` (the
/// window's, where trained: non-empty); `gam` (the window's) empty means a scale of 1.
/// Each channel's sums run over the rows in order, so any split of the channels gives
/// the same bits.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn affine_back_body(
    ld: usize,
    c0: usize,
    g: &mut [&mut [f32]],
    y: &[f32],
    z: &[f32],
    gam: &[f32],
    gb: &mut [f32],
    gg: &mut [f32],
    lo: f32,
    hi: f32,
) {
    let cw = g.first().map_or(0, |r| r.len());
    if cw == 0 {
        return;
    }
    let at = |r: usize| r * ld + c0..r * ld + c0 + cw;
    match (gb.len() == cw, gg.len() == cw) {
        (true, true) => {
            let (gb, gg, gam) = (&mut gb[..cw], &mut gg[..cw], &gam[..cw]);
            for (r, gk) in g.iter_mut().enumerate() {
                let (gk, yk, zk) = (&mut gk[..cw], &y[at(r)], &z[at(r)]);
                for ch in 0..cw {
                    let d = passed(yk[ch], lo, hi, gk[ch]);
                    gb[ch] += d;
                    gg[ch] += d * zk[ch];
                    gk[ch] = d * gam[ch];
                }
            }
        }
        (true, false) => {
            let gb = &mut gb[..cw];
            for (r, gk) in g.iter_mut().enumerate() {
                let (gk, yk) = (&mut gk[..cw], &y[at(r)]);
                for ch in 0..cw {
                    let d = passed(yk[ch], lo, hi, gk[ch]);
                    gb[ch] += d;
                    gk[ch] = d;
                }
            }
        }
        (false, true) => {
            let (gg, gam) = (&mut gg[..cw], &gam[..cw]);
            for (r, gk) in g.iter_mut().enumerate() {
                let (gk, yk, zk) = (&mut gk[..cw], &y[at(r)], &z[at(r)]);
                for ch in 0..cw {
                    let d = passed(yk[ch], lo, hi, gk[ch]);
                    gg[ch] += d * zk[ch];
                    gk[ch] = d * gam[ch];
                }
            }
        }
        (false, false) => {
            for (r, gk) in g.iter_mut().enumerate() {
                let (gk, yk) = (&mut gk[..cw], &y[at(r)]);
                for ch in 0..cw {
                    gk[ch] = passed(yk[ch], lo, hi, gk[ch]);
                }
            }
        }
    }
}

/// [`affine_back_window`] over rows of `c` channels (`g`, `y`, `z` as `[rows][c]`, the
/// per-channel vectors whole or empty), runs of 16 channels spread over the threads.
pub(super) fn affine_back(
    (par, kern): (&Par, &Kernels),
    (c, g): (usize, &mut [f32]),
    (y, z, gam): (&[f32], &[f32], &[f32]),
    (gb, gg): (&mut [f32], &mut [f32]),
    (lo, hi): (f32, f32),
) {
    if c == 0 {
        return;
    }
    let parts = par.parts(c.div_ceil(16), g.len() * 4);
    let runs: Vec<_> = crate::par::runs(c.div_ceil(16), parts)
        .map(|r| r.start * 16..(r.end * 16).min(c))
        .collect();
    // Each run's window of every row, and of the per-channel vectors.
    let mut rows: Vec<Vec<&mut [f32]>> = runs.iter().map(|_| Vec::new()).collect();
    for mut row in g.chunks_exact_mut(c) {
        for (run, out) in runs.iter().zip(&mut rows) {
            let (a, b) = core::mem::take(&mut row).split_at_mut(run.len());
            out.push(a);
            row = b;
        }
    }
    /// The runs' windows of a per-channel vector (empty ones where it is not whole).
    fn windows<'a>(
        v: &'a mut [f32],
        c: usize,
        runs: &[core::ops::Range<usize>],
    ) -> Vec<&'a mut [f32]> {
        let mut v = if v.len() == c { v } else { &mut [][..] };
        runs.iter()
            .map(|r| {
                let n = r.len().min(v.len());
                let (a, b) = core::mem::take(&mut v).split_at_mut(n);
                v = b;
                a
            })
            .collect()
    }
    let (gbs, ggs) = (windows(gb, c, &runs), windows(gg, c, &runs));
    let items: Vec<_> = runs
        .iter()
        .zip(rows)
        .zip(gbs.into_iter().zip(ggs))
        .collect();
    let _ = par.each(items, |((r, mut gr), (gbw, ggw))| {
        let gw = gam.get(r.clone()).unwrap_or(&[]);
        affine_back_window(kern, c, r.start, &mut gr, y, z, gw, gbw, ggw, lo, hi);
        Ok(())
    });
}

/// Calls `f(o, i, t)` for every output pixel `o` of a depthwise convolution, each kernel
/// tap `t` and the input pixel `i` that tap reads (padding skipped), in the order (output
/// row, output column, kernel row, kernel column).
#[inline(always)]
fn each_tap(g: &DwGeom, mut f: impl FnMut(usize, usize, usize)) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ky in 0..g.kh {
                let iy = (oy * g.stride.0 + ky) as isize - g.pad.0 as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                for kx in 0..g.kw {
                    let ix = (ox * g.stride.1 + kx) as isize - g.pad.1 as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    f(
                        oy * g.ow + ox,
                        iy as usize * g.w + ix as usize,
                        ky * g.kw + kx,
                    );
                }
            }
        }
    }
}

/// `z = dwconv(x, w)` of one example (`[h][w][c]` in, `[oh][ow][c]` out, no bias).
#[inline(always)]
fn dw_forward_body(g: &DwGeom, x: &[f32], w: &[f32], z: &mut [f32]) {
    let c = g.c;
    z.fill(0.0);
    each_tap(g, |o, i, t| {
        let (zo, xi, wk) = (&mut z[o * c..][..c], &x[i * c..][..c], &w[t * c..][..c]);
        for ((o, a), b) in zo.iter_mut().zip(xi).zip(wk) {
            *o += a * b;
        }
    });
}

/// Adds the input gradient of one example's depthwise convolution into `dx`.
#[inline(always)]
fn dw_dx_body(g: &DwGeom, w: &[f32], dz: &[f32], dx: &mut [f32]) {
    let c = g.c;
    each_tap(g, |o, i, t| {
        let (d, wk, dxi) = (&dz[o * c..][..c], &w[t * c..][..c], &mut dx[i * c..][..c]);
        for ((o, a), b) in dxi.iter_mut().zip(wk).zip(d) {
            *o += a * b;
        }
    });
}

/// Adds the weight gradient of channels `c0..c0 + cw` of a depthwise convolution over
/// every example of `x` / `dz` into `acc` (`[kh·kw][cw]`), example by example, each in
/// the order of [`each_tap`].
#[inline(always)]
fn dw_wgrad_body(g: &DwGeom, x: &[f32], dz: &[f32], c0: usize, acc: &mut [f32]) {
    let c = g.c;
    let cw = acc.len() / (g.kh * g.kw).max(1);
    let (nx, nz) = (g.h * g.w * c, g.oh * g.ow * c);
    if cw == 0 || nz == 0 {
        return;
    }
    for (x, dz) in x.chunks_exact(nx).zip(dz.chunks_exact(nz)) {
        each_tap(g, |o, i, t| {
            let d = &dz[o * c + c0..][..cw];
            let (xi, a) = (&x[i * c + c0..][..cw], &mut acc[t * cw..][..cw]);
            for ((o, u), v) in a.iter_mut().zip(xi).zip(d) {
                *o += u * v;
            }
        });
    }
}

/// `y += x`.
#[inline(always)]
fn add_into_body(x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(o, v)| *o += v);
}

widened!(pub(super) affine(z: &[f32], gam: &[f32], b: &[f32], lo: f32, hi: f32, y: &mut [f32]) => affine_body);
widened!(affine_back_window(ld: usize, c0: usize, g: &mut [&mut [f32]], y: &[f32], z: &[f32], gam: &[f32], gb: &mut [f32], gg: &mut [f32], lo: f32, hi: f32) => affine_back_body);
widened!(pub(super) dw_forward(g: &DwGeom, x: &[f32], w: &[f32], z: &mut [f32]) => dw_forward_body);
widened!(pub(super) dw_dx(g: &DwGeom, w: &[f32], dz: &[f32], dx: &mut [f32]) => dw_dx_body);
widened!(pub(super) add_into(x: &[f32], y: &mut [f32]) => add_into_body);

widened!(dw_wgrad(g: &DwGeom, x: &[f32], dz: &[f32], c0: usize, acc: &mut [f32]) => dw_wgrad_body);

/// Depthwise forward of a batch (`x`: examples of `h·w·c`, `z`: of `oh·ow·c`), the
/// examples spread over the threads.
pub(super) fn dw_forward_batch(
    par: &Par,
    kern: &Kernels,
    g: &DwGeom,
    x: &[f32],
    w: &[f32],
    z: &mut [f32],
) {
    let (nx, nz) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    let rows = z.len().checked_div(nz).unwrap_or(0);
    if par.parts(rows, z.len() * g.kh * g.kw) <= 1 {
        for (xv, zv) in x.chunks_exact(nx).zip(z.chunks_exact_mut(nz)) {
            dw_forward(kern, g, xv, w, zv);
        }
        return;
    }
    let items: Vec<_> = x.chunks_exact(nx).zip(z.chunks_exact_mut(nz)).collect();
    let _ = par.each(items, |(xv, zv)| {
        dw_forward(kern, g, xv, w, zv);
        Ok(())
    });
}

/// Adds the input gradient of a batch's depthwise convolution into `dx`, the examples
/// spread over the threads.
pub(super) fn dw_dx_batch(
    par: &Par,
    kern: &Kernels,
    g: &DwGeom,
    w: &[f32],
    dz: &[f32],
    dx: &mut [f32],
) {
    let (nx, nz) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    let rows = dz.len().checked_div(nz).unwrap_or(0);
    let items: Vec<_> = dz.chunks_exact(nz).zip(dx.chunks_exact_mut(nx)).collect();
    let run = |(d, x): (&[f32], &mut [f32])| {
        dw_dx(kern, g, w, d, x);
        Ok(())
    };
    if par.parts(rows, dz.len() * g.kh * g.kw) <= 1 {
        items.into_iter().for_each(|it| {
            let _ = run(it);
        });
    } else {
        let _ = par.each(items, run);
    }
}

/// Adds the weight gradient of a batch's depthwise convolution into `dw` (`[kh·kw][c]`):
/// runs of channels over the threads, each summing the examples in order, so every
/// thread count gives the same bits.
pub(super) fn dw_wgrad_batch(
    par: &Par,
    kern: &Kernels,
    g: &DwGeom,
    x: &[f32],
    dz: &[f32],
    dw: &mut [f32],
) {
    let (c, taps) = (g.c, g.kh * g.kw);
    let units = c.div_ceil(16);
    let parts = par.parts(units, dz.len() * taps);
    if parts <= 1 {
        dw_wgrad(kern, g, x, dz, 0, dw);
        return;
    }
    // Each run's channels gathered from `dw`, summed into, and put back.
    let mut runs: Vec<(usize, Vec<f32>)> = crate::par::runs(units, parts)
        .map(|r| {
            let (c0, c1) = (r.start * 16, (r.end * 16).min(c));
            let mut acc = Vec::with_capacity(taps * (c1 - c0));
            for t in 0..taps {
                acc.extend_from_slice(&dw[t * c + c0..t * c + c1]);
            }
            (c0, acc)
        })
        .collect();
    let _ = par.each(runs.iter_mut().collect(), |(c0, acc)| {
        dw_wgrad(kern, g, x, dz, *c0, acc);
        Ok(())
    });
    for (c0, acc) in &runs {
        let cw = acc.len() / taps;
        for t in 0..taps {
            dw[t * c + c0..t * c + c0 + cw].copy_from_slice(&acc[t * cw..(t + 1) * cw]);
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use edgetune_kernels::dispatch::Cpu;

    /// Every pass compiled for each x86 tier the CPU has gives the plain loops' bits,
    /// on values around the clamp's edges.
    #[test]
    fn widened_passes_match_the_plain_loops() {
        let (plain, tiers) = crate::exec::widened_tiers("widened tail passes");
        let val = |n: usize, f: f32| -> Vec<f32> {
            (0..n).map(|i| 7.0 * libm::sinf(i as f32 * f)).collect()
        };
        let (c, rows) = (37, 9);
        let (z, g0, y) = (
            val(c * rows, 0.71),
            val(c * rows, 1.37),
            val(c * rows, 0.53),
        );
        let (gam, b) = (val(c, 0.3), val(c, 0.9));
        let geo = DwGeom {
            h: 7,
            w: 6,
            c,
            kh: 5,
            kw: 3,
            oh: 4,
            ow: 3,
            stride: (2, 2),
            pad: (2, 1),
        };
        let x = val(geo.h * geo.w * c, 0.29);
        let dz = val(geo.oh * geo.ow * c, 0.61);
        let w = val(geo.kh * geo.kw * c, 0.17);
        let run = |k: &Kernels, par: &Par| {
            let mut out = Vec::new();
            for gm in [&gam[..], &[]] {
                let mut yv = alloc::vec![0.0; c * rows];
                affine(k, &z, gm, &b, 0.0, 6.0, &mut yv);
                out.extend(yv);
                for (tb, tg) in [(true, true), (true, false), (false, true), (false, false)] {
                    // A trained scale is read with its gradient.
                    let gm = if tg { &gam[..] } else { gm };
                    let mut g = g0.clone();
                    let mut gb = if tb { alloc::vec![0.5; c] } else { Vec::new() };
                    let mut gg = if tg { alloc::vec![-0.5; c] } else { Vec::new() };
                    affine_back(
                        (par, k),
                        (c, &mut g),
                        (&y, &z, gm),
                        (&mut gb, &mut gg),
                        (-1.0, 6.0),
                    );
                    out.extend(g.iter().chain(&gb).chain(&gg));
                }
            }
            let mut zz = alloc::vec![0.0; dz.len()];
            dw_forward(k, &geo, &x, &w, &mut zz);
            let (mut dx, mut dw) = (alloc::vec![0.25; x.len()], alloc::vec![0.5; w.len()]);
            dw_dx(k, &geo, &w, &dz, &mut dx);
            dw_wgrad(k, &geo, &x, &dz, 0, &mut dw);
            let mut acc = z.clone();
            add_into(k, &g0, &mut acc);
            out.extend(zz.iter().chain(&dx).chain(&dw).chain(&acc));
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let want = run(&plain, &Par::single());
        // Channel runs over the threads: each channel's sums in the same order.
        for threads in [2, 3] {
            let par = Par::new(threads).unwrap();
            assert!(run(&plain, &par) == want, "{threads} threads");
        }
        // The plain loops against a direct reading of the definitions.
        let mut g = g0.clone();
        let (mut gb, mut gg) = (alloc::vec![0.5; c], alloc::vec![-0.5; c]);
        let one = Par::single();
        affine_back(
            (&one, &plain),
            (c, &mut g),
            (&y, &z, &gam),
            (&mut gb, &mut gg),
            (-1.0, 6.0),
        );
        for ch in 0..c {
            let (mut sb, mut sg) = (0.5f32, -0.5f32);
            for r in 0..rows {
                let k = r * c + ch;
                let d = if y[k] > -1.0 && y[k] < 6.0 {
                    g0[k]
                } else {
                    0.0
                };
                assert_eq!(g[k], d * gam[ch], "dz {k}");
                sb += d;
                sg += d * z[k];
            }
            assert_eq!((gb[ch], gg[ch]), (sb, sg), "bias and scale gradients {ch}");
        }
        let mut zz = alloc::vec![0.0; dz.len()];
        dw_forward(&plain, &geo, &x, &w, &mut zz);
        for oy in 0..geo.oh {
            for ox in 0..geo.ow {
                for ch in 0..c {
                    let mut acc = 0.0;
                    for ky in 0..geo.kh {
                        for kx in 0..geo.kw {
                            let iy = (oy * 2 + ky) as isize - 2;
                            let ix = (ox * 2 + kx) as isize - 1;
                            if (0..7).contains(&iy) && (0..6).contains(&ix) {
                                let xi = (iy as usize * geo.w + ix as usize) * c + ch;
                                acc += x[xi] * w[(ky * geo.kw + kx) * c + ch];
                            }
                        }
                    }
                    let o = (oy * geo.ow + ox) * c + ch;
                    assert_eq!(zz[o].to_bits(), acc.to_bits(), "dw {o}");
                }
            }
        }
        // The gradients against scatters over the outputs in order (output pixel, then
        // tap), from the same starting values: the same sums in the same order.
        let (mut dx, mut dw) = (alloc::vec![0.25; x.len()], alloc::vec![0.5; w.len()]);
        dw_dx(&plain, &geo, &w, &dz, &mut dx);
        dw_wgrad(&plain, &geo, &x, &dz, 0, &mut dw);
        let (mut want_dx, mut want_dw) =
            (alloc::vec![0.25f32; x.len()], alloc::vec![0.5f32; w.len()]);
        for oy in 0..geo.oh {
            for ox in 0..geo.ow {
                for ky in 0..geo.kh {
                    for kx in 0..geo.kw {
                        let iy = (oy * 2 + ky) as isize - 2;
                        let ix = (ox * 2 + kx) as isize - 1;
                        if !(0..7).contains(&iy) || !(0..6).contains(&ix) {
                            continue;
                        }
                        let (i, o, t) = (
                            iy as usize * geo.w + ix as usize,
                            oy * geo.ow + ox,
                            ky * geo.kw + kx,
                        );
                        for ch in 0..c {
                            want_dx[i * c + ch] += w[t * c + ch] * dz[o * c + ch];
                            want_dw[t * c + ch] += x[i * c + ch] * dz[o * c + ch];
                        }
                    }
                }
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dx), bits(&want_dx), "depthwise input gradient");
        assert_eq!(bits(&dw), bits(&want_dw), "depthwise weight gradient");
        for k in &tiers {
            assert!(
                run(k, &Par::single()) == want,
                "{:?} differs from the plain loops",
                k.ew.tier
            );
        }
    }

    /// The batch passes give the same bits on one, two and three threads, and the same
    /// as the per-example pass.
    #[test]
    fn batch_depthwise_passes_are_thread_invariant() {
        let kern = Kernels::select(&Cpu::detect(), None);
        let val = |n: usize, f: f32| -> Vec<f32> {
            (0..n).map(|i| 3.0 * libm::sinf(i as f32 * f)).collect()
        };
        let geo = DwGeom {
            h: 5,
            w: 6,
            c: 40,
            kh: 3,
            kw: 3,
            oh: 5,
            ow: 6,
            stride: (1, 1),
            pad: (1, 1),
        };
        let rows = 5;
        let (nx, nz) = (geo.h * geo.w * geo.c, geo.oh * geo.ow * geo.c);
        let (x, dz, w) = (
            val(rows * nx, 0.37),
            val(rows * nz, 0.91),
            val(9 * geo.c, 0.23),
        );
        let run = |threads: usize| {
            let par = Par::new(threads).unwrap();
            let mut z = alloc::vec![0.0; rows * nz];
            dw_forward_batch(&par, &kern, &geo, &x, &w, &mut z);
            let mut dx = alloc::vec![0.5; rows * nx];
            dw_dx_batch(&par, &kern, &geo, &w, &dz, &mut dx);
            let mut dw = val(9 * geo.c, 0.11);
            dw_wgrad_batch(&par, &kern, &geo, &x, &dz, &mut dw);
            [z, dx, dw]
                .concat()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        // Per example, as the one-example passes run.
        let (mut z, mut dx, mut dw) = (
            alloc::vec![0.0; rows * nz],
            alloc::vec![0.5; rows * nx],
            val(9 * geo.c, 0.11),
        );
        // The weight gradient by its definition, in the passes' order (example, output
        // pixel, kernel tap): each channel's sum in the same order, so the same bits.
        for r in 0..rows {
            let (xr, dzr) = (&x[r * nx..][..nx], &dz[r * nz..][..nz]);
            dw_forward(&kern, &geo, xr, &w, &mut z[r * nz..][..nz]);
            dw_dx(&kern, &geo, &w, dzr, &mut dx[r * nx..][..nx]);
            for oy in 0..geo.oh {
                for ox in 0..geo.ow {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy + ky) as isize - 1, (ox + kx) as isize - 1);
                            if !(0..5).contains(&iy) || !(0..6).contains(&ix) {
                                continue;
                            }
                            let i = iy as usize * geo.w + ix as usize;
                            for ch in 0..geo.c {
                                dw[(ky * 3 + kx) * geo.c + ch] +=
                                    xr[i * geo.c + ch] * dzr[(oy * geo.ow + ox) * geo.c + ch];
                            }
                        }
                    }
                }
            }
        }
        let want: Vec<u32> = [z, dx, dw].concat().iter().map(|v| v.to_bits()).collect();
        for t in [1, 2, 3] {
            assert!(run(t) == want, "{t} threads");
        }
    }
}
