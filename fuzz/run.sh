#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 60) on its committed corpus.
#   fuzz/run.sh plan_load|adapter_load|onnx_import|exec_inputs|capi_bytes [SECONDS]
# The ONNX target also gets the real backbone as a seed (copied, not committed).
set -euo pipefail
cd "$(dirname "$0")"
t=$1; secs=${2:-60}
mkdir -p corpus/$t artifacts/$t
extra=(); len=(-max_len=16384)
if [ "$t" = onnx_import ]; then
  len=()
  mkdir -p "$HOME/.cache/edgetune-fuzz-seeds"
  cp ../models/efficientnet_lite0_int8.onnx "$HOME/.cache/edgetune-fuzz-seeds/"
  extra=("$HOME/.cache/edgetune-fuzz-seeds")
fi
# The timeout is wall time: a long run niced beside other work can starve for a while.
# max_len: plans and adapters of the seeds are a few KB; the real ONNX seed is kept whole.
# The build cache lives outside the clone, like the workspace's.
target_dir=${EDGETUNE_FUZZ_TARGET:-$HOME/.cache/edgetune-fuzz-target}
# The pinned nightly and cargo-fuzz that .ci/run installs (cargo-fuzz from the tools cache
# when it is there, else from PATH).
. ../.ci/pins
export PATH="$EDGETUNE_TOOLS/bin:$PATH"
exec cargo +"$EDGETUNE_NIGHTLY" fuzz run --target-dir "$target_dir" "$t" corpus/$t "${extra[@]}" -- \
  -max_total_time="$secs" -rss_limit_mb=2048 -timeout=${FUZZ_TIMEOUT:-120} "${len[@]}" \
  -artifact_prefix=artifacts/$t/ -print_final_stats=1
