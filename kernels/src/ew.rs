//! Tiers of the elementwise ops, reductions and (de)quantisation.
//!
//! Each op is written once, generic over [`Lanes`] (a vector of f32 lanes), and
//! instantiated per tier by [`ew_tier!`] inside a `#[target_feature]` function, where the
//! lane methods inline to single instructions. The scalar definitions in
//! [`crate::elementwise`] and [`crate::quant`] are the reference tier; every other tier
//! finishes a slice's tail with them. Integer results (u8/i8) are bit-exact with the
//! reference: the same f32 operations in the same order, without fused multiply-adds.

use crate::elementwise::{self as sc, Q8};
use crate::quant;
use crate::reference::ConvGeom;
use half::f16;
use wide::{CmpGt, CmpLt};

/// One tier's elementwise kernels. Every pointer is `unsafe` only because an ISA tier
/// needs its CPU features; lengths are checked by the safe wrappers in [`crate::ops`].
/// Quantised add: `(a, qa, b, qb, y, qy)`.
pub type AddU8Fn = unsafe fn(&[u8], Q8, &[u8], Q8, &mut [u8], Q8);
/// Float depthwise: `(geometry, x, weights, bias, y)`.
pub type DwF32Fn = unsafe fn(&ConvGeom, &[f32], &[f32], &[f32], &mut [f32]);

#[derive(Clone, Copy, Debug)]
pub struct EwFns {
    pub add_f32: unsafe fn(&[f32], &[f32], &mut [f32]),
    /// `y[i] = t[x[i]]`, `t` of 256 entries.
    pub lut_u8: unsafe fn(&[u8], &[u8], &mut [u8]),
    /// `out[0..2]` = the least and greatest of `x`, `out` and 0 (NaN ignored).
    pub range0_f32: unsafe fn(&[f32], &mut [f32]),
    pub mul_f32: unsafe fn(&[f32], &[f32], &mut [f32]),
    pub sub_f32: unsafe fn(&[f32], &[f32], &mut [f32]),
    pub div_f32: unsafe fn(&[f32], &[f32], &mut [f32]),
    pub relu: unsafe fn(&mut [f32]),
    pub relu6: unsafe fn(&mut [f32]),
    pub hard_swish: unsafe fn(&mut [f32]),
    pub sigmoid: unsafe fn(&mut [f32]),
    pub gelu_erf: unsafe fn(&mut [f32]),
    pub gelu_tanh: unsafe fn(&mut [f32]),
    pub erf: unsafe fn(&mut [f32]),
    pub add_u8: AddU8Fn,
    pub gap_u8: unsafe fn(&[u8], usize, usize, Q8, &mut [u8], Q8),
    pub gap_f32: unsafe fn(&[f32], usize, usize, &mut [f32]),
    pub max_pool_f32: unsafe fn(&ConvGeom, &[f32], &mut [f32]),
    /// [`crate::elementwise::depthwise_f32`]: `(geometry, x, weights, bias, y)`.
    pub depthwise_f32: DwF32Fn,
    pub max_pool_u8: unsafe fn(&ConvGeom, &[u8], &mut [u8]),
    pub softmax: unsafe fn(&mut [f32], usize),
    pub layer_norm: unsafe fn(&mut [f32], usize, &[f32], &[f32], f32),
    pub quantize_u8: unsafe fn(&[f32], f32, i32, &mut [u8]),
    pub quantize_i8: unsafe fn(&[f32], f32, i32, &mut [i8]),
    pub dequantize_u8: unsafe fn(&[u8], f32, i32, &mut [f32]),
    pub dequantize_i8: unsafe fn(&[i8], f32, i32, &mut [f32]),
    pub f32_to_f16: unsafe fn(&[f32], &mut [f16]),
    pub f16_to_f32: unsafe fn(&[f16], &mut [f32]),
    /// [`crate::elementwise::transpose_f32`]: `x` holds `rows·cols` values, `c0 <= cols`.
    pub transpose_f32: unsafe fn(&[f32], usize, usize, usize, &mut [f32]),
}

/// The reference tier: the scalar definitions.
pub static EW_REFERENCE: EwFns = EwFns {
    add_f32: sc::add,
    range0_f32: sc::range0,
    lut_u8: sc::lut_u8,
    mul_f32: sc::mul,
    sub_f32: sc::sub,
    div_f32: sc::div,
    relu: sc::relu,
    relu6: sc::relu6,
    hard_swish: sc::hard_swish,
    sigmoid: sc::sigmoid,
    gelu_erf: sc::gelu_erf,
    gelu_tanh: sc::gelu_tanh,
    erf: sc::erf,
    add_u8: sc::add_u8,
    gap_u8: sc::global_avg_pool_u8,
    gap_f32: sc::global_avg_pool_f32,
    max_pool_f32: sc::max_pool_f32,
    depthwise_f32: sc::depthwise_f32,
    max_pool_u8: sc::max_pool_u8,
    softmax: sc::softmax,
    layer_norm: sc::layer_norm,
    quantize_u8: quant::quantize_u8,
    quantize_i8: quant::quantize_i8,
    dequantize_u8: quant::dequantize_u8,
    dequantize_i8: quant::dequantize_i8,
    f32_to_f16: quant::f32_to_f16,
    f16_to_f32: quant::f16_to_f32,
    transpose_f32: sc::transpose_f32,
};

/// A vector of `N` f32 lanes. Constructors are `unsafe`: a value exists only inside a
/// kernel of its tier, which dispatch calls only on a CPU with the tier's features, so
/// the arithmetic methods on an existing value are safe.
pub(crate) trait Lanes: Copy {
    const N: usize;
    /// # Safety
    /// The CPU has the tier's features.
    unsafe fn splat(v: f32) -> Self;
    /// # Safety
    /// As `splat`; `p` is readable for `N` values.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` is writable for `N` values.
    unsafe fn store(self, p: *mut f32);
    /// # Safety
    /// As `splat`; `p` is readable for `N` bytes.
    unsafe fn load_u8(p: *const u8) -> Self;
    /// # Safety
    /// As `splat`; `p` is readable for `N` bytes.
    unsafe fn load_i8(p: *const i8) -> Self;
    /// Lanes are integral and within `[0, 255]`.
    /// # Safety
    /// `p` is writable for `N` bytes.
    unsafe fn store_u8(self, p: *mut u8);
    /// Lanes are integral and within `[-128, 127]`.
    /// # Safety
    /// `p` is writable for `N` bytes.
    unsafe fn store_i8(self, p: *mut i8);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// `self·a + b`, fused where the tier has FMA (only in approximations, never on a
    /// bit-exact path).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `self > o ? self : o` (x86 `maxps`: a NaN in `self` gives `o`, as `f32::max` does).
    fn max(self, o: Self) -> Self;
    /// `self < o ? self : o`.
    fn min(self, o: Self) -> Self;
    /// Round half to even; callers keep `|self| < 2^22` (clamped quantised values,
    /// exponents).
    fn round(self) -> Self;
    /// `2^self` for integral lanes in `[-127, 128]` (−127 gives 0, 128 gives +inf).
    fn exp2i(self) -> Self;
    fn abs(self) -> Self;
    /// Correctly rounded square root.
    fn sqrt(self) -> Self;
    /// Magnitude of `self`, sign of `s`.
    fn copysign(self, s: Self) -> Self;
    /// Per lane: `self > t ? a : b`.
    fn select_gt(self, t: Self, a: Self, b: Self) -> Self;
    fn hsum(self) -> f32;
    fn hmax(self) -> f32;
}

