"""onnxruntime's Erf on a range of inputs, for kernels/tests/ew.rs.

Writes kernels/tests/data/erf_onnxruntime.bin: little-endian f32 pairs (x, erf(x)) from
onnxruntime's CPU provider (a one-node Erf model, one thread). On x86-64 with AVX2 and
FMA onnxruntime computes Erf with MLAS's `MlasErfKernelFma3`; every multiply-add fused,
so its bits are a property of the method, not of the machine, and the test compares the
reference erf and each tier with FMA to them bit for bit.

    python3 tools/make_erf_golden.py
"""
import math
import pathlib

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
assert "avx2" in flags and "fma" in flags, "needs an x86-64 CPU with AVX2 and FMA"

rng = np.random.default_rng(20261201)
f = np.float32
edges = []
for e in [0.0, 1e-38, 1e-30, 1e-6, 0.5, 0.921875, 1.0, 2.0, 3.0, 3.925, 4.0, 10.0, 1e30, math.inf]:
    e = f(e)
    near = [e, np.nextafter(e, f(0)), np.nextafter(e, f(math.inf))]
    edges += [v for v in near if np.isfinite(v) or np.isinf(e)]
edges = np.array(sorted(set(edges)), f)
edges = np.concatenate([edges, -edges])
x = np.concatenate(
    [edges, rng.normal(0, 1.5, 3000).astype(f), rng.uniform(-5, 5, 4096 - 3000 - len(edges)).astype(f)]
)
g = helper.make_graph(
    [helper.make_node("Erf", ["x"], ["y"])],
    "erf",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])],
)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
so = ort.SessionOptions()
so.intra_op_num_threads = 1
y = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
    None, {"x": x}
)[0]
exact = np.array([math.erf(float(v)) for v in x])
ulp = np.abs(y - exact) / np.spacing(np.abs(exact).astype(f)).astype(np.float64)
out = pathlib.Path(__file__).resolve().parent.parent / "kernels/tests/data/erf_onnxruntime.bin"
np.stack([x, y], axis=1).astype("<f4").tofile(out)
print(f"onnxruntime {ort.__version__}: {len(x)} values, worst {ulp.max():.3f} ulp from erf -> {out}")
