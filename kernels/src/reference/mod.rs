//! The specification: naive loops, obviously right, every other tier is tested against them.

mod conv;
mod gemm;
pub use conv::*;
pub use gemm::*;
