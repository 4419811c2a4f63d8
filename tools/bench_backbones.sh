#!/usr/bin/env bash
# Batch-1 latency on one and two threads of the three backbones on edgetune, onnxruntime and tract
# (tract-onnx in process, tools/peers/src/bin/tract_run.rs) in one run (same core, median
# of N, best of ROUNDS=3 alternating rounds for edgetune and onnxruntime), with ratios; also
# compile time, .etm size and peak RSS of each. onnxruntime runs twice: its default session
# (on x86 without VNNI its fused int8 kernels saturate u8·s8 pairs to i16, see
# tools/ort_saturation.py) and with graph optimisation off (the QDQ graph as written:
# exact integer products, what edgetune computes).
#   [ROUNDS=3] [RT=1] tools/bench_backbones.sh [N=30] [CORE=1]
# On x86 without VNNI each backbone gets a second, indented row: edgetune with
# EDGETUNE_INT8=saturating (onnxruntime's arithmetic there) against the same onnxruntime
# times.
# RT=1 runs every timed process (both sides) under `chrt -f 10` (root): on a machine shared
# with builds, the benchmark's threads then run whenever they are ready, as on an idle
# device; spinning workers otherwise lose their core to the background load.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
n=${1:-30}; core=${2:-1}; rounds=${ROUNDS:-3}
rt=""; [ "${RT:-0}" = 1 ] && rt="chrt -f 10"
# Without VNNI onnxruntime's int8 GEMMs saturate: edgetune is then also timed with its
# saturating GEMM (EDGETUNE_INT8=saturating), like for like.
sat=1; grep -qw -e avx512_vnni -e avx_vnni /proc/cpuinfo 2>/dev/null && sat=0
[ "$(uname -m)" = x86_64 ] || sat=0
cargo build --release -q -p edgetune --features cli
cargo build --release -q -p edgetune-peers --bin tract_run
E=$CARGO_TARGET_DIR/release/edgetune
TR=$CARGO_TARGET_DIR/release/tract_run
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'PY'
import numpy as np, sys
d = sys.argv[1]; r = np.random.default_rng(0)
np.save(f"{d}/image.npy", r.standard_normal((1, 3, 224, 224)).astype(np.float32))
np.save(f"{d}/mel.npy", np.load("models/golden/oww_windows.npy")[0])
ids = np.load("models/golden/minilm_ids.npy"); m = np.load("models/golden/minilm_mask.npy")
np.save(f"{d}/ids.npy", ids[3:4]); np.save(f"{d}/mask.npy", m[3:4])
np.save(f"{d}/types.npy", np.zeros((1, 128), np.float32))
PY
printf "%-28s %9s %8s %9s %8s %8s %10s %8s %9s %8s %8s %7s %8s %8s %8s\n" backbone "e 1T ms" "ORT 1T" "ORTexact" "tract" "e/ORT" "e/ORTexact" "e/tract" "e 2T ms" "ORT 2T" "e/ORT 2T" "e 1T/2T" "compile s" ".etm MB" "RSS MB"
for spec in "EfficientNet-Lite0 int8|models/efficientnet_lite0_int8.onnx|$tmp/image.npy|image:1x3x224x224" \
            "openWakeWord embedding int8|models/oww_embedding_int8.onnx|mel=$tmp/mel.npy|mel:1x1x76x32" \
            "MiniLM-L6 int8 (T=128)|models/minilm_l6_int8.onnx|input_ids=$tmp/ids.npy attention_mask=$tmp/mask.npy token_type_ids=$tmp/types.npy|input_ids:1x128:i64 attention_mask:1x128:i64 token_type_ids:1x128:i64"; do
  IFS='|' read -r name onnx inputs tspec <<<"$spec"
  t0=$(date +%s.%N); $E compile "$onnx" -o "$tmp/m.etm" >/dev/null; t1=$(date +%s.%N)
  # The machine is shared: edgetune and onnxruntime alternate for $rounds rounds and each
  # keeps its best median, so a noisy stretch does not land on one side only. One thread:
  # pinned to core $core; two threads: cores 0 and 1.
  et=""; ort=""; ortx=""; et2=""; ort2=""; es=""; es2=""
  for _ in $(seq "$rounds"); do
    for th in 1 2; do
      cores=$core; [ "$th" = 2 ] && cores=0,1
      out=$(/usr/bin/time -f "rss %M" $rt taskset -c "$cores" $E run "$tmp/m.etm" $inputs --profile "$n" --threads "$th" 2>&1)
      e1=$(grep -oP "median \K[0-9.]+" <<<"$out")
      if [ "$th" = 1 ]; then rss=$(grep -oP "^rss \K[0-9]+" <<<"$out"); et=$(python3 -c "print(min(x for x in [$e1, ${et:-1e9}]))")
      else et2=$(python3 -c "print(min(x for x in [$e1, ${et2:-1e9}]))"); fi
      if [ "$sat" = 1 ]; then
        out=$(EDGETUNE_INT8=saturating $rt taskset -c "$cores" $E run "$tmp/m.etm" $inputs --profile "$n" --threads "$th" 2>&1)
        e1=$(grep -oP "median \K[0-9.]+" <<<"$out")
        if [ "$th" = 1 ]; then es=$(python3 -c "print(min(x for x in [$e1, ${es:-1e9}]))")
        else es2=$(python3 -c "print(min(x for x in [$e1, ${es2:-1e9}]))"); fi
      fi
      levels="ORT_ENABLE_ALL ORT_DISABLE_ALL"; [ "$th" = 2 ] && levels=ORT_ENABLE_ALL
      for level in $levels; do
        o1=$($rt taskset -c "$cores" python3 - "$onnx" "$tmp" "$n" "$level" "$th" <<'PY'
import numpy as np, onnxruntime as ort, sys, time
onnx, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[5]); so.inter_op_num_threads = 1
so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, sys.argv[4])
s = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
if "image" in names: f = {"image": np.load(f"{d}/image.npy")}
elif "mel" in names: f = {"mel": np.load(f"{d}/mel.npy")}
else: f = {"input_ids": np.load(f"{d}/ids.npy").astype(np.int64), "attention_mask": np.load(f"{d}/mask.npy").astype(np.int64), "token_type_ids": np.zeros((1, 128), np.int64)}
for _ in range(5): s.run(None, f)
t = []
for _ in range(n):
    a = time.perf_counter(); s.run(None, f); t.append(time.perf_counter() - a)
