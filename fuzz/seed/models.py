"""Writes small ONNX models the importer accepts (QDQ int8 and float), as fuzz seeds."""
import sys, numpy as np, onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh

out = sys.argv[1]
rng = np.random.default_rng(0)

def save(name, nodes, inits, inp, outp):
    for i, n in enumerate(nodes):
        n.name = f"{n.op_type}_{i}"
    g = h.make_graph(nodes, name, inp, outp, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, f"{out}/{name}.onnx")

# QDQ: Q/DQ around a 3x3 conv, a depthwise conv, a residual add and global pooling.
x = h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])
y = h.make_tensor_value_info("y", T.FLOAT, [1, 4, 1, 1])
s = lambda n, v: nh.from_array(np.array(v, np.float32), n)
z = lambda n: nh.from_array(np.array(128, np.uint8), n)
inits = [s("sa", 0.05), z("za"), s("sb", 0.04), z("zb"),
         nh.from_array(rng.integers(-90, 90, (4, 3, 3, 3)).astype(np.int8), "w1"),
         nh.from_array(np.full(4, 0.01, np.float32), "sw1"),
         nh.from_array(np.zeros(4, np.int8), "zw1"),
         nh.from_array(rng.integers(-900, 900, 4).astype(np.int32), "b1"),
         nh.from_array(np.full(4, 0.0005, np.float32), "sb1"),
         nh.from_array(np.zeros(4, np.int32), "zb1"),
         nh.from_array(rng.integers(-90, 90, (4, 1, 3, 3)).astype(np.int8), "w2"),
         nh.from_array(rng.integers(-900, 900, 4).astype(np.int32), "b2"),
         nh.from_array(np.full(4, 0.0004, np.float32), "sb2"),
         s("sc", 0.06), z("zc"), s("sd", 0.03), z("zd")]
nodes = [
    h.make_node("QuantizeLinear", ["x", "sa", "za"], ["xq"]),
    h.make_node("DequantizeLinear", ["xq", "sa", "za"], ["xd"]),
    h.make_node("DequantizeLinear", ["w1", "sw1", "zw1"], ["w1d"], axis=0),
    h.make_node("DequantizeLinear", ["b1", "sb1", "zb1"], ["b1d"], axis=0),
    h.make_node("Conv", ["xd", "w1d", "b1d"], ["c1"], pads=[1, 1, 1, 1]),
    h.make_node("QuantizeLinear", ["c1", "sb", "zb"], ["r1q"]),
    h.make_node("DequantizeLinear", ["r1q", "sb", "zb"], ["r1d"]),
    h.make_node("DequantizeLinear", ["w2", "sw1", "zw1"], ["w2d"], axis=0),
    h.make_node("DequantizeLinear", ["b2", "sb2", "zb1"], ["b2d"], axis=0),
    h.make_node("Conv", ["r1d", "w2d", "b2d"], ["c2"], pads=[1, 1, 1, 1], group=4, strides=[2, 2]),
    h.make_node("QuantizeLinear", ["c2", "sc", "zc"], ["c2q"]),
    h.make_node("DequantizeLinear", ["c2q", "sc", "zc"], ["c2d"]),
    h.make_node("GlobalAveragePool", ["c2d"], ["g"]),
    h.make_node("QuantizeLinear", ["g", "sd", "zd"], ["gq"]),
    h.make_node("DequantizeLinear", ["gq", "sd", "zd"], ["y"]),
]
save("qdq_conv_dw_gap", nodes, inits, [x], [y])

# Float: conv, relu6 (Clip), pooling, gemm.
x = h.make_tensor_value_info("x", T.FLOAT, [1, 3, 6, 6])
y = h.make_tensor_value_info("y", T.FLOAT, [1, 5])
inits = [nh.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
         nh.from_array(rng.standard_normal(8).astype(np.float32), "b"),
         s("lo", 0.0), s("hi", 6.0),
         nh.from_array(rng.standard_normal((5, 8)).astype(np.float32), "fw"),
         nh.from_array(rng.standard_normal(5).astype(np.float32), "fb")]
nodes = [
    h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
    h.make_node("Clip", ["c", "lo", "hi"], ["r"]),
    h.make_node("GlobalAveragePool", ["r"], ["g"]),
    h.make_node("Flatten", ["g"], ["f"]),
    h.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
]
save("float_conv_gemm", nodes, inits, [x], [y])
