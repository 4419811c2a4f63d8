"""Small float models of the ops that run on edgetune's float kernels without being
quantised (a float model compiled as it is, or a float island between a DequantizeLinear
and a QuantizeLinear): float convolutions (1-D strided like an STFT front end, 2-D grouped,
dilated, asymmetrically padded; transposed ones with strides, pads and output padding, and ones whose kernel equals
their stride; a
block of convolution, ReLU6, depthwise and ReLU), bilinear Resize under each coordinate transform,
ReduceMax, Clip with bounds computed at run time, Max/Min of two tensors, MatMul by
constant weights, comparisons, boolean logic, Where and the attention-mask pattern of
transformers' exporters, Gather/GatherND by constant indices, Expand, a 5-D Transpose (attention heads split as [batch, tokens, 3, heads,
dim]), a bidirectional LSTM with peepholes, nested If on the input's shape, runs of
elementwise ops edgetune fuses into chains, batch norms, activations and a residual
add between convolutions (which edgetune runs on NHWC maps), and BlazeFace's blocks with
tflite2onnx's transposes, channel Pad, MaxPool and AveragePool, and comparisons, Where,
PRelu, Max and Min over rows long enough for the vector paths (with softmax rows that are
all masked and the IsNaN guard replacing their NaNs), max and average pools over pairs of
columns, MobileNetV3's squeeze-and-excitation block, YOLOv8's C2f block and a pyramid
step; with onnxruntime's outputs
(graph optimisation off) for runtime/tests/float_ops.rs.
One model is also quantised by onnxruntime's quantize_static (QDQ, u8): its bilinear
Resize is left in float between a DequantizeLinear and a QuantizeLinear.

    python3 tools/make_float_op_models.py [NAME ...]  # writes models/golden/ops/f32/

Each model: `<name>.onnx` with input `x`, output `y`, and `<name>_x.npy`, `<name>_y.npy`
(N inputs stacked on a leading axis). Needs onnx and onnxruntime
(pip install onnx==1.17.0 onnxruntime==1.20.1).
"""
import os
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper as h, numpy_helper as nh, TensorProto as T
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

OUT = "models/golden/ops/f32"
N_IN = 6
rng = np.random.default_rng(11)


class G:
    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def init(self, arr, p="w"):
        self.k += 1
        n = f"{p}{self.k}"
        self.inits.append(nh.from_array(np.asarray(arr), n))
        return n

    def op(self, op, inputs, **attrs):
        self.k += 1
        y = f"{op.lower()}_{self.k}"
        self.nodes.append(h.make_node(op, inputs, [y], name=y, **attrs))
        return y

    def model(self, y, in_shape, out_shape):
        self.nodes[-1].output[0] = "y"
        g = h.make_graph(self.nodes, "f32ops", [h.make_tensor_value_info("x", T.FLOAT, in_shape)],
                         [h.make_tensor_value_info("y", T.FLOAT, out_shape)], self.inits)
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
        m.ir_version = 8
        return m


def w(*shape, s=0.3):
    return rng.normal(0, s, shape).astype(np.float32)


def conv1d_stft():
    # [1, 1, 400] framed by a stride-40 kernel of 64 taps into 17 channels, then power.
    g = G()
    re = g.op("Conv", ["x", g.init(w(17, 1, 64))], kernel_shape=[64], strides=[40], pads=[0, 0])
    im = g.op("Conv", ["x", g.init(w(17, 1, 64))], kernel_shape=[64], strides=[40], pads=[0, 0])
    p = g.op("Add", [g.op("Pow", [re, g.init(np.array(2.0, np.float32))]),
                     g.op("Pow", [im, g.init(np.array(2.0, np.float32))])])
    return g.model(p, [1, 1, 400], None), (1, 1, 400)


