#!/usr/bin/env bash
# Chooses the trainer's defaults on the support set alone: every candidate is scored by
# `edgetune eval --select-folds N` (each class's shot f held out in turn, the query set
# never read) over the demo's episodes (Fashion-MNIST 10-way 5-shot, seeds 0..4).
#   tools/select_defaults.sh [linear|ladder|tail|all]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
cargo build --release -q -p edgetune --features cli
E=$CARGO_TARGET_DIR/release/edgetune
what=${1:-all}
score() { # method folds args...
  local m=$1 f=$2; shift 2
  local acc
  acc=$("$E" eval --data bundled --ways 10 --shots 5 --episodes 5 --method "$m" --select-folds "$f" --json "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print("%.4f ± %.4f" % (r["accuracy"], r["std"]))')
  echo "| $m | $* | $f | $acc |"
}
echo "| method | candidate | held-out folds | support-held-out accuracy |"
echo "|---|---|---|---|"
if [ "$what" = linear ] || [ "$what" = all ]; then
  for c in 1 10 100; do score linear 5 --c $c; done
  score linear 5 --c 10 --augment 2
fi
if [ "$what" = ladder ] || [ "$what" = all ]; then
  for lr in 0.001 0.003 0.01; do score ladder 5 --lr $lr; done
fi
if [ "$what" = tail ] || [ "$what" = all ]; then
  # A tail training costs ~100x a linear probe: one held-out fold per episode.
  score tail 1
  score tail 1 --body-lr 0.3
  score tail 1 --body-lr 0.03
  score bias 1
  score bias 1 --body-lr 1
  score lora 1
  score lora 1 --body-lr 1
fi
