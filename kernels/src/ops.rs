//! Safe entry points: check every length, then call the chosen tier.

use crate::elementwise::Q8;
use crate::pack::{i8_cols, packed_f32_len, packed_i8_len};
use crate::reference::ConvGeom;
use crate::{Act, DwI8Args, F32GemmArgs, I8GemmArgs, I8Out, Kernels, ShapeError, I8_MAX_K};

fn need(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), ShapeError> {
    if got < expected {
        Err(ShapeError {
            op,
            what,
            expected,
            got,
        })
    } else {
        Ok(())
    }
}

/// Elements a row-major `rows × cols` view with stride `ld` spans.
fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// `c = act(a·b + bias)`, `b` packed by [`crate::pack::pack_f32`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    kern: &Kernels,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
    act: Act,
) -> Result<(), ShapeError> {
    const OP: &str = "gemm_f32";
    need(OP, "lda", k, lda.max(if m <= 1 { k } else { 0 }))?;
    need(OP, "ldc", n, ldc.max(if m <= 1 { n } else { 0 }))?;
    need(OP, "a", span(m, k, lda), a.len())?;
    need(OP, "packed b", packed_f32_len(k, n), b.len())?;
    need(OP, "c", span(m, n, ldc), c.len())?;
    if let Some(bias) = bias {
        need(OP, "bias", n, bias.len())?;
    }
    let (lo, hi) = act.bounds();
    let args = F32GemmArgs {
        m,
        n,
        k,
        a: a.as_ptr(),
        lda,
        b: b.as_ptr(),
        bias: bias.map_or(core::ptr::null(), |b| b.as_ptr()),
        c: c.as_mut_ptr(),
        ldc,
        lo,
        hi,
    };
    // SAFETY: every buffer was checked above against the extents the kernel touches, and
    // `Kernels` only holds kernels whose CPU features were detected.
    unsafe { (kern.f32_gemm.f)(&args) };
    Ok(())
}

/// Quantisation of one int8 GEMM or convolution.
#[derive(Clone, Copy, Debug)]
pub struct I8Quant<'a> {
    pub a_zero: i32,
    pub a_signed: bool,
    pub colsum: &'a [i32],
    pub bias: Option<&'a [i32]>,
    pub scale: &'a [f32],
    pub out: I8Out,
    pub y_zero: i32,
    pub qmin: i32,
    pub qmax: i32,
}

