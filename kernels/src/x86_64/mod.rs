//! x86-64 tiers: AVX2+FMA, AVX-512F, AVX-512 VNNI and AVX-VNNI.

mod dw;
mod epilogue;
mod ew;
mod ew512;
mod gemm_f32;
mod gemm_i8;
pub use dw::*;
#[cfg(feature = "std")]
pub(crate) use ew::program__avx2;
pub use ew::{f16_to_f32__f16c, f32_to_f16__f16c, EW_AVX2};
#[cfg(feature = "std")]
pub(crate) use ew512::program__avx512;
pub use ew512::{lut_u8__avx512vbmi, EW_AVX512, EW_AVX512VBMI};
pub use gemm_f32::*;
pub use gemm_i8::*;
