//! Every kernel of every tier, with its tile and the CPU features it needs. Dispatch,
//! tests and benchmarks all walk these tables.

use crate::ew::EwFns;
use crate::{DwI8Fn, F32GemmFn, I8GemmFn};

/// Kernel tiers, from the specification to the most specialised ISA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Reference,
    Portable,
    Avx2,
    AvxVnni,
    Avx512,
    Avx512Vnni,
    Neon,
    NeonDot,
    I8mm,
    Simd128,
}

impl Tier {
    pub const ALL: [Tier; 10] = [
        Tier::Reference,
        Tier::Portable,
        Tier::Avx2,
        Tier::AvxVnni,
        Tier::Avx512,
        Tier::Avx512Vnni,
        Tier::Neon,
        Tier::NeonDot,
        Tier::I8mm,
        Tier::Simd128,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Reference => "reference",
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::AvxVnni => "avxvnni",
            Tier::Avx512 => "avx512",
            Tier::Avx512Vnni => "avx512vnni",
            Tier::Neon => "neon",
            Tier::NeonDot => "dotprod",
            Tier::I8mm => "i8mm",
            Tier::Simd128 => "simd128",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

/// CPU features a kernel may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Avx2,
    Fma,
    Avx512f,
    Avx512bw,
    Avx512vl,
    Avx512vnni,
    Avx512vbmi,
    AvxVnni,
    F16c,
    Neon,
    DotProd,
    I8mm,
    Simd128,
}

#[derive(Clone, Copy, Debug)]
pub struct KernelDesc<F: 'static> {
    /// `dtype_op_tile__isa`, as the function is named.
    pub name: &'static str,
    pub tier: Tier,
    pub features: &'static [Feature],
    pub mr: usize,
    pub nr: usize,
    pub f: F,
}

macro_rules! desc {
    ($f:path, $tier:ident, [$($feat:ident),*], $mr:expr, $nr:expr) => {
        KernelDesc { name: stringify!($f), tier: Tier::$tier, features: &[$(Feature::$feat),*], mr: $mr, nr: $nr, f: $f }
    };
}

#[cfg(target_arch = "aarch64")]
use crate::aarch64 as a64;
#[cfg(all(target_arch = "arm", not(target_os = "none")))]
use crate::arm;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use crate::wasm32 as wasm;
#[cfg(target_arch = "x86_64")]
use crate::x86_64 as x86;
use crate::{portable as p, reference as r};

pub static F32_GEMM: &[KernelDesc<F32GemmFn>] = &[
    desc!(r::f32_gemm__reference, Reference, [], 1, 1),
    desc!(p::f32_gemm_4x16__portable, Portable, [], 4, 16),
    #[cfg(target_arch = "x86_64")]
    desc!(x86::f32_gemm_6x16__avx2, Avx2, [Avx2, Fma], 6, 16),
    #[cfg(target_arch = "x86_64")]
    desc!(x86::f32_gemm_12x16__avx512, Avx512, [Avx512f], 12, 16),
    #[cfg(target_arch = "aarch64")]
    desc!(a64::f32_gemm_8x16__neon, Neon, [Neon], 8, 16),
    #[cfg(all(target_arch = "arm", not(target_os = "none")))]
    desc!(arm::f32_gemm_4x16__neon, Neon, [Neon], 4, 16),
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    desc!(wasm::f32_gemm_4x16__simd128, Simd128, [Simd128], 4, 16),
];

pub static I8_GEMM: &[KernelDesc<I8GemmFn>] = &[
    desc!(r::i8_gemm__reference, Reference, [], 1, 1),
    desc!(p::i8_gemm_4x16__portable, Portable, [], 4, 16),
    #[cfg(target_arch = "x86_64")]
    desc!(x86::i8_gemm_6x16__avx2, Avx2, [Avx2, Fma], 6, 16),
    #[cfg(target_arch = "x86_64")]
    desc!(x86::i8_gemm_6x16__avxvnni, AvxVnni, [Avx2, AvxVnni], 6, 16),
    #[cfg(target_arch = "x86_64")]
    desc!(
        x86::i8_gemm_12x16__avx512vnni,
        Avx512Vnni,
        [Avx512f, Avx512bw, Avx512vl, Avx512vnni],
        12,
        16
    ),
    #[cfg(all(target_arch = "arm", not(target_os = "none")))]
    desc!(arm::i8_gemm_2x16__neon, Neon, [Neon], 2, 16),
    #[cfg(target_arch = "aarch64")]
    desc!(a64::i8_gemm_4x16__neon, Neon, [Neon], 4, 16),
    #[cfg(target_arch = "aarch64")]
    desc!(a64::i8_gemm_8x16__neondot, NeonDot, [Neon, DotProd], 8, 16),
    #[cfg(target_arch = "aarch64")]
    desc!(a64::i8_gemm_8x16__i8mm, I8mm, [Neon, I8mm], 8, 16),
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    desc!(wasm::i8_gemm_4x16__simd128, Simd128, [Simd128], 4, 16),
];