def conv2d_grouped():
    # Grouped, dilated, strided, asymmetric pads, with bias; then a 1-D style pointwise.
    g = G()
    a = g.op("Conv", ["x", g.init(w(6, 2, 3, 3)), g.init(w(6), "b")], kernel_shape=[3, 3],
             group=2, strides=[2, 1], dilations=[1, 2], pads=[1, 2, 0, 1])
    b = g.op("Conv", [a, g.init(w(5, 6, 1, 1)), g.init(w(5), "b")], kernel_shape=[1, 1])
    c = g.op("Conv", [b, g.init(w(5, 1, 3, 3))], kernel_shape=[3, 3], group=5,
             auto_pad="SAME_UPPER")
    return g.model(c, [1, 4, 9, 10], None), (1, 4, 9, 10)


def conv_act_dw():
    # A mobile block in float: convolution, ReLU6 (Clip), depthwise stride 2, ReLU, and a
    # pointwise convolution (the activations sit between convolutions that run on NHWC).
    g = G()
    a = g.op("Conv", ["x", g.init(w(8, 4, 3, 3)), g.init(w(8), "b")], kernel_shape=[3, 3],
             pads=[1, 1, 1, 1])
    b = g.op("Clip", [a, g.init(np.array(0.0, np.float32), "lo"),
                      g.init(np.array(6.0, np.float32), "hi")])
    c = g.op("Conv", [b, g.init(w(8, 1, 3, 3)), g.init(w(8), "b")], kernel_shape=[3, 3],
             group=8, strides=[2, 2], pads=[1, 1, 1, 1])
    d = g.op("Relu", [c])
    e = g.op("Conv", [d, g.init(w(6, 8, 1, 1))], kernel_shape=[1, 1])
    return g.model(e, [1, 4, 12, 10], None), (1, 4, 12, 10)


def deconv():
    # Transposed convolutions: stride 2 with pads and output_padding, then stride 1 dilated.
    g = G()
    a = g.op("ConvTranspose", ["x", g.init(w(3, 4, 3, 3)), g.init(w(4), "b")], kernel_shape=[3, 3],
             strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0])
    b = g.op("ConvTranspose", [a, g.init(w(4, 2, 2, 2))], kernel_shape=[2, 2], dilations=[2, 1])
    return g.model(b, [1, 3, 5, 6], None), (1, 3, 5, 6)


def resize_linear():
    # Each coordinate transform, by scales and by sizes, whole and fractional factors.
    g = G()
    outs = []
    for ct, scales, sizes in [("half_pixel", [1, 1, 2, 2], None),
                              ("pytorch_half_pixel", [1, 1, 1.5, 2.5], None),
                              ("align_corners", None, [1, 3, 7, 9]),
                              ("asymmetric", [1, 1, 0.5, 3], None)]:
        ins = ["x", "", g.init(np.array(scales, np.float32), "s")] if scales else \
            ["x", "", "", g.init(np.array(sizes, np.int64), "z")]
        r = g.op("Resize", ins, mode="linear", coordinate_transformation_mode=ct)
        outs.append(g.op("Flatten", [r], axis=1))
    return g.model(g.op("Concat", outs, axis=1), [1, 3, 6, 5], None), (1, 3, 6, 5)


def reduce_clip():
    # The log-mel tail: ReduceMax over all axes, a run-time lower bound for Clip; ReduceMax
    # over one axis; Max and Min of two tensors with broadcasting.
    g = G()
    top = g.op("ReduceMax", ["x"], keepdims=0)
    lo = g.op("Sub", [top, g.init(np.array(1.5, np.float32))])
    c = g.op("Clip", ["x", lo])
    m1 = g.op("ReduceMax", ["x"], axes=[2], keepdims=1)
    mx = g.op("Max", [c, m1])
    mn = g.op("Min", [mx, g.init(w(1, 1, 7, s=1.0), "k")])
    return g.model(mn, [1, 2, 5, 7], None), (1, 2, 5, 7)


