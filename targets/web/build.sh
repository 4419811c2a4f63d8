#!/usr/bin/env bash
# Builds the demo page into $CARGO_TARGET_DIR/web (default ~/.cache/edgetune-target/web):
# the WebAssembly module (wasm32-unknown-unknown, simd128 tier; EDGETUNE_WEB_SIMD=0 for the
# portable tier), the bundled EfficientNet-Lite0 compiled to a plan by the host CLI, and
# the page. `build.sh serve [PORT]` then serves it on http://localhost:PORT (8000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
out="$CARGO_TARGET_DIR/web"
mkdir -p "$out"

(cd "$root" && cargo build -q --release -p edgetune --features cli --bin edgetune)
cli="$CARGO_TARGET_DIR/release/edgetune"
onnx="$root/models/efficientnet_lite0_int8.onnx"
if [ ! -s "$out/plan.etm" ] || [ "$onnx" -nt "$out/plan.etm" ] || [ "$cli" -nt "$out/plan.etm" ]; then
  "$cli" compile "$onnx" -o "$out/plan.etm" --taps blocks --preprocess image:224:127:128 >/dev/null
fi

flags=""
[ "${EDGETUNE_WEB_SIMD:-1}" = 1 ] && flags="-C target-feature=+simd128"
(cd "$here" && RUSTFLAGS="$flags" cargo build -q --release --target wasm32-unknown-unknown)
cp "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/edgetune_web.wasm" "$out/"
cp "$here"/www/* "$out/"
echo "built $out ($(du -h "$out/edgetune_web.wasm" | cut -f1) module, $(du -h "$out/plan.etm" | cut -f1) plan)"

if [ "${1:-}" = serve ]; then
  port=${2:-8000}
  echo "serving http://localhost:$port/"
  exec python3 -m http.server --bind 127.0.0.1 --directory "$out" "$port"
fi
