#!/usr/bin/env bash
# Training time and memory per method, edgetune vs PyTorch (CPU, THREADS threads, default
# one) on the same cached taps of the same episode, in one run, pinned to THREADS cores:
#   [THREADS=1] tools/bench_tail.sh [EPISODES]
# edgetune: `eval` train time per episode (backbone passes excluded) and its training-peak
# figure; PyTorch: tools/torch_reference.py per method in its own process, peak RSS above
# a process that loads the same data and trains nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
cargo build --release -q -p edgetune --features cli
E=$CARGO_TARGET_DIR/release/edgetune
n=${1:-1}
d=$(mktemp -d)
methods=linear,ladder,tail,bias,lora
export THREADS=${THREADS:-1}
cores=1; [ "$THREADS" -gt 1 ] && cores=0-$((THREADS - 1))
/usr/bin/time -f "%M" -o "$d/edgetune.rss" taskset -c $cores "$E" --threads "$THREADS" eval --data bundled --ways 10 --shots 5 \
  --episodes "$n" --method $methods --export "$d" --json > "$d/edgetune.json"
for m in none ${methods//,/ }; do
  taskset -c $cores python3 tools/torch_reference.py "$d" "$d/torch_$m.json" "$m" "$n" > /dev/null
done
python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
et = {r["method"]: r for r in json.load(open(f"{d}/edgetune.json"))}
base = json.load(open(f"{d}/torch_none.json"))["max_rss_bytes"]
print(f"edgetune eval process peak RSS: {int(open(f'{d}/edgetune.rss').read()) / 1024:.1f} MB (all methods, whole cache)")
print(f"torch baseline (data loaded, nothing trained): {base / 1e6:.1f} MB")
print("| method | edgetune accuracy | PyTorch accuracy | edgetune train s | PyTorch train s | time ratio | edgetune training peak | PyTorch peak RSS above baseline |")
print("|---|---|---|---|---|---|---|---|")
for m, r in et.items():
    t = json.load(open(f"{d}/torch_{m}.json"))
    tr = t[m]
    print(f"| {m} | {r['accuracy']:.3f} | {tr['mean']:.3f} | {r['train_ms'] / 1e3:.2f} | {tr['train_s']:.2f} | "
          f"{r['train_ms'] / 1e3 / tr['train_s']:.2f}× | {r['peak_bytes'] / 1e6:.1f} MB | {(t['max_rss_bytes'] - base) / 1e6:.1f} MB |")
PY