/// Output buffer of the int8 GEMM.
pub enum I8Dst<'a> {
    U8(&'a mut [u8]),
    I8(&'a mut [i8]),
    F32(&'a mut [f32]),
}

#[allow(clippy::too_many_arguments)]
pub fn gemm_i8(
    kern: &Kernels,
    (m, n, k): (usize, usize, usize),
    a: &[u8],
    lda: usize,
    b: &[i8],
    q: &I8Quant,
    c: I8Dst,
    ldc: usize,
) -> Result<(), ShapeError> {
    const OP: &str = "gemm_i8";
    if k > I8_MAX_K {
        return Err(ShapeError {
            op: OP,
            what: "k (max)",
            expected: I8_MAX_K,
            got: k,
        });
    }
    need(OP, "lda", k, lda.max(if m <= 1 { k } else { 0 }))?;
    need(OP, "ldc", n, ldc.max(if m <= 1 { n } else { 0 }))?;
    need(OP, "a", span(m, k, lda), a.len())?;
    need(OP, "packed b", packed_i8_len(k, n), b.len())?;
    need(OP, "colsum", i8_cols(n), q.colsum.len())?;
    need(OP, "scale", n, q.scale.len())?;
    if let Some(bias) = q.bias {
        need(OP, "bias", n, bias.len())?;
    }
    let (cptr, clen, kind) = match c {
        I8Dst::U8(c) => (c.as_mut_ptr(), c.len(), I8Out::U8),
        I8Dst::I8(c) => (c.as_mut_ptr() as *mut u8, c.len(), I8Out::I8),
        I8Dst::F32(c) => (c.as_mut_ptr() as *mut u8, c.len(), I8Out::F32),
    };
    if kind != q.out {
        return Err(ShapeError {
            op: OP,
            what: "output type",
            expected: q.out as usize,
            got: kind as usize,
        });
    }
    need(OP, "c", span(m, n, ldc), clen)?;
    let args = I8GemmArgs {
        m,
        n,
        k,
        a: a.as_ptr(),
        lda,
        a_signed: q.a_signed,
        a_zero: q.a_zero,
        b: b.as_ptr(),
        colsum: q.colsum.as_ptr(),
        bias: q.bias.map_or(core::ptr::null(), |b| b.as_ptr()),
        scale: q.scale.as_ptr(),
        out: q.out,
        c: cptr,
        ldc,
        y_zero: q.y_zero,
        qmin: q.qmin,
        qmax: q.qmax,
    };
    // SAFETY: extents checked above; the kernel's features were detected.
    unsafe { (kern.i8_gemm.f)(&args) };
    Ok(())
}

/// Scratch elements [`conv_i8`] / [`conv_f32`] need for the im2col buffer.
pub fn conv_scratch_len(g: &ConvGeom) -> usize {
    if is_pointwise(g) {
        0
    } else {
        g.oh() * g.ow() * g.kh * g.kw * g.ic
    }
}

fn is_pointwise(g: &ConvGeom) -> bool {
    g.kh == 1
        && g.kw == 1
        && g.stride_h == 1
        && g.stride_w == 1
        && g.pad_top + g.pad_left + g.pad_bottom + g.pad_right == 0
}

fn check_geom(op: &'static str, g: &ConvGeom) -> Result<(), ShapeError> {
    // No channels means no work to size loops by: refused, so im2col cannot walk an
    // output nobody holds.
    if g.groups != 1
        || g.ic == 0
        || g.oc == 0
        || g.kh == 0
        || g.kw == 0
        || g.stride_h == 0
        || g.stride_w == 0
        || g.dil_h == 0
        || g.dil_w == 0
    {
        return Err(ShapeError {
            op,
            what: "geometry",
            expected: 1,
            got: g.groups,
        });
    }
    geom_bounds(op, g)?;
    let eh = g.dil_h * (g.kh - 1) + 1;
    let ew = g.dil_w * (g.kw - 1) + 1;
    need(op, "padded height", eh, g.h + g.pad_top + g.pad_bottom)?;
    need(op, "padded width", ew, g.w + g.pad_left + g.pad_right)?;
    // Every extent the kernel walks must fit usize (32-bit targets included).
    let m = g.oh().checked_mul(g.ow());
    let big = [
        g.h.checked_mul(g.w).and_then(|v| v.checked_mul(g.ic)),
        m.and_then(|v| v.checked_mul(g.oc)),
        m.and_then(|v| v.checked_mul(g.kh * g.kw))
            .and_then(|v| v.checked_mul(g.ic)),
    ];
    if big.iter().any(|v| v.is_none()) {
        return Err(ShapeError {
            op,
            what: "geometry overflows",
            expected: usize::MAX,
            got: 0,
        });
    }
    Ok(())
}

/// Each geometry field at most 2^16 (a 65536-wide map, kernel or channel count), so sums
/// and the products checked above cannot wrap before they are checked.
fn geom_bounds(op: &'static str, g: &ConvGeom) -> Result<(), ShapeError> {
    let fields = [
        g.h,
        g.w,
        g.ic,
        g.oc,
        g.kh,
        g.kw,
        g.stride_h,
        g.stride_w,
        g.dil_h,
        g.dil_w,
        g.pad_top,
        g.pad_left,
        g.pad_bottom,
        g.pad_right,
        g.groups,
    ];
    match fields.iter().find(|&&v| v > 1 << 16) {
        Some(&v) => Err(ShapeError {
            op,
            what: "geometry field",
            expected: 1 << 16,
            got: v,
        }),
        None => Ok(()),
    }
}

fn dst_len(y: &I8Dst) -> usize {
    match y {
        I8Dst::U8(v) => v.len(),
        I8Dst::I8(v) => v.len(),
        I8Dst::F32(v) => v.len(),
    }
}

/// Copies runs of `n` values: `src[i·ss..][..n]` to `dst[i·ds..][..n]` for every `i` whose
/// runs both slices hold whole (the callers cut them to end at the last run). Runs of 4 to
/// 128 bytes (the 9 bytes of a 3-channel stem's kernel row, the 36 or 60 of its float
/// forms) move as two overlapping unaligned loads and stores of a power-of-two width, the
/// width chosen once for all the runs; a `memmove` call per short run cost more than the
/// copy.
#[inline(always)]
fn copy_runs<T: Copy>(src: &[T], ss: usize, dst: &mut [T], ds: usize, n: usize) {
    if n == 0 || ss == 0 || ds == 0 || src.len() < n || dst.len() < n {
        return;
    }
    let count = ((src.len() - n) / ss).min((dst.len() - n) / ds) + 1;
    let bytes = n * core::mem::size_of::<T>();
    if !(4..=128).contains(&bytes) {
        for i in 0..count {
            dst[i * ds..][..n].copy_from_slice(&src[i * ss..][..n]);
        }
        return;
    }
    let (sb, db) = (
        ss * core::mem::size_of::<T>(),
        ds * core::mem::size_of::<T>(),
    );
    let (s, d) = (src.as_ptr() as *const u8, dst.as_mut_ptr() as *mut u8);
    // SAFETY: run `i < count` reads bytes [i·sb, i·sb + bytes) of `src` and writes
    // [i·db, i·db + bytes) of `dst`: `count` was taken so that the last run of each lies
    // inside its slice, and each width `w` ≤ `bytes` touches [0, w) and [bytes - w, bytes)
    // of a run only. `T: Copy` has no drop glue and any byte pattern copied from a `T` is
    // that `T`; the slices are distinct (one borrowed mutably).
    unsafe {
        macro_rules! runs {
            ($t:ty) => {{
                let w = core::mem::size_of::<$t>();
                for i in 0..count {
                    let (s, d) = (s.add(i * sb), d.add(i * db));
                    let (a, b) = (
                        core::ptr::read_unaligned(s as *const $t),
                        core::ptr::read_unaligned(s.add(bytes - w) as *const $t),
                    );
                    core::ptr::write_unaligned(d as *mut $t, a);
                    core::ptr::write_unaligned(d.add(bytes - w) as *mut $t, b);
                }
            }};
        }
        match bytes {
            4..=7 => runs!(u32),
            8..=15 => runs!(u64),
            16..=32 => runs!([u8; 16]),
            33..=64 => runs!([u8; 32]),
            _ => runs!([u8; 64]),
        }
    }
}

/// Rows of the im2col matrix: `[oh·ow][kh·kw·ic]`, padding filled with `fill`. Taken
/// per output row and kernel row: the output columns whose kernel row lies inside the
/// input (dilation 1) move one run each in a tight loop ([`copy_runs`] with `std`; the
/// firmware, which counts its code bytes and whose maps are small, copies slices), the
/// rest tap by tap.
fn im2col<T: Copy>(g: &ConvGeom, x: &[T], fill: T, out: &mut [T]) {
    let kdim = g.kh * g.kw * g.ic;
    let ow = g.ow();
    let run = g.kw * g.ic;
    let inside = if g.dil_w == 1 && g.kw > 0 && g.w >= g.kw {
        let lo = g.pad_left.div_ceil(g.stride_w);
        let hi = (g.w - g.kw + g.pad_left) / g.stride_w + 1;
        lo.min(ow)..hi.min(ow).max(lo.min(ow))
    } else {
        0..0
    };
    for oy in 0..g.oh() {
        let rows = &mut out[oy * ow * kdim..][..ow * kdim];
        for ky in 0..g.kh {
            let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
            if iy < 0 || iy >= g.h as isize {
                for ox in 0..ow {
                    rows[ox * kdim + ky * run..][..run].fill(fill);
                }
                continue;
            }
            let src = &x[iy as usize * g.w * g.ic..][..g.w * g.ic];
            if !cfg!(feature = "std") {
                for ox in inside.clone() {
                    let ix = ox * g.stride_w - g.pad_left;
                    let dst = &mut rows[ox * kdim + ky * run..][..run];
                    dst.copy_from_slice(&src[ix * g.ic..][..run]);
                }
            } else if !inside.is_empty() {
                let (first, count) = (inside.start, inside.len());
                let ix = first * g.stride_w - g.pad_left;
                let (ss, last) = (g.stride_w * g.ic, (count - 1) * kdim);
                copy_runs(
                    &src[ix * g.ic..][..(count - 1) * ss + run],
                    ss,
                    &mut rows[first * kdim + ky * run..][..last + run],
                    kdim,
                    run,
                );
            }
            for ox in (0..ow).filter(|ox| !inside.contains(ox)) {
                for kx in 0..g.kw {
                    let dst = &mut rows[ox * kdim + (ky * g.kw + kx) * g.ic..][..g.ic];
                    match g.src(oy, ox, ky, kx) {
                        Some((_, ix)) => dst.copy_from_slice(&src[ix * g.ic..][..g.ic]),
                        None => dst.fill(fill),
                    }
                }
            }
        }
    }
}

/// Dense int8 convolution over NHWC (one image): im2col then the int8 GEMM. Weights are
/// packed as B[kh·kw·ic][oc]. Padding takes the input zero point, so it adds nothing.
#[allow(clippy::too_many_arguments)]
pub fn conv_i8(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[u8],
    w: &[i8],
    q: &I8Quant,
    scratch: &mut [u8],
    y: I8Dst,
) -> Result<(), ShapeError> {
    const OP: &str = "conv_i8";
    check_geom(OP, g)?;
    need(OP, "x", g.h * g.w * g.ic, x.len())?;
    let m = g.oh() * g.ow();
    let kdim = g.kh * g.kw * g.ic;
    if is_pointwise(g) {
        return gemm_i8(kern, (m, g.oc, kdim), x, kdim, w, q, y, g.oc);
    }
    // Output first: im2col must not walk a geometry the output cannot hold.
    need(OP, "y", m * g.oc, dst_len(&y))?;
    need(OP, "scratch", conv_scratch_len(g), scratch.len())?;
    let fill = if q.a_signed {
        (q.a_zero as i8) as u8
    } else {
        q.a_zero as u8
    };
    im2col(g, x, fill, scratch);
    gemm_i8(kern, (m, g.oc, kdim), scratch, kdim, w, q, y, g.oc)
}

/// Dense f32 convolution over NHWC (one image), weights packed as B[kh·kw·ic][oc].
#[allow(clippy::too_many_arguments)]
pub fn conv_f32(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    scratch: &mut [f32],
    y: &mut [f32],
) -> Result<(), ShapeError> {
    const OP: &str = "conv_f32";
    check_geom(OP, g)?;
    need(OP, "x", g.h * g.w * g.ic, x.len())?;
    let m = g.oh() * g.ow();
    let kdim = g.kh * g.kw * g.ic;
    if is_pointwise(g) {
        return gemm_f32(kern, (m, g.oc, kdim), x, kdim, w, bias, y, g.oc, act);
    }
    need(OP, "y", m * g.oc, y.len())?;
    need(OP, "scratch", conv_scratch_len(g), scratch.len())?;
    im2col(g, x, 0.0, scratch);
    gemm_f32(kern, (m, g.oc, kdim), scratch, kdim, w, bias, y, g.oc, act)
}

/// Depthwise int8 convolution, NHWC, weights `[kh][kw][c]` widened to i16 at packing.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_i8(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[u8],
    x_zero: i32,
    w: &[i16],
    bias: Option<&[i32]>,
    scale: &[f32],
    (y_zero, qmin, qmax): (i32, i32, i32),
    y: &mut [u8],
) -> Result<(), ShapeError> {
    const OP: &str = "depthwise_i8";
    let c = g.ic;
    if c == 0
        || g.groups != c
        || g.oc != c
        || g.stride_h != g.stride_w
        || g.dil_h != 1
        || g.dil_w != 1
        || g.stride_h == 0
    {
        return Err(ShapeError {
            op: OP,
            what: "depthwise geometry",
            expected: c,
            got: g.groups,
        });
    }
    geom_bounds(OP, g)?;
    need(OP, "padded height", g.kh, g.h + g.pad_top + g.pad_bottom)?;
    need(OP, "padded width", g.kw, g.w + g.pad_left + g.pad_right)?;
    if g.h
        .checked_mul(g.w)
        .and_then(|v| v.checked_mul(c))
        .is_none()
        || g.oh()
            .checked_mul(g.ow())
            .and_then(|v| v.checked_mul(c))
            .is_none()
    {
        return Err(ShapeError {
            op: OP,
            what: "geometry overflows",
            expected: usize::MAX,
            got: 0,
        });
    }
    need(OP, "x", g.h * g.w * c, x.len())?;
    need(OP, "weights", g.kh * g.kw * c, w.len())?;
    need(OP, "scale", c, scale.len())?;
    if let Some(b) = bias {
        need(OP, "bias", c, b.len())?;
    }
    need(OP, "y", g.oh() * g.ow() * c, y.len())?;
    let args = DwI8Args {
        h: g.h,
        w: g.w,
        c,
        kh: g.kh,
        kw: g.kw,
        stride: g.stride_h,
        pad_top: g.pad_top,
        pad_left: g.pad_left,
        oh: g.oh(),
        ow: g.ow(),
        x: x.as_ptr(),
        x_zero,
        weights: w.as_ptr(),
        bias: bias.map_or(core::ptr::null(), |b| b.as_ptr()),
        scale: scale.as_ptr(),
        y: y.as_mut_ptr(),
        y_zero,
        qmin,
        qmax,
    };
    // SAFETY: extents checked above; the kernel's features were detected.
    unsafe { (kern.dw_i8.f)(&args) };
    Ok(())
}

/// Max pool over NHWC u8. Taking the max of quantised codes is exact for any positive
/// scale, so the quantised tensor keeps its parameters. Padded positions are ignored.
pub fn max_pool_u8(kern: &Kernels, g: &ConvGeom, x: &[u8], y: &mut [u8]) -> Result<(), ShapeError> {
    pool_check("max_pool_u8", g, x.len(), y.len())?;
    // SAFETY: geometry and extents checked above; the tier's features were detected.
    unsafe { (kern.ew.f.max_pool_u8)(g, x, y) };
    Ok(())
}

/// Max pool over NHWC f32; padded positions are ignored.
pub fn max_pool_f32(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), ShapeError> {
    pool_check("max_pool_f32", g, x.len(), y.len())?;
    // SAFETY: geometry and extents checked above; the tier's features were detected.
    unsafe { (kern.ew.f.max_pool_f32)(g, x, y) };
    Ok(())
}

/// Depthwise f32 convolution over NHWC (one image): weights `[kh][kw][c]`, `bias` of `c`
/// values or empty; each output is its bias, then its taps inside the image in order
/// ([`crate::elementwise::depthwise_f32`], bit-exact on every tier).
pub fn depthwise_f32(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
) -> Result<(), ShapeError> {
    const OP: &str = "depthwise_f32";
    if g.groups != g.ic {
        return Err(ShapeError {
            op: OP,
            what: "groups (one per channel)",
            expected: g.ic,
            got: g.groups,
        });
    }
    pool_check(OP, g, x.len(), y.len())?;
    need(OP, "weights", g.kh * g.kw * g.ic, w.len())?;
    if !bias.is_empty() {
        need(OP, "bias", g.ic, bias.len())?;
    }
    // SAFETY: geometry and extents checked above; the tier's features were detected.
    unsafe { (kern.ew.f.depthwise_f32)(g, x, w, bias, y) };
    Ok(())
}

/// A pooling geometry is well formed and `x`, `y` hold it.
fn pool_check(op: &'static str, g: &ConvGeom, xl: usize, yl: usize) -> Result<(), ShapeError> {
    if g.ic == 0
        || g.oc != g.ic
        || g.kh == 0
        || g.kw == 0
        || g.stride_h == 0
        || g.stride_w == 0
        || g.dil_h == 0
        || g.dil_w == 0
    {
        return Err(ShapeError {
            op,
            what: "pooling geometry",
            expected: g.ic,
            got: g.oc,
        });
    }
    geom_bounds(op, g)?;
    need(
        op,
        "padded height",
        g.dil_h * (g.kh - 1) + 1,
        g.h + g.pad_top + g.pad_bottom,
    )?;
    need(
        op,
        "padded width",
        g.dil_w * (g.kw - 1) + 1,
        g.w + g.pad_left + g.pad_right,
    )?;
    // Fields ≤ 2^16 each: the products below fit 64-bit usize but not always 32-bit.
    let (inl, outl) = (
        g.h.checked_mul(g.w).and_then(|v| v.checked_mul(g.ic)),
        g.oh().checked_mul(g.ow()).and_then(|v| v.checked_mul(g.ic)),
    );
    let (Some(inl), Some(outl)) = (inl, outl) else {
        return Err(ShapeError {
            op,
            what: "geometry overflows",
            expected: usize::MAX,
            got: 0,
        });
    };
    need(op, "x", inl, xl)?;
    need(op, "y", outl, yl)?;
    Ok(())
}

/// Per-channel table lookup over NHWC u8: `y[i] = table[(i % channels)·256 + x[i]]`.
/// Any elementwise function between two quantised tensors (an activation, a clamp, a
/// batch norm) is exactly such a table.
pub fn lut_u8(
    kern: &Kernels,
    x: &[u8],
    channels: usize,
    table: &[u8],
    y: &mut [u8],
) -> Result<(), ShapeError> {
    const OP: &str = "lut_u8";
    if channels == 0 || !x.len().is_multiple_of(channels) {
        return Err(ShapeError {
            op: OP,
            what: "channels",
            expected: x.len(),
            got: channels,
        });
    }
    need(OP, "table", channels * 256, table.len())?;
    need(OP, "y", x.len(), y.len())?;
    if channels == 1 {
        // SAFETY: 256 entries and `x.len()` outputs checked above; the tier's features
        // were detected.
        unsafe { (kern.ew.f.lut_u8)(x, &table[..256], &mut y[..x.len()]) };
    } else {
        // One 256-entry table per channel: a code indexes it without a bounds check.
        let (tables, _) = table[..channels * 256].as_chunks::<256>();
        for (xr, yr) in x.chunks_exact(channels).zip(y.chunks_exact_mut(channels)) {
            for ((o, &v), t) in yr.iter_mut().zip(xr).zip(tables) {
                *o = t[v as usize];
            }
        }
    }
    Ok(())
}

/// An f32 activation, applied in place by the chosen elementwise tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryF32 {
    Relu,
    Relu6,
    HardSwish,
    Sigmoid,
    GeluErf,
    GeluTanh,
    Erf,
}

