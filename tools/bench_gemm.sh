#!/usr/bin/env bash
# Single-thread GEMM table, one run on one core: edgetune's tiers (criterion,
# tools/peers/benches/gemm.rs), tract's MatMul / MatMulInteger (in process), numpy/OpenBLAS
# f32, and this core's measured compute peak (tools/peers/src/bin/peak.rs).
#   tools/bench_gemm.sh [CORE=1]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
core=${1:-1}
cargo build --release -q -p edgetune-peers --bin peak --benches
echo "== measured peak (core $core)"
taskset -c "$core" "$CARGO_TARGET_DIR/release/peak"
echo "== numpy/OpenBLAS f32, one thread"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 taskset -c "$core" python3 - <<'PY'
import numpy as np, time
for m, n, k in [(256, 256, 256), (64, 768, 768), (197, 192, 768), (1, 1000, 1280), (3136, 144, 24), (784, 240, 40)]:
    a = np.random.rand(m, k).astype(np.float32); b = np.random.rand(k, n).astype(np.float32)
    best = 1e9
    for _ in range(7):
        t = time.perf_counter(); r = 0
        while time.perf_counter() - t < 0.1:
            a @ b; r += 1
        best = min(best, (time.perf_counter() - t) / r)
    print(f"gemm_{m}x{n}x{k}/f32/numpy_openblas {2 * m * n * k / best / 1e9:.1f}")
PY
echo "== criterion (edgetune tiers and tract)"
taskset -c "$core" cargo bench -q -p edgetune-peers --bench gemm 2>&1 | python3 -c '
import re, sys
cur = None
for line in sys.stdin:
    m = re.match(r"^(gemm_\S+)", line)
    if m: cur = m.group(1)
    t = re.search(r"thrpt:\s*\[\S+ \S+ (\S+) (\S)elem/s", line)
    if t and cur:
        v = float(t.group(1)) * {"G": 1, "M": 1e-3, "K": 1e-6}[t.group(2)]
        print(f"{cur} {v:.1f}")
        cur = None
'
