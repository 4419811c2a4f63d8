"""onnxruntime's own per-node profile of a model, one input, its default session: the
time per op type (median over runs of each node) and, for the convolutions, their
arithmetic rate (2 · output pixels · weight elements per node, over the conv time). The
other side of `edgetune run --profile N --per-op`.

    python3 tools/ort_profile.py MODEL.onnx INPUT.npy [--threads 1] [--runs 100] [--nodes]

--nodes also lists each convolution-like node in graph order with its median time.
"""
import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("input")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--runs", type=int, default=100)
ap.add_argument("--nodes", action="store_true")
a = ap.parse_args()

so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
so.inter_op_num_threads = 1
so.enable_profiling = True
# The profile goes to the temporary directory (and is removed once read), never the work tree.
so.profile_file_prefix = os.path.join(tempfile.gettempdir(), "ort_profile")
s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
feed = {s.get_inputs()[0].name: np.load(a.input)}
for _ in range(a.runs):
    s.run(None, feed)
path = s.end_profiling()
events = json.load(open(path))
os.remove(path)

times = collections.defaultdict(list)
args = {}
order = []
for e in events:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        if e["name"] not in args:
            order.append(e["name"])
        times[e["name"]].append(e["dur"])
        args[e["name"]] = e["args"]

per_type = collections.Counter()
count = collections.Counter()
conv_us = 0.0
conv_flop = 0
rows = []
for n in order:
    us = float(np.median(times[n]))
    op = args[n]["op_name"]
    per_type[op] += us
    count[op] += 1
    if "Conv" in op:
        ins = args[n].get("input_type_shape", [])
        outs = args[n].get("output_type_shape", [])
        if len(ins) > 1 and outs:
            w = list(ins[1].values())[0]
            y = list(outs[0].values())[0]
            conv_flop += 2 * int(y[2]) * int(y[3]) * int(np.prod(w))
            conv_us += us
        rows.append((n, op, us))

total = sum(per_type.values())
print(f"onnxruntime {ort.__version__}, {a.threads} thread(s), {a.runs} runs: nodes sum {total / 1000:.3f} ms")
for op, us in per_type.most_common():
    print(f"  {op:28s} x{count[op]:<4d} {us / 1000:.3f} ms")
if conv_us:
    print(f"convolutions: {conv_us / 1000:.3f} ms, {conv_flop / 1e9:.3f} GFLOP (2 per multiply-add), "
          f"{conv_flop / conv_us / 1e3:.1f} GFLOP/s")
if a.nodes:
    for n, op, us in rows:
        print(f"{us:8.1f} us  {op:20s} {n}")