/// Whether the kernels' elementwise tier runs fused programs ([`program_f32`]).
#[cfg(feature = "std")]
pub fn fused_programs(kern: &Kernels) -> bool {
    use crate::registry::Tier;
    cfg!(target_arch = "x86_64")
        && matches!(
            kern.ew.tier,
            Tier::Avx2 | Tier::AvxVnni | Tier::Avx512 | Tier::Avx512Vnni
        )
}

/// Runs template `t` of [`crate::ew::prog::TEMPLATES`] over `y` with runs `srcs` and
/// constants `consts` (in their order of use) on the kernels' elementwise tier where it
/// has the fused form (AVX2, AVX-512): `Ok(false)` on the others, which run the ops one
/// by one. Every run holds `y.len()` values or more.
#[cfg(feature = "std")]
pub fn program_f32(
    kern: &Kernels,
    t: usize,
    srcs: &[&[f32]],
    consts: &[f32],
    y: &mut [f32],
) -> Result<bool, ShapeError> {
    use crate::ew::prog::{CONSTS, SRCS, TEMPLATES};
    const OP: &str = "program_f32";
    if t >= TEMPLATES.len() || srcs.len() > SRCS || consts.len() > CONSTS {
        return Err(ShapeError {
            op: OP,
            what: "a template, its runs and constants",
            expected: TEMPLATES.len(),
            got: t,
        });
    }
    let mut s: [&[f32]; SRCS] = [&[]; SRCS];
    for (d, v) in s.iter_mut().zip(srcs) {
        need(OP, "run values", y.len(), v.len().min(y.len()))?;
        *d = v;
    }
    // A run the template reads but the caller did not give.
    let reads = |k: usize| {
        TEMPLATES[t]
            .iter()
            .any(|i| [i.l, i.r].contains(&crate::ew::prog::Opd::Src(k as u8)))
    };
    if (srcs.len()..SRCS).any(reads) {
        return Err(ShapeError {
            op: OP,
            what: "runs",
            expected: SRCS,
            got: srcs.len(),
        });
    }
    let mut k = [0.0f32; CONSTS];
    k[..consts.len()].copy_from_slice(consts);
    if !fused_programs(kern) {
        return Ok(false);
    }
    #[cfg(target_arch = "x86_64")]
    {
        use crate::registry::Tier;
        if matches!(kern.ew.tier, Tier::Avx512 | Tier::Avx512Vnni) {
            // SAFETY: template, runs and constants checked above; the tier was chosen
            // because the CPU has its features (AVX-512F).
            unsafe { crate::x86_64::program__avx512(t, &s, &k, y) };
        } else {
            // SAFETY: as above (the AVX2 tier: AVX2 and FMA).
            unsafe { crate::x86_64::program__avx2(t, &s, &k, y) };
        }
        return Ok(true);
    }
    #[allow(unreachable_code)]
    Ok(false)
}