def matmul_heads():
    # Tokens by constant weights into q, k, v heads: a 5-D Reshape, Transpose
    # [2, 0, 3, 1, 4], attention scores, back to tokens by constant weights.
    g = G()
    qkv = g.op("MatMul", ["x", g.init(w(12, 36))])
    r = g.op("Reshape", [qkv, g.init(np.array([1, 5, 3, 2, 6], np.int64), "shape")])
    t = g.op("Transpose", [r], perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Squeeze", [g.op("Slice", [t, g.init(np.array([i], np.int64), "st"),
                                                g.init(np.array([i + 1], np.int64), "en"),
                                                g.init(np.array([0], np.int64), "ax")]),
                                  g.init(np.array([0], np.int64), "sq")]) for i in range(3))
    s = g.op("Softmax", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])], axis=-1)
    o = g.op("Transpose", [g.op("MatMul", [s, v])], perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.init(np.array([1, 5, 12], np.int64), "shape")])
    return g.model(g.op("MatMul", [o, g.init(w(12, 4))]), [1, 5, 12], None), (1, 5, 12)


def mask_logic():
    # The attention mask of transformers' exporters: booleans from comparisons, And, Or,
    # Xor, Not, Cast to bool, an additive mask by Where(mask, 0, -inf), Softmax and the
    # Where(IsNaN(.), 0, .) guard; Gather and GatherND by constant indices, Expand.
    g = G()
    top = g.op("ReduceMax", ["x"], axes=[2], keepdims=1)
    m = g.op("Cast", [g.op("Less", [top, g.init(np.array(1.6, np.float32))])], to=T.BOOL)
    keep = g.init(np.array([[[[1, 1, 0, 1, 1, 1]]]], bool), "keep")
    m2 = g.op("And", [m, keep])
    m3 = g.op("Or", [g.op("Xor", [m2, g.op("Not", [m])]), g.op("Equal", [top, top])])
    m4 = g.op("And", [m2, m3])
    add = g.op("Where", [m4, g.init(np.array(0.0, np.float32)), g.init(np.array(-np.inf, np.float32))])
    s = g.op("Softmax", [g.op("Add", ["x", add])], axis=-1)
    s = g.op("Where", [g.op("IsNaN", [s]), g.init(np.array(0.0, np.float32)), s])
    s = g.op("Gather", [s, g.init(np.array([5, 0, 2], np.int64), "ix")], axis=3)
    s = g.op("Mul", [s, g.op("Cast", [g.op("GreaterOrEqual", [s, g.init(np.array(0.05, np.float32))])], to=T.FLOAT)])
    nd = g.op("GatherND", [s, g.init(np.array([[0, 1], [0, 0]], np.int64), "nd")])
    e = g.op("Expand", [nd, g.init(np.array([2, 1, 1, 1], np.int64), "to")])
    return g.model(e, [1, 2, 4, 6], None), (1, 2, 4, 6)


def upsample_linear():
    # An FPN-style block: conv, bilinear 2x upsampling, conv; quantised below.
    g = G()
    a = g.op("Relu", [g.op("Conv", ["x", g.init(w(6, 3, 3, 3)), g.init(w(6), "b")],
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])])
    u = g.op("Resize", [a, "", g.init(np.array([1, 1, 2, 2], np.float32), "s")], mode="linear",
             coordinate_transformation_mode="half_pixel")
    c = g.op("Conv", [u, g.init(w(4, 6, 3, 3)), g.init(w(4), "b")], kernel_shape=[3, 3],
             pads=[1, 1, 1, 1])
    return g.model(c, [1, 3, 12, 12], None), (1, 3, 12, 12)


def lstm_bidir():
    # A bidirectional LSTM over 5 steps with bias, peepholes and initial states (the
    # recurrent part of speech models), then its outputs flattened per step.
    g = G()
    hid, inp = 6, 8
    y = g.op("LSTM", ["x", g.init(w(2, 4 * hid, inp)), g.init(w(2, 4 * hid, hid)),
                      g.init(w(2, 8 * hid, s=0.1), "b"), "", g.init(w(2, 1, hid), "h0"),
                      g.init(w(2, 1, hid), "c0"), g.init(w(2, 3 * hid, s=0.2), "p")],
             hidden_size=hid, direction="bidirectional")
    r = g.op("Reshape", [y, g.init(np.array([5, 2 * hid], np.int64), "shape")])
    return g.model(r, [5, 1, inp], None), (5, 1, inp)


