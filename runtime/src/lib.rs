//! edgetune: run a frozen int8 backbone on edgetune's kernels and train small adapters
//! beside it, on the device.
#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;

pub mod adapt;
pub mod error;
pub mod exec;
pub mod features;
#[cfg(feature = "std")]
pub mod fsutil;
#[cfg(feature = "onnx")]
pub mod import;
#[cfg(feature = "std")]
pub mod npy;
pub mod plan;
pub mod preprocess;
pub mod wire;

pub use edgetune_kernels as kernels;
pub use error::{Error, Result};
pub use exec::Executor;
pub use plan::Plan;