pub fn unary_f32(kern: &Kernels, f: UnaryF32, x: &mut [f32]) {
    let t = kern.ew.f;
    let g = match f {
        UnaryF32::Relu => t.relu,
        UnaryF32::Relu6 => t.relu6,
        UnaryF32::HardSwish => t.hard_swish,
        UnaryF32::Sigmoid => t.sigmoid,
        UnaryF32::GeluErf => t.gelu_erf,
        UnaryF32::GeluTanh => t.gelu_tanh,
        UnaryF32::Erf => t.erf,
    };
    // SAFETY: the slice bounds the kernel; the tier's features were detected.
    unsafe { g(x) }
}

fn same(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), ShapeError> {
    if expected != got {
        return Err(ShapeError {
            op,
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// `y = a + b`, f32, equal lengths.
pub fn add_f32(kern: &Kernels, a: &[f32], b: &[f32], y: &mut [f32]) -> Result<(), ShapeError> {
    same("add_f32", "b", a.len(), b.len())?;
    same("add_f32", "y", a.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.add_f32)(a, b, y) };
    Ok(())
}

/// The least and the greatest of `x` and 0, NaN ignored: DynamicQuantizeLinear's range.
pub fn range0_f32(kern: &Kernels, x: &[f32]) -> (f32, f32) {
    let mut out = [0.0f32; 2];
    // SAFETY: `out` holds 2 values; the tier's features were detected.
    unsafe { (kern.ew.f.range0_f32)(x, &mut out) };
    (out[0], out[1])
}

/// `y = a - b`, f32, equal lengths.
pub fn sub_f32(kern: &Kernels, a: &[f32], b: &[f32], y: &mut [f32]) -> Result<(), ShapeError> {
    same("sub_f32", "b", a.len(), b.len())?;
    same("sub_f32", "y", a.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.sub_f32)(a, b, y) };
    Ok(())
}

/// `y = a / b`, f32, equal lengths.
pub fn div_f32(kern: &Kernels, a: &[f32], b: &[f32], y: &mut [f32]) -> Result<(), ShapeError> {
    same("div_f32", "b", a.len(), b.len())?;
    same("div_f32", "y", a.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.div_f32)(a, b, y) };
    Ok(())
}

/// `y = a · b`, f32, equal lengths.
pub fn mul_f32(kern: &Kernels, a: &[f32], b: &[f32], y: &mut [f32]) -> Result<(), ShapeError> {
    same("mul_f32", "b", a.len(), b.len())?;
    same("mul_f32", "y", a.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.mul_f32)(a, b, y) };
    Ok(())
}