#[inline(always)]
fn sp<V: Lanes>(v: f32) -> V {
    // SAFETY: only called from kernels generic over `V`, which run on CPUs with `V`'s
    // features (see `Lanes`).
    unsafe { V::splat(v) }
}

/// `exp`, the vector form of [`sc::exp_fast`]; the input is clamped to its range, so
/// the far tails give 2^-126 and +inf instead of 0 and +inf.
#[inline(always)]
fn exp_v<V: Lanes>(x: V) -> V {
    // The bounds first, so a NaN lane stays NaN (`max`/`min` return their second
    // operand when a comparison fails), as the scalar form returns it.
    let x = sp::<V>(88.7).min(sp::<V>(-87.3).max(x));
    let n = x.mul(sp(core::f32::consts::LOG2_E)).round();
    let r = n.mul_add(sp(-0.693_359_4), x);
    let r = n.mul_add(sp(2.121_944_4e-4), r);
    let mut p: V = sp(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = p.mul_add(r, sp(c));
    }
    let e = p.mul(r).mul_add(r, r).add(sp(1.0));
    e.mul(n.exp2i())
}

/// erf, the vector form of [`sc::erf1`] (the same bits where `mul_add` is fused): both
/// branches for every lane, then a blend. A NaN lane stays NaN through either branch.
#[inline(always)]
fn erf_v<V: Lanes>(x: V) -> V {
    // Plain loops, not closures: a closure does not inherit the tier's target features.
    let t = sp::<V>(sc::ERF_CLAMP).min(x.abs());
    let mut q: V = sp(sc::ERF_Q[0]);
    for c in &sc::ERF_Q[1..] {
        q = q.mul_add(t, sp(*c));
    }
    let u = sp::<V>(0.0).sub(q.mul_add(t, t));
    let round = sp::<V>(sc::ERF_ROUND);
    let n = sp::<V>(core::f32::consts::LOG2_E)
        .mul_add(u, round)
        .sub(round);
    let f = n.mul_add(sp(sc::ERF_LN2[1]), n.mul_add(sp(sc::ERF_LN2[0]), u));
    let mut r: V = sp(sc::ERF_EXP[0]);
    for c in &sc::ERF_EXP[1..] {
        r = r.mul_add(f, sp(*c));
    }
    let hi = sp::<V>(1.0).sub(r.mul(n.exp2i()));
    let s = t.mul(t);
    let mut p: V = sp(sc::ERF_P[0]);
    for c in &sc::ERF_P[1..] {
        p = p.mul_add(s, sp(*c));
    }
    let lo = p.mul_add(t, t);
    sp::<V>(sc::ERF_SPLIT).select_gt(t, lo, hi).copysign(x)
}

#[inline(always)]
fn sigmoid_v<V: Lanes>(x: V) -> V {
    let one = sp::<V>(1.0);
    one.div(one.add(exp_v(sp::<V>(0.0).sub(x))))
}

#[inline(always)]
fn gelu_erf_v<V: Lanes>(x: V) -> V {
    let e = erf_v(x.mul(sp(core::f32::consts::FRAC_1_SQRT_2)));
    sp::<V>(0.5).mul(x).mul(sp::<V>(1.0).add(e))
}

/// `0.5·x·(1 + tanh(u))` with `1 + tanh(u) = 2 − 2/(1 + e^{2u})`.
#[inline(always)]
fn gelu_tanh_v<V: Lanes>(x: V) -> V {
    let u = x
        .add(sp::<V>(0.044715).mul(x).mul(x).mul(x))
        .mul(sp(0.797_884_6));
    let two = sp::<V>(2.0);
    let t = two.sub(two.div(sp::<V>(1.0).add(exp_v(u.add(u)))));
    sp::<V>(0.5).mul(x).mul(t)
}

#[inline(always)]
fn hard_swish_v<V: Lanes>(x: V) -> V {
    let c = x.add(sp(3.0)).max(sp(0.0)).min(sp(6.0));
    x.mul(c.div(sp(6.0)))
}

/// ONNX QuantizeLinear on a scaled value, as [`quant::requant`]: clamp, round, add zero.
#[inline(always)]
fn requant_v<V: Lanes>(v: V, zero: i32, qmin: i32, qmax: i32) -> V {
    v.max(sp((qmin - zero) as f32))
        .min(sp((qmax - zero) as f32))
        .round()
        .add(sp(zero as f32))
}

macro_rules! unary_fns {
    ($($name:ident => $v:ident),*) => {$(
        /// # Safety
        /// The CPU has `V`'s features.
        #[inline(always)]
        pub(crate) unsafe fn $name<V: Lanes>(x: &mut [f32]) {
            let n = x.len() - x.len() % V::N;
            let p = x.as_mut_ptr();
            let mut i = 0;
            while i < n {
                $v(V::load(p.add(i))).store(p.add(i));
                i += V::N;
            }
            sc::$name(&mut x[n..]);
        }
    )*};
}

#[inline(always)]
fn relu_v<V: Lanes>(x: V) -> V {
    x.max(sp(0.0))
}

#[inline(always)]
fn relu6_v<V: Lanes>(x: V) -> V {
    x.max(sp(0.0)).min(sp(6.0))
}

pub(crate) mod g {
    //! The generic bodies, one per op.
    use super::*;

    unary_fns!(relu => relu_v, relu6 => relu6_v, hard_swish => hard_swish_v,
        sigmoid => sigmoid_v, gelu_erf => gelu_erf_v, gelu_tanh => gelu_tanh_v, erf => erf_v);