def if_shape():
    # Branches chosen by the input's shape, as exporters write shape checks (silero-vad):
    # the condition folds once the shape is fixed; the branch taken holds another If.
    g = G()
    d = g.op("Gather", [g.op("Shape", ["x"]), g.init(np.array(2, np.int64), "i")], axis=0)
    cond = g.op("Equal", [d, g.init(np.array(6, np.int64), "six")])
    inner_cond = g.op("Greater", [d, g.init(np.array(10, np.int64), "ten")])
    inner_then = h.make_graph([h.make_node("Neg", ["x"], ["neg_x"])], "inner_then", [],
                              [h.make_tensor_value_info("neg_x", T.FLOAT, None)])
    inner_else = h.make_graph([h.make_node("Sigmoid", ["x"], ["sig_x"])], "inner_else", [],
                              [h.make_tensor_value_info("sig_x", T.FLOAT, None)])
    then_b = h.make_graph(
        [h.make_node("If", [inner_cond], ["inner_y"], then_branch=inner_then, else_branch=inner_else),
         h.make_node("Mul", ["inner_y", "x"], ["then_y"])],
        "then", [], [h.make_tensor_value_info("then_y", T.FLOAT, None)])
    else_b = h.make_graph([h.make_node("Tanh", ["x"], ["else_y"])], "else", [],
                          [h.make_tensor_value_info("else_y", T.FLOAT, None)])
    g.nodes.append(h.make_node("If", [cond], ["if_y"], then_branch=then_b, else_branch=else_b))
    a = g.op("Add", ["if_y", g.init(np.array([1.0], np.float32), "one")])
    return g.model(a, [1, 4, 6], None), (1, 4, 6)


def elementwise_chains():
    # Runs of elementwise ops edgetune fuses into chains: a GELU written out as exporters
    # do (bias add, Div, Erf, Add, two Mul), a Reshape inside a chain, a scale repeated
    # along the output, a tensor broadcast over the leading axes (the attention-mask
    # pattern), a value also read outside its chain, a chain that would need three inputs,
    # a square (one value twice), a hard-swish's Clip, and scalar-path functions (Sqrt,
    # Exp, Abs, Neg).
    g = G()
    c = lambda v: g.init(np.array(v, np.float32), "c")
    a = g.op("Add", ["x", g.init(w(50), "b")])
    gelu = g.op("Mul", [g.op("Mul", [a, c(0.5)]),
                        g.op("Add", [g.op("Erf", [g.op("Div", [a, c(1.4142135)])]), c(1.0)])])
    r = g.op("Reshape", [gelu, g.init(np.array([1, 6, 400], np.int64), "shape")])
    s = g.op("Mul", [r, g.init(w(400), "s")])
    xr = g.op("Reshape", ["x", g.init(np.array([1, 6, 400], np.int64), "shape")])
    s = g.op("Sub", [s, xr])
    s = g.op("Reshape", [s, g.init(np.array([1, 6, 8, 50], np.int64), "shape")])
    mask = g.op("ReduceMax", ["x"], axes=[1], keepdims=1)
    h2 = g.op("Add", [g.op("Mul", [s, c(0.25)]), mask])
    seen = g.op("ReduceMax", [h2], axes=[3], keepdims=1)
    q = g.op("Mul", [h2, h2])
    q = g.op("Div", [q, g.op("Add", [seen, c(2.0)])])
    t3 = g.op("Add", [g.op("Add", [q, "x"]), mask])
    t3 = g.op("Add", [t3, gelu])
    t3 = g.op("Mul", [t3, g.op("Clip", [g.op("Add", [t3, c(3.0)]), c(0.0), c(6.0)])])
    sc = g.op("Sqrt", [g.op("Add", [g.op("Abs", [t3]), c(1.0)])])
    sc = g.op("Neg", [g.op("Exp", [g.op("Mul", [sc, c(-0.5)])])])
    return g.model(g.op("Sigmoid", [g.op("Sub", [sc, t3])]), [1, 6, 8, 50], None), (1, 6, 8, 50)