/// QLinearAdd over u8, equal lengths (see [`crate::elementwise::add_u8`]).
pub fn add_u8(
    kern: &Kernels,
    a: &[u8],
    qa: Q8,
    b: &[u8],
    qb: Q8,
    y: &mut [u8],
    qy: Q8,
) -> Result<(), ShapeError> {
    same("add_u8", "b", a.len(), b.len())?;
    same("add_u8", "y", a.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.add_u8)(a, qa, b, qb, y, qy) };
    Ok(())
}

/// Global average pool over NHWC u8 (`hw` positions × `c` channels), requantised.
pub fn gap_u8(
    kern: &Kernels,
    x: &[u8],
    hw: usize,
    c: usize,
    qx: Q8,
    y: &mut [u8],
    qy: Q8,
) -> Result<(), ShapeError> {
    let n = hw.checked_mul(c).ok_or(ShapeError {
        op: "gap_u8",
        what: "hw·c overflows",
        expected: usize::MAX,
        got: 0,
    })?;
    need("gap_u8", "x", n, x.len())?;
    need("gap_u8", "y", c, y.len())?;
    if hw == 0 {
        return Err(ShapeError {
            op: "gap_u8",
            what: "positions",
            expected: 1,
            got: 0,
        });
    }
    // SAFETY: extents checked; the tier's features were detected.
    unsafe { (kern.ew.f.gap_u8)(x, hw, c, qx, y, qy) };
    Ok(())
}

