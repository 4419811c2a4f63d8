//! edgetune: run a frozen int8 backbone on edgetune's kernels and train small adapters
//! beside it, on the device.
#![cfg_attr(not(feature = "std"), no_std)]
// Index loops over channels mirror the maths of the layers and their backward.
#![allow(clippy::needless_range_loop)]
// Kernel-style signatures and layouts: many plain arguments, explicit tuple types.
#![allow(clippy::too_many_arguments, clippy::type_complexity)]
extern crate alloc;

pub mod adapt;
pub mod arena;
pub mod audio;
pub mod error;
pub mod exec;
pub mod features;
pub mod frame;
#[cfg(feature = "std")]
pub mod fsutil;
#[cfg(feature = "onnx")]
pub mod import;
mod logging;
#[cfg(feature = "std")]
pub mod npy;
pub mod par;
pub mod plan;
pub mod preprocess;
#[cfg(feature = "std")]
pub mod session;
pub mod wire;

pub use edgetune_kernels as kernels;
pub use error::{Error, Result};
pub use exec::Executor;
pub use plan::Plan;
#[cfg(feature = "std")]
pub use session::Session;
