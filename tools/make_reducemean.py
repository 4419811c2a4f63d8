"""A QDQ model whose global pooling is ReduceMean (as torch's dynamo exporter writes
adaptive average pooling, left in float between DequantizeLinear and QuantizeLinear by
onnxruntime's quantiser), and onnxruntime's outputs on it (graph optimisation off), for
runtime/tests/reduce_mean.rs.
    python3 tools/make_reducemean.py   # writes models/golden/reducemean_*.{onnx,npy}
"""
import numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, numpy_helper as nh, TensorProto as T

r = np.random.default_rng(11)
out = "models/golden"


def init(name, arr):
    return nh.from_array(np.asarray(arr), name)


def model(axes, keepdims):
    w = r.integers(-63, 64, (8, 3, 3, 3), dtype=np.int8)
    ws = r.uniform(0.002, 0.01, 8).astype(np.float32)
    # The bias as onnxruntime's quantiser writes it: int32 in units of x_scale * w_scale.
    bs = (np.float32(0.02) * ws).astype(np.float32)
    bq = np.round(r.uniform(-0.5, 0.5, 8) / bs).astype(np.int32)
    inits = [
        init("xs", np.float32(0.02)), init("xz", np.uint8(128)),
        init("w", w), init("ws", ws), init("wz", np.zeros(8, np.int8)),
        init("bq", bq), init("bs", bs), init("bz", np.zeros(8, np.int32)),
        init("cs", np.float32(0.05)), init("cz", np.uint8(100)),
        init("ps", np.float32(0.01)), init("pz", np.uint8(90)),
    ]
    nodes = [
        h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        h.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        h.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], axis=0),
        h.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        h.make_node("QuantizeLinear", ["c", "cs", "cz"], ["cq"]),
        h.make_node("DequantizeLinear", ["cq", "cs", "cz"], ["cd"]),
        h.make_node("ReduceMean", ["cd"], ["p"], axes=axes, keepdims=keepdims, name="pool"),
        h.make_node("QuantizeLinear", ["p", "ps", "pz"], ["pq"]),
        h.make_node("DequantizeLinear", ["pq", "ps", "pz"], ["y"]),
    ]
    oshape = [1, 8, 1, 1] if keepdims else [1, 8]
    g = h.make_graph(nodes, "reducemean", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 12, 12])],
                     [h.make_tensor_value_info("y", T.FLOAT, oshape)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


def main():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    x = r.uniform(-2.5, 2.5, (20, 1, 3, 12, 12)).astype(np.float32)
    for name, axes, keep in [("hw", [2, 3], 1), ("neg", [-1, -2], 1), ("flat", [2, 3], 0)]:
        m = model(axes, keep)
        onnx.checker.check_model(m)
        path = f"{out}/reducemean_{name}.onnx"
        onnx.save(m, path)
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        y = np.stack([s.run(None, {"x": xi})[0] for xi in x])
        np.save(f"{out}/reducemean_{name}_y.npy", y.astype(np.float32))
    np.save(f"{out}/reducemean_x.npy", x[:, 0])


if __name__ == "__main__":
    main()
