#!/usr/bin/env bash
# Size of the smallest device program (examples/src/bin/minimal.rs: load a plan, enrol,
# train a linear adapter, predict; no importer), aarch64 Linux, size-optimised profile,
# stripped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
cargo build --profile size -p edgetune-examples --bin minimal --target aarch64-unknown-linux-gnu
bin="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/size/minimal"
aarch64-linux-gnu-strip -o "$bin.stripped" "$bin"
echo "minimal (aarch64, profile size): $(stat -c %s "$bin") bytes, stripped $(stat -c %s "$bin.stripped") bytes (target <= 1.5 MB)"
