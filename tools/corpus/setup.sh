#!/usr/bin/env bash
# Creates the two venvs the corpus build uses and installs the pinned packages.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${EDGETUNE_CORPUS_CACHE:-$HOME/.cache/edgetune-corpus}"
mkdir -p "$cache"
[ -x "$cache/venv/bin/python" ] || python3 -m venv "$cache/venv"
"$cache/venv/bin/pip" install -q -r "$here/requirements.txt"
"$cache/venv/bin/pip" install -q --no-deps -r "$here/requirements-nodeps.txt"
[ -x "$cache/tfvenv/bin/python" ] || python3 -m venv "$cache/tfvenv"
"$cache/tfvenv/bin/pip" install -q -r "$here/requirements-tf.txt"
command -v espeak-ng >/dev/null && command -v sox >/dev/null || apt-get install -y espeak-ng sox
echo "venvs ready under $cache"
