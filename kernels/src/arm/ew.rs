//! armv7 NEON lanes for the elementwise tier ([`crate::ew`]): two f32 lanes in a `d`
//! register. The `neon` target feature and `core::arch::arm` are unstable on 32-bit ARM,
//! so each operation is one `asm!` instruction on `dreg` operands (carried as the bits of
//! an `f64`, which the compiler only moves); divisions and square roots are VFP per lane
//! (NEON has neither). NEON flushes subnormal floats to zero: results equal the
//! reference's for normal values, which is what the tier tests exercise.

use crate::ew::{ew_tier, Lanes};

/// Two f32 lanes (low lane first) as the bits of an `f64` in a `d` register. Only
/// `unsafe` constructors make one, inside the NEON tier's kernels, which dispatch runs
/// only when the kernel reports NEON.
#[derive(Clone, Copy)]
pub(crate) struct Nd(f64);

#[inline(always)]
fn pack(a: f32, b: f32) -> Nd {
    Nd(f64::from_bits(
        ((b.to_bits() as u64) << 32) | a.to_bits() as u64,
    ))
}

#[inline(always)]
fn lanes(v: Nd) -> [f32; 2] {
    let b = v.0.to_bits();
    [f32::from_bits(b as u32), f32::from_bits((b >> 32) as u32)]
}

macro_rules! neon2 {
    ($op:literal, $a:expr, $b:expr) => {{
        let r: f64;
        // SAFETY: `self` exists, so the CPU has NEON (see `Nd`); registers only.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                concat!($op, " {r}, {a}, {b}"),
                r = lateout(dreg) r,
                a = in(dreg) $a.0,
                b = in(dreg) $b.0,
                options(pure, nomem, nostack),
            )
        };
        Nd(r)
    }};
}

impl Lanes for Nd {
    const N: usize = 2;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        pack(v, v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        let r: f64;
        core::arch::asm!(
            ".fpu neon",
            "vld1.32 {{{r}}}, [{p}]",
            r = lateout(dreg) r,
            p = in(reg) p,
            options(pure, readonly, nostack),
        );
        Nd(r)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        core::arch::asm!(
            ".fpu neon",
            "vst1.32 {{{r}}}, [{p}]",
            r = in(dreg) self.0,
            p = in(reg) p,
            options(nostack),
        );
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self {
        pack(*p as f32, *p.add(1) as f32)
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        pack(*p as f32, *p.add(1) as f32)
    }
    #[inline(always)]
    unsafe fn store_u8(self, p: *mut u8) {
        let [a, b] = lanes(self);
        *p = a as i32 as u8;
        *p.add(1) = b as i32 as u8;
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8) {
        let [a, b] = lanes(self);
        *p = a as i32 as i8;
        *p.add(1) = b as i32 as i8;
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        neon2!("vadd.f32", self, o)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        neon2!("vsub.f32", self, o)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        neon2!("vmul.f32", self, o)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        let ([a, b], [c, d]) = (lanes(self), lanes(o));
        pack(a / c, b / d)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        self.mul(a).add(b)
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // `self > o ? self : o` (`vmax` would return NaN for a NaN lane).
        self.select_gt(o, self, o)
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // `o > self ? self : o`.
        o.select_gt(self, self, o)
    }
    #[inline(always)]
    fn round(self) -> Self {
        // Adding and removing 1.5·2^23 leaves no fraction bits for |v| < 2^22; NEON
        // always rounds to nearest even.
        // SAFETY: constructing from a constant inside a NEON kernel (see `Nd`).
        let m = unsafe { Nd::splat(12_582_912.0) };
        self.add(m).sub(m)
    }
    #[inline(always)]
    fn exp2i(self) -> Self {
        let r: f64;
        // SAFETY: as in `neon2!`.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "vcvt.s32.f32 {r}, {a}",
                "vshl.i32 {r}, {r}, #23",
                "vadd.i32 {r}, {r}, {b}",
                r = out(dreg) r,
                a = in(dreg) self.0,
                b = in(dreg) f64::from_bits(0x3f80_0000_3f80_0000),
                options(pure, nomem, nostack),
            )
        };
        Nd(r)
    }
    #[inline(always)]
    fn abs(self) -> Self {
        let r: f64;
        // SAFETY: as in `neon2!`.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "vabs.f32 {r}, {a}",
                r = lateout(dreg) r,
                a = in(dreg) self.0,
                options(pure, nomem, nostack),
            )
        };
        Nd(r)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        let [a, b] = lanes(self);
        pack(libm::sqrtf(a), libm::sqrtf(b))
    }
    #[inline(always)]
    fn copysign(self, s: Self) -> Self {
        let r: f64;
        // SAFETY: as in `neon2!`.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "vbsl {m}, {s}, {a}",
                m = inout(dreg) f64::from_bits(0x8000_0000_8000_0000) => r,
                s = in(dreg) s.0,
                a = in(dreg) self.0,
                options(pure, nomem, nostack),
            )
        };
        Nd(r)
    }
    #[inline(always)]
    fn select_gt(self, t: Self, a: Self, b: Self) -> Self {
        let r: f64;
        // SAFETY: as in `neon2!`.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "vcgt.f32 {m}, {x}, {t}",
                "vbsl {m}, {a}, {b}",
                m = out(dreg) r,
                x = in(dreg) self.0,
                t = in(dreg) t.0,
                a = in(dreg) a.0,
                b = in(dreg) b.0,
                options(pure, nomem, nostack),
            )
        };
        Nd(r)
    }
    #[inline(always)]
    fn hsum(self) -> f32 {
        let [a, b] = lanes(self);
        a + b
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        let [a, b] = lanes(self);
        b.max(a)
    }
}

ew_tier!(EW_NEON, Nd, [], f16: (crate::ew::f32_to_f16_portable, crate::ew::f16_to_f32_portable));