print(f"{np.median(t) * 1e3:.3f}")
PY
        )
        if [ "$th" = 2 ]; then ort2=$(python3 -c "print(min(x for x in [$o1, ${ort2:-1e9}]))")
        elif [ "$level" = ORT_ENABLE_ALL ]; then ort=$(python3 -c "print(min(x for x in [$o1, ${ort:-1e9}]))")
        else ortx=$(python3 -c "print(min(x for x in [$o1, ${ortx:-1e9}]))"); fi
      done
    done
  done
  # shellcheck disable=SC2086
  tout=$(/usr/bin/time -f "rss %M" $rt taskset -c "$core" "$TR" "$onnx" $tspec --runs "$n" 2>&1)
  tt=$(grep -oP "median \K[0-9.]+" <<<"$tout" || echo nan)
  printf "%-28s %9s %8s %9s %8s %7.2fx %9.2fx %7.2fx %9s %8s %8.2fx %7.2fx %8.2f %8.2f %8.1f\n" "$name" "$et" "$ort" "$ortx" "$tt" \
    "$(echo "$et / $ort" | bc -l)" "$(echo "$et / $ortx" | bc -l)" "$(echo "$et / $tt" | bc -l)" \
    "$et2" "$ort2" "$(echo "$et2 / $ort2" | bc -l)" "$(echo "$et / $et2" | bc -l)" \
    "$(echo "$t1 - $t0" | bc -l)" "$(echo "$(stat -c %s "$tmp/m.etm") / 1000000" | bc -l)" \
    "$(echo "$rss / 1024" | bc -l)"
  if [ "$sat" = 1 ]; then
    printf "  %-26s %9s %17s %7.2fx %27s %8.2fx %7.2fx\n" "(EDGETUNE_INT8=saturating)" "$es" "" \
      "$(echo "$es / $ort" | bc -l)" "$es2" "$(echo "$es2 / $ort2" | bc -l)" "$(echo "$es / $es2" | bc -l)"
  fi
done
[ "$sat" = 1 ] && echo "(no VNNI on this CPU: onnxruntime's int8 kernels saturate u8·s8 pair sums to i16; the indented rows time edgetune's saturating GEMM, EDGETUNE_INT8=saturating, the same arithmetic, beside the exact default above them)"
echo "(onnxruntime $(python3 -c 'import onnxruntime; print(onnxruntime.__version__)'), intra_op_num_threads=1 and 2 (2T); edgetune --threads 1 and 2; e 1T/2T is edgetune's speed-up on two threads; edgetune kernels: $($E run "$tmp/m.etm" $inputs --profile 1 | grep -oP '\(\[\K[^]]*'))"
