"""QOperator-form test models (QLinearConv, QLinearMatMul) and onnxruntime's outputs on
them, for runtime/tests/qlinear.rs. Scales and zero points are initializers, as the
onnxruntime quantiser writes them. Weights stay within ±63: onnxruntime's AVX2 u8×i8 path
(`vpmaddubsw`) saturates pair sums above 32767, and with full-range weights its
QLinearConv was 33 output steps away from the exact integer result (edgetune: exact).
    python3 tools/make_qlinear.py   # writes models/golden/qlinear_*.{onnx,npy}
"""
import numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, numpy_helper as nh, TensorProto as T

r = np.random.default_rng(7)
out = "models/golden"


def init(name, arr):
    return nh.from_array(np.asarray(arr), name)


def conv_model():
    w1 = r.integers(-63, 64, (8, 3, 3, 3), dtype=np.int8)
    s1 = (r.uniform(0.002, 0.01, 8)).astype(np.float32)
    b1 = r.integers(-2000, 2000, 8, dtype=np.int32)
    w2 = r.integers(-63, 64, (8, 1, 3, 3), dtype=np.int8)
    s2 = (r.uniform(0.005, 0.02, 8)).astype(np.float32)
    b2 = r.integers(-500, 500, 8, dtype=np.int32)
    inits = [
        init("xs", np.float32(0.02)), init("xz", np.uint8(128)),
        init("w1", w1), init("ws1", s1), init("wz1", np.zeros(8, np.int8)),
        init("ys1", np.float32(0.05)), init("yz1", np.uint8(100)), init("b1", b1),
        init("w2", w2), init("ws2", s2), init("wz2", np.zeros(8, np.int8)),
        init("ys2", np.float32(0.04)), init("yz2", np.uint8(120)), init("b2", b2),
    ]
    nodes = [
        h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        h.make_node("QLinearConv", ["xq", "xs", "xz", "w1", "ws1", "wz1", "ys1", "yz1", "b1"], ["y1"],
                    pads=[1, 1, 1, 1], name="conv3x3"),
        h.make_node("QLinearConv", ["y1", "ys1", "yz1", "w2", "ws2", "wz2", "ys2", "yz2", "b2"], ["y2"],
                    pads=[1, 1, 1, 1], strides=[2, 2], group=8, name="depthwise"),
        h.make_node("DequantizeLinear", ["y2", "ys2", "yz2"], ["y"]),
    ]
    g = h.make_graph(nodes, "qlinear_conv", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 12, 12])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 6, 6])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), (1, 3, 12, 12)


def matmul_model():
    b = r.integers(-63, 64, (24, 10), dtype=np.int8)
    inits = [
        init("as", np.float32(0.03)), init("az", np.uint8(110)),
        init("b", b), init("bs", np.float32(0.006)), init("bz", np.int8(0)),
        init("ys", np.float32(0.08)), init("yz", np.uint8(128)),
    ]
    nodes = [
        h.make_node("QuantizeLinear", ["x", "as", "az"], ["xq"]),
        h.make_node("QLinearMatMul", ["xq", "as", "az", "b", "bs", "bz", "ys", "yz"], ["yq"], name="matmul"),
        h.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    g = h.make_graph(nodes, "qlinear_matmul", [h.make_tensor_value_info("x", T.FLOAT, [1, 24])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 10])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), (1, 24)


for name, (m, shape) in [("conv", conv_model()), ("matmul", matmul_model())]:
    m.ir_version = 8
    onnx.checker.check_model(m)
    path = f"{out}/qlinear_{name}.onnx"
    onnx.save(m, path)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    xs = r.uniform(-2.0, 2.0, (20,) + shape).astype(np.float32)
    ys = np.stack([s.run(None, {"x": x})[0] for x in xs])
    np.save(f"{out}/qlinear_{name}_x.npy", xs)
    np.save(f"{out}/qlinear_{name}_y.npy", ys)
    print(path, xs.shape, "->", ys.shape)
