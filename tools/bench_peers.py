#!/usr/bin/env python3
"""onnxruntime latency on the bundled int8 backbone, single thread, batch 1, median of 30.
Run pinned beside edgetune: taskset -c 1 python3 tools/bench_peers.py"""
import os, time, numpy as np, onnxruntime as ort
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
s = ort.InferenceSession(os.path.join(root, "models/efficientnet_lite0_int8.onnx"), so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
for _ in range(5): s.run(None, {"image": x})
t = []
for _ in range(30):
    a = time.perf_counter(); s.run(None, {"image": x}); t.append(time.perf_counter() - a)
print(f"onnxruntime {ort.__version__} EfficientNet-Lite0 int8: median {np.median(t)*1e3:.2f} ms")
