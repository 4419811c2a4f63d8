//! One error type for the runtime: every variant names what went wrong and where.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The model uses an op (or an op form) the lowering cannot map.
    UnsupportedOp {
        op: String,
        node: String,
        inputs: Vec<Vec<usize>>,
        why: String,
    },
    /// A model file that does not parse.
    Malformed { what: String },
    /// A shape that does not fit.
    ShapeMismatch {
        op: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A kernel rejected its buffers.
    Kernel(edgetune_kernels::ShapeError),
    /// A plan or adapter file is bad: magic, version, checksum, truncation, sizes. Most
    /// details are static text, so a device without a heap can refuse a file too.
    BadFile {
        what: &'static str,
        detail: alloc::borrow::Cow<'static, str>,
    },
    /// An adapter trained on another backbone.
    PlanMismatch { expected: [u8; 16], got: [u8; 16] },
    /// The arena the plan needs exceeds the caller's limit.
    ArenaTooLarge { need: usize, limit: usize },
    /// NaN or infinity where finite values are required.
    NonFinite { what: String },
    /// Bad arguments: empty support set, unknown input name, ...
    Invalid { what: String },
    /// Training would exceed the memory budget.
    OverBudget { need: usize, limit: usize },
    /// Training diverged; the previous adapter is kept.
    Diverged { step: usize, loss: f32 },
    /// The progress callback asked to stop.
    Cancelled { step: usize },
    #[cfg(feature = "std")]
    Io { path: String, detail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnsupportedOp {
                op,
                node,
                inputs,
                why,
            } => {
                write!(
                    f,
                    "unsupported op {op} at node '{node}' (input shapes {inputs:?}): {why}"
                )
            }
            Error::Malformed { what } => write!(f, "malformed model: {what}"),
            Error::ShapeMismatch { op, expected, got } => {
                write!(f, "{op}: expected shape {expected:?}, got {got:?}")
            }
            Error::Kernel(e) => write!(f, "kernel: {e}"),
            Error::BadFile { what, detail } => write!(f, "bad {what}: {detail}"),
            Error::PlanMismatch { expected, got } => {
                write!(
                    f,
                    "adapter was trained on plan {} but this plan is {}",
                    hex(got),
                    hex(expected)
                )
            }
            Error::ArenaTooLarge { need, limit } => {
                write!(f, "plan needs an arena of {need} bytes, limit is {limit}")
            }
            Error::NonFinite { what } => write!(f, "non-finite value in {what}"),
            Error::Invalid { what } => write!(f, "{what}"),
            Error::OverBudget { need, limit } => {
                write!(f, "training needs {need} bytes, budget is {limit}")
            }
            Error::Diverged { step, loss } => write!(
                f,
                "training diverged at step {step} (loss {loss}); previous adapter kept"
            ),
            Error::Cancelled { step } => write!(f, "training cancelled at step {step}"),
            #[cfg(feature = "std")]
            Error::Io { path, detail } => write!(f, "{path}: {detail}"),
        }
    }
}

/// The same text as `Display`, formatted on the host that decodes the log.
#[cfg(feature = "defmt")]
impl defmt::Format for Error {
    fn format(&self, f: defmt::Formatter) {
        use defmt::write;
        match self {
            Error::UnsupportedOp {
                op,
                node,
                inputs,
                why,
            } => {
                write!(
                    f,
                    "unsupported op {=str} at node '{=str}' (input shapes [",
                    op.as_str(),
                    node.as_str()
                );
                for (i, s) in inputs.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{=str}{=[?]}", sep, s.as_slice());
                }
                write!(f, "]): {=str}", why.as_str())
            }
            Error::Malformed { what } => write!(f, "malformed model: {=str}", what.as_str()),
            Error::ShapeMismatch { op, expected, got } => write!(
                f,
                "{=str}: expected shape {=[?]}, got {=[?]}",
                op.as_str(),
                expected.as_slice(),
                got.as_slice()
            ),
            Error::Kernel(e) => write!(
                f,
                "kernel: {=str}: {=str} expected {} got {}",
                e.op, e.what, e.expected, e.got
            ),
            Error::BadFile { what, detail } => {
                write!(f, "bad {=str}: {=str}", what, &**detail)
            }
            Error::PlanMismatch { expected, got } => {
                write!(f, "adapter was trained on plan ");
                got.iter().for_each(|b| write!(f, "{=u8:02x}", *b));
                write!(f, " but this plan is ");
                expected.iter().for_each(|b| write!(f, "{=u8:02x}", *b));
            }
            Error::ArenaTooLarge { need, limit } => {
                write!(
                    f,
                    "plan needs an arena of {} bytes, limit is {}",
                    need, limit
                )
            }
            Error::NonFinite { what } => write!(f, "non-finite value in {=str}", what.as_str()),
            Error::Invalid { what } => write!(f, "{=str}", what.as_str()),
            Error::OverBudget { need, limit } => {
                write!(f, "training needs {} bytes, budget is {}", need, limit)
            }
            Error::Diverged { step, loss } => write!(
                f,
                "training diverged at step {} (loss {}); previous adapter kept",
                step, loss
            ),
            Error::Cancelled { step } => write!(f, "training cancelled at step {}", step),
            #[cfg(feature = "std")]
            Error::Io { path, detail } => {
                write!(f, "{=str}: {=str}", path.as_str(), detail.as_str())
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

impl From<edgetune_kernels::ShapeError> for Error {
    fn from(e: edgetune_kernels::ShapeError) -> Self {
        Error::Kernel(e)
    }
}

pub fn hex(h: &[u8]) -> String {
    use core::fmt::Write;
    let mut s = String::new();
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub type Result<T> = core::result::Result<T, Error>;
