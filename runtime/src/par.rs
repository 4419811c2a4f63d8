//! Intra-op parallelism. On std builds a [`Par`] can own a small pool of worker threads;
//! an op splits its output into disjoint parts (rows of a convolution's output map, rows
//! or 16-column panels of a GEMM, runs of an elementwise op) and each part is computed
//! exactly as one thread computes the whole, so results are bit-identical for every thread
//! count. The calling thread computes the first part itself. no_std builds run every part
//! on the calling thread.

#[cfg(feature = "std")]
use crate::error::Error;
use crate::error::Result;
use alloc::vec::Vec;
use edgetune_kernels::elementwise::Q8;
use edgetune_kernels::ops::{self as kops, I8Dst, I8Quant};
use edgetune_kernels::pack::{packed_i8_len, I8_NR};
use edgetune_kernels::reference::ConvGeom;
#[cfg(feature = "std")]
use edgetune_kernels::winograd as wino;
use edgetune_kernels::{Act, Kernels};

/// Most threads a pool takes.
pub const MAX_THREADS: usize = 64;

/// Multiply-adds (or element visits) below which an op is not split: waking a worker
/// costs microseconds, about what this much work takes on one core.
/// (Unit tests split the smallest ops, to test every split.)
pub(crate) const MIN_WORK_PER_PART: usize = if cfg!(test) { 1 } else { 1 << 17 };

/// The threads an executor may use for one op.
#[derive(Clone, Default)]
pub struct Par {
    #[cfg(feature = "std")]
    pool: Option<alloc::sync::Arc<pool::Pool>>,
}

impl core::fmt::Debug for Par {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Par({} threads)", self.threads())
    }
}

impl Par {
    /// One thread: the caller's.
    pub fn single() -> Self {
        Par::default()
    }

    /// `threads` threads in all (the caller and `threads - 1` workers); 0 means the
    /// process default ([`set_default_threads`]; unless set, one per available core).
    #[cfg(feature = "std")]
    pub fn new(threads: usize) -> Result<Self> {
        let n = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        if n > MAX_THREADS {
            return Err(Error::Invalid {
                what: alloc::format!("threads: {n} is more than {MAX_THREADS}"),
            });
        }
        if n <= 1 {
            return Ok(Par::single());
        }
        let pool = pool::Pool::new(n - 1).map_err(|e| Error::Invalid {
            what: alloc::format!("threads: cannot start {} workers: {e}", n - 1),
        })?;
        Ok(Par {
            pool: Some(alloc::sync::Arc::new(pool)),
        })
    }

    /// Threads an op may use, the caller's included.
    pub fn threads(&self) -> usize {
        #[cfg(feature = "std")]
        if let Some(p) = &self.pool {
            return p.workers() + 1;
        }
        1
    }

    /// Parts to split `n` units into, when the whole costs `work`: at most one per thread
    /// and per unit, and none smaller than [`MIN_WORK_PER_PART`].
    pub fn parts(&self, n: usize, work: usize) -> usize {
        self.threads().min(n).min(work / MIN_WORK_PER_PART).max(1)
    }