/// Global average pool over NHWC f32.
pub fn gap_f32(
    kern: &Kernels,
    x: &[f32],
    hw: usize,
    c: usize,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    let n = hw.checked_mul(c).ok_or(ShapeError {
        op: "gap_f32",
        what: "hw·c overflows",
        expected: usize::MAX,
        got: 0,
    })?;
    need("gap_f32", "x", n, x.len())?;
    need("gap_f32", "y", c, y.len())?;
    // SAFETY: extents checked; the tier's features were detected.
    unsafe { (kern.ew.f.gap_f32)(x, hw, c, y) };
    Ok(())
}

fn rows(op: &'static str, len: usize, cols: usize) -> Result<(), ShapeError> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(ShapeError {
            op,
            what: "row length",
            expected: len,
            got: cols,
        });
    }
    Ok(())
}

/// [`crate::pack::pack_f32_t`]: the packing of `aᵀ` for row-major `a[n×k]`, each whole panel
/// one transpose of 16 rows of `a` on the tier's kernel (the panel is those rows'
/// transpose), the last partial one by the scalar packing. A copy: the same values.
///
/// # Panics
/// When `a` holds fewer than `n·k` values or `out` fewer than `packed_f32_len(k, n)`.
pub fn pack_f32_t(kern: &Kernels, a: &[f32], n: usize, k: usize, out: &mut [f32]) {
    use crate::pack::F32_NR;
    assert!(a.len() >= n * k && out.len() >= packed_f32_len(k, n));
    let whole = n / F32_NR;
    let (head, rest) = out[..packed_f32_len(k, n)].split_at_mut(whole * k * F32_NR);
    for (p, panel) in head.chunks_exact_mut((k * F32_NR).max(1)).enumerate() {
        let rows = &a[p * F32_NR * k..(p + 1) * F32_NR * k];
        // `rows` holds the 16 × k matrix and the first column is 0: no error.
        let _ = transpose_f32(kern, rows, F32_NR, k, 0, panel);
    }
    crate::pack::pack_f32_t_panels(a, n, k, whole, rest);
}