/// The int8 GEMM with pair sums saturated to i16, as `vpmaddubsw` gives them (opt-in,
/// [`crate::dispatch::Kernels::saturating`]); tested against its own reference.
pub static I8_GEMM_SAT: &[KernelDesc<I8GemmFn>] = &[
    desc!(r::i8_gemm_sat__reference, Reference, [], 1, 1),
    #[cfg(target_arch = "x86_64")]
    desc!(x86::i8_gemm_6x16__avx2sat, Avx2, [Avx2, Fma], 6, 16),
];

pub static DW_I8: &[KernelDesc<DwI8Fn>] = &[
    desc!(r::dw_i8__reference, Reference, [], 1, 1),
    desc!(p::dw_i8_8c__portable, Portable, [], 1, 8),
    #[cfg(target_arch = "aarch64")]
    desc!(a64::dw_i8_8c__neon, Neon, [Neon], 1, 8),
    #[cfg(all(target_arch = "arm", not(target_os = "none")))]
    desc!(arm::dw_i8_8c__neon, Neon, [Neon], 1, 8),
    #[cfg(target_arch = "x86_64")]
    desc!(x86::dw_i8_8c__avx2, Avx2, [Avx2, Fma], 1, 8),
    #[cfg(target_arch = "x86_64")]
    desc!(x86::dw_i8_8c__avxvnni, AvxVnni, [Avx2, Fma, AvxVnni], 1, 8),
    #[cfg(target_arch = "x86_64")]
    desc!(
        x86::dw_i8_16c__avx512,
        Avx512,
        [Avx512f, Avx512bw, Avx512vl],
        1,
        16
    ),
    #[cfg(target_arch = "x86_64")]
    desc!(
        x86::dw_i8_16c__avx512vnni,
        Avx512Vnni,
        [Avx512f, Avx512bw, Avx512vl, Avx512vnni],
        1,
        16
    ),
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    desc!(wasm::dw_i8_8c__simd128, Simd128, [Simd128], 1, 8),
];

/// Elementwise ops, reductions and (de)quantisation: one table of functions per tier
/// (`nr` = f32 lanes per step).
pub static EW: &[KernelDesc<&'static EwFns>] = &[
    KernelDesc {
        name: "ew__reference",
        tier: Tier::Reference,
        features: &[],
        mr: 1,
        nr: 1,
        f: &crate::ew::EW_REFERENCE,
    },
    // Not on bare-metal Arm: `wide` has no SIMD there, so its eight lanes are the
    // reference loops unrolled, twice the code for no vector speed in firmware that counts
    // its bytes (the reference tier serves; integer results are bit-exact between them).
    #[cfg(not(all(target_arch = "arm", target_os = "none")))]
    KernelDesc {
        name: "ew_8__portable",
        tier: Tier::Portable,
        features: &[],
        mr: 1,
        nr: 8,
        f: &crate::ew::EW_PORTABLE,
    },
    #[cfg(target_arch = "x86_64")]
    KernelDesc {
        name: "ew_8__avx2",
        tier: Tier::Avx2,
        features: &[Feature::Avx2, Feature::Fma, Feature::F16c],
        mr: 1,
        nr: 8,
        f: &x86::EW_AVX2,
    },
    #[cfg(target_arch = "x86_64")]
    KernelDesc {
        name: "ew_16__avx512",
        tier: Tier::Avx512,
        features: &[Feature::Avx512f, Feature::F16c],
        mr: 1,
        nr: 16,
        f: &x86::EW_AVX512,
    },
    // The same with VBMI's byte permutes for table lookups (`lut_u8`).
    #[cfg(target_arch = "x86_64")]
    KernelDesc {
        name: "ew_16__avx512vbmi",
        tier: Tier::Avx512,
        features: &[
            Feature::Avx512f,
            Feature::Avx512bw,
            Feature::Avx512vbmi,
            Feature::F16c,
        ],
        mr: 1,
        nr: 16,
        f: &x86::EW_AVX512VBMI,
    },
    #[cfg(target_arch = "aarch64")]
    KernelDesc {
        name: "ew_4__neon",
        tier: Tier::Neon,
        features: &[Feature::Neon],
        mr: 1,
        nr: 4,
        f: &a64::EW_NEON,
    },
    #[cfg(all(target_arch = "arm", not(target_os = "none")))]
    KernelDesc {
        name: "ew_2__neon",
        tier: Tier::Neon,
        features: &[Feature::Neon],
        mr: 1,
        nr: 2,
        f: &arm::EW_NEON,
    },
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    KernelDesc {
        name: "ew_4__simd128",
        tier: Tier::Simd128,
        features: &[Feature::Simd128],
        mr: 1,
        nr: 4,
        f: &wasm::EW_SIMD128,
    },
];
