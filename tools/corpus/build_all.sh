#!/usr/bin/env bash
# Builds every corpus entry, one `build.py NAME` per entry, each holding the shared CPU lock
# only for its own entry so other builds interleave. Output: build.py's, per entry.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${CORPUS_PYTHON:-$HOME/.cache/edgetune-corpus/venv/bin/python}"
failed=()
for name in $("$py" "$here/build.py" --list); do
  flock /tmp/edgetune-build.lock nice "$py" "$here/build.py" "$name" || failed+=("$name")
done
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