/// Columns `c0..` of the `rows × cols` matrix `x` as rows of `y` (`y[c][r] = x[r][c0 +
/// c]`), as many as `y` holds (at most `cols - c0`).
pub fn transpose_f32(
    kern: &Kernels,
    x: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    need("transpose_f32", "x", rows.saturating_mul(cols), x.len())?;
    need("transpose_f32", "columns", c0, cols)?;
    // SAFETY: `x` holds the matrix and `c0 <= cols`; the tier's features were detected.
    unsafe { (kern.ew.f.transpose_f32)(x, rows, cols, c0, y) };
    Ok(())
}

/// Softmax over each row of `cols` values, in place.
pub fn softmax(kern: &Kernels, x: &mut [f32], cols: usize) -> Result<(), ShapeError> {
    rows("softmax", x.len(), cols)?;
    // SAFETY: rows checked; the tier's features were detected.
    unsafe { (kern.ew.f.softmax)(x, cols) };
    Ok(())
}

/// Layer norm over each row of `cols` values, in place: `(x-μ)/sqrt(σ²+eps)·γ + β`.
pub fn layer_norm(
    kern: &Kernels,
    x: &mut [f32],
    cols: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), ShapeError> {
    rows("layer_norm", x.len(), cols)?;
    need("layer_norm", "gamma", cols, gamma.len())?;
    need("layer_norm", "beta", cols, beta.len())?;
    // SAFETY: rows and parameters checked; the tier's features were detected.
    unsafe { (kern.ew.f.layer_norm)(x, cols, gamma, beta, eps) };
    Ok(())
}

