//! edgetune's compute kernels.
//!
//! Every kernel family has a `reference` tier (naive, the specification), a `portable`
//! tier (`wide`, every target) and per-ISA tiers. [`registry`] lists them all with the CPU
//! features they need; [`dispatch`] picks one per family once. Safe wrappers in
//! [`ops`] check lengths and shapes, so no safe call can cause undefined behaviour.
#![cfg_attr(not(feature = "std"), no_std)]
// Kernel names follow `dtype_op_tile__isa`.
#![allow(non_snake_case)]
// Index loops over tiles and lanes mirror the maths of the kernels.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(all(target_arch = "arm", not(target_os = "none")))]
pub mod arm;
pub mod dispatch;
pub mod elementwise;
pub mod ew;
pub mod ops;
pub mod pack;
pub mod portable;
pub mod quant;
pub mod reference;
pub mod registry;
mod tile;
pub mod types;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod wasm32;
pub mod winograd;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use dispatch::{Cpu, Kernels};
pub use registry::{KernelDesc, Tier};
pub use types::*;
