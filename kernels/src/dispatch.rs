//! Detects the CPU once and picks one kernel per family.

use crate::ew::EwFns;
use crate::registry::{Feature, KernelDesc, Tier, DW_I8, EW, F32_GEMM, I8_GEMM, I8_GEMM_SAT};
use crate::{DwI8Fn, F32GemmFn, I8GemmFn};

/// The CPU features present, detected at run time (std) or from `cfg(target_feature)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub avx512vbmi: bool,
    pub avxvnni: bool,
    pub f16c: bool,
    pub neon: bool,
    pub dotprod: bool,
    pub i8mm: bool,
    pub simd128: bool,
}

impl Cpu {
    /// Features the compiler may assume on this target (what no_std builds use).
    pub fn from_cfg() -> Cpu {
        Cpu {
            avx2: cfg!(target_feature = "avx2"),
            fma: cfg!(target_feature = "fma"),
            avx512f: cfg!(target_feature = "avx512f"),
            avx512bw: cfg!(target_feature = "avx512bw"),
            avx512vl: cfg!(target_feature = "avx512vl"),
            avx512vnni: cfg!(target_feature = "avx512vnni"),
            avx512vbmi: cfg!(target_feature = "avx512vbmi"),
            avxvnni: cfg!(target_feature = "avxvnni"),
            f16c: cfg!(target_feature = "f16c"),
            neon: cfg!(target_feature = "neon"),
            dotprod: cfg!(all(target_arch = "aarch64", target_feature = "dotprod")),
            i8mm: cfg!(all(target_arch = "aarch64", target_feature = "i8mm")),
            simd128: cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
        }
    }

    /// Run-time detection.
    #[cfg(feature = "std")]
    pub fn detect() -> Cpu {
        #[allow(unused_mut)]
        let mut c = Cpu::from_cfg();
        #[cfg(target_arch = "x86_64")]
        {
            c.avx2 = std::is_x86_feature_detected!("avx2");
            c.fma = std::is_x86_feature_detected!("fma");
            c.avx512f = std::is_x86_feature_detected!("avx512f");
            c.avx512bw = std::is_x86_feature_detected!("avx512bw");
            c.avx512vl = std::is_x86_feature_detected!("avx512vl");
            c.avx512vnni = std::is_x86_feature_detected!("avx512vnni");
            c.avx512vbmi = std::is_x86_feature_detected!("avx512vbmi");
            c.avxvnni = std::is_x86_feature_detected!("avxvnni");
            c.f16c = std::is_x86_feature_detected!("f16c");
        }
        #[cfg(target_arch = "aarch64")]
        {
            c.neon = std::arch::is_aarch64_feature_detected!("neon");
            c.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
            c.i8mm = std::arch::is_aarch64_feature_detected!("i8mm");
        }
        #[cfg(all(target_arch = "arm", not(target_os = "none")))]
        {
            c.neon = crate::arm::detect_neon();
        }
        c
    }

    pub fn has(&self, f: Feature) -> bool {
        match f {
            Feature::Avx2 => self.avx2,
            Feature::Fma => self.fma,
            Feature::Avx512f => self.avx512f,
            Feature::Avx512bw => self.avx512bw,
            Feature::Avx512vl => self.avx512vl,
            Feature::Avx512vnni => self.avx512vnni,
            Feature::Avx512vbmi => self.avx512vbmi,
            Feature::AvxVnni => self.avxvnni,
            Feature::F16c => self.f16c,
            Feature::Neon => self.neon,
            Feature::DotProd => self.dotprod,
            Feature::I8mm => self.i8mm,
            Feature::Simd128 => self.simd128,
        }
    }

    pub fn supports<F>(&self, d: &KernelDesc<F>) -> bool {
        d.features.iter().all(|&f| self.has(f))
    }
}

/// Picks the best kernel the CPU runs, or with `force`, the best one at or below that tier.
pub fn pick<F: Copy>(
    table: &'static [KernelDesc<F>],
    cpu: &Cpu,
    force: Option<Tier>,
) -> &'static KernelDesc<F> {
    let mut best = &table[0];
    for d in table {
        let allowed = match force {
            Some(Tier::Reference) => d.tier == Tier::Reference,
            Some(t) => d.tier <= t,
            None => true,
        };
        if allowed && cpu.supports(d) && d.tier >= best.tier {
            best = d;
        }
    }
    best
}

/// One chosen kernel per family.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    pub f32_gemm: &'static KernelDesc<F32GemmFn>,
    pub i8_gemm: &'static KernelDesc<I8GemmFn>,
    pub dw_i8: &'static KernelDesc<DwI8Fn>,
    pub ew: &'static KernelDesc<&'static EwFns>,
}

impl Kernels {
    pub fn select(cpu: &Cpu, force: Option<Tier>) -> Kernels {
        Kernels {
            f32_gemm: pick(F32_GEMM, cpu, force),
            i8_gemm: pick(I8_GEMM, cpu, force),
            dw_i8: pick(DW_I8, cpu, force),
            ew: pick(EW, cpu, force),
        }
    }

    /// The int8 GEMM of the saturating family (`registry::I8_GEMM_SAT`) in place of the
    /// exact one on x86 without VNNI: onnxruntime's arithmetic there (u8×s8 pairs
    /// saturated to i16), for comparing like with like. Not exact: on EfficientNet-Lite0
    /// its features are at cosine 0.71 from the exact ones (BENCHMARKS.md). With VNNI, or
    /// on ARM, the exact kernels are kept.
    pub fn saturating(mut self, cpu: &Cpu) -> Kernels {
        if self.i8_gemm.tier == Tier::Avx2 {
            let sat = pick(I8_GEMM_SAT, cpu, Some(Tier::Avx2));
            if sat.tier == Tier::Avx2 {
                self.i8_gemm = sat;
            }
        }
        self
    }

    /// Detected CPU, honouring `EDGETUNE_KERNELS=reference|portable|<tier>` and
    /// `EDGETUNE_INT8=saturating` (see [`Kernels::saturating`]).
    #[cfg(feature = "std")]
    pub fn detect() -> Kernels {
        let force = std::env::var("EDGETUNE_KERNELS")
            .ok()
            .and_then(|s| Tier::parse(&s));
        let cpu = Cpu::detect();
        let k = Kernels::select(&cpu, force);
        match std::env::var("EDGETUNE_INT8").as_deref() {
            Ok("saturating") => k.saturating(&cpu),
            _ => k,
        }
    }

    #[cfg(not(feature = "std"))]
    pub fn detect() -> Kernels {
        Kernels::select(&Cpu::from_cfg(), None)
    }

    /// `f32_gemm=…, i8_gemm=…, dw_i8=…, ew=…`, for logs.
    pub fn describe(&self) -> [(&'static str, &'static str); 4] {
        [
            ("f32_gemm", self.f32_gemm.name),
            ("i8_gemm", self.i8_gemm.name),
            ("dw_i8", self.dw_i8.name),
            ("ew", self.ew.name),
        ]
    }
}