    /// # Safety
    /// The CPU has `V`'s features; `out` holds 2 values.
    #[inline(always)]
    pub(crate) unsafe fn range0_f32<V: Lanes>(x: &[f32], out: &mut [f32]) {
        let n = x.len() - x.len() % V::N;
        let (mut lo, mut hi) = (V::splat(0.0), V::splat(0.0));
        let mut i = 0;
        while i < n {
            // `min`/`max` keep the accumulator where a lane is NaN (the comparison fails).
            let v = V::load(x.as_ptr().add(i));
            lo = v.min(lo);
            hi = v.max(hi);
            i += V::N;
        }
        // The lanes' least as the negated greatest of the negated lanes (exact).
        let l = -V::splat(0.0).sub(lo).hmax();
        out[0] = out[0].min(l);
        out[1] = out[1].max(hi.hmax());
        sc::range0(&x[n..], out);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn add_f32<V: Lanes>(a: &[f32], b: &[f32], y: &mut [f32]) {
        let len = y.len().min(a.len()).min(b.len());
        let n = len - len % V::N;
        let mut i = 0;
        while i < n {
            V::load(a.as_ptr().add(i))
                .add(V::load(b.as_ptr().add(i)))
                .store(y.as_mut_ptr().add(i));
            i += V::N;
        }
        sc::add(&a[n..len], &b[n..len], &mut y[n..len]);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn sub_f32<V: Lanes>(a: &[f32], b: &[f32], y: &mut [f32]) {
        let len = y.len().min(a.len()).min(b.len());
        let n = len - len % V::N;
        let mut i = 0;
        while i < n {
            V::load(a.as_ptr().add(i))
                .sub(V::load(b.as_ptr().add(i)))
                .store(y.as_mut_ptr().add(i));
            i += V::N;
        }
        sc::sub(&a[n..len], &b[n..len], &mut y[n..len]);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn div_f32<V: Lanes>(a: &[f32], b: &[f32], y: &mut [f32]) {
        let len = y.len().min(a.len()).min(b.len());
        let n = len - len % V::N;
        let mut i = 0;
        while i < n {
            V::load(a.as_ptr().add(i))
                .div(V::load(b.as_ptr().add(i)))
                .store(y.as_mut_ptr().add(i));
            i += V::N;
        }
        sc::div(&a[n..len], &b[n..len], &mut y[n..len]);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn mul_f32<V: Lanes>(a: &[f32], b: &[f32], y: &mut [f32]) {
        let len = y.len().min(a.len()).min(b.len());
        let n = len - len % V::N;
        let mut i = 0;
        while i < n {
            V::load(a.as_ptr().add(i))
                .mul(V::load(b.as_ptr().add(i)))
                .store(y.as_mut_ptr().add(i));
            i += V::N;
        }
        sc::mul(&a[n..len], &b[n..len], &mut y[n..len]);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn add_u8<V: Lanes>(
        a: &[u8],
        qa: Q8,
        b: &[u8],
        qb: Q8,
        y: &mut [u8],
        qy: Q8,
    ) {
        let len = y.len().min(a.len()).min(b.len());
        let n = len - len % V::N;
        let inv = 1.0 / qy.scale;
        let (za, sa, zb, sb) = (
            V::splat(qa.zero as f32),
            V::splat(qa.scale),
            V::splat(qb.zero as f32),
            V::splat(qb.scale),
        );
        let mut i = 0;
        while i < n {
            let p = V::load_u8(a.as_ptr().add(i)).sub(za).mul(sa);
            let q = V::load_u8(b.as_ptr().add(i)).sub(zb).mul(sb);
            requant_v(p.add(q).mul(V::splat(inv)), qy.zero, 0, 255).store_u8(y.as_mut_ptr().add(i));
            i += V::N;
        }
        sc::add_u8(&a[n..len], qa, &b[n..len], qb, &mut y[n..len], qy);
    }

    /// Channels `V::N` at a time; the sums are exact in f32 (checked below 2^24).
    /// # Safety
    /// The CPU has `V`'s features; `x` holds `hw·c` values and `y` `c`.
    #[inline(always)]
    pub(crate) unsafe fn gap_u8<V: Lanes>(
        x: &[u8],
        hw: usize,
        c: usize,
        qx: Q8,
        y: &mut [u8],
        qy: Q8,
    ) {
        let bound = hw as u64 * (255 + qx.zero.unsigned_abs() as u64);
        if bound >= 1 << 24 {
            return sc::global_avg_pool_u8(x, hw, c, qx, y, qy);
        }
        let mult = V::splat(qx.scale / (qy.scale * hw as f32));
        let corr = V::splat((qx.zero * hw as i32) as f32);
        let n = c - c % V::N;
        let mut ch = 0;
        while ch < n {
            let mut s = V::splat(0.0);
            for p in 0..hw {
                s = s.add(V::load_u8(x.as_ptr().add(p * c + ch)));
            }
            requant_v(s.sub(corr).mul(mult), qy.zero, 0, 255).store_u8(y.as_mut_ptr().add(ch));
            ch += V::N;
        }
        let mult = qx.scale / (qy.scale * hw as f32);
        for ch in n..c {
            let mut s = 0i32;
            for p in 0..hw {
                s += x[p * c + ch] as i32;
            }
            let t = s - qx.zero * hw as i32;
            y[ch] = quant::requant(t as f32 * mult, qy.zero, 0, 255) as u8;
        }
    }

    /// # Safety
    /// The CPU has `V`'s features; `x` holds `hw·c` values and `y` `c`.
    #[inline(always)]
    pub(crate) unsafe fn gap_f32<V: Lanes>(x: &[f32], hw: usize, c: usize, y: &mut [f32]) {
        // Positions outer, channels inner: the reference's order (so bit-exact) and
        // contiguous reads.
        let inv = 1.0 / hw as f32;
        let n = c - c % V::N;
        y[..c].fill(0.0);
        // Taken after the fill: the fill's `&mut` to the slice would invalidate it.
        let yp = y.as_mut_ptr();
        for p in 0..hw {
            let row = x.as_ptr().add(p * c);
            let mut ch = 0;
            while ch < n {
                V::load(yp.add(ch))
                    .add(V::load(row.add(ch)))
                    .store(yp.add(ch));
                ch += V::N;
            }
            for ch in n..c {
                y[ch] += x[p * c + ch];
            }
        }
        let mut ch = 0;
        while ch < n {
            V::load(yp.add(ch)).mul(V::splat(inv)).store(yp.add(ch));
            ch += V::N;
        }
        y[n..c].iter_mut().for_each(|v| *v *= inv);
    }

    /// An output row at a time, and in it a channel block at a time (`V::N` wide, the
    /// last one ending at channel `c`, overlapping the one before when `c % V::N != 0`:
    /// those channels get the same bits twice), so the block's input rows and weights
    /// stay in L1 along the row. The pixels whose kernel columns are all inside the image
    /// go `P` (or 3) at a time, one sum per pixel held in a register across the taps (the
    /// reference reads and writes each output once per tap); the others one at a time.
    /// Only the taps inside the image are taken. Each sum is the bias, then `+ w·x` per tap in the reference's order, so
    /// the results are its bits.
    /// # Safety
    /// The CPU has `V`'s features; the buffers hold the geometry (checked by the caller).
    #[inline(always)]
    pub(crate) unsafe fn depthwise_f32<V: Lanes>(
        g: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        y: &mut [f32],
    ) {
        const P: usize = 6;
        let (ow, c) = (g.ow(), g.ic);
        if c < V::N {
            return narrow::<V>(g, x, w, bias, y);
        }
        // Output columns [xa, xb) have every kernel column inside the image.
        let (xa, xb) = (0..ow).fold((ow, 0), |(a, b), ox| {
            if taps(ox, g.stride_w, g.dil_w, g.pad_left, g.w, g.kw) == (0, g.kw) {
                (a.min(ox), b.max(ox + 1))
            } else {
                (a, b)
            }
        });
        // The inside columns go P, then 3, at a time up to `xr`; the pixels left (the
        // edges and the inside remainder) one at a time, four channel blocks at once,
        // so four independent sums hide the add's latency where one pixel's chain of
        // taps would wait on it (a 9×9 map with a 5×5 kernel has 5 inside columns).
        let inner = xb.saturating_sub(xa);
        let xr = xa + inner / P * P + inner % P / 3 * 3;
        let blocks = c.div_ceil(V::N);
        let yp = y.as_mut_ptr();
        for oy in 0..g.oh() {
            let rows = taps(oy, g.stride_h, g.dil_h, g.pad_top, g.h, g.kh);
            for b in 0..blocks {
                let c0 = (b * V::N).min(c - V::N);
                let at = Px { oy, c0, rows };
                let mut ox = xa;
                while ox + P <= xr {
                    sums::<V, P>(g, x, w, bias, yp, &at, ox, (0, g.kw));
                    ox += P;
                }
                while ox + 3 <= xr {
                    sums::<V, 3>(g, x, w, bias, yp, &at, ox, (0, g.kw));
                    ox += 3;
                }
            }
            for ox in (0..ow).filter(|&ox| ox < xa || ox >= xr) {
                let cols = taps(ox, g.stride_w, g.dil_w, g.pad_left, g.w, g.kw);
                let mut b = 0;
                while b + 4 <= blocks {
                    pixel_blocks::<V, 4>(g, x, w, bias, yp, (oy, ox, b), rows, cols);
                    b += 4;
                }
                while b < blocks {
                    pixel_blocks::<V, 1>(g, x, w, bias, yp, (oy, ox, b), rows, cols);
                    b += 1;
                }
            }
        }
    }

    /// One pixel (oy, ox) of the channel blocks `b..b + B` (each `V::N` wide, the last
    /// ending at channel `c` as in [`depthwise_f32`]) over the kernel rows `rows` and
    /// columns `cols`: each sum the bias, then `+ w·x` per tap in order.
    /// # Safety
    /// As [`depthwise_f32`], `c >= V::N`, `b + B` blocks at most.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pixel_blocks<V: Lanes, const B: usize>(
        g: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        yp: *mut f32,
        (oy, ox, b): (usize, usize, usize),
        rows: (usize, usize),
        cols: (usize, usize),
    ) {
        let c = g.ic;
        let mut c0 = [0usize; B];
        let mut acc = [V::splat(0.0); B];
        for i in 0..B {
            c0[i] = ((b + i) * V::N).min(c - V::N);
            if !bias.is_empty() {
                acc[i] = V::load(bias.as_ptr().add(c0[i]));
            }
        }
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        for ky in rows.0..rows.1 {
            let iy = oy * g.stride_h + ky * g.dil_h - g.pad_top;
            for kx in cols.0..cols.1 {
                let ix = ox * g.stride_w + kx * g.dil_w - g.pad_left;
                let px = xp.add((iy * g.w + ix) * c);
                let pw = wp.add((ky * g.kw + kx) * c);
                for i in 0..B {
                    acc[i] = acc[i].add(V::load(pw.add(c0[i])).mul(V::load(px.add(c0[i]))));
                }
            }
        }
        for i in 0..B {
            acc[i].store(yp.add((oy * g.ow() + ox) * c + c0[i]));
        }
    }

    /// [`depthwise_f32`] for fewer channels than a vector: an output row at a time, each
    /// tap added to every output pixel it reaches before the next tap (the channels in the
    /// inner loop, which the compiler vectorises for the tier), so the row stays in L1.
    /// Each output takes its bias, then its taps inside in order.
    /// With one column stride and a channel count dividing the vector width, a tap's
    /// products along the row are one run of consecutive values: the weights repeat
    /// every `c` lanes.
    /// # Safety
    /// As [`depthwise_f32`].
    #[inline(always)]
    unsafe fn narrow<V: Lanes>(g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
        let (c, ow) = (g.ic, g.ow());
        let flat = g.stride_w == 1 && V::N % c == 0 && V::N <= 64;
        let mut rep = [0.0f32; 64];
        for oy in 0..g.oh() {
            let row = &mut y[oy * ow * c..][..ow * c];
            if bias.is_empty() {
                row.fill(0.0);
            } else {
                for out in row.chunks_exact_mut(c) {
                    out.copy_from_slice(&bias[..c]);
                }
            }
            let (ky0, ky1) = taps(oy, g.stride_h, g.dil_h, g.pad_top, g.h, g.kh);
            for ky in ky0..ky1 {
                let iy = oy * g.stride_h + ky * g.dil_h - g.pad_top;
                let src = &x[iy * g.w * c..][..g.w * c];
                for kx in 0..g.kw {
                    let ws = &w[(ky * g.kw + kx) * c..][..c];
                    // Outputs `a..b` read an input column: pad ≤ ox·sw + kx·dw < w + pad.
                    let at = kx * g.dil_w;
                    let a = g.pad_left.saturating_sub(at).div_ceil(g.stride_w).min(ow);
                    let b = (g.w + g.pad_left)
                        .saturating_sub(at)
                        .div_ceil(g.stride_w)
                        .clamp(a, ow);
                    if flat && a < b {
                        for (i, r) in rep[..V::N].iter_mut().enumerate() {
                            *r = ws[i % c];
                        }
                        let wv = V::load(rep.as_ptr());
                        let n = (b - a) * c;
                        let out = &mut row[a * c..][..n];
                        let xs = &src[(a + at - g.pad_left) * c..][..n];
                        let mut i = 0;
                        while i + V::N <= n {
                            let o = out.as_mut_ptr().add(i);
                            V::load(o).add(wv.mul(V::load(xs.as_ptr().add(i)))).store(o);
                            i += V::N;
                        }
                        for j in i..n {
                            out[j] += ws[j % c] * xs[j];
                        }
                        continue;
                    }
                    for ox in a..b {
                        let ix = ox * g.stride_w + at - g.pad_left;
                        let xs = &src[ix * c..][..c];
                        let out = &mut row[ox * c..][..c];
                        for ((o, &wv), &xv) in out.iter_mut().zip(ws).zip(xs) {
                            *o += wv * xv;
                        }
                    }
                }
            }
        }
    }

    /// The kernel taps `k0..k1` of output `o` that fall inside `0..size`.
    #[inline(always)]
    fn taps(o: usize, s: usize, d: usize, pad: usize, size: usize, k: usize) -> (usize, usize) {
        let i0 = (o * s) as isize - pad as isize;
        let k0 = if i0 >= 0 {
            0
        } else {
            ((-i0) as usize).div_ceil(d).min(k)
        };
        let k1 = if i0 >= size as isize {
            0
        } else {
            (((size as isize - 1 - i0) as usize) / d + 1).min(k)
        };
        (k0, k1.max(k0))
    }

    /// An output row, its channel block and the kernel rows inside the image.
    struct Px {
        oy: usize,
        c0: usize,
        rows: (usize, usize),
    }

    /// Channels `c0..c0 + V::N` of `P` pixels from (oy, ox) over the kernel rows
    /// `at.rows` and columns `cols` (all of them inside the image for every pixel).
    /// # Safety
    /// As [`depthwise_f32`], `c >= V::N`, `c0 + V::N <= c`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn sums<V: Lanes, const P: usize>(
        g: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        yp: *mut f32,
        at: &Px,
        ox: usize,
        cols: (usize, usize),
    ) {
        let (ow, c, c0) = (g.ow(), g.ic, at.c0);
        let start = if bias.is_empty() {
            V::splat(0.0)
        } else {
            V::load(bias.as_ptr().add(c0))
        };
        let mut acc = [start; P];
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        let (sx, dx) = (g.stride_w * c, g.dil_w * c);
        for ky in at.rows.0..at.rows.1 {
            let iy = at.oy * g.stride_h + ky * g.dil_h - g.pad_top;
            let ix = ox * g.stride_w + cols.0 * g.dil_w - g.pad_left;
            let mut px = xp.add((iy * g.w + ix) * c + c0);
            let mut pw = wp.add((ky * g.kw + cols.0) * c + c0);
            for _ in cols.0..cols.1 {
                let wv = V::load(pw);
                for (p, s) in acc.iter_mut().enumerate() {
                    *s = s.add(wv.mul(V::load(px.add(p * sx))));
                }
                px = px.add(dx);
                pw = pw.add(c);
            }
        }
        for (p, s) in acc.iter().enumerate() {
            s.store(yp.add((at.oy * ow + ox + p) * c + c0));
        }
    }

    /// Channels `V::N` at a time; padded positions are ignored.
    /// # Safety
    /// The CPU has `V`'s features; the buffers hold the geometry (checked by the caller).
    #[inline(always)]
    pub(crate) unsafe fn max_pool_f32<V: Lanes>(g: &ConvGeom, x: &[f32], y: &mut [f32]) {
        let (ow, c) = (g.ow(), g.ic);
        let n = c - c % V::N;
        for oy in 0..g.oh() {
            for ox in 0..ow {
                let out = (oy * ow + ox) * c;
                let mut ch = 0;
                while ch < n {
                    let mut m = V::splat(f32::NEG_INFINITY);
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                m = V::load(x.as_ptr().add((iy * g.w + ix) * c + ch)).max(m);
                            }
                        }
                    }
                    m.store(y.as_mut_ptr().add(out + ch));
                    ch += V::N;
                }
                for ch in n..c {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                m = m.max(x[(iy * g.w + ix) * c + ch]);
                            }
                        }
                    }
                    y[out + ch] = m;
                }
            }
        }
    }

    /// Channels `V::N` at a time, as f32 (exact for u8 codes).
    /// # Safety
    /// The CPU has `V`'s features; the buffers hold the geometry (checked by the caller).
    #[inline(always)]
    pub(crate) unsafe fn max_pool_u8<V: Lanes>(g: &ConvGeom, x: &[u8], y: &mut [u8]) {
        let (ow, c) = (g.ow(), g.ic);
        let n = c - c % V::N;
        for oy in 0..g.oh() {
            for ox in 0..ow {
                let out = (oy * ow + ox) * c;
                let mut ch = 0;
                while ch < n {
                    let mut m = V::splat(0.0);
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                m = V::load_u8(x.as_ptr().add((iy * g.w + ix) * c + ch)).max(m);
                            }
                        }
                    }
                    m.store_u8(y.as_mut_ptr().add(out + ch));
                    ch += V::N;
                }
                for ch in n..c {
                    let mut m = 0u8;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                m = m.max(x[(iy * g.w + ix) * c + ch]);
                            }
                        }
                    }
                    y[out + ch] = m;
                }
            }
        }
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn softmax<V: Lanes>(x: &mut [f32], cols: usize) {
        if cols == 0 {
            return;
        }
        let n = cols - cols % V::N;
        for row in x.chunks_exact_mut(cols) {
            let p = row.as_mut_ptr();
            let mut mv = V::splat(f32::NEG_INFINITY);
            let mut i = 0;
            while i < n {
                mv = V::load(p.add(i)).max(mv);
                i += V::N;
            }
            let m = row[n..].iter().fold(mv.hmax(), |a, &b| b.max(a));
            let (mut sv, mvec) = (V::splat(0.0), V::splat(m));
            i = 0;
            while i < n {
                let e = exp_v(V::load(p.add(i)).sub(mvec));
                e.store(p.add(i));
                sv = sv.add(e);
                i += V::N;
            }
            let mut s = sv.hsum();
            for v in &mut row[n..] {
                *v = sc::exp_fast(*v - m);
                s += *v;
            }
            let inv = 1.0 / s;
            // Taken again: the tail's `&mut row[n..]` above invalidated the first pointer.
            let p = row.as_mut_ptr();
            i = 0;
            while i < n {
                V::load(p.add(i)).mul(V::splat(inv)).store(p.add(i));
                i += V::N;
            }
            row[n..].iter_mut().for_each(|v| *v *= inv);
        }
    }

    /// # Safety
    /// The CPU has `V`'s features; `gamma` and `beta` hold `cols` values.
    #[inline(always)]
    pub(crate) unsafe fn layer_norm<V: Lanes>(
        x: &mut [f32],
        cols: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        if cols == 0 {
            return;
        }
        let n = cols - cols % V::N;
        let (gp, bp) = (gamma.as_ptr(), beta.as_ptr());
        for row in x.chunks_exact_mut(cols) {
            let p = row.as_mut_ptr();
            let mut sv = V::splat(0.0);
            let mut i = 0;
            while i < n {
                sv = sv.add(V::load(p.add(i)));
                i += V::N;
            }
            let mean = (sv.hsum() + row[n..].iter().sum::<f32>()) / cols as f32;
            let mv = V::splat(mean);
            let mut qv = V::splat(0.0);
            i = 0;
            while i < n {
                let d = V::load(p.add(i)).sub(mv);
                qv = qv.add(d.mul(d));
                i += V::N;
            }
            let var = (qv.hsum()
                + row[n..]
                    .iter()
                    .map(|v| (v - mean) * (v - mean))
                    .sum::<f32>())
                / cols as f32;
            // The lanes' own square root: libm's is legacy-SSE asm on x86-64, which
            // costs a state transition inside AVX code.
            let iv = V::splat(1.0).div(V::splat(var + eps).sqrt());
            let inv = iv.hmax();
            i = 0;
            while i < n {
                V::load(p.add(i))
                    .sub(mv)
                    .mul(iv)
                    .mul(V::load(gp.add(i)))
                    .add(V::load(bp.add(i)))
                    .store(p.add(i));
                i += V::N;
            }
            for j in n..cols {
                row[j] = (row[j] - mean) * inv * gamma[j] + beta[j];
            }
        }
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn quantize_u8<V: Lanes>(x: &[f32], scale: f32, zero: i32, y: &mut [u8]) {
        let len = x.len().min(y.len());
        let n = len - len % V::N;
        let s = V::splat(scale);
        let mut i = 0;
        while i < n {
            requant_v(V::load(x.as_ptr().add(i)).div(s), zero, 0, 255)
                .store_u8(y.as_mut_ptr().add(i));
            i += V::N;
        }
        quant::quantize_u8(&x[n..len], scale, zero, &mut y[n..len]);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn quantize_i8<V: Lanes>(x: &[f32], scale: f32, zero: i32, y: &mut [i8]) {
        let len = x.len().min(y.len());
        let n = len - len % V::N;
        let s = V::splat(scale);
        let mut i = 0;
        while i < n {
            requant_v(V::load(x.as_ptr().add(i)).div(s), zero, -128, 127)
                .store_i8(y.as_mut_ptr().add(i));
            i += V::N;
        }
        quant::quantize_i8(&x[n..len], scale, zero, &mut y[n..len]);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn dequantize_u8<V: Lanes>(x: &[u8], scale: f32, zero: i32, y: &mut [f32]) {
        let len = x.len().min(y.len());
        let n = len - len % V::N;
        let (s, z) = (V::splat(scale), V::splat(zero as f32));
        let mut i = 0;
        while i < n {
            V::load_u8(x.as_ptr().add(i))
                .sub(z)
                .mul(s)
                .store(y.as_mut_ptr().add(i));
            i += V::N;
        }
        quant::dequantize_u8(&x[n..len], scale, zero, &mut y[n..len]);
    }

    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn dequantize_i8<V: Lanes>(x: &[i8], scale: f32, zero: i32, y: &mut [f32]) {
        let len = x.len().min(y.len());
        let n = len - len % V::N;
        let (s, z) = (V::splat(scale), V::splat(zero as f32));
        let mut i = 0;
        while i < n {
            V::load_i8(x.as_ptr().add(i))
                .sub(z)
                .mul(s)
                .store(y.as_mut_ptr().add(i));
            i += V::N;
        }
        quant::dequantize_i8(&x[n..len], scale, zero, &mut y[n..len]);
    }
}

/// Instantiates every generic body for one lane type inside functions carrying the
/// tier's target features, and the tier's [`EwFns`] table.
/// Fused elementwise programs: the chains of float ops ONNX exporters write out as
/// separate nodes (SiLU, GELU with its bias, a batch norm around a hard swish) as one
/// pass, each value's intermediates in registers. A chain runs fused when it has the
/// shape of one of [`TEMPLATES`]: the template is a constant program, so its evaluation
/// compiles to straight-line code per vector; its constants' values come at run time.
/// Each value takes the operations, in the order and with the vector or scalar form,
/// that the separate ops give it: the vector forms for whole vectors from the slice's
/// start, the scalar reference forms for the last `len % V::N` values. So the results
/// are the separate ops' bits.
#[cfg(feature = "std")]
pub mod prog {
    // The fused forms are instantiated for the x86 tiers only; elsewhere chains run op by op.
    #![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    use super::*;

    /// Registers of a program.
    pub const REGS: usize = 4;
    /// Constants of a program at most.
    pub const CONSTS: usize = 10;
    /// Runs (sources) of a program at most.
    pub const SRCS: usize = 4;

    /// An operation: the binary ones read both operands, the others only `l`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Op {
        Add,
        Sub,
        Mul,
        Div,
        /// `l.max(lo).min(hi)` with `f32::max`/`f32::min` (a NaN gives the bound), the
        /// bounds the constants `r` and `r + 1` (`r` a [`Opd::Const`]).
        Clamp,
        Relu,
        Relu6,
        HardSwish,
        Sigmoid,
        GeluErf,
        Erf,
        /// Halves to even, the sign kept (ONNX's Round).
        Round,
        /// `l < 0 ? l·r : l` (PRelu, LeakyRelu).
        PRelu,
        /// `f32::max(l, r)` (a NaN gives the other operand).
        Max,
    }

    /// An operand: a register, the `k`-th run (as long as the output), the `k`-th
    /// constant.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Opd {
        Reg(u8),
        Src(u8),
        Const(u8),
        /// Not read (the second operand of a one-operand op).
        None,
    }

    /// `dst = op(l, r)`; the last instruction's result is the output.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ins {
        pub op: Op,
        pub dst: u8,
        pub l: Opd,
        pub r: Opd,
    }

    const fn ins(op: Op, dst: u8, l: Opd, r: Opd) -> Ins {
        Ins { op, dst, l, r }
    }

    use Op::*;
    use Opd::{Const as K, None as N, Reg as R, Src as S};

    /// The shapes that run fused: constants numbered in order of use, runs in order of
    /// first use.
    pub const TEMPLATES: [&[Ins]; 16] = [
        // SiLU: x·sigmoid(x) (YOLO, EfficientNet's swish).
        &[ins(Sigmoid, 0, S(0), N), ins(Mul, 1, S(0), R(0))],
        // SiLU, then a residual add.
        &[
            ins(Sigmoid, 0, S(0), N),
            ins(Mul, 1, S(0), R(0)),
            ins(Add, 0, S(1), R(1)),
        ],
        // GELU as BERT exporters write it, after its bias:
        // t = x + b; (t·½)·(erf(t/√2) + 1).
        &[
            ins(Add, 0, S(0), S(1)),
            ins(Div, 1, R(0), K(0)),
            ins(Mul, 2, R(0), K(1)),
            ins(Erf, 1, R(1), N),
            ins(Add, 0, R(1), K(2)),
            ins(Mul, 1, R(2), R(0)),
        ],
        // A batch norm, a hard swish t·clamp(t + 3, 0, 6)/6, another batch norm
        // (PaddleOCR).
        &[
            ins(Mul, 0, K(0), S(0)),
            ins(Add, 1, R(0), K(1)),
            ins(Add, 0, R(1), K(2)),
            ins(Clamp, 2, R(0), K(3)),
            ins(Mul, 0, R(1), R(2)),
            ins(Div, 2, R(0), K(5)),
            ins(Mul, 0, K(6), R(2)),
            ins(Add, 2, R(0), K(7)),
        ],
        // Attention scores: scaled, then masked.
        &[ins(Div, 0, S(0), K(0)), ins(Add, 1, R(0), S(1))],
        // A bias, then a residual add.
        &[ins(Add, 0, S(0), S(1)), ins(Add, 1, R(0), S(2))],
        // A batch norm, per channel.
        &[ins(Mul, 0, S(0), S(1)), ins(Add, 1, R(0), S(2))],
        // A batch norm of one scale and shift.
        &[ins(Mul, 0, K(0), S(0)), ins(Add, 1, R(0), K(1))],
        // A residual add, then ReLU.
        &[ins(Add, 0, S(0), S(1)), ins(Relu, 0, R(0), N)],
        // A bias, a batch norm per channel, ReLU.
        &[
            ins(Add, 0, S(0), S(1)),
            ins(Mul, 1, R(0), S(2)),
            ins(Add, 0, R(1), S(3)),
            ins(Relu, 0, R(0), N),
        ],
        // A dequantisation's scale, a bias, a batch norm, a hard swish, another batch
        // norm (PaddleOCR quantised dynamically).
        &[
            ins(Mul, 0, S(0), K(0)),
            ins(Add, 1, R(0), S(1)),
            ins(Mul, 0, K(1), R(1)),
            ins(Add, 1, R(0), K(2)),
            ins(Add, 0, R(1), K(3)),
            ins(Clamp, 2, R(0), K(4)),
            ins(Mul, 0, R(1), R(2)),
            ins(Div, 2, R(0), K(6)),
            ins(Mul, 0, K(7), R(2)),
            ins(Add, 2, R(0), K(8)),
        ],
        // A quantised code: plus its zero point, clamped, less the zero point.
        &[
            ins(Add, 0, S(0), K(0)),
            ins(Clamp, 1, R(0), K(1)),
            ins(Sub, 0, R(1), K(3)),
        ],
        // A batch norm per channel, then ReLU.
        &[
            ins(Mul, 0, S(0), S(1)),
            ins(Add, 1, R(0), S(2)),
            ins(Relu, 1, R(1), N),
        ],
        // A shift, then a sigmoid.
        &[ins(Add, 0, S(0), K(0)), ins(Sigmoid, 0, R(0), N)],
        // A value over its quantisation scale, rounded.
        &[ins(Div, 0, S(0), K(0)), ins(Round, 0, R(0), N)],
        // LeakyRelu, then a floor (openWakeWord's embedding).
        &[ins(PRelu, 0, S(0), K(0)), ins(Max, 1, R(0), K(1))],
    ];

    /// The template `prog` is, if any.
    pub fn template(prog: &[Ins]) -> Option<usize> {
        TEMPLATES.iter().position(|t| *t == prog)
    }

    /// `f32::max(v, o)` as x86 compiles it: a NaN `v` gives `o`, equal operands (±0)
    /// give `v`.
    #[inline(always)]
    fn max_v<V: Lanes>(v: V, o: V) -> V {
        // `|v| > -1` holds for every value but NaN.
        o.select_gt(v, o, v.abs().select_gt(sp(-1.0), v, o))
    }

    /// `f32::max(v, lo)` then `f32::min(·, hi)` as x86 compiles them: a NaN operand
    /// gives the other one, and equal operands (±0) give the first.
    #[inline(always)]
    fn clamp_v<V: Lanes>(v: V, lo: V, hi: V) -> V {
        let m = max_v(v, lo);
        m.select_gt(hi, hi, m.abs().select_gt(sp(-1.0), m, hi))
    }

    #[inline(always)]
    fn unary1(f: fn(&mut [f32]), v: f32) -> f32 {
        let mut x = [v];
        f(&mut x);
        x[0]
    }

    /// One value through `p`, in the scalar forms (the separate ops' form for a slice's
    /// last values).
    fn scalar(p: &[Ins], srcs: &[&[f32]], k: &[f32; CONSTS], j: usize) -> f32 {
        let mut r = [0.0f32; REGS];
        let mut last = 0.0;
        for ins in p {
            let get = |o: Opd, r: &[f32; REGS]| match o {
                Opd::Reg(x) => r[x as usize],
                Opd::Src(s) => srcs[s as usize][j],
                Opd::Const(c) => k[c as usize],
                Opd::None => 0.0,
            };
            let (a, b) = (get(ins.l, &r), get(ins.r, &r));
            last = match ins.op {
                Add => a + b,
                Sub => a - b,
                Mul => a * b,
                Div => a / b,
                Clamp => {
                    let c = match ins.r {
                        Opd::Const(c) => c as usize,
                        _ => 0,
                    };
                    a.max(k[c]).min(k[c + 1])
                }
                Relu => unary1(sc::relu, a),
                Relu6 => unary1(sc::relu6, a),
                HardSwish => unary1(sc::hard_swish, a),
                Sigmoid => unary1(sc::sigmoid, a),
                GeluErf => unary1(sc::gelu_erf, a),
                Erf => unary1(sc::erf, a),
                Round => round1(a),
                PRelu => {
                    if a < 0.0 {
                        a * b
                    } else {
                        a
                    }
                }
                Max => a.max(b),
            };
            r[ins.dst as usize] = last;
        }
        last
    }

    /// Round half to even, the sign kept: `(v + 2^23) - 2^23` with `v`'s sign below
    /// 2^23, `v` itself above (already integral) and for NaN.
    fn round1(v: f32) -> f32 {
        const TWO23: f32 = 8_388_608.0;
        if v.abs() < TWO23 {
            let c = TWO23.copysign(v);
            ((v + c) - c).copysign(v)
        } else {
            v
        }
    }

    /// One vector through `p`, from value `i` of the runs. With `p` a constant, the
    /// instructions unroll and their matches fold: straight-line code, the registers
    /// in vector registers.
    #[inline(always)]
    #[allow(unused_assignments)]
    unsafe fn vector<V: Lanes>(
        p: &[Ins],
        srcs: &[*const f32; SRCS],
        k: &[V; CONSTS],
        i: usize,
    ) -> V {
        let mut r = [sp::<V>(0.0); REGS];
        let mut last = sp::<V>(0.0);
        macro_rules! unrolled {
            ($($j:literal)*) => {$(
                if $j < p.len() {
                    let ins = p[$j];
                    let get = |o: Opd, r: &[V; REGS]| -> V {
                        match o {
                            Opd::Reg(x) => r[x as usize],
                            Opd::Src(s) => V::load(srcs[s as usize].add(i)),
                            Opd::Const(c) => k[c as usize],
                            Opd::None => sp(0.0),
                        }
                    };
                    let a = get(ins.l, &r);
                    last = match ins.op {
                        Add => a.add(get(ins.r, &r)),
                        Sub => a.sub(get(ins.r, &r)),
                        Mul => a.mul(get(ins.r, &r)),
                        Div => a.div(get(ins.r, &r)),
                        Clamp => {
                            let c = match ins.r {
                                Opd::Const(c) => c as usize,
                                _ => 0,
                            };
                            clamp_v(a, k[c], k[(c + 1) % CONSTS])
                        }
                        Relu => relu_v(a),
                        Relu6 => relu6_v(a),
                        HardSwish => hard_swish_v(a),
                        Sigmoid => sigmoid_v(a),
                        GeluErf => gelu_erf_v(a),
                        Erf => erf_v(a),
                        // The x86 tiers' rounding instruction: exact for every value.
                        Round => a.round(),
                        PRelu => {
                            let b = get(ins.r, &r);
                            sp::<V>(0.0).select_gt(a, a.mul(b), a)
                        }
                        Max => max_v(a, get(ins.r, &r)),
                    };
                    r[ins.dst as usize] = last;
                }
            )*};
        }
        unrolled!(0 1 2 3 4 5 6 7 8 9 10 11);
        last
    }

    /// Runs template `T` over `y` (checked by the caller: every run at least as long as
    /// `y`, `SRCS` runs and `CONSTS` constants given, unused ones empty or zero).
    /// # Safety
    /// The CPU has `V`'s features.
    #[inline(always)]
    pub(crate) unsafe fn run<V: Lanes, const T: usize>(
        srcs: &[&[f32]; SRCS],
        consts: &[f32; CONSTS],
        y: &mut [f32],
    ) {
        let p = TEMPLATES[T];
        let len = y.len();
        let n = len - len % V::N;
        let k = consts.map(|c| sp::<V>(c));
        let ptrs = srcs.map(|s| s.as_ptr());
        let yp = y.as_mut_ptr();
        let mut i = 0;
        // Two vectors at a time: two independent chains of operations to overlap.
        while i + 2 * V::N <= n {
            let (a, b) = (
                vector::<V>(p, &ptrs, &k, i),
                vector::<V>(p, &ptrs, &k, i + V::N),
            );
            a.store(yp.add(i));
            b.store(yp.add(i + V::N));
            i += 2 * V::N;
        }
        while i < n {
            vector::<V>(p, &ptrs, &k, i).store(yp.add(i));
            i += V::N;
        }
        for j in n..len {
            y[j] = scalar(p, srcs, consts, j);
        }
    }
}

