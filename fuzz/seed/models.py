"""Writes small ONNX models the importer accepts (QDQ int8 and float), as fuzz seeds."""
import sys, numpy as np, onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh

out = sys.argv[1]
rng = np.random.default_rng(0)

def save(name, nodes, inits, inp, outp, opset=13):
    for i, n in enumerate(nodes):
        n.name = f"{n.op_type}_{i}"
    g = h.make_graph(nodes, name, inp, outp, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
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

# QDQ with table ops and pooling (the speech embedding's forms): 1x3 conv, batch norm,
# LeakyRelu, Max with a constant, 2x2 max pool.
x = h.make_tensor_value_info("x", T.FLOAT, [1, 1, 6, 8])
y = h.make_tensor_value_info("y", T.FLOAT, [1, 3, 3, 4])
inits = [s("sa", 0.05), z("za"), s("sb", 0.04), z("zb"), s("sc", 0.03), z("zc"),
         s("sd", 0.02), z("zd"), s("se", 0.02), z("ze"),
         nh.from_array(rng.integers(-90, 90, (3, 1, 1, 3)).astype(np.int8), "w1"),
         nh.from_array(np.full(3, 0.01, np.float32), "sw1"),
         nh.from_array(np.zeros(3, np.int8), "zw1"),
         nh.from_array(rng.standard_normal(3).astype(np.float32) + 1, "g"),
         nh.from_array(rng.standard_normal(3).astype(np.float32), "be"),
         nh.from_array(rng.standard_normal(3).astype(np.float32), "mu"),
         nh.from_array(rng.random(3).astype(np.float32) + 0.5, "var"),
         s("floor", -0.4)]
nodes = [
    h.make_node("QuantizeLinear", ["x", "sa", "za"], ["xq"]),
    h.make_node("DequantizeLinear", ["xq", "sa", "za"], ["xd"]),
    h.make_node("DequantizeLinear", ["w1", "sw1", "zw1"], ["w1d"], axis=0),
    h.make_node("Conv", ["xd", "w1d"], ["c1"], pads=[0, 1, 0, 1]),
    h.make_node("QuantizeLinear", ["c1", "sb", "zb"], ["c1q"]),
    h.make_node("DequantizeLinear", ["c1q", "sb", "zb"], ["c1d"]),
    h.make_node("BatchNormalization", ["c1d", "g", "be", "mu", "var"], ["bn"]),
    h.make_node("QuantizeLinear", ["bn", "sc", "zc"], ["bnq"]),
    h.make_node("DequantizeLinear", ["bnq", "sc", "zc"], ["bnd"]),
    h.make_node("LeakyRelu", ["bnd"], ["lr"], alpha=0.2),
    h.make_node("QuantizeLinear", ["lr", "sd", "zd"], ["lrq"]),
    h.make_node("DequantizeLinear", ["lrq", "sd", "zd"], ["lrd"]),
    h.make_node("Max", ["lrd", "floor"], ["mx"]),
    h.make_node("MaxPool", ["mx"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
    h.make_node("QuantizeLinear", ["mp", "se", "ze"], ["mpq"]),
    h.make_node("DequantizeLinear", ["mpq", "se", "ze"], ["y"]),
]
save("qdq_lut_pool", nodes, inits, [x], [y])

# Float sequence ops (the text encoder's forms): gather, layer norm, dynamic int8 matmul,
# heads (reshape, transpose, batched matmul, softmax), GELU (erf), mean pooling, L2 norm.
ids = h.make_tensor_value_info("ids", T.INT64, [1, 4])
y = h.make_tensor_value_info("y", T.FLOAT, [1, 8])
f = lambda n, a: nh.from_array(np.asarray(a, np.float32), n)
inits = [f("table", rng.standard_normal((10, 8))), f("pos", rng.standard_normal((1, 4, 8))),
         f("ln_g", rng.random(8) + 0.5), f("ln_b", rng.standard_normal(8)),
         nh.from_array(rng.integers(-100, 100, (8, 8)).astype(np.int8), "wq"),
         nh.from_array(np.zeros(8, np.int8), "wz"), f("ws", np.full(8, 0.01)),
         f("bias", rng.standard_normal(8)), nh.from_array(np.array([1, 4, 2, 4], np.int64), "heads"),
         f("rt2", 1.4142135), f("one", 1.0), f("half", 0.5), f("eps", 1e-9),
         nh.from_array(np.array([1], np.int64), "ax1"), nh.from_array(np.array([-1], np.int64), "axl"),
         nh.from_array(np.array([1, 4, 8], np.int64), "flat")]
nodes = [
    h.make_node("Gather", ["table", "ids"], ["e"]),
    h.make_node("Add", ["e", "pos"], ["e2"]),
    h.make_node("LayerNormalization", ["e2", "ln_g", "ln_b"], ["ln"], axis=-1, epsilon=1e-12),
    h.make_node("DynamicQuantizeLinear", ["ln"], ["lq", "ls", "lz"]),
    h.make_node("Mul", ["ls", "ws"], ["sp"]),
    h.make_node("MatMulInteger", ["lq", "wq", "lz", "wz"], ["acc"]),
    h.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT),
    h.make_node("Mul", ["accf", "sp"], ["mm"]),
    h.make_node("Add", ["bias", "mm"], ["q"]),
    h.make_node("Reshape", ["q", "heads"], ["qh"]),
    h.make_node("Transpose", ["qh"], ["qt"], perm=[0, 2, 1, 3]),
    h.make_node("Transpose", ["qh"], ["kt"], perm=[0, 2, 3, 1]),
    h.make_node("MatMul", ["qt", "kt"], ["sc"]),
    h.make_node("Softmax", ["sc"], ["p"], axis=-1),
    h.make_node("MatMul", ["p", "qt"], ["ctx"]),
    h.make_node("Transpose", ["ctx"], ["ct"], perm=[0, 2, 1, 3]),
    h.make_node("Reshape", ["ct", "flat"], ["h"]),
    h.make_node("Div", ["h", "rt2"], ["hd"]),
    h.make_node("Erf", ["hd"], ["he"]),
    h.make_node("Add", ["he", "one"], ["h1"]),
    h.make_node("Mul", ["h", "h1"], ["h2"]),
    h.make_node("Mul", ["h2", "half"], ["gelu"]),
    h.make_node("ReduceSum", ["gelu", "ax1"], ["s"], keepdims=0),
    h.make_node("Mul", ["s", "s"], ["s2"]),
    h.make_node("ReduceSum", ["s2", "axl"], ["n2"], keepdims=1),
    h.make_node("Sqrt", ["n2"], ["n"]),
    h.make_node("Clip", ["n", "eps"], ["nc"]),
    h.make_node("Div", ["s", "nc"], ["y"]),
]
save("seq_dynq", nodes, inits, [ids], [y], opset=17)