/// `y = saturate(round(x / scale) + zero)`, u8.
pub fn quantize_u8(
    kern: &Kernels,
    x: &[f32],
    scale: f32,
    zero: i32,
    y: &mut [u8],
) -> Result<(), ShapeError> {
    same("quantize_u8", "y", x.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.quantize_u8)(x, scale, zero, y) };
    Ok(())
}

/// `y = saturate(round(x / scale) + zero)`, i8.
pub fn quantize_i8(
    kern: &Kernels,
    x: &[f32],
    scale: f32,
    zero: i32,
    y: &mut [i8],
) -> Result<(), ShapeError> {
    same("quantize_i8", "y", x.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.quantize_i8)(x, scale, zero, y) };
    Ok(())
}

/// `y = (x - zero) · scale` from u8.
pub fn dequantize_u8(
    kern: &Kernels,
    x: &[u8],
    scale: f32,
    zero: i32,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    same("dequantize_u8", "y", x.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.dequantize_u8)(x, scale, zero, y) };
    Ok(())
}

/// `y = (x - zero) · scale` from i8.
pub fn dequantize_i8(
    kern: &Kernels,
    x: &[i8],
    scale: f32,
    zero: i32,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    same("dequantize_i8", "y", x.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.dequantize_i8)(x, scale, zero, y) };
    Ok(())
}

/// f32 → f16, round to nearest even.
pub fn f32_to_f16(kern: &Kernels, x: &[f32], y: &mut [half::f16]) -> Result<(), ShapeError> {
    same("f32_to_f16", "y", x.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.f32_to_f16)(x, y) };
    Ok(())
}

/// f16 → f32 (exact).
pub fn f16_to_f32(kern: &Kernels, x: &[half::f16], y: &mut [f32]) -> Result<(), ShapeError> {
    same("f16_to_f32", "y", x.len(), y.len())?;
    // SAFETY: lengths checked; the tier's features were detected.
    unsafe { (kern.ew.f.f16_to_f32)(x, y) };
    Ok(())
}