/// `unsafe fn $name(t, srcs, k, y)`: [`prog::run`] of template `t` on lane type `$V`,
/// compiled with the tier's features (one arm per template).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
macro_rules! program_fn {
    ($name:ident, $V:ty, $feat:literal) => {
        /// [`crate::ew::prog::run`] of template `t` on this tier.
        /// # Safety
        /// The CPU has the tier's features; `t` is a template, the runs as `run` requires.
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name(
            t: usize,
            srcs: &[&[f32]; crate::ew::prog::SRCS],
            k: &[f32; crate::ew::prog::CONSTS],
            y: &mut [f32],
        ) {
            use crate::ew::prog::{run, TEMPLATES};
            // Every template has its arm below.
            const _: () = assert!(TEMPLATES.len() == 16);
            match t {
                0 => run::<$V, 0>(srcs, k, y),
                1 => run::<$V, 1>(srcs, k, y),
                2 => run::<$V, 2>(srcs, k, y),
                3 => run::<$V, 3>(srcs, k, y),
                4 => run::<$V, 4>(srcs, k, y),
                5 => run::<$V, 5>(srcs, k, y),
                6 => run::<$V, 6>(srcs, k, y),
                7 => run::<$V, 7>(srcs, k, y),
                8 => run::<$V, 8>(srcs, k, y),
                9 => run::<$V, 9>(srcs, k, y),
                10 => run::<$V, 10>(srcs, k, y),
                11 => run::<$V, 11>(srcs, k, y),
                12 => run::<$V, 12>(srcs, k, y),
                13 => run::<$V, 13>(srcs, k, y),
                14 => run::<$V, 14>(srcs, k, y),
                15 => run::<$V, 15>(srcs, k, y),
                _ => {}
            }
        }
    };
}
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) use program_fn;

