//! Small helpers the example programs share (argument lookup, paths, a seeded RNG).

use std::path::PathBuf;

/// The value after `--name` on the command line.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Whether the flag `--name` is present.
pub fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// The repository root (models and bundled data live there).
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub use edgetune::adapt::rng::Rng;

/// The runtime's seeded generator, started so that a seed gives the streams the
/// examples' published figures were measured with (BENCHMARKS.md).
pub fn seeded(seed: u64) -> Rng {
    Rng::new(seed ^ 0x853c_49e6_748f_ea9b)
}
