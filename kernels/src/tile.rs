//! Tile drivers shared by the GEMM tiers: walk C in MR×16 tiles, call a micro-kernel that
//! accumulates one tile, then an epilogue that finishes and stores the valid part.
//!
//! Rows past `m` read row `m-1` again (valid memory, results discarded), and packed B is
//! zero padded, so micro-kernels never branch on edges.

use crate::pack::{F32_NR, I8_NR};
use crate::{F32GemmArgs, I8GemmArgs};

pub(crate) type F32Micro<const MR: usize> =
    unsafe fn(usize, &[*const f32; MR], *const f32, &mut [[f32; F32_NR]; MR]);
pub(crate) type I8Micro<const MR: usize> =
    unsafe fn(usize, &[*const u8; MR], bool, *const i8, &mut [[i32; I8_NR]; MR]);
/// Finishes one row of a tile: `(args, row, col0, ncols, acc)`.
pub(crate) type I8Epi = unsafe fn(&I8GemmArgs, usize, usize, usize, &[i32; I8_NR]);

/// # Safety
/// `args` describes valid buffers; `micro` runs on this CPU.
pub(crate) unsafe fn drive_f32<const MR: usize>(args: &F32GemmArgs, micro: F32Micro<MR>) {
    if args.m == 0 || args.n == 0 {
        return;
    }
    let panels = args.n.div_ceil(F32_NR);
    // Column blocks of packed B that stay in a 256 KiB L2 while every row tile of A
    // walks them (each output still sums its whole reduction in one micro-kernel call,
    // so the blocking changes no result).
    let block = (F32_L2_FLOATS / (args.k * F32_NR).max(1)).max(1);
    let mut p0 = 0;
    while p0 < panels {
        let p1 = (p0 + block).min(panels);
        drive_f32_cols(args, micro, p0..p1);
        p0 = p1;
    }
}

/// Floats of packed B one column block of [`drive_f32`] holds.
pub(crate) const F32_L2_FLOATS: usize = 64 * 1024;

/// # Safety
/// As [`drive_f32`]; `cols` are panels of B.
unsafe fn drive_f32_cols<const MR: usize>(
    args: &F32GemmArgs,
    micro: F32Micro<MR>,
    cols: core::ops::Range<usize>,
) {
    let mut i0 = 0;
    while i0 < args.m {
        let rows: [*const f32; MR] =
            core::array::from_fn(|r| args.a.add((i0 + r).min(args.m - 1) * args.lda));
        for p in cols.clone() {
            let mut acc = [[0.0f32; F32_NR]; MR];
            micro(args.k, &rows, args.b.add(p * args.k * F32_NR), &mut acc);
            let col0 = p * F32_NR;
            let ncols = (args.n - col0).min(F32_NR);
            for (r, row) in acc.iter().enumerate().take((args.m - i0).min(MR)) {
                let c = args.c.add((i0 + r) * args.ldc + col0);
                for j in 0..ncols {
                    let mut v = row[j];
                    if !args.bias.is_null() {
                        v += *args.bias.add(col0 + j);
                    }
                    *c.add(j) = v.max(args.lo).min(args.hi);
                }
            }
        }
        i0 += MR;
    }
}

/// # Safety
/// `args` describes valid buffers; `micro` and `epi` run on this CPU.
pub(crate) unsafe fn drive_i8<const MR: usize>(args: &I8GemmArgs, micro: I8Micro<MR>, epi: I8Epi) {
    if args.m == 0 || args.n == 0 {
        return;
    }
    let panels = args.n.div_ceil(I8_NR);
    let panel_bytes = args.k.div_ceil(4) * 4 * I8_NR;
    let mut i0 = 0;
    while i0 < args.m {
        let rows: [*const u8; MR] =
            core::array::from_fn(|r| args.a.add((i0 + r).min(args.m - 1) * args.lda));
        for p in 0..panels {
            let mut acc = [[0i32; I8_NR]; MR];
            micro(
                args.k,
                &rows,
                args.a_signed,
                args.b.add(p * panel_bytes),
                &mut acc,
            );
            let col0 = p * I8_NR;
            let ncols = (args.n - col0).min(I8_NR);
            for (r, row) in acc.iter().enumerate().take((args.m - i0).min(MR)) {
                epi(args, i0 + r, col0, ncols, row);
            }
        }
        i0 += MR;
    }
}

/// Walks the reduction of `MR` rows of A in groups of 4 bytes (one `i32` per row, the sign
/// bit of each byte flipped when `flip`; the last group zero padded) and calls `step`
/// with the group index and the rows' words.
///
/// # Safety
/// Each `a[r]` points at `k` readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn for_each_a4<const MR: usize>(
    k: usize,
    a: &[*const u8; MR],
    flip: bool,
    mut step: impl FnMut(usize, [i32; MR]),
) {
    let mask = if flip { 0x8080_8080u32 as i32 } else { 0 };
    let full = k / 4;
    for g in 0..full {
        step(
            g,
            core::array::from_fn(|r| (a[r].add(g * 4) as *const i32).read_unaligned() ^ mask),
        );
    }
    if full * 4 < k {
        step(
            full,
            core::array::from_fn(|r| load_a4(a[r], full, k, flip) as i32),
        );
    }
}

/// Scalar epilogue: zero-point correction, bias, requantisation.
///
/// # Safety
/// `row < m`, `col0 + ncols ≤ n`, buffers valid.
pub(crate) unsafe fn i8_epi_scalar(
    args: &I8GemmArgs,
    row: usize,
    col0: usize,
    ncols: usize,
    acc: &[i32; I8_NR],
) {
    let zero = crate::quant::effective_a_zero(args);
    for j in 0..ncols {
        let col = col0 + j;
        let bias = if args.bias.is_null() {
            0
        } else {
            *args.bias.add(col)
        };
        let t = acc[j] - zero * *args.colsum.add(col) + bias;
        crate::quant::i8_epilogue(args, t, *args.scale.add(col), row, col);
    }
}

/// The 4 activation bytes of reduction group `g` (zero filled past `k`), as a u32.
///
/// # Safety
/// `a` points at `k` readable bytes.
#[inline(always)]
pub(crate) unsafe fn load_a4(a: *const u8, g: usize, k: usize, flip: bool) -> u32 {
    let kk = g * 4;
    let mut v = if kk + 4 <= k {
        (a.add(kk) as *const u32).read_unaligned()
    } else {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate().take(k - kk) {
            *x = *a.add(kk + i);
        }
        u32::from_ne_bytes(b)
    };
    if flip {
        v ^= 0x8080_8080;
    }
    v
}
