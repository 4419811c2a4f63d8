//! Tuning the backbone's last blocks from the tap cache.
//!
//! The ops of the plan after a cut tap, up to the global pooling that makes the features,
//! become a float copy ([`TailNet`]): 1×1 and depthwise convolutions with their fused
//! clamps (ReLU6 as quantised), residual adds, activations and the pooling, weights
//! dequantised from the int8 plan. A cosine classifier on the pooled features, initialised
//! from the class prototypes, sits on top. Three variants train different parts of it:
//!
//! * `tail` — every weight and bias of the copy, and the classifier;
//! * `bias` (after TinyTL) — per-channel biases and scales of every convolution;
//! * `lora` — rank-`r` updates `ΔW = A·B·(2/r)` of the 1×1 convolutions.
//!
//! Everything before the cut stays the frozen int8 plan: its output at the cut is what the
//! tap cache holds, so a training step never runs the backbone.
//!
//! `net` builds the float copy from the plan; `train` holds the trainable [`Tail`] (its
//! parameters and scratch) and `backprop` its passes; `quant` re-quantises a trained tail
//! to int8 ([`TailQ`]).

mod backprop;
mod net;
mod pass;
mod quant;
mod train;

pub use backprop::EVAL_ROWS;
pub use net::{Act1, DwGeom, Layer, TailNet};
pub use quant::TailQ;
pub use train::{Tail, Variant};
