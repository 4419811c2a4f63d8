#!/usr/bin/env bash
# Regenerates the committed seed corpora in fuzz/corpus/<target>/ from small models
# (seed/models.py), plans compiled by the edgetune CLI and adapters of every method.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
cargo build --release --manifest-path ../Cargo.toml -p edgetune --features cli -q
E=$CARGO_TARGET_DIR/release/edgetune
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 seed/models.py "$tmp"
$E compile "$tmp/qdq_conv_dw_gap.onnx" --taps r1d,c2d --preprocess image:8:127:128 -o seed/tiny.etm
$E compile "$tmp/qdq_lut_pool.onnx" -o "$tmp/lut_pool.etm"
$E compile "$tmp/seq_dynq.onnx" -o "$tmp/seq_dynq.etm"
python3 - "$tmp" <<'PY'
import numpy as np, os, sys
from PIL import Image
d = "../examples/data/fashion_mnist_600-"
imgs = np.frombuffer(open(d + "images.idx", "rb").read()[16:], np.uint8).reshape(-1, 28, 28)
labs = np.frombuffer(open(d + "labels.idx", "rb").read()[8:], np.uint8)
for c in (0, 1, 2):
    os.makedirs(f"{sys.argv[1]}/train/c{c}", exist_ok=True)
    for j, i in enumerate(np.where(labs == c)[0][:3]):
        Image.fromarray(imgs[i]).save(f"{sys.argv[1]}/train/c{c}/{j}.png")
PY
mkdir -p corpus/{plan_load,adapter_load,onnx_import,exec_inputs,capi_bytes}
cp "$tmp"/*.onnx corpus/onnx_import/
cp seed/tiny.etm corpus/plan_load/tiny.etm
cp "$tmp/lut_pool.etm" "$tmp/seq_dynq.etm" corpus/plan_load/   # *.etm is ignored: git add -f
{ printf '\0'; cat seed/tiny.etm; } > corpus/capi_bytes/plan.bin
for m in ncm linear moment ladder query; do
  $E adapt --plan seed/tiny.etm --train "$tmp/train" --method $m --epochs 2 -o corpus/adapter_load/$m.eta >/dev/null
  { printf '\1'; cat corpus/adapter_load/$m.eta; } > corpus/capi_bytes/$m.bin
done
python3 - <<'PY'
import struct
for name, vals in {"half": [0.5], "nan": [float("nan")], "inf": [float("inf"), -1e30],
                   "ramp": [i / 7 - 3 for i in range(32)]}.items():
    open(f"corpus/exec_inputs/{name}", "wb").write(b"".join(struct.pack("<f", v) for v in vals))
PY
ls -l corpus/*
