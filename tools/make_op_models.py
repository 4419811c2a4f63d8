"""Small float models built from the blocks of mobile networks (SiLU, hard-swish,
squeeze-excite, explicit Pad, channel Concat, shape arithmetic before a Reshape, Gemm with
transB = 0), quantised by onnxruntime's own quantiser in QDQ (u8 and int8 activations) and QOperator form, with
onnxruntime's outputs on them (graph optimisation off) for runtime/tests/op_models.rs.

    python3 tools/make_op_models.py   # writes models/golden/ops/*.onnx, *_y.npy, x.npy, calib.npy,
                                      # manifest.json and the float models under float/

Each model: `<name>_<form>.onnx` (form qdq, qop or s8), input `x` [N, 3, 16, 16], output `y`;
and under dyn/ each float model quantised by `quantize_dynamic` (ConvInteger, MatMulInteger,
u8 weights) with onnxruntime's outputs, for `import_calibrated`, which undoes it.
Needs onnx and onnxruntime (pip install onnx==1.17.0 onnxruntime==1.20.1).
"""
import json
import os
import sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper as h, numpy_helper as nh, TensorProto as T
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)

OUT = "models/golden/ops"
N_IN = 12
rng = np.random.default_rng(5)


class Nodes:
    """A graph under construction: nodes, initialisers, fresh names."""

    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def name(self, p):
        self.k += 1
        return f"{p}{self.k}"

    def init(self, arr, p="w"):
        n = self.name(p)
        self.inits.append(nh.from_array(np.asarray(arr), n))
        return n

    def op(self, op, inputs, **attrs):
        y = self.name(op.lower() + "_")
        self.nodes.append(h.make_node(op, inputs, [y], name=y, **attrs))
        return y

    def conv(self, x, cin, cout, k=3, pads=1, group=1, stride=1):
        w = rng.normal(0, (2.0 / (cin // group * k * k)) ** 0.5,
                       (cout, cin // group, k, k)).astype(np.float32)
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        strides = list(stride) if isinstance(stride, tuple) else [stride, stride]
        return self.op("Conv", [x, self.init(w), self.init(b, "b")], kernel_shape=[k, k],
                       pads=[pads] * 4, group=group, strides=strides)

    def model(self, y, out_shape):
        self.nodes[-1].output[0] = "y"
        for n in self.nodes:
            n.input[:] = ["y" if i == y else i for i in n.input]
        g = h.make_graph(self.nodes, "ops", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                         [h.make_tensor_value_info("y", T.FLOAT, out_shape)], self.inits)
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def silu():
    g = Nodes()
    c = g.conv("x", 3, 8)
    s = g.op("Sigmoid", [c])
    m = g.op("Mul", [c, s])
    c2 = g.conv(m, 8, 8, k=1, pads=0)
    return g.model(g.op("GlobalAveragePool", [c2]), [1, 8, 1, 1])


def se_hardswish():
    g = Nodes()
    c = g.conv("x", 3, 8, stride=2)
    a = g.op("HardSwish", [c])
    d = g.conv(a, 8, 8, group=8)
    p = g.op("GlobalAveragePool", [d])
    r = g.op("Relu", [g.conv(p, 8, 4, k=1, pads=0)])
    s = g.op("HardSigmoid", [g.conv(r, 4, 8, k=1, pads=0)], alpha=1.0 / 6, beta=0.5)
    m = g.op("Mul", [d, s])
    c2 = g.conv(m, 8, 8, k=1, pads=0)
    return g.model(g.op("GlobalAveragePool", [c2]), [1, 8, 1, 1])


def pad_concat():
    g = Nodes()
    pads = g.init(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    p = g.op("Pad", ["x", pads], mode="constant")
    a = g.op("Relu", [g.conv(p, 3, 6, pads=0)])
    b = g.op("Relu", [g.conv("x", 3, 4, k=1, pads=0)])
    c = g.op("Concat", [a, b], axis=1)
    c2 = g.conv(c, 10, 8, k=1, pads=0)
    return g.model(g.op("GlobalAveragePool", [c2]), [1, 8, 1, 1])


def shape_flatten():
    """Flatten written as the TorchScript exporter writes x.view(x.size(0), -1)."""
    g = Nodes()
    c = g.op("Relu", [g.conv("x", 3, 8, stride=2)])
    p = g.op("GlobalAveragePool", [c])
    s = g.op("Shape", [p])
    n0 = g.op("Gather", [s, g.init(np.array(0, np.int64), "i")], axis=0)
    u = g.op("Unsqueeze", [n0, g.init(np.array([0], np.int64), "ax")])
    cat = g.op("Concat", [u, g.init(np.array([-1], np.int64), "m1")], axis=0)
    r = g.op("Reshape", [p, cat])
    # Gemm with transB = 0: per-channel weights quantised along axis 1.
    w = rng.normal(0, 0.3, (8, 5)).astype(np.float32)
    b = rng.normal(0, 0.1, 5).astype(np.float32)
    y = g.op("Gemm", [r, g.init(w), g.init(b, "b")], transB=0)
    return g.model(y, [1, 5])


def split_scalar():
    """A C2f-like split (YOLOv8) and arithmetic with constants (PaddleOCR's hard-swish
    x·clip(x + 3, 0, 6)/6 and a learned scale), with a runtime Slice of channels."""
    g = Nodes()
    c = g.op("Relu", [g.conv("x", 3, 8)])
    a, b = g.name("split_a"), g.name("split_b")
    g.nodes.append(h.make_node("Split", [c, g.init(np.array([4, 4], np.int64), "sp")], [a, b],
                               axis=1, name="split"))
    a2 = g.op("Mul", [a, g.init(np.array([0.7], np.float32), "k")])
    t = g.op("Clip", [g.op("Add", [b, g.init(np.array(3.0, np.float32), "three")]),
                      g.init(np.array(0.0, np.float32), "lo"), g.init(np.array(6.0, np.float32), "hi")])
    hs = g.op("Div", [g.op("Mul", [b, t]), g.init(np.array(6.0, np.float32), "six")])
    sl = g.op("Slice", [hs, g.init(np.array([1], np.int64), "s0"), g.init(np.array([3], np.int64), "s1"),
                        g.init(np.array([1], np.int64), "s2")])
    cat = g.op("Concat", [a2, sl], axis=1)
    c2 = g.conv(cat, 6, 8, k=1, pads=0)
    return g.model(g.op("GlobalAveragePool", [c2]), [1, 8, 1, 1])


def upsample():
    """A feature-pyramid step (YOLOv8, PP-OCR det): a strided branch upsampled by Resize
    (nearest, scale 2) and concatenated with the full-resolution one."""
    g = Nodes()
    a = g.op("Relu", [g.conv("x", 3, 6)])
    b = g.op("Relu", [g.conv(a, 6, 6, stride=2)])
    up = g.op("Resize", [b, "", g.init(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    cat = g.op("Concat", [a, up], axis=1)
    c2 = g.conv(cat, 12, 8, k=1, pads=0)
    return g.model(g.op("GlobalAveragePool", [c2]), [1, 8, 1, 1])


def anchors():
    """YOLOv8's box decoding: anchor centres computed from the feature map's shape
    (Shape, Gather, Cast, Range, + 0.5; the quantiser puts a QuantizeLinear and a
    DequantizeLinear on the folded constant) added to and subtracted from activations."""
    g = Nodes()
    c = g.op("Relu", [g.conv("x", 3, 4)])
    w = g.op("Gather", [g.op("Shape", [c]), g.init(np.array(3, np.int64), "i3")], axis=0)
    r = g.op("Range", [g.init(np.array(0.0, np.float32), "r0"), g.op("Cast", [w], to=T.FLOAT),
                       g.init(np.array(1.0, np.float32), "r1")])
    a = g.op("Mul", [g.op("Add", [r, g.init(np.array(0.5, np.float32), "half")]),
                     g.init(np.array(0.25, np.float32), "q")])
    lt = g.op("Sub", [a, c])
    rb = g.op("Add", [a, c])
    c2 = g.conv(g.op("Concat", [lt, rb], axis=1), 8, 8, k=1, pads=0)
    return g.model(g.op("GlobalAveragePool", [c2]), [1, 8, 1, 1])


def deconv():
    """A segmentation/detection head's upsampling (PP-OCR det, FPN decoders): ConvTranspose
    with kernel 2 and stride 2, then one with kernel 3, stride 2, pads 1, output_padding 1."""
    g = Nodes()
    a = g.op("Relu", [g.conv("x", 3, 6, stride=2)])
    w1 = rng.normal(0, 0.4, (6, 5, 2, 2)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 5).astype(np.float32)
    u = g.op("Relu", [g.op("ConvTranspose", [a, g.init(w1), g.init(b1, "b")], kernel_shape=[2, 2],
                           strides=[2, 2])])
    w2 = rng.normal(0, 0.3, (5, 4, 3, 3)).astype(np.float32)
    v = g.op("ConvTranspose", [u, g.init(w2)], kernel_shape=[3, 3], strides=[2, 2],
             pads=[1, 1, 1, 1], output_padding=[1, 1])
    return g.model(g.op("GlobalAveragePool", [g.op("Relu", [v])]), [1, 4, 1, 1])


def avgpool():
    """PP-OCR's recogniser: AveragePool with kernel [3, 2] and stride [3, 2] between
    convolutions; then a padded 3x3 average that counts the padding (count_include_pad)."""
    g = Nodes()
    a = g.op("Relu", [g.conv("x", 3, 6)])
    p = g.op("AveragePool", [a], kernel_shape=[3, 2], strides=[3, 2])
    b = g.op("Relu", [g.conv(p, 6, 5)])
    q = g.op("AveragePool", [b], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    return g.model(g.op("GlobalAveragePool", [q]), [1, 5, 1, 1])


def tokens():
    """A transformer block's start, as PP-OCR's recogniser writes it: a feature map as
    tokens (Reshape, Transpose), a layer norm written out (ReduceMean, Sub, Pow 2, Sqrt,
    Div) and every token by constant weights (MatMul of a [1, 64, 8] tensor)."""
    g = Nodes()
    a = g.op("Relu", [g.conv("x", 3, 8, stride=2)])
    r = g.op("Reshape", [a, g.init(np.array([1, 8, 64], np.int64), "s")])
    t = g.op("Transpose", [r], perm=[0, 2, 1])
    mu = g.op("ReduceMean", [t], axes=[-1])
    d = g.op("Sub", [t, mu])
    var = g.op("ReduceMean", [g.op("Pow", [d, g.init(np.array(2.0, np.float32), "e")])], axes=[-1])
    sd = g.op("Sqrt", [g.op("Add", [var, g.init(np.array(1e-5, np.float32), "eps")])])
    nrm = g.op("Div", [d, sd])
    w = rng.normal(0, 0.35, (8, 6)).astype(np.float32)
    y = g.op("Relu", [g.op("MatMul", [nrm, g.init(w)])])
    return g.model(g.op("ReduceMean", [y], axes=[1]), [1, 1, 6])


def dw_strides():
    """OCR networks' depthwise convolutions with a stride of their own per axis (PP-OCR's
    classifier and recogniser halve the height only): 5x5 with strides (2, 1), then 3x3
    with (1, 2), the map itself as the output."""
    g = Nodes()
    a = g.op("Relu", [g.conv("x", 3, 8)])
    b = g.op("Relu", [g.conv(a, 8, 8, k=5, pads=2, group=8, stride=(2, 1))])
    c = g.op("Relu", [g.conv(b, 8, 8, group=8, stride=(1, 2))])
    return g.model(g.conv(c, 8, 8, k=1, pads=0), [1, 8, 8, 8])


MODELS = {"upsample": upsample, "split_scalar": split_scalar, "silu": silu, "se_hardswish": se_hardswish, "pad_concat": pad_concat,
          "shape_flatten": shape_flatten, "anchors": anchors, "deconv": deconv, "avgpool": avgpool,
          "tokens": tokens, "dw_strides": dw_strides}


class Reader(CalibrationDataReader):
    def __init__(self, xs):
        self.it = iter([{"x": x} for x in xs])

    def get_next(self):
        return next(self.it, None)


def main():
    # `--only NAME ...`: write those models (and their manifest entries) alone, leaving the
    # others' files as they are (each model draws its weights in MODELS order, so a model
    # gets the same weights either way).
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else None
    os.makedirs(OUT, exist_ok=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Smooth inputs, as images are: a random field upsampled.
    coarse = rng.uniform(-1, 1, (N_IN + 16, 1, 3, 4, 4)).astype(np.float32)
    xs = np.repeat(np.repeat(coarse, 4, axis=3), 4, axis=4)
    xs += rng.normal(0, 0.2, xs.shape).astype(np.float32)
    calib, test = xs[:16], xs[16:]
    np.save(f"{OUT}/x.npy", test[:, 0])
    np.save(f"{OUT}/calib.npy", calib[:, 0])
    manifest = []
    if only:
        with open(f"{OUT}/manifest.json") as f:
            manifest = [e for e in json.load(f) if e["model"].rsplit("_", 1)[0] not in only]
    for name, make in MODELS.items():
        m = make()
        if only and name not in only:
            continue
        fp = f"float/{name}.onnx"
        os.makedirs(f"{OUT}/float", exist_ok=True)
        onnx.save(m, f"{OUT}/{fp}")
        s = ort.InferenceSession(f"{OUT}/{fp}", so, providers=["CPUExecutionProvider"])
        y = np.stack([s.run(None, {"x": x})[0] for x in test]).astype(np.float32)
        np.save(f"{OUT}/float/{name}_y.npy", y)
        fp = f"{OUT}/{fp}"
        for form, qf, act in [("qdq", QuantFormat.QDQ, QuantType.QUInt8),
                              ("qop", QuantFormat.QOperator, QuantType.QUInt8),
                              ("s8", QuantFormat.QDQ, QuantType.QInt8)]:
            path = f"{OUT}/{name}_{form}.onnx"
            # QOperator models run on onnxruntime's integer kernels, which saturate int16
            # pair sums on AVX2 machines without VNNI unless weights keep to 7 bits.
            quantize_static(fp, path, Reader(calib), quant_format=qf, per_channel=True,
                            reduce_range=form == "qop",
                            activation_type=act, weight_type=QuantType.QInt8)
            s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            y = np.stack([s.run(None, {"x": x})[0] for x in test]).astype(np.float32)
            np.save(f"{OUT}/{name}_{form}_y.npy", y)
            q = onnx.load(path)
            ops = sorted({(n.domain or "ai.onnx", n.op_type) for n in q.graph.node})
            manifest.append({"model": f"{name}_{form}.onnx", "y": f"{name}_{form}_y.npy",
                             "ops": [f"{d}:{o}" for d, o in ops]})
    os.makedirs(f"{OUT}/dyn", exist_ok=True)
    for name in MODELS:
        if only and name not in only:
            continue
        path = f"{OUT}/dyn/{name}.onnx"
        # u8 weights: onnxruntime 1.20 has no CPU ConvInteger for int8 weights.
        quantize_dynamic(f"{OUT}/float/{name}.onnx", path, weight_type=QuantType.QUInt8)
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        y = np.stack([s.run(None, {"x": x})[0] for x in test]).astype(np.float32)
        np.save(f"{OUT}/dyn/{name}_y.npy", y)
    with open(f"{OUT}/manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
