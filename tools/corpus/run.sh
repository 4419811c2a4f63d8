#!/usr/bin/env bash
# Builds edgetune from this work tree (unless EDGETUNE_BIN names a binary) and measures it
# on the import corpus.
#   tools/corpus/run.sh [NAME ...]          (run.py's options pass through)
#   EDGETUNE_BIN=/path/to/edgetune tools/corpus/run.sh     measures that binary as it is
# The corpus: tools/corpus/build.py. Python: the corpus venv unless CORPUS_PYTHON is set.
#
# Cargo's dep-info names this workspace's sources by relative path, so in a target dir that
# several checkouts share, a checkout whose sources are older than another's last build is
# judged fresh and gets that other build's binary. The build therefore runs in a private
# copy of the shared target dir (dependencies stay compiled) after marking this tree's own
# sources as changed, which rebuilds exactly the workspace crates from them.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="${CORPUS_PYTHON:-$HOME/.cache/edgetune-corpus/venv/bin/python}"
if [ -z "${EDGETUNE_BIN:-}" ]; then
  shared="${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}"
  private="${CORPUS_TARGET_DIR:-$HOME/.cache/edgetune-corpus/target}"
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  rev="$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- . ':!tools/corpus' || echo -dirty)"
  copy="$HOME/.cache/edgetune/corpus-bin/edgetune-$rev-$stamp"
  mkdir -p "$(dirname "$copy")"
  flock /tmp/edgetune-build.lock sh -c '
    set -e
    if [ ! -d "$2/release" ] && [ -d "$1/release" ]; then
      mkdir -p "$2" && cp -a "$1/release" "$2/"
    fi
    find "$3" -name target -prune -o -name "*.rs" -print0 | xargs -0 touch
    cd "$3" && CARGO_TARGET_DIR="$2" cargo build --release -p edgetune --features cli
    cp "$2/release/edgetune" "$4"
  ' sh "$shared" "$private" "$root" "$copy"
  export EDGETUNE_BIN="$copy"
fi
echo "edgetune: $EDGETUNE_BIN"
exec "$py" "$root/tools/corpus/run.py" --bin "$EDGETUNE_BIN" "$@"