    /// Calls `f` on every item, on the calling thread and the workers, and returns when
    /// all are done (the first error, if any).
    pub fn each<T: Send>(&self, items: Vec<T>, f: impl Fn(T) -> Result<()> + Sync) -> Result<()> {
        #[cfg(feature = "std")]
        if let (Some(pool), true) = (&self.pool, items.len() > 1) {
            use std::sync::Mutex;
            let err: Mutex<Option<Error>> = Mutex::new(None);
            let slots: Vec<Mutex<Option<T>>> =
                items.into_iter().map(|x| Mutex::new(Some(x))).collect();
            let run = |i: usize| {
                let item = slots[i].lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(x) = item {
                    if let Err(e) = f(x) {
                        err.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            };
            if !pool.run(slots.len(), &run) {
                // Another thread holds this pool: the caller does every part.
                (0..slots.len()).for_each(run);
            }
            return match err.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        items.into_iter().try_for_each(f)
    }
}

impl Par {
    /// Calls `f(i)` for every `i < count`, each on a thread of its own, all at once, and
    /// returns when all are done: `false` (nothing run) when the threads cannot take them
    /// at once (more parts than threads, or the pool is in use by another caller). Parts
    /// may wait for each other; under [`each`](Self::each) they might run one after another.
    #[cfg(feature = "std")]
    pub(crate) fn each_at_once(&self, count: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        match &self.pool {
            Some(pool) if count <= pool.workers() + 1 => pool.run_at_once(count, f),
            _ => false,
        }
    }
}

#[cfg(feature = "std")]
static DEFAULT_THREADS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The thread count `Par::new(0)` (and so every new `Session`) takes; 0 restores one per
/// available core. The CLI's `--threads` sets it.
#[cfg(feature = "std")]
pub fn set_default_threads(threads: usize) {
    DEFAULT_THREADS.store(threads, core::sync::atomic::Ordering::Relaxed);
}

#[cfg(feature = "std")]
std::thread_local! {
    /// This thread's own default (0: the process's).
    static THREAD_DEFAULT: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// The thread count `Par::new(0)` takes on the calling thread only (0 restores the
/// process default): a thread that shares the cores with others doing the same work
/// (episodes side by side) gives its ops its share of them.
#[cfg(feature = "std")]
pub fn set_thread_default(threads: usize) {
    THREAD_DEFAULT.with(|c| c.set(threads));
}

/// The thread count `Par::new(0)` takes.
#[cfg(feature = "std")]
pub fn default_threads() -> usize {
    let own = THREAD_DEFAULT.with(|c| c.get());
    if own > 0 {
        return own;
    }
    match DEFAULT_THREADS.load(core::sync::atomic::Ordering::Relaxed) {
        0 => available_threads(),
        d => d,
    }
}

/// Cores this process may use (1 when unknown, and under Miri, where spinning workers
/// would only slow the interpreter down).
#[cfg(feature = "std")]
pub fn available_threads() -> usize {
    if cfg!(miri) {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `n` units in `parts` contiguous runs, as even as can be.
pub fn runs(n: usize, parts: usize) -> impl Iterator<Item = core::ops::Range<usize>> {
    let parts = parts.max(1);
    (0..parts).map(move |p| n * p / parts..n * (p + 1) / parts)
}

/// Output rows `r0..r1` of a convolution as a convolution of their own: the input rows
/// they read (from the returned first row) and the padding among them. Each output pixel
/// of the part reads the same inputs and padding as in the whole.
pub fn conv_rows(g: &ConvGeom, r0: usize, r1: usize) -> (ConvGeom, usize) {
    let eh = g.dil_h * (g.kh - 1) + 1;
    // Padded coordinates of the first and one past the last input row read.
    let start = r0 * g.stride_h;
    let end = (r1 - 1) * g.stride_h + eh;
    let (top, bottom) = (g.pad_top, g.pad_top + g.h);
    if start >= bottom || end <= top {
        // Only padding: no convolution of its own (h = 0 tells the caller).
        return (ConvGeom { h: 0, ..*g }, 0);
    }
    let (lo, hi) = (start.max(top), end.min(bottom));
    let sub = ConvGeom {
        h: hi - lo,
        pad_top: lo - start,
        pad_bottom: end - hi,
        ..*g
    };
    (sub, lo - top)
}

fn split_rows<T>(mut v: &mut [T], sizes: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for n in sizes {
        let at = n.min(v.len());
        let (a, b) = core::mem::take(&mut v).split_at_mut(at);
        out.push(a);
        v = b;
    }
    out
}

enum DstPart<'a> {
    U8(&'a mut [u8]),
    I8(&'a mut [i8]),
    F32(&'a mut [f32]),
}

impl<'a> DstPart<'a> {
    fn as_dst(&mut self) -> I8Dst<'_> {
        match self {
            DstPart::U8(v) => I8Dst::U8(v),
            DstPart::I8(v) => I8Dst::I8(v),
            DstPart::F32(v) => I8Dst::F32(v),
        }
    }
}

/// Splits an int8 GEMM's output into runs of `sizes` elements.
fn split_dst<'a>(y: I8Dst<'a>, sizes: &[usize]) -> Vec<DstPart<'a>> {
    let it = sizes.iter().copied();
    match y {
        I8Dst::U8(v) => split_rows(v, it).into_iter().map(DstPart::U8).collect(),
        I8Dst::I8(v) => split_rows(v, it).into_iter().map(DstPart::I8).collect(),
        I8Dst::F32(v) => split_rows(v, it).into_iter().map(DstPart::F32).collect(),
    }
}

/// Bytes of im2col rows a convolution builds before multiplying them: its blocks of
/// output rows stay in L2 between the two passes rather than going out to memory. (Unit
/// tests take one output row per block, to test the blocks.)
const IM2COL_BLOCK_BYTES: usize = if cfg!(test) { 1 } else { 256 << 10 };

/// Output rows `r0..r1` of `g` in blocks whose im2col rows (`elem` bytes each value) fit
/// [`IM2COL_BLOCK_BYTES`]: `(sub-geometry, first input row)` per block,
/// each block's rows computed as the whole's are. None when a block would read only
/// padding, or for a convolution without im2col (the caller then runs the rows whole).
fn im2col_blocks(
    g: &ConvGeom,
    r0: usize,
    r1: usize,
    elem: usize,
) -> Option<impl Iterator<Item = (ConvGeom, usize)> + '_> {
    // Firmware maps are far smaller than a block: no_std builds leave the blocks out.
    if !cfg!(feature = "std") || kops::conv_scratch_len(g) == 0 {
        return None;
    }
    let row_bytes = g.ow() * g.kh * g.kw * g.ic * elem;
    let block = (IM2COL_BLOCK_BYTES / row_bytes.max(1)).max(1);
    let blocks = (r0..r1)
        .step_by(block)
        .map(move |b0| conv_rows(g, b0, (b0 + block).min(r1)));
    let whole = blocks.clone().all(|(sub, _)| sub.h > 0);
    whole.then_some(blocks)
}

/// Output rows `r` of `g` by the blocks of [`im2col_blocks`] (or whole when there are
/// none): `f(sub-geometry, input from its first row, output values)` per block, in order.
fn by_blocks(
    g: &ConvGeom,
    r: core::ops::Range<usize>,
    elem: usize,
    x_len: usize,
    mut f: impl FnMut(&ConvGeom, usize, usize) -> Result<()>,
) -> Result<()> {
    let (sub, first) = conv_rows(g, r.start, r.end);
    let at = |first: usize| (first * g.w * g.ic).min(x_len);
    match im2col_blocks(g, r.start, r.end, elem).filter(|_| sub.h > 0) {
        Some(blocks) => {
            for (sub, first) in blocks {
                f(&sub, at(first), sub.oh() * g.ow() * g.oc)?;
            }
            Ok(())
        }
        None => f(&sub, at(first), r.len() * g.ow() * g.oc),
    }
}

/// Output rows `r` of a dense f32 convolution (`y` and `scratch` hold theirs).
#[allow(clippy::too_many_arguments)]
fn conv_f32_rows(
    kern: &Kernels,
    g: &ConvGeom,
    r: core::ops::Range<usize>,
    x: &[f32],
    w: &[f32],
    (bias, act): (Option<&[f32]>, Act),
    scratch: &mut [f32],
    y: &mut [f32],
) -> Result<()> {
    let mut rest = y;
    by_blocks(g, r, 4, x.len(), |sub, at, n| {
        let n = n.min(rest.len());
        let (yb, tail) = core::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        Ok(kops::conv_f32(
            kern,
            sub,
            &x[at..],
            w,
            bias,
            act,
            scratch,
            yb,
        )?)
    })
}

/// Output rows `r` of a dense int8 convolution.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_i8_rows(
    kern: &Kernels,
    g: &ConvGeom,
    r: core::ops::Range<usize>,
    x: &[u8],
    w: &[i8],
    q: &I8Quant,
    scratch: &mut [u8],
    y: I8Dst,
) -> Result<()> {
    let mut rest = Some(y);
    by_blocks(g, r, 1, x.len(), |sub, at, n| {
        let (yb, tail) = match rest.take() {
            Some(I8Dst::U8(v)) => {
                let (a, b) = v.split_at_mut(n.min(v.len()));
                (I8Dst::U8(a), I8Dst::U8(b))
            }
            Some(I8Dst::I8(v)) => {
                let (a, b) = v.split_at_mut(n.min(v.len()));
                (I8Dst::I8(a), I8Dst::I8(b))
            }
            Some(I8Dst::F32(v)) => {
                let (a, b) = v.split_at_mut(n.min(v.len()));
                (I8Dst::F32(a), I8Dst::F32(b))
            }
            None => return Ok(()),
        };
        rest = Some(tail);
        Ok(kops::conv_i8(kern, sub, &x[at..], w, q, scratch, yb)?)
    })
}

/// The runs of `n` units in `parts`, or none when there is one part: the op then runs
/// whole, and one thread (every op of a no_std build) allocates nothing.
fn parts_of(n: usize, parts: usize) -> Vec<core::ops::Range<usize>> {
    if parts <= 1 {
        return Vec::new();
    }
    runs(n, parts).collect()
}

/// Rows of each part of an output map `oh` rows high, for `work` multiply-adds.
fn row_parts(par: &Par, oh: usize, work: usize) -> Vec<core::ops::Range<usize>> {
    parts_of(oh, par.parts(oh, work))
}

/// [`kops::conv_i8`] with its output rows spread over the threads.
pub fn conv_i8(
    par: &Par,
    kern: &Kernels,
    g: &ConvGeom,
    x: &[u8],
    w: &[i8],
    q: &I8Quant,
    scratch: &mut [u8],
    y: I8Dst,
) -> Result<()> {
    if !sane(g) {
        return Ok(kops::conv_i8(kern, g, x, w, q, scratch, y)?);
    }
    let (oh, ow) = (g.oh(), g.ow());
    if let Some(m) = pointwise_rows(g, par) {
        // A 1×1 convolution is a GEMM over its pixels: split them evenly (a 7×7 map in
        // 25 and 24 pixels rather than 4 and 3 rows), or one pixel's output channels.
        return gemm_i8(par, kern, (m, g.oc, g.ic), x, g.ic, w, q, y);
    }
    let work = oh * ow * g.oc * g.kh * g.kw * g.ic;
    let rows = row_parts(par, oh, work);
    if rows.len() <= 1 || conv_rows_empty(g, &rows) {
        return conv_i8_rows(kern, g, 0..oh, x, w, q, scratch, y);
    }
    let kdim = g.kh * g.kw * g.ic;
    let ysizes: Vec<usize> = rows.iter().map(|r| r.len() * ow * g.oc).collect();
    let pointwise = kops::conv_scratch_len(g) == 0;
    let ssizes: Vec<usize> = rows
        .iter()
        .map(|r| if pointwise { 0 } else { r.len() * ow * kdim })
        .collect();
    let ys = split_dst(y, &ysizes);
    let ss = split_rows(scratch, ssizes.iter().copied());
    let items: Vec<_> = rows.into_iter().zip(ys).zip(ss).collect();
    par.each(items, |((r, mut yp), sp)| {
        conv_i8_rows(kern, g, r, x, w, q, sp, yp.as_dst())
    })
}

/// A geometry whose output size can be computed (every field at most 2^16, strides,
/// dilations and kernel sizes at least 1, the dilated kernel inside the padded input).
/// Any other goes to the kernels' own entry points, which refuse it with the reason.
pub(crate) fn sane(g: &ConvGeom) -> bool {
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
    fields.iter().all(|&v| v <= 1 << 16)
        && [g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w]
            .iter()
            .all(|&v| v >= 1)
        && g.h + g.pad_top + g.pad_bottom > g.dil_h * (g.kh - 1)
        && g.w + g.pad_left + g.pad_right > g.dil_w * (g.kw - 1)
}

/// Pixels of a 1×1, stride-1, unpadded, ungrouped convolution worth splitting as a GEMM;
/// None for any other (or an ill-formed) geometry, which takes the convolution's own path
/// and checks.
fn pointwise_rows(g: &ConvGeom, par: &Par) -> Option<usize> {
    let pointwise = g.groups == 1
        && g.ic > 0
        && g.oc > 0
        && g.dil_h > 0
        && g.dil_w > 0
        && kops::conv_scratch_len(g) == 0
        && g.h <= 1 << 16
        && g.w <= 1 << 16;
    let m = g.h.checked_mul(g.w)?;
    let work = m.checked_mul(g.oc)?.checked_mul(g.ic)?;
    (pointwise && par.threads() > 1 && work >= 2 * MIN_WORK_PER_PART).then_some(m)
}

/// A part that reads no input row (all padding) is left to the whole-op path.
fn conv_rows_empty(g: &ConvGeom, rows: &[core::ops::Range<usize>]) -> bool {
    rows.iter().any(|r| conv_rows(g, r.start, r.end).0.h == 0)
}

/// [`kops::conv_f32`] with its output rows spread over the threads.
pub fn conv_f32(
    par: &Par,
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    scratch: &mut [f32],
    y: &mut [f32],
) -> Result<()> {
    if !sane(g) {
        return Ok(kops::conv_f32(kern, g, x, w, bias, act, scratch, y)?);
    }
    #[cfg(feature = "std")]
    if wino::eligible(g) && w.len() == wino::weights_len(g.ic, g.oc) {
        return conv3x3_winograd(par, kern, g, x, w, (bias, act), scratch, y);
    }
    let (oh, ow) = (g.oh(), g.ow());
    if let Some(m) = pointwise_rows(g, par) {
        if x.len() < m * g.ic {
            return Ok(kops::conv_f32(kern, g, x, w, bias, act, scratch, y)?);
        }
        return gemm_f32(par, kern, (m, g.oc, g.ic), x, w, bias, y, act);
    }
    let work = oh * ow * g.oc * g.kh * g.kw * g.ic;
    let rows = row_parts(par, oh, work);
    if rows.len() <= 1 || conv_rows_empty(g, &rows) {
        return conv_f32_rows(kern, g, 0..oh, x, w, (bias, act), scratch, y);
    }
    let kdim = g.kh * g.kw * g.ic;
    let pointwise = kops::conv_scratch_len(g) == 0;
    let ys = split_rows(y, rows.iter().map(|r| r.len() * ow * g.oc));
    let ss = split_rows(
        scratch,
        rows.iter()
            .map(|r| if pointwise { 0 } else { r.len() * ow * kdim }),
    );
    let items: Vec<_> = rows.into_iter().zip(ys).zip(ss).collect();
    par.each(items, |((r, yp), sp)| {
        conv_f32_rows(kern, g, r, x, w, (bias, act), sp, yp)
    })
}

/// [`wino::conv3x3_f32`] (weights of that form: their length differs from the direct
/// form's) with its tile rows spread over the threads, as many parts as the scratch
/// holds blocks for.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)]
fn conv3x3_winograd(
    par: &Par,
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    u: &[f32],
    (bias, act): (Option<&[f32]>, Act),
    scratch: &mut [f32],
    y: &mut [f32],
) -> Result<()> {
    let (th, tw) = wino::tiles(g);
    let (oh, ow) = (g.oh(), g.ow());
    let block = wino::scratch_len(g, th * tw).max(1);
    // The multiply-adds of the direct form, the unit `parts` weighs work in.
    let work = [ow, g.oc, 9, g.ic]
        .iter()
        .fold(oh, |a, &d| a.saturating_mul(d));
    let n = par.parts(th, work).min(scratch.len() / block).max(1);
    let parts = parts_of(th, n);
    if parts.len() <= 1 {
        return Ok(wino::conv3x3_f32(
            kern,
            g,
            0..th,
            x,
            u,
            bias,
            act,
            scratch,
            y,
        )?);
    }
    let tile = wino::TILE;
    let ys = split_rows(
        y,
        parts
            .iter()
            .map(|r| ((r.end * tile).min(oh) - r.start * tile) * ow * g.oc),
    );
    let ss = split_rows(
        scratch,
        parts.iter().map(|r| wino::scratch_len(g, r.len() * tw)),
    );
    let items: Vec<_> = parts.into_iter().zip(ys).zip(ss).collect();
    par.each(items, |((r, yp), sp)| {
        Ok(wino::conv3x3_f32(kern, g, r, x, u, bias, act, sp, yp)?)
    })
}

/// [`kops::add_u8`] with its values spread over the threads in runs of 64 (each value is
/// requantised the same way on any thread). A value costs about sixteen multiply-adds: a
/// 14×14×112 map splits, a 14×14×80 one does not.
#[allow(clippy::too_many_arguments)]
pub fn add_u8(
    par: &Par,
    kern: &Kernels,
    a: &[u8],
    qa: Q8,
    b: &[u8],
    qb: Q8,
    y: &mut [u8],
    qy: Q8,
) -> Result<()> {
    let n = a.len();
    let units = n / 64;
    let parts = par.parts(units, n.saturating_mul(16));
    if parts <= 1 || b.len() != n || y.len() != n {
        return Ok(kops::add_u8(kern, a, qa, b, qb, y, qy)?);
    }
    let ranges: Vec<_> = runs(units, parts)
        .map(|r| r.start * 64..if r.end == units { n } else { r.end * 64 })
        .collect();
    let ys = split_rows(y, ranges.iter().map(|r| r.len()));
    let items: Vec<_> = ranges.into_iter().zip(ys).collect();
    par.each(items, |(r, yp)| {
        Ok(kops::add_u8(kern, &a[r.clone()], qa, &b[r], qb, yp, qy)?)
    })
}

/// [`kops::depthwise_i8`] with its output rows spread over the threads.
pub fn depthwise_i8(
    par: &Par,
    kern: &Kernels,
    g: &ConvGeom,
    x: &[u8],
    x_zero: i32,
    w: &[i16],
    bias: Option<&[i32]>,
    scale: &[f32],
    clamp: (i32, i32, i32),
    y: &mut [u8],
) -> Result<()> {
    if !sane(g) {
        return Ok(kops::depthwise_i8(
            kern, g, x, x_zero, w, bias, scale, clamp, y,
        )?);
    }
    let (oh, ow) = (g.oh(), g.ow());
    let work = oh * ow * g.ic * g.kh * g.kw;
    let rows = row_parts(par, oh, work);
    // The kernels take one stride for both axes: with a stride of its own per axis (OCR
    // networks stride (2, 1)), one output row at a time, whose height stride no longer
    // matters.
    let own = g.stride_h != g.stride_w;
    let row = ow * g.ic;
    // The whole op on the kernel: one part, or a short y (the kernel's error).
    if (!own && (rows.len() <= 1 || conv_rows_empty(g, &rows))) || y.len() < oh * row {
        return Ok(kops::depthwise_i8(
            kern, g, x, x_zero, w, bias, scale, clamp, y,
        )?);
    }
    let rows = if rows.is_empty() {
        alloc::vec![0..oh]
    } else {
        rows
    };
    let ys = split_rows(y, rows.iter().map(|r| r.len() * row));
    let items: Vec<_> = rows.into_iter().zip(ys).collect();
    par.each(items, |(r, yp)| {
        let step = if own { 1 } else { r.len() };
        for (i, yr) in yp.chunks_mut((step * row).max(1)).enumerate() {
            let r0 = r.start + i * step;
            let (sub, first) = conv_rows(g, r0, r0 + yr.len() / row.max(1));
            let stride_h = if own { g.stride_w } else { g.stride_h };
            let sub = ConvGeom { stride_h, ..sub };
            let xs = x.get(first * g.w * g.ic..).unwrap_or(&[]);
            kops::depthwise_i8(kern, &sub, xs, x_zero, w, bias, scale, clamp, yr)?;
        }
        Ok(())
    })
}

/// A float depthwise convolution `dw` over one NHWC image with its output rows spread over
/// the threads (each part computes its rows as the whole op does).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_f32(
    par: &Par,
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    dw: fn(&Kernels, &ConvGeom, &[f32], &[f32], &[f32], &mut [f32]) -> Result<()>,
) -> Result<()> {
    if !sane(g) {
        return dw(kern, g, x, w, bias, y);
    }
    let (oh, ow) = (g.oh(), g.ow());
    let rows = row_parts(par, oh, oh * ow * g.ic * g.kh * g.kw);
    if rows.len() <= 1 || conv_rows_empty(g, &rows) {
        return dw(kern, g, x, w, bias, y);
    }
    let ys = split_rows(y, rows.iter().map(|r| r.len() * ow * g.ic));
    let items: Vec<_> = rows.into_iter().zip(ys).collect();
    par.each(items, |(r, yp)| {
        let (sub, first) = conv_rows(g, r.start, r.end);
        let xs = x.get(first * g.w * g.ic..).unwrap_or(&[]);
        dw(kern, &sub, xs, w, bias, yp)
    })
}

/// [`kops::gemm_i8`] (`ldc == n`, dense rows) with rows spread over the threads, or for
/// a few rows, its 16-column panels.
pub fn gemm_i8(
    par: &Par,
    kern: &Kernels,
    (m, n, k): (usize, usize, usize),
    a: &[u8],
    lda: usize,
    b: &[i8],
    q: &I8Quant,
    c: I8Dst,
) -> Result<()> {
    let work = m * n * k;
    if m < 2 * par.threads() * 4 {
        return gemm_i8_cols(par, kern, (m, n, k), a, lda, b, q, c, n);
    }
    let parts = par.parts(m, work);
    let rows = parts_of(m, parts);
    if rows.len() <= 1 {
        return Ok(kops::gemm_i8(kern, (m, n, k), a, lda, b, q, c, n)?);
    }
    let cs = split_dst(c, &rows.iter().map(|r| r.len() * n).collect::<Vec<_>>());
    let items: Vec<_> = rows.into_iter().zip(cs).collect();
    par.each(items, |(r, mut cp)| {
        let ap = a.get(r.start * lda..).unwrap_or(&[]);
        Ok(kops::gemm_i8(
            kern,
            (r.len(), n, k),
            ap,
            lda,
            b,
            q,
            cp.as_dst(),
            n,
        )?)
    })
}

/// An int8 GEMM of few rows split by 16-column panels of B: each part reads its panels,
/// column sums, bias and scales and writes its columns of every row.
fn gemm_i8_cols(
    par: &Par,
    kern: &Kernels,
    (m, n, k): (usize, usize, usize),
    a: &[u8],
    lda: usize,
    b: &[i8],
    q: &I8Quant,
    c: I8Dst,
    ldc: usize,
) -> Result<()> {
    let panels = n.div_ceil(I8_NR);
    let parts = par.parts(panels, m * n * k);
    if parts <= 1 || m != 1 {
        return Ok(kops::gemm_i8(kern, (m, n, k), a, lda, b, q, c, ldc)?);
    }
    // One row: the output is `n` contiguous values, split at panel boundaries.
    let cols: Vec<_> = runs(panels, parts)
        .map(|p| p.start * I8_NR..(p.end * I8_NR).min(n))
        .collect();
    let cs = split_dst(c, &cols.iter().map(|r| r.len()).collect::<Vec<_>>());
    let panel = packed_i8_len(k, I8_NR);
    let items: Vec<_> = cols.into_iter().zip(cs).collect();
    par.each(items, |(cr, mut cp)| {
        let p0 = cr.start / I8_NR;
        let sub = I8Quant {
            colsum: q.colsum.get(cr.start..).unwrap_or(&[]),
            bias: q.bias.map(|b| b.get(cr.start..).unwrap_or(&[])),
            scale: q.scale.get(cr.start..).unwrap_or(&[]),
            ..*q
        };
        let bp = b.get(p0 * panel..).unwrap_or(&[]);
        Ok(kops::gemm_i8(
            kern,
            (1, cr.len(), k),
            a,
            lda,
            bp,
            &sub,
            cp.as_dst(),
            cr.len(),
        )?)
    })
}

/// [`kops::gemm_f32`] (`ldc == n`) with rows spread over the threads.
pub fn gemm_f32(
    par: &Par,
    kern: &Kernels,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    act: Act,
) -> Result<()> {
    let rows = parts_of(m, par.parts(m / 4, m * n * k));
    if rows.len() <= 1 {
        return Ok(kops::gemm_f32(kern, (m, n, k), a, k, b, bias, c, n, act)?);
    }
    let cs = split_rows(c, rows.iter().map(|r| r.len() * n));
    let items: Vec<_> = rows.into_iter().zip(cs).collect();
    par.each(items, |(r, cp)| {
        let ap = a.get(r.start * k..).unwrap_or(&[]);
        Ok(kops::gemm_f32(
            kern,
            (r.len(), n, k),
            ap,
            k,
            b,
            bias,
            cp,
            n,
            act,
        )?)
    })
}

/// Applies `f` to runs of `y` and the same runs of `x`, spread over the threads. Every
/// run starts at a multiple of `unit` values; the last takes the remainder.
pub fn map_runs<T: Send + Sync>(
    par: &Par,
    unit: usize,
    x: &[T],
    y: &mut [T],
    cost: usize,
    f: impl Fn(&[T], &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    let unit = unit.max(1);
    let units = y.len() / unit;
    let parts = par.parts(units, y.len() * cost);
    if parts <= 1 || x.len() != y.len() {
        return f(x, y);
    }
    let n = y.len();
    let rs: Vec<_> = runs(units, parts)
        .map(|r| r.start * unit..if r.end == units { n } else { r.end * unit })
        .collect();
    let ys = split_rows(y, rs.iter().map(|r| r.len()));
    let items: Vec<_> = rs.into_iter().zip(ys).collect();
    par.each(items, |(r, yp)| f(&x[r], yp))
}

/// Calls `f(start, part)` on runs of `y` that start at multiples of `unit` (the last one
/// ends with `y`), the runs spread over the threads; `cost` is the work per value.
pub fn for_runs<T: Send>(
    par: &Par,
    unit: usize,
    y: &mut [T],
    cost: usize,
    f: impl Fn(usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    let (unit, n) = (unit.max(1), y.len());
    let units = n.div_ceil(unit);
    let parts = par.parts(units, n.saturating_mul(cost));
    if parts <= 1 {
        return f(0, y);
    }
    let rs: Vec<_> = runs(units, parts)
        .map(|r| r.start * unit..(r.end * unit).min(n))
        .collect();
    let ys = split_rows(y, rs.iter().map(|r| r.len()));
    let items: Vec<_> = rs.into_iter().map(|r| r.start).zip(ys).collect();
    par.each(items, |(s, yp)| f(s, yp))
}

/// The worker pool: `n` threads that spin for a while after each job, then sleep. Ops come
/// back to back within a run, so a spinning worker starts the next part at once; waking
/// a sleeping thread costs tens of microseconds on a virtual machine, the length of a
/// small op.
#[cfg(feature = "std")]
mod pool {
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// How long an idle worker spins before it sleeps.
    const SPIN: Duration = Duration::from_micros(300);

    type Job = dyn Fn(usize) + Sync;

    /// The caller's closure while its job runs (its lifetime erased: see `Pool::run`).
    #[derive(Clone, Copy)]
    struct JobPtr(*const Job);
    // SAFETY: the closure is `Sync`, so sharing a pointer to it with the workers is sound
    // while it lives, which `Pool::run` ensures.
    unsafe impl Send for JobPtr {}

    struct Shared {
        /// Bumped for every job (and at shutdown).
        seq: AtomicU64,
        /// The current job: the caller's closure, valid while `pending > 0`.
        job: Mutex<Option<JobPtr>>,
        /// Next part to take.
        next: AtomicUsize,
        /// Parts of the current job.
        count: AtomicUsize,
        /// Workers still in the current job.
        pending: AtomicUsize,
        /// A part panicked.
        panicked: AtomicBool,
        /// Each thread takes one part at most.
        once: AtomicBool,
        shutdown: AtomicBool,
        sleepers: AtomicUsize,
        lock: Mutex<()>,
        wake: Condvar,
    }

    pub struct Pool {
        shared: Arc<Shared>,
        threads: Vec<std::thread::JoinHandle<()>>,
        /// One caller at a time.
        busy: Mutex<()>,
    }

    impl Pool {
        pub fn new(workers: usize) -> std::io::Result<Pool> {
            let shared = Arc::new(Shared {
                seq: AtomicU64::new(0),
                job: Mutex::new(None),
                next: AtomicUsize::new(0),
                count: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                once: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
                sleepers: AtomicUsize::new(0),
                lock: Mutex::new(()),
                wake: Condvar::new(),
            });
            let mut pool = Pool {
                shared: shared.clone(),
                threads: Vec::with_capacity(workers),
                busy: Mutex::new(()),
            };
            for i in 0..workers {
                let sh = shared.clone();
                let t = std::thread::Builder::new()
                    .name(alloc::format!("edgetune-{i}"))
                    .spawn(move || worker(&sh))?;
                pool.threads.push(t);
            }
            Ok(pool)
        }

        pub fn workers(&self) -> usize {
            self.threads.len()
        }

        /// [`run`](Self::run) with each thread taking one part at most: a part that
        /// waits for another never holds up the thread that would run it.
        pub fn run_at_once(&self, count: usize, f: &(dyn Fn(usize) + Sync + '_)) -> bool {
            self.post(count, f, true)
        }

        /// Runs `f(0..count)` on the caller and the workers; false (nothing run) when
        /// another thread is using the pool.
        pub fn run(&self, count: usize, f: &(dyn Fn(usize) + Sync + '_)) -> bool {
            self.post(count, f, false)
        }

        fn post(&self, count: usize, f: &(dyn Fn(usize) + Sync + '_), once: bool) -> bool {
            let Ok(_busy) = self.busy.try_lock() else {
                return false;
            };
            let sh = &*self.shared;
            let short: *const (dyn Fn(usize) + Sync + '_) = f;
            // SAFETY: only the lifetime bound changes (same pointer, same layout). Workers
            // use the pointer only until they decrement `pending`, and this call does not
            // return before `pending` is zero, so the closure outlives every use.
            let ptr = unsafe {
                core::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Job>(short)
            };
            *sh.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(JobPtr(ptr));
            sh.next.store(0, SeqCst);
            sh.once.store(once, SeqCst);
            sh.count.store(count, SeqCst);
            sh.pending.store(self.threads.len(), SeqCst);
            sh.seq.fetch_add(1, SeqCst);
            if sh.sleepers.load(SeqCst) > 0 {
                let _g = sh.lock.lock().unwrap_or_else(|p| p.into_inner());
                sh.wake.notify_all();
            }
            let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
                let i = sh.next.fetch_add(1, SeqCst);
                if i >= count {
                    break;
                }
                f(i);
                if once {
                    break;
                }
            }));
            // Every worker leaves the job before the closure may go.
            let mut spins = 0u32;
            while sh.pending.load(SeqCst) > 0 {
                spins += 1;
                if !spins.is_multiple_of(32) {
                    core::hint::spin_loop();
                } else {
                    // A worker that shares this core gets it.
                    std::thread::yield_now();
                }
            }
            *sh.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if let Err(p) = mine {
                std::panic::resume_unwind(p);
            }
            if sh.panicked.swap(false, SeqCst) {
                panic!("a worker thread panicked in a parallel op");
            }
            true
        }
    }

    fn worker(sh: &Shared) {
        let mut seen = 0u64;
        loop {
            // Spin, then sleep, until a new job (or shutdown) is posted.
            let t0 = Instant::now();
            let mut n = 0u32;
            while sh.seq.load(SeqCst) == seen {
                n += 1;
                if !n.is_multiple_of(32) {
                    core::hint::spin_loop();
                    continue;
                }
                if t0.elapsed() < SPIN {
                    // Other threads that want this core get it (a yield returns at once
                    // when none does).
                    std::thread::yield_now();
                    continue;
                }
                let mut g = sh.lock.lock().unwrap_or_else(|p| p.into_inner());
                sh.sleepers.fetch_add(1, SeqCst);
                while sh.seq.load(SeqCst) == seen {
                    g = sh.wake.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                sh.sleepers.fetch_sub(1, SeqCst);
                break;
            }
            seen = sh.seq.load(SeqCst);
            if sh.shutdown.load(SeqCst) {
                return;
            }
            let job = *sh.job.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(JobPtr(ptr)) = job {
                // SAFETY: the job is posted and `run` waits for `pending` to reach zero,
                // which this worker's decrement below comes after.
                let f = unsafe { &*ptr };
                let count = sh.count.load(SeqCst);
                let once = sh.once.load(SeqCst);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
                    let i = sh.next.fetch_add(1, SeqCst);
                    if i >= count {
                        break;
                    }
                    f(i);
                    if once {
                        break;
                    }
                }));
                if r.is_err() {
                    sh.panicked.store(true, SeqCst);
                }
            }
            sh.pending.fetch_sub(1, SeqCst);
        }
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            let sh = &*self.shared;
            sh.shutdown.store(true, SeqCst);
            sh.seq.fetch_add(1, SeqCst);
            {
                let _g = sh.lock.lock().unwrap_or_else(|p| p.into_inner());
                sh.wake.notify_all();
            }
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn geom(h: usize, k: usize, s: usize, pt: usize, pb: usize, d: usize) -> ConvGeom {
        ConvGeom {
            h,
            w: 5,
            ic: 3,
            oc: 4,
            kh: k,
            kw: 3,
            stride_h: s,
            stride_w: 1,
            dil_h: d,
            dil_w: 1,
            pad_top: pt,
            pad_left: 1,
            pad_bottom: pb,
            pad_right: 1,
            groups: 1,
        }
    }

    /// Every output row of a part reads, tap for tap, the input row (or the padding) it
    /// reads in the whole convolution.
    #[test]
    fn conv_rows_read_what_the_whole_reads() {
        for h in 1..12 {
            for k in 1..5 {
                for s in 1..4 {
                    for d in 1..3 {
                        for pt in 0..4 {
                            for pb in 0..4 {
                                let g = geom(h, k, s, pt, pb, d);
                                let eh = d * (k - 1) + 1;
                                if h + pt + pb < eh {
                                    continue;
                                }
                                let oh = g.oh();
                                for r0 in 0..oh {
                                    for r1 in r0 + 1..=oh {
                                        let (sub, first) = conv_rows(&g, r0, r1);
                                        if sub.h == 0 {
                                            // Only padding: every tap of the whole is too.
                                            for oy in r0..r1 {
                                                for ky in 0..k {
                                                    let iy =
                                                        (oy * s + ky * d) as isize - pt as isize;
                                                    assert!(!(0..h as isize).contains(&iy));
                                                }
                                            }
                                            continue;
                                        }
                                        assert_eq!(sub.oh(), r1 - r0, "{g:?} {r0}..{r1}");
                                        assert!(first + sub.h <= h);
                                        for oy in r0..r1 {
                                            for ky in 0..k {
                                                let whole =
                                                    (oy * s + ky * d) as isize - pt as isize;
                                                let whole = (0..h as isize)
                                                    .contains(&whole)
                                                    .then_some(whole);
                                                let part = ((oy - r0) * s + ky * d) as isize
                                                    - sub.pad_top as isize;
                                                let part = (0..sub.h as isize)
                                                    .contains(&part)
                                                    .then_some(part + first as isize);
                                                assert_eq!(
                                                    whole, part,
                                                    "{g:?} {r0}..{r1} {oy} {ky}"
                                                );
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn below(&mut self, n: usize) -> usize {
            self.next() as usize % n
        }
        fn f32(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 - 1.0
        }
    }

    fn pars() -> Vec<Par> {
        [2, 3, 5].iter().map(|&t| Par::new(t).unwrap()).collect()
    }

    fn random_geom(r: &mut Lcg, depthwise: bool) -> ConvGeom {
        loop {
            let k = 1 + r.below(5);
            let s = 1 + r.below(3);
            let ic = 1 + r.below(20);
            let g = ConvGeom {
                h: 1 + r.below(14),
                w: 1 + r.below(9),
                ic,
                oc: if depthwise { ic } else { 1 + r.below(40) },
                kh: k,
                kw: 1 + r.below(4),
                stride_h: s,
                stride_w: if depthwise { s } else { 1 + r.below(2) },
                dil_h: if depthwise { 1 } else { 1 + r.below(2) },
                dil_w: 1,
                pad_top: r.below(3),
                pad_left: r.below(2),
                pad_bottom: r.below(4),
                pad_right: r.below(2),
                groups: if depthwise { ic } else { 1 },
            };
            let eh = g.dil_h * (g.kh - 1) + 1;
            let ew = g.dil_w * (g.kw - 1) + 1;
            if g.h + g.pad_top + g.pad_bottom >= eh && g.w + g.pad_left + g.pad_right >= ew {
                return g;
            }
        }
    }

    /// A float depthwise convolution split by output rows gives the whole op's values: each
    /// part's sub-geometry and input rows read what the whole reads for those rows.
    #[test]
    fn add_u8_splits_are_bit_identical() {
        let kern = Kernels::detect();
        let mut r = Lcg(31);
        let q = |z: i32, s: f32| Q8 { scale: s, zero: z };
        let (qa, qb, qy) = (q(128, 0.05), q(100, 0.02), q(90, 0.07));
        for n in [0, 1, 63, 64, 65, 130, 1000, 4097] {
            let a: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            let b: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            let mut whole = vec![0u8; n];
            kops::add_u8(&kern, &a, qa, &b, qb, &mut whole, qy).unwrap();
            for p in pars() {
                let mut got = vec![7u8; n];
                add_u8(&p, &kern, &a, qa, &b, qb, &mut got, qy).unwrap();
                assert_eq!(got, whole, "{n} values, {} threads", p.threads());
            }
        }
        // Mismatched lengths are the kernel's error, not a panic of the split.
        let p = Par::new(2).unwrap();
        let mut y = vec![0u8; 200];
        assert!(add_u8(&p, &kern, &[0; 200], qa, &[0; 199], qb, &mut y, qy).is_err());
    }

    #[test]
    fn depthwise_f32_splits_are_bit_identical() {
        fn naive(
            _: &Kernels,
            g: &ConvGeom,
            x: &[f32],
            w: &[f32],
            b: &[f32],
            y: &mut [f32],
        ) -> Result<()> {
            let (c, ow) = (g.ic, g.ow());
            for oy in 0..g.oh() {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut acc = b.get(ch).copied().unwrap_or(0.0);
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                    acc +=
                                        w[(ky * g.kw + kx) * c + ch] * x[(iy * g.w + ix) * c + ch];
                                }
                            }
                        }
                        y[(oy * ow + ox) * c + ch] = acc;
                    }
                }
            }
            Ok(())
        }
        let kern = Kernels::detect();
        let mut r = Lcg(23);
        for _ in 0..200 {
            let g = random_geom(&mut r, true);
            let x: Vec<f32> = (0..g.h * g.w * g.ic).map(|_| r.f32()).collect();
            let w: Vec<f32> = (0..g.kh * g.kw * g.ic).map(|_| r.f32()).collect();
            let b: Vec<f32> = (0..g.ic).map(|_| r.f32()).collect();
            let n = g.oh() * g.ow() * g.ic;
            let mut whole = vec![0f32; n];
            naive(&kern, &g, &x, &w, &b, &mut whole).unwrap();
            for p in pars() {
                let mut got = vec![f32::NAN; n];
                depthwise_f32(&p, &kern, &g, &x, &w, &b, &mut got, naive).unwrap();
                assert!(
                    got.iter()
                        .zip(&whole)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{g:?} {p:?}"
                );
            }
        }
    }

    /// Every split of an int8 convolution (rows; one-row GEMMs by column panels) gives the
    /// bytes of the whole op on one thread, u8 and f32 outputs alike.
    #[test]
    fn conv_i8_splits_are_bit_identical() {
        use edgetune_kernels::pack::{i8_cols, pack_i8};
        use edgetune_kernels::I8Out;
        let kern = Kernels::detect();
        let mut r = Lcg(7);
        for case in 0..300 {
            let g = random_geom(&mut r, false);
            let (m, kdim) = (g.oh() * g.ow(), g.kh * g.kw * g.ic);
            let x: Vec<u8> = (0..g.h * g.w * g.ic).map(|_| r.next() as u8).collect();
            let wr: Vec<i8> = (0..kdim * g.oc).map(|_| r.next() as i8).collect();
            let mut w = vec![0i8; packed_i8_len(kdim, g.oc)];
            let mut colsum = vec![0i32; i8_cols(g.oc)];
            pack_i8(&wr, kdim, g.oc, &mut w, &mut colsum);
            let bias: Vec<i32> = (0..g.oc).map(|_| r.next() as i32 % 5000).collect();
            let scale: Vec<f32> = (0..g.oc).map(|_| 1e-3 + r.f32().abs() * 1e-2).collect();
            let f32_out = case % 3 == 0;
            let q = I8Quant {
                a_zero: r.below(256) as i32,
                a_signed: false,
                colsum: &colsum,
                bias: Some(&bias),
                scale: &scale,
                out: if f32_out { I8Out::F32 } else { I8Out::U8 },
                y_zero: r.below(256) as i32,
                qmin: 0,
                qmax: 255,
            };
            let mut scratch = vec![0u8; kops::conv_scratch_len(&g)];
            let (mut y8, mut yf) = (vec![0u8; m * g.oc], vec![0f32; m * g.oc]);
            let whole = |y8: &mut [u8], yf: &mut [f32], s: &mut [u8]| {
                let d = if f32_out {
                    I8Dst::F32(yf)
                } else {
                    I8Dst::U8(y8)
                };
                kops::conv_i8(&kern, &g, &x, &w, &q, s, d).unwrap();
            };
            whole(&mut y8, &mut yf, &mut scratch);
            for p in pars() {
                let (mut p8, mut pf) = (vec![1u8; m * g.oc], vec![1f32; m * g.oc]);
                let d = if f32_out {
                    I8Dst::F32(&mut pf)
                } else {
                    I8Dst::U8(&mut p8)
                };
                conv_i8(&p, &kern, &g, &x, &w, &q, &mut scratch, d).unwrap();
                if f32_out {
                    assert!(
                        yf.iter().zip(&pf).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{g:?} {p:?}"
                    );
                } else {
                    assert_eq!(y8, p8, "{g:?} {p:?}");
                }
            }
        }
    }

    /// GEMMs of one row (split by 16-column panels) and of many (split by rows).
    #[test]
    fn gemm_i8_splits_are_bit_identical() {
        use edgetune_kernels::pack::{i8_cols, pack_i8};
        use edgetune_kernels::I8Out;
        let kern = Kernels::detect();
        let mut r = Lcg(19);
        for m in [1, 2, 5, 24, 61] {
            for n in [1, 15, 16, 17, 100, 1000] {
                let k = 1 + r.below(300);
                let a: Vec<u8> = (0..m * k).map(|_| r.next() as u8).collect();
                let br: Vec<i8> = (0..k * n).map(|_| r.next() as i8).collect();
                let mut b = vec![0i8; packed_i8_len(k, n)];
                let mut colsum = vec![0i32; i8_cols(n)];
                pack_i8(&br, k, n, &mut b, &mut colsum);
                let bias: Vec<i32> = (0..n).map(|_| r.next() as i32 % 5000).collect();
                let scale: Vec<f32> = (0..n).map(|_| 1e-4 + r.f32().abs() * 1e-3).collect();
                let q = I8Quant {
                    a_zero: r.below(256) as i32,
                    a_signed: false,
                    colsum: &colsum,
                    bias: Some(&bias),
                    scale: &scale,
                    out: I8Out::F32,
                    y_zero: 0,
                    qmin: 0,
                    qmax: 255,
                };
                let mut y = vec![0f32; m * n];
                kops::gemm_i8(&kern, (m, n, k), &a, k, &b, &q, I8Dst::F32(&mut y), n).unwrap();
                for p in pars() {
                    let mut yp = vec![1f32; m * n];
                    gemm_i8(&p, &kern, (m, n, k), &a, k, &b, &q, I8Dst::F32(&mut yp)).unwrap();
                    assert!(
                        y.iter().zip(&yp).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{m}x{n}x{k} {p:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn depthwise_splits_are_bit_identical() {
        let kern = Kernels::detect();
        let mut r = Lcg(11);
        for _ in 0..300 {
            let g = random_geom(&mut r, true);
            let c = g.ic;
            let x: Vec<u8> = (0..g.h * g.w * c).map(|_| r.next() as u8).collect();
            let w: Vec<i16> = (0..g.kh * g.kw * c)
                .map(|_| r.next() as i8 as i16)
                .collect();
            let bias: Vec<i32> = (0..c).map(|_| r.next() as i32 % 3000).collect();
            let scale: Vec<f32> = (0..c).map(|_| 1e-3 + r.f32().abs() * 1e-2).collect();
            let xz = r.below(256) as i32;
            let clamp = (r.below(256) as i32, 0, 255);
            let n = g.oh() * g.ow() * c;
            let mut y = vec![0u8; n];
            kops::depthwise_i8(&kern, &g, &x, xz, &w, Some(&bias), &scale, clamp, &mut y).unwrap();
            for p in pars() {
                let mut yp = vec![1u8; n];
                depthwise_i8(
                    &p,
                    &kern,
                    &g,
                    &x,
                    xz,
                    &w,
                    Some(&bias),
                    &scale,
                    clamp,
                    &mut yp,
                )
                .unwrap();
                assert_eq!(y, yp, "{g:?} {p:?}");
            }
        }
    }

    /// Height and width strides of their own (OCR networks' (2, 1)) run row by row and
    /// give the definition's codes: each tap inside the image, the sum, the requantisation.
    #[test]
    fn depthwise_strides_of_their_own_give_the_definition() {
        let kern = Kernels::detect();
        let mut r = Lcg(17);
        let mut cases = 0;
        while cases < 200 {
            let mut g = random_geom(&mut r, true);
            g.stride_w = 1 + r.below(3);
            if g.stride_w == g.stride_h
                || g.w + g.pad_left + g.pad_right < g.kw
                || !(0..g.oh()).all(|o| conv_rows(&g, o, o + 1).0.h > 0)
            {
                continue;
            }
            cases += 1;
            let c = g.ic;
            let x: Vec<u8> = (0..g.h * g.w * c).map(|_| r.next() as u8).collect();
            let w: Vec<i16> = (0..g.kh * g.kw * c)
                .map(|_| r.next() as i8 as i16)
                .collect();
            let bias: Vec<i32> = (0..c).map(|_| r.next() as i32 % 3000).collect();
            let scale: Vec<f32> = (0..c).map(|_| 1e-3 + r.f32().abs() * 1e-2).collect();
            let (xz, yz) = (r.below(256) as i32, r.below(256) as i32);
            let (oh, ow) = (g.oh(), g.ow());
            let mut want = vec![0u8; oh * ow * c];
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut acc = bias[ch];
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride_h + ky) as isize - g.pad_top as isize;
                                let ix = (ox * g.stride_w + kx) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let v = x[(iy as usize * g.w + ix as usize) * c + ch] as i32 - xz;
                                acc += v * w[(ky * g.kw + kx) * c + ch] as i32;
                            }
                        }
                        let q =
                            edgetune_kernels::quant::requant(acc as f32 * scale[ch], yz, 0, 255);
                        want[(oy * ow + ox) * c + ch] = q as u8;
                    }
                }
            }
            for p in [Par::new(1).unwrap()].into_iter().chain(pars()) {
                let mut got = vec![1u8; want.len()];
                depthwise_i8(
                    &p,
                    &kern,
                    &g,
                    &x,
                    xz,
                    &w,
                    Some(&bias),
                    &scale,
                    (yz, 0, 255),
                    &mut got,
                )
                .unwrap();
                assert_eq!(got, want, "{g:?} {p:?}");
            }
        }
    }

    #[test]
    fn float_splits_are_bit_identical() {
        use edgetune_kernels::pack::{pack_f32, packed_f32_len};
        let kern = Kernels::detect();
        let mut r = Lcg(13);
        for case in 0..200 {
            let g = random_geom(&mut r, false);
            let (m, kdim) = (g.oh() * g.ow(), g.kh * g.kw * g.ic);
            let x: Vec<f32> = (0..g.h * g.w * g.ic).map(|_| r.f32()).collect();
            let wr: Vec<f32> = (0..kdim * g.oc).map(|_| r.f32()).collect();
            let mut w = vec![0f32; packed_f32_len(kdim, g.oc)];
            pack_f32(&wr, kdim, g.oc, &mut w);
            let bias: Vec<f32> = (0..g.oc).map(|_| r.f32()).collect();
            let bias = (case % 2 == 0).then_some(&bias[..]);
            let act = Act::Clamp(-0.5, 2.0);
            let mut scratch = vec![0f32; kops::conv_scratch_len(&g)];
            let mut y = vec![0f32; m * g.oc];
            kops::conv_f32(&kern, &g, &x, &w, bias, act, &mut scratch, &mut y).unwrap();
            // The same product as a GEMM over the im2col rows.
            let (gm, gk) = (m, kdim);
            let a: Vec<f32> = if kops::conv_scratch_len(&g) == 0 {
                x.clone()
            } else {
                scratch.clone()
            };
            let mut yg = vec![0f32; gm * g.oc];
            kops::gemm_f32(&kern, (gm, g.oc, gk), &a, gk, &w, bias, &mut yg, g.oc, act).unwrap();
            for p in pars() {
                let mut yp = vec![1f32; m * g.oc];
                conv_f32(&p, &kern, &g, &x, &w, bias, act, &mut scratch, &mut yp).unwrap();
                assert!(
                    y.iter().zip(&yp).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{g:?}"
                );
                let mut ypg = vec![1f32; gm * g.oc];
                gemm_f32(&p, &kern, (gm, g.oc, gk), &a, &w, bias, &mut ypg, act).unwrap();
                assert!(
                    yg.iter().zip(&ypg).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{g:?}"
                );
            }
        }
    }

    /// Runs of an elementwise op start on whole SIMD blocks: the same bits as one call.
    #[test]
    fn unary_runs_are_bit_identical() {
        use edgetune_kernels::ops::{unary_f32, UnaryF32};
        let kern = Kernels::detect();
        let mut r = Lcg(17);
        for n in [1, 7, 63, 64, 65, 129, 1000, 4099] {
            let x: Vec<f32> = (0..n).map(|_| 6.0 * r.f32()).collect();
            for f in [UnaryF32::Sigmoid, UnaryF32::GeluErf, UnaryF32::HardSwish] {
                let mut y = x.clone();
                unary_f32(&kern, f, &mut y);
                for p in pars() {
                    let mut yp = vec![0f32; n];
                    map_runs(&p, 64, &x, &mut yp, 16, |x, o| {
                        o.copy_from_slice(x);
                        unary_f32(&kern, f, o);
                        Ok(())
                    })
                    .unwrap();
                    assert!(
                        y.iter().zip(&yp).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{n}"
                    );
                }
            }
        }
    }

    /// Geometries the kernels refuse are refused through the split entry points too, with
    /// the kernels' typed error and no panic, on any thread count.
    #[test]
    fn ill_formed_geometries_are_errors() {
        let kern = Kernels::detect();
        let good = random_geom(&mut Lcg(3), false);
        let bad = [
            ConvGeom {
                stride_h: 0,
                ..good
            },
            ConvGeom { kh: 0, ..good },
            ConvGeom { dil_w: 0, ..good },
            ConvGeom {
                h: 1,
                pad_top: 0,
                pad_bottom: 0,
                kh: 3,
                ..good
            },
            ConvGeom { groups: 2, ..good },
            ConvGeom { w: 1 << 20, ..good },
        ];
        for p in pars().into_iter().chain([Par::single()]) {
            for g in &bad {
                let (x, w) = (vec![0u8; 64], vec![0i8; 64]);
                let (cs, sc) = (vec![0i32; 64], vec![1f32; 64]);
                let q = I8Quant {
                    a_zero: 0,
                    a_signed: false,
                    colsum: &cs,
                    bias: None,
                    scale: &sc,
                    out: edgetune_kernels::I8Out::U8,
                    y_zero: 0,
                    qmin: 0,
                    qmax: 255,
                };
                let mut y = vec![0u8; 64];
                let r = conv_i8(&p, &kern, g, &x, &w, &q, &mut [], I8Dst::U8(&mut y));
                assert!(matches!(r, Err(Error::Kernel(_))), "{g:?}: {r:?}");
                let (xf, wf, mut yf) = (vec![0f32; 64], vec![0f32; 64], vec![0f32; 64]);
                let r = conv_f32(&p, &kern, g, &xf, &wf, None, Act::None, &mut [], &mut yf);
                assert!(matches!(r, Err(Error::Kernel(_))), "{g:?}: {r:?}");
                let dg = ConvGeom {
                    oc: g.ic,
                    groups: g.ic,
                    ..*g
                };
                let wd = vec![0i16; 64];
                let r = depthwise_i8(&p, &kern, &dg, &x, 0, &wd, None, &sc, (0, 0, 255), &mut y);
                assert!(matches!(r, Err(Error::Kernel(_))), "{dg:?}: {r:?}");
            }
        }
    }

    /// An error in any part is returned, whichever thread met it.
    #[test]
    fn errors_from_workers_are_returned() {
        let p = Par::new(3).unwrap();
        let r = p.each((0..6).collect(), |i: usize| {
            if i == 4 {
                Err(Error::Invalid {
                    what: "part 4".into(),
                })
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(Error::Invalid { what }) if what == "part 4"));
        assert_eq!(p.threads(), 3);
        assert!(Par::new(MAX_THREADS + 1).is_err());
    }

    #[test]
    fn runs_cover_evenly() {
        for n in 0..40 {
            for p in 1..9 {
                let rs: Vec<_> = runs(n, p).collect();
                assert_eq!(rs.len(), p);
                assert_eq!(rs.iter().map(|r| r.len()).sum::<usize>(), n);
                for w in rs.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len().abs_diff(w[1].len()) <= 1);
                }
            }
        }
    }

    /// `each_at_once` runs its parts on threads of their own at the same time: parts
    /// that each wait for all the others to start finish (one after another, they could
    /// not); it declines more parts than threads and a pool another caller holds, running
    /// nothing.
    #[test]
    fn parts_at_once_run_together() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        for threads in [2usize, 3] {
            let p = Par::new(threads).unwrap();
            for parts in 1..=threads {
                for _ in 0..50 {
                    let started = AtomicUsize::new(0);
                    let met = AtomicUsize::new(0);
                    let ran = p.each_at_once(parts, &|_| {
                        started.fetch_add(1, Ordering::SeqCst);
                        let t0 = std::time::Instant::now();
                        while started.load(Ordering::SeqCst) < parts {
                            if t0.elapsed() > std::time::Duration::from_secs(10) {
                                return;
                            }
                            core::hint::spin_loop();
                        }
                        met.fetch_add(1, Ordering::SeqCst);
                    });
                    assert!(ran);
                    assert_eq!(met.load(Ordering::SeqCst), parts, "{threads} threads");
                }
            }
            let none = AtomicUsize::new(0);
            assert!(!p.each_at_once(threads + 1, &|_| {
                none.fetch_add(1, Ordering::SeqCst);
            }));
            // The pool held by a caller on another thread: declined, nothing run.
            let inner = std::sync::atomic::AtomicBool::new(true);
            p.each((0..threads).collect(), |i: usize| {
                if i == 0 {
                    inner.store(
                        p.each_at_once(2, &|_| {
                            none.fetch_add(1, Ordering::SeqCst);
                        }),
                        Ordering::SeqCst,
                    );
                }
                Ok(())
            })
            .unwrap();
            assert!(!inner.load(Ordering::SeqCst));
            assert_eq!(none.load(Ordering::SeqCst), 0);
        }
        assert!(!Par::single().each_at_once(1, &|_| {}));
    }
}
