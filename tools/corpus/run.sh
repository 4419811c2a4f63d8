#!/usr/bin/env bash
# Builds edgetune (unless EDGETUNE_BIN names a binary) and measures it on the import corpus.
#   tools/corpus/run.sh [NAME ...]          (run.py's options pass through)
# The corpus: tools/corpus/build.py. Python: the corpus venv unless CORPUS_PYTHON is set.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="${CORPUS_PYTHON:-$HOME/.cache/edgetune-corpus/venv/bin/python}"
if [ -z "${EDGETUNE_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}"
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  copy="$HOME/.cache/edgetune/corpus-bin/edgetune-$(git -C "$root" rev-parse --short HEAD)-$stamp"
  mkdir -p "$(dirname "$copy")"
  # The target dir is shared: copy the binary while the lock is held so a later build
  # cannot swap it under the measurement.
  (cd "$root" && flock /tmp/edgetune-build.lock sh -c \
     "cargo build --release -p edgetune --features cli && cp '$CARGO_TARGET_DIR/release/edgetune' '$copy'")
  export EDGETUNE_BIN="$copy"
fi
echo "edgetune: $EDGETUNE_BIN"
exec "$py" "$root/tools/corpus/run.py" --bin "$EDGETUNE_BIN" "$@"
