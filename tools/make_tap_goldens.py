"""onnxruntime's values of two EfficientNet-Lite0 taps (the tapped nodes' quantised
outputs added as graph outputs) on the first 20 bundled Fashion-MNIST images, for runtime/tests/effnet_golden.rs.
Saved channel-last ([image, H·W·C]), the layout edgetune's taps have. Graph
optimisations off: the QDQ graph as the ONNX spec defines it. On this AVX2 machine
onnxruntime's fused int8 convolutions saturate u8·i8 pair sums (vpmaddubsw) and land at
cosine 0.922 to that on the block-6 output of the first image (edgetune: 0.99965).
    python3 tools/make_tap_goldens.py   # writes models/golden/effnet_tap_*.npy
"""
import os, sys
import numpy as np, onnx, onnxruntime as ort

sys.path.insert(0, os.path.dirname(__file__))
from convert import to_input  # noqa: E402  (same resize and scaling as the other goldens)

ROOT = os.path.join(os.path.dirname(__file__), "..")
TAPS = {"/_blocks.6/Add_output_0": "b6", "/_blocks.14/Add_output_0": "b14"}

m = onnx.load(os.path.join(ROOT, "models/efficientnet_lite0_int8.onnx"))
# An edgetune tap holds the tapped node's output as quantised by the QuantizeLinear after
# it (what the next layer reads): onnxruntime's value of it is that QuantizeLinear's
# DequantizeLinear, added as a graph output.
quantised = {}
for name in TAPS:
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name)
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    quantised[name] = dq.output[0]
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(dq.output[0]))
plain = ort.SessionOptions()
plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
s = ort.InferenceSession(m.SerializeToString(), plain, providers=["CPUExecutionProvider"])
raw = open(os.path.join(ROOT, "examples/data/fashion_mnist_600-images.idx"), "rb").read()[16:]
outs = {k: [] for k in TAPS}
for i in range(20):
    img = np.frombuffer(raw[i * 784:(i + 1) * 784], np.uint8).reshape(28, 28)
    got = s.run([quantised[k] for k in TAPS], {"image": to_input(img)})
    for k, v in zip(TAPS, got):
        outs[k].append(np.transpose(v[0], (1, 2, 0)).reshape(-1))
for k, short in TAPS.items():
    np.save(os.path.join(ROOT, f"models/golden/effnet_tap_{short}.npy"), np.array(outs[k], np.float32))
    print(k, np.array(outs[k]).shape)
