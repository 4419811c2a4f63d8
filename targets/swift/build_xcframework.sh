#!/usr/bin/env bash
# Builds EdgeTuneFFI.xcframework beside Package.swift: the C ABI static library
# (targets/capi) for iOS devices, the iOS simulator (arm64 + x86_64) and macOS (arm64 +
# x86_64), each with edgetune.h and the module map of the Clang module `CEdgeTune`.
# Package.swift uses the XCFramework when it exists. Needs macOS with Xcode (xcodebuild,
# lipo) and rustup; plans are compiled on the host with `edgetune compile`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
if ! command -v xcodebuild >/dev/null; then
  echo "SKIPPED: building the XCFramework needs Xcode (xcodebuild); this is $(uname -s)"
  exit 0
fi
targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "${targets[@]}" >/dev/null
for t in "${targets[@]}"; do
  (cd "$root" && cargo rustc --release -p edgetune-capi --target "$t" --crate-type staticlib)
done
lib() { echo "$CARGO_TARGET_DIR/$1/release/libedgetune_capi.a"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/headers" "$work/ios-sim" "$work/macos"
cp "$root/targets/capi/include/edgetune.h" "$work/headers/"
cat > "$work/headers/module.modulemap" <<'MAP'
module CEdgeTune [system] {
    header "edgetune.h"
    export *
}
MAP
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" -output "$work/ios-sim/libedgetune_capi.a"
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" -output "$work/macos/libedgetune_capi.a"

out="$here/EdgeTuneFFI.xcframework"
rm -rf "$out"
xcodebuild -create-xcframework \
  -library "$(lib aarch64-apple-ios)" -headers "$work/headers" \
  -library "$work/ios-sim/libedgetune_capi.a" -headers "$work/headers" \
  -library "$work/macos/libedgetune_capi.a" -headers "$work/headers" \
  -output "$out"
echo "wrote $out"