macro_rules! ew_tier {
    ($table:ident, $V:ty, $attrs:tt, f16: ($to16:path, $from16:path)) => {
        mod ew_inst {
            use super::*;
            use crate::elementwise::Q8;
            use crate::ew::g;
            use crate::reference::ConvGeom;

            ew_tier!(@fns $V, $attrs;
                relu(x: &mut [f32]);
                relu6(x: &mut [f32]);
                hard_swish(x: &mut [f32]);
                sigmoid(x: &mut [f32]);
                gelu_erf(x: &mut [f32]);
                gelu_tanh(x: &mut [f32]);
                erf(x: &mut [f32]);
                add_f32(a: &[f32], b: &[f32], y: &mut [f32]);
                range0_f32(x: &[f32], out: &mut [f32]);
                mul_f32(a: &[f32], b: &[f32], y: &mut [f32]);
                sub_f32(a: &[f32], b: &[f32], y: &mut [f32]);
                div_f32(a: &[f32], b: &[f32], y: &mut [f32]);
                add_u8(a: &[u8], qa: Q8, b: &[u8], qb: Q8, y: &mut [u8], qy: Q8);
                gap_u8(x: &[u8], hw: usize, c: usize, qx: Q8, y: &mut [u8], qy: Q8);
                gap_f32(x: &[f32], hw: usize, c: usize, y: &mut [f32]);
                max_pool_f32(geom: &ConvGeom, x: &[f32], y: &mut [f32]);
                depthwise_f32(geom: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]);
                max_pool_u8(geom: &ConvGeom, x: &[u8], y: &mut [u8]);
                softmax(x: &mut [f32], cols: usize);
                layer_norm(x: &mut [f32], cols: usize, gamma: &[f32], beta: &[f32], eps: f32);
                quantize_u8(x: &[f32], scale: f32, zero: i32, y: &mut [u8]);
                quantize_i8(x: &[f32], scale: f32, zero: i32, y: &mut [i8]);
                dequantize_u8(x: &[u8], scale: f32, zero: i32, y: &mut [f32]);
                dequantize_i8(x: &[i8], scale: f32, zero: i32, y: &mut [f32]);
            );
        }

        pub static $table: crate::ew::EwFns = crate::ew::EwFns {
            add_f32: ew_inst::add_f32,
            range0_f32: ew_inst::range0_f32,
            // A gather per byte: the reference's loop, but where a tier has byte permutes.
            lut_u8: crate::elementwise::lut_u8,
            mul_f32: ew_inst::mul_f32,
            sub_f32: ew_inst::sub_f32,
            div_f32: ew_inst::div_f32,
            relu: ew_inst::relu,
            relu6: ew_inst::relu6,
            hard_swish: ew_inst::hard_swish,
            sigmoid: ew_inst::sigmoid,
            gelu_erf: ew_inst::gelu_erf,
            gelu_tanh: ew_inst::gelu_tanh,
            erf: ew_inst::erf,
            add_u8: ew_inst::add_u8,
            gap_u8: ew_inst::gap_u8,
            gap_f32: ew_inst::gap_f32,
            max_pool_f32: ew_inst::max_pool_f32,
            depthwise_f32: ew_inst::depthwise_f32,
            max_pool_u8: ew_inst::max_pool_u8,
            softmax: ew_inst::softmax,
            layer_norm: ew_inst::layer_norm,
            quantize_u8: ew_inst::quantize_u8,
            quantize_i8: ew_inst::quantize_i8,
            dequantize_u8: ew_inst::dequantize_u8,
            dequantize_i8: ew_inst::dequantize_i8,
            f32_to_f16: $to16,
            f16_to_f32: $from16,
            transpose_f32: crate::elementwise::transpose_f32,
        };
    };
    (@fns $V:ty, $attrs:tt; $($name:ident $args:tt;)*) => {$(
        ew_tier!(@one $V, $attrs, $name $args);
    )*};
    (@one $V:ty, [$(#[$m:meta])*], $name:ident($($arg:ident: $t:ty),*)) => {
        /// # Safety
        /// The CPU has the tier's features; lengths as checked by [`crate::ops`].
        $(#[$m])*
        pub(super) unsafe fn $name($($arg: $t),*) {
            g::$name::<$V>($($arg),*)
        }
    };
}
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    all(target_arch = "arm", not(target_os = "none")),
    all(target_arch = "wasm32", target_feature = "simd128")
))]
pub(crate) use ew_tier;

