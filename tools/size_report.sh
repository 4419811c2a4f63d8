#!/usr/bin/env bash
# Size of the smallest device program (examples/src/bin/minimal.rs: load a plan, enrol,
# train a linear adapter, predict; no importer), aarch64 Linux, size-optimised profile,
# stripped; with --tract also the peer: tract-onnx loading and running the same model
# (tools/peers/src/bin/tract_run.rs), same target and profile (a cold build takes ~20 min).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
cargo build --profile size -p edgetune-examples --no-default-features --bin minimal --target aarch64-unknown-linux-gnu
bin="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/size/minimal"
aarch64-linux-gnu-strip -o "$bin.stripped" "$bin"
echo "minimal (aarch64, profile size): $(stat -c %s "$bin") bytes, stripped $(stat -c %s "$bin.stripped") bytes (target <= 1.5 MB)"
if [ "${1:-}" = "--tract" ]; then
  cargo build -q --profile size -p edgetune-peers --bin tract_run --target aarch64-unknown-linux-gnu
  tb="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/size/tract_run"
  aarch64-linux-gnu-strip -o "$tb.stripped" "$tb"
  echo "tract_run (tract-onnx 0.23, aarch64, profile size): $(stat -c %s "$tb") bytes, stripped $(stat -c %s "$tb.stripped") bytes; edgetune/tract $(echo "scale=3; $(stat -c %s "$bin.stripped") / $(stat -c %s "$tb.stripped")" | bc)"
fi

# Cortex-M4 firmware (targets/cortex-m): code and read-only data without the plan and the
# flash-resident episode; RAM from the firmware's own report (arena + heap peak + painted
# stack peak) when qemu-system-arm is here.
(cd targets/cortex-m && cargo build --release -q)
fw="$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release/edgetune-cortex-m"
read -r text rodata bss <<<"$(size -A "$fw" | awk '$1==".text"{t=$2} $1==".rodata"{r=$2} $1==".bss"{b=$2} END{print t, r, b}')"
plan=$(stat -c %s targets/cortex-m/assets/tiny_cnn.etm)
episode=$((4 + 125 * 785))
echo "firmware (thumbv7em, opt-level z): .text $text B, .rodata $rodata B of which plan $plan B and episode $episode B -> code + constants without weights/data $((text + rodata - plan - episode)) B (target code <= 128 KB)"
if command -v qemu-system-arm >/dev/null; then
  (cd targets/cortex-m && cargo run --release -q 2>/dev/null | grep -E "^memory|^accuracy|^firmware")
fi