def batch_norm(g, x, ch):
    return g.op("BatchNormalization", [x, g.init(1 + w(ch, s=0.1), "g"), g.init(w(ch, s=0.1), "b"),
                                       g.init(w(ch, s=0.1), "m"), g.init(1 + np.abs(w(ch, s=0.1)), "v")])


def bn_hardswish():
    # Convolutions with the batch norms, activations and residual of exporters that keep
    # them apart (paddle2onnx's PP-OCR): conv, BatchNormalization, a hard-swish written out
    # (Add, Clip, Mul, Div), a depthwise conv, BatchNormalization, Relu, a 1x1 conv, a
    # per-channel Mul and Add, a residual Add of a second 1x1 branch, LeakyRelu, Max, Min,
    # a per-channel PRelu, a 1x1 conv, LeakyRelu, the block's input added, LeakyRelu.
    # edgetune runs the ops between convolutions on their NHWC maps, so the transposes
    # between them go.
    g = G()
    c = lambda v: g.init(np.array(v, np.float32), "c")
    bn = lambda x, ch: batch_norm(g, x, ch)
    a = bn(g.op("Conv", ["x", g.init(w(16, 8, 3, 3))], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 16)
    a = g.op("Div", [g.op("Mul", [a, g.op("Clip", [g.op("Add", [a, c(3.0)]), c(0.0), c(6.0)])]), c(6.0)])
    d = bn(g.op("Conv", [a, g.init(w(16, 1, 3, 3))], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16), 16)
    d = g.op("Relu", [d])
    p = g.op("Conv", [d, g.init(w(8, 16, 1, 1))], kernel_shape=[1, 1])
    p = g.op("Add", [g.op("Mul", [p, g.init(w(1, 8, 1, 1), "s")]), g.init(w(1, 8, 1, 1), "t")])
    q = g.op("Conv", [a, g.init(w(8, 16, 1, 1))], kernel_shape=[1, 1])
    r = g.op("LeakyRelu", [g.op("Add", [p, q])], alpha=0.1)
    r = g.op("Min", [g.op("Max", [r, c(-0.3)]), c(2.5)])
    r = g.op("PRelu", [g.op("Sub", [r, c(0.5)]), g.init(w(8, 1, 1) - 0.5, "slope")])
    r = g.op("Conv", [r, g.init(w(8, 8, 1, 1))], kernel_shape=[1, 1])
    r = g.op("Add", [g.op("LeakyRelu", [r], alpha=0.2), "x"])
    return g.model(g.op("LeakyRelu", [r], alpha=0.3), [1, 8, 12, 20], None), (1, 8, 12, 20)


def blaze_blocks():
    # BlazeFace's blocks as tflite2onnx writes them: each convolution between explicit
    # transposes to NHWC and back, a depthwise convolution then a 1x1 one, the block's
    # input added (through a 2x2 MaxPool and a channel Pad where the block strides and
    # widens), Relu; then a MaxPool with padding, dilation and ceil_mode, and an
    # AveragePool with padding not counted. edgetune drops each transpose undone by the
    # next one.
    g = G()
    pads = lambda v: g.init(np.array(v, np.int64), "p")
    nhwc = lambda v: g.op("Transpose", [v], perm=[0, 2, 3, 1])
    nchw = lambda v: g.op("Transpose", [v], perm=[0, 3, 1, 2])
    def conv(v, cin, cout, k, group=1, stride=1):
        p = (k - 1) // 2
        y = g.op("Conv", [nchw(nhwc(v)), g.init(w(cout, cin // group, k, k)), g.init(w(cout, s=0.1), "b")],
                 kernel_shape=[k, k], pads=[p, p, p, p], group=group, strides=[stride, stride])
        return nchw(nhwc(y))
    a = g.op("Relu", [conv("x", 8, 16, 3)])
    b = g.op("Relu", [g.op("Add", [conv(conv(a, 16, 16, 3, group=16), 16, 16, 1), a])])
    skip = g.op("MaxPool", [b], kernel_shape=[2, 2], strides=[2, 2])
    skip = g.op("Pad", [skip, pads([0, 0, 0, 0, 0, 8, 0, 0]), g.init(np.array(0.0, np.float32), "z")])
    c = g.op("Relu", [g.op("Add", [conv(conv(b, 16, 16, 3, group=16, stride=2), 16, 24, 1), skip])])
    d = g.op("Relu", [g.op("Add", [conv(conv(c, 24, 24, 3, group=24), 24, 24, 1), c])])
    e = g.op("MaxPool", [d], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], dilations=[1, 2],
             ceil_mode=1)
    return g.model(g.op("AveragePool", [e], kernel_shape=[3, 2], strides=[1, 2], pads=[1, 1, 1, 0],
                        count_include_pad=0), [1, 8, 20, 22], None), (1, 8, 20, 22)


def deconv_subpixel():
    # Transposed convolutions whose kernel equals their stride (the upsampling of PP-OCR's
    # detection head and of U-Net decoders): 2x2 stride 2 with a bias to five channels, a
    # Relu, then 3x2 stride (3, 2) to one channel. edgetune runs each as a 1x1 convolution
    # and a transpose.
    g = G()
    a = g.op("ConvTranspose", ["x", g.init(w(6, 5, 2, 2)), g.init(w(5, s=0.1), "b")], kernel_shape=[2, 2],
             strides=[2, 2])
    a = g.op("Relu", [a])
    return g.model(g.op("ConvTranspose", [a, g.init(w(5, 1, 3, 2))], kernel_shape=[3, 2], strides=[3, 2]),
                   [1, 6, 7, 9], None), (1, 6, 7, 9)


def wide_select():
    # Rows long enough for the vector paths: a constant additive mask with fully masked
    # rows, Softmax and the Where(IsNaN(.), c, .) guard with c = 0.25 (so the replaced
    # values show), comparisons against a scalar and between tensors, Where of three
    # tensors and of a tensor and a scalar, a per-channel PRelu over the NCHW planes a
    # MaxPool reads, Max and Min of two tensors.
    g = G()
    c = lambda v: g.init(np.array(v, np.float32), "c")
    mask = np.zeros((1, 1, 8, 40), np.float32)
    mask[0, 0, 2, :] = -np.inf
    mask[0, 0, 5, 7:31] = -np.inf
    mask[0, 0, 6, :] = -np.inf
    s = g.op("Softmax", [g.op("Add", ["x", g.init(mask, "mask")])], axis=-1)
    s = g.op("Where", [g.op("IsNaN", [s]), c(0.25), s])
    ge = g.op("Cast", [g.op("GreaterOrEqual", [s, c(0.02)])], to=T.FLOAT)
    lt = g.op("Less", ["x", g.op("Mul", ["x", c(0.7)])])
    t = g.op("Where", [lt, s, g.op("Mul", ["x", c(0.5)])])
    t = g.op("Where", [g.op("Greater", [t, c(0.3)]), t, c(-0.2)])
    p = g.op("PRelu", [g.op("Sub", [t, ge]), g.init(w(3, 1, 1) - 0.5, "slope")])
    p = g.op("MaxPool", [p], kernel_shape=[2, 2], strides=[1, 1])
    q = g.op("Slice", [s, g.init(np.array([0, 0], np.int64), "b"), g.init(np.array([7, 39], np.int64), "e"),
                       g.init(np.array([2, 3], np.int64), "a")])
    e = g.op("Cast", [g.op("Equal", [g.op("Max", [p, q]), p])], to=T.FLOAT)
    return g.model(g.op("Add", [g.op("Min", [p, q]), e]), [1, 3, 8, 40], None), (1, 3, 8, 40)


def pool_pairs():
    # Pools over pairs of columns without padding (YOLO's and mtcnn's 2x2 stride-2 max
    # pools, openWakeWord's 1x2 ones) on maps of odd sizes (the last row and column left
    # out), max and average, each added to the next.
    g = G()
    a = g.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])
    b = g.op("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])
    c = g.op("MaxPool", [g.op("Add", [a, b])], kernel_shape=[1, 2], strides=[1, 2])
    d = g.op("AveragePool", [g.op("Mul", [a, b])], kernel_shape=[1, 2], strides=[1, 2])
    return g.model(g.op("Sub", [c, d]), [1, 3, 9, 13], None), (1, 3, 9, 13)


def se_block():
    # MobileNetV3's block as paddle2onnx writes it (PP-OCR's classifier): a 1x1 conv, a batch
    # norm and hard-swish, a depthwise conv, its batch norm and hard-swish, then squeeze and
    # excitation (GlobalAveragePool, 1x1 conv, Relu, 1x1 conv, HardSigmoid, the map
    # multiplied by the channel scales), a 1x1 conv. The map's ops run on the NHWC map:
    # the channel scales, a tensor repeated over the pixels, are read as a constant is.
    g = G()
    c = lambda v: g.init(np.array(v, np.float32), "c")
    bn = lambda x, ch: batch_norm(g, x, ch)
    hs = lambda v: g.op("Div", [g.op("Mul", [v, g.op("Clip", [g.op("Add", [v, c(3.0)]), c(0.0), c(6.0)])]), c(6.0)])
    a = hs(bn(g.op("Conv", ["x", g.init(w(16, 8, 1, 1))], kernel_shape=[1, 1]), 16))
    d = hs(bn(g.op("Conv", [a, g.init(w(16, 1, 3, 3))], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16), 16))
    s = g.op("GlobalAveragePool", [d])
    s = g.op("Relu", [g.op("Conv", [s, g.init(w(4, 16, 1, 1)), g.init(w(4, s=0.1), "b")], kernel_shape=[1, 1])])
    s = g.op("Conv", [s, g.init(w(16, 4, 1, 1)), g.init(w(16, s=0.1), "b")], kernel_shape=[1, 1])
    s = g.op("HardSigmoid", [s], alpha=0.2, beta=0.5)
    y = g.op("Conv", [g.op("Mul", [d, s]), g.init(w(8, 16, 1, 1))], kernel_shape=[1, 1])
    return g.model(y, [1, 8, 12, 20], None), (1, 8, 12, 20)


def c2f_block():
    # YOLOv8's C2f block as ultralytics exports it: a 1x1 conv and SiLU (Sigmoid, Mul), a
    # Split of the channels in two, a bottleneck (two 3x3 convs with SiLU) added to its
    # input, the three concatenated, a 1x1 conv and SiLU; then a feature pyramid's step, the
    # map upsampled (Resize, nearest) and concatenated with a strided conv's. edgetune runs
    # the activations, the split, the concatenations and the upsampling on the NHWC maps.
    g = G()
    silu = lambda v: g.op("Mul", [v, g.op("Sigmoid", [v])])
    conv = lambda v, ci, co, k, s=1: silu(g.op("Conv", [v, g.init(w(co, ci, k, k)), g.init(w(co, s=0.1), "b")],
                                               kernel_shape=[k, k], pads=[k // 2] * 4, strides=[s, s]))
    a = conv("x", 8, 16, 1)
    g.k += 1
    p, q = f"split_{g.k}_0", f"split_{g.k}_1"
    g.nodes.append(h.make_node("Split", [a, g.init(np.array([8, 8], np.int64), "sp")], [p, q], axis=1))
    r = g.op("Add", [q, conv(conv(q, 8, 8, 3), 8, 8, 3)])
    c = conv(g.op("Concat", [p, q, r], axis=1), 24, 16, 1)
    d = conv(c, 16, 16, 3, 2)
    u = g.op("Resize", [d, "", g.init(np.array([1, 1, 2, 2], np.float32), "sc")], mode="nearest")
    y = conv(g.op("Concat", [u, c], axis=1), 32, 8, 1)
    return g.model(y, [1, 8, 12, 20], None), (1, 8, 12, 20)


def winograd_convs():
    # 3x3 stride-1 convolutions of 32 channels and more over maps of 16 tiles and more,
    # which edgetune runs as Winograd's F(4x4, 3x3): a ReLU as the convolution's bounds,
    # asymmetric padding (partial tiles at the edges), 40 output channels (a part-empty
    # column panel), then 40 input channels (a part-empty lane group). Its own generator,
    # so the other models' weights do not move.
    r = np.random.default_rng(17)
    g = G()
    wt = lambda *s: r.normal(0, (2.0 / np.prod(s[1:])) ** 0.5, s).astype(np.float32)
    b = lambda n: r.normal(0, 0.1, n).astype(np.float32)
    a = g.op("Relu", [g.op("Conv", ["x", g.init(wt(32, 32, 3, 3)), g.init(b(32), "b")],
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    c = g.op("Conv", [a, g.init(wt(40, 32, 3, 3)), g.init(b(40), "b")], kernel_shape=[3, 3],
             pads=[0, 1, 2, 0])
    y = g.op("Conv", [c, g.init(wt(16, 40, 3, 3))], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return g.model(y, [1, 32, 18, 22], None), (1, 32, 18, 22)


MODELS = {"conv1d_stft": conv1d_stft, "conv2d_grouped": conv2d_grouped, "deconv": deconv,
          "conv_act_dw": conv_act_dw,
          "resize_linear": resize_linear, "reduce_clip": reduce_clip,
          "matmul_heads": matmul_heads, "mask_logic": mask_logic,
          "upsample_linear": upsample_linear, "lstm_bidir": lstm_bidir, "if_shape": if_shape,
          "elementwise_chains": elementwise_chains, "bn_hardswish": bn_hardswish,
          "blaze_blocks": blaze_blocks, "deconv_subpixel": deconv_subpixel,
          "wide_select": wide_select, "pool_pairs": pool_pairs, "se_block": se_block,
          "c2f_block": c2f_block, "winograd_convs": winograd_convs}


class Reader(CalibrationDataReader):
    def __init__(self, xs):
        self.it = iter([{"x": x} for x in xs])

    def get_next(self):
        return next(self.it, None)


def main():
    os.makedirs(OUT, exist_ok=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    import sys
    only = sys.argv[1:]
    for name, make in MODELS.items():
        if only and name not in only:
            continue
        m, shape = make()
        path = f"{OUT}/{name}.onnx"
        # The last model draws its inputs from its own generator too.
        xr = np.random.default_rng(18) if name == "winograd_convs" else rng
        xs = xr.normal(0, 1, (N_IN + 8,) + shape).astype(np.float32)
        test, calib = xs[:N_IN], xs[N_IN:]
        np.save(f"{OUT}/{name}_x.npy", test)
        # The output's shape, as onnxruntime computes it, written into the file.
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        dims = s.run(None, {"x": test[0]})[0].shape
        m.graph.output[0].CopyFrom(h.make_tensor_value_info("y", T.FLOAT, list(dims)))
        onnx.checker.check_model(m)
        onnx.save(m, path)
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        np.save(f"{OUT}/{name}_y.npy", np.stack([s.run(None, {"x": x})[0] for x in test]))
        if name == "upsample_linear":
            q = f"{OUT}/{name}_qdq.onnx"
            quantize_static(path, q, Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            s = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])
            np.save(f"{OUT}/{name}_qdq_x.npy", test)
            np.save(f"{OUT}/{name}_qdq_y.npy", np.stack([s.run(None, {"x": x})[0] for x in test]))


if __name__ == "__main__":
    main()
