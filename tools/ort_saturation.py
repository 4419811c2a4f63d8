#!/usr/bin/env python3
"""onnxruntime's int8 arithmetic on this CPU against edgetune's, on EfficientNet-Lite0.

On x86 without VNNI, onnxruntime runs the QDQ model's fused QLinearConv nodes with
u8×s8 `vpmaddubsw`, which saturates each pair of products to i16. This script runs N
bundled Fashion-MNIST images through: onnxruntime (default session: fused, saturating
here), onnxruntime with graph optimisations off (the QDQ graph in float: exact integer
products), edgetune exact (default) and edgetune `EDGETUNE_INT8=saturating` (the same
pair saturation), and prints the cosine of the pooled features between each pair, then
batch-1 one-thread latency of each (median of RUNS, alternating, same core).

    python3 tools/ort_saturation.py [N=20] [RUNS=30] [CORE=1]
"""
import os, subprocess, sys, tempfile, time
import numpy as np
import onnxruntime as ort
from PIL import Image

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
core = sys.argv[3] if len(sys.argv) > 3 else "1"
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/edgetune-target"))
exe = os.path.join(target, "release", "edgetune")
onnx = os.path.join(root, "models/efficientnet_lite0_int8.onnx")
subprocess.run(["cargo", "build", "--release", "-q", "-p", "edgetune", "--features", "cli"], cwd=root, check=True,
               env=dict(os.environ, CARGO_TARGET_DIR=target))

raw = np.fromfile(os.path.join(root, "examples/data/fashion_mnist_600-images.idx"), np.uint8)
imgs = raw[16:].reshape(-1, 28, 28)[:n]


def prep(im):
    # The plan's declared preprocessing: image:224:127:128, grey replicated to RGB.
    a = np.asarray(Image.fromarray(im).resize((224, 224), Image.BILINEAR)).astype(np.float32)
    return np.repeat(((a - 127) / 128)[None, None], 3, 1).astype(np.float32)


tmp = tempfile.mkdtemp()
plan = os.path.join(tmp, "m.etm")
subprocess.run([exe, "compile", onnx, "-o", plan], check=True, capture_output=True)
paths = []
for i, im in enumerate(imgs):
    paths.append(os.path.join(tmp, f"x{i}.npy"))
    np.save(paths[-1], prep(im))


def session(level):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    return ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])


peers = {
    "onnxruntime (default)": session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    "onnxruntime (no graph optimisation)": session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
}
feats = {k: np.stack([s.run(None, {"image": np.load(p)})[0][0] for p in paths]) for k, s in peers.items()}
for mode in ["exact", "saturating"]:
    env = dict(os.environ, EDGETUNE_INT8=mode)
    out = []
    for i, p in enumerate(paths):
        d = os.path.join(tmp, f"{mode}{i}")
        subprocess.run([exe, "run", plan, p, "--save-outputs", d], check=True, capture_output=True, env=env)
        out.append(np.load(os.path.join(d, "0_features.npy")).reshape(-1))
    feats[f"edgetune ({mode})"] = np.stack(out)

names = list(feats)
print(f"features cosine, min over {n} images (onnxruntime {ort.__version__})")
print(f"{'':40s}" + "".join(f"{k[:22]:>24s}" for k in names))
for a in names:
    row = []
    for b in names:
        x, y = feats[a], feats[b]
        c = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        row.append(f"{c.min():24.5f}")
    print(f"{a:40s}" + "".join(row))

# Latency: alternate the four, each keeps its best median.
x = np.load(paths[0])
best = {}
for _ in range(3):
    for k, s in peers.items():
        for _ in range(5):
            s.run(None, {"image": x})
        t = []
        for _ in range(runs):
            a = time.perf_counter()
            s.run(None, {"image": x})
            t.append(time.perf_counter() - a)
        best[k] = min(best.get(k, 1e9), np.median(t) * 1e3)
    for mode in ["exact", "saturating"]:
        env = dict(os.environ, EDGETUNE_INT8=mode)
        r = subprocess.run(["taskset", "-c", core, exe, "run", plan, paths[0], "--profile", str(runs)],
                           check=True, capture_output=True, text=True, env=env)
        med = float(r.stdout.split("median ")[1].split()[0])
        best[f"edgetune ({mode})"] = min(best.get(f"edgetune ({mode})", 1e9), med)
print(f"\nbatch-1 latency, one thread, best median of 3 alternating rounds of {runs} (python peers pinned by the caller: taskset -c {core})")
for k in names:
    print(f"{k:40s} {best[k]:8.2f} ms")