/// Portable lanes: `wide::f32x8` (two SSE registers on x86-64, NEON pairs on aarch64,
/// scalar arrays elsewhere).
#[derive(Clone, Copy)]
pub(crate) struct Wide(wide::f32x8);

impl Lanes for Wide {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Wide(wide::f32x8::splat(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Wide(wide::f32x8::from((p as *const [f32; 8]).read_unaligned()))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        (p as *mut [f32; 8]).write_unaligned(self.0.to_array())
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self {
        let b = (p as *const [u8; 8]).read_unaligned();
        Wide(wide::f32x8::from(b.map(|v| v as f32)))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        let b = (p as *const [i8; 8]).read_unaligned();
        Wide(wide::f32x8::from(b.map(|v| v as f32)))
    }
    #[inline(always)]
    unsafe fn store_u8(self, p: *mut u8) {
        (p as *mut [u8; 8]).write_unaligned(self.0.to_array().map(|v| v as i32 as u8))
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8) {
        (p as *mut [i8; 8]).write_unaligned(self.0.to_array().map(|v| v as i32 as i8))
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Wide(self.0 + o.0)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Wide(self.0 - o.0)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Wide(self.0 * o.0)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Wide(self.0 / o.0)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        Wide(self.0.mul_add(a.0, b.0))
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        Wide(self.0.cmp_gt(o.0).blend(self.0, o.0))
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        Wide(self.0.cmp_lt(o.0).blend(self.0, o.0))
    }
    #[inline(always)]
    fn round(self) -> Self {
        // Adding and removing 1.5·2^23 leaves no fraction bits for |v| < 2^22, so the
        // FPU's round-to-nearest-even does the rounding.
        const M: f32 = 12_582_912.0;
        let m = wide::f32x8::splat(M);
        Wide((self.0 + m) - m)
    }
    #[inline(always)]
    fn exp2i(self) -> Self {
        Wide(wide::f32x8::from(
            self.0
                .to_array()
                .map(|n| f32::from_bits(((n as i32 + 127) as u32) << 23)),
        ))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Wide(self.0.abs())
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Wide(self.0.sqrt())
    }
    #[inline(always)]
    fn copysign(self, s: Self) -> Self {
        Wide(self.0.copysign(s.0))
    }
    #[inline(always)]
    fn select_gt(self, t: Self, a: Self, b: Self) -> Self {
        Wide(self.0.cmp_gt(t.0).blend(a.0, b.0))
    }
    #[inline(always)]
    fn hsum(self) -> f32 {
        self.0.to_array().iter().sum()
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        self.0
            .to_array()
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| b.max(a))
    }
}

ew_tier!(EW_PORTABLE, Wide, [], f16: (f32_to_f16_portable, f16_to_f32_portable));

/// `half`'s slice conversion (F16C or NEON fp16 when the build enables them).
pub fn f32_to_f16_portable(x: &[f32], y: &mut [f16]) {
    use half::slice::HalfFloatSliceExt;
    let n = x.len().min(y.len());
    y[..n].convert_from_f32_slice(&x[..n]);
}

pub fn f16_to_f32_portable(x: &[f16], y: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let n = x.len().min(y.len());
    x[..n].convert_to_f32_slice(&mut y[..n]);
}
