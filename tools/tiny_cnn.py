"""The Cortex-M backbone: a small CNN pretrained on Fashion-MNIST classes 0-4 only
(Debian's dataset-fashion-mnist, training split), exported to ONNX and quantised to int8
QDQ (per-channel weights, u8 activations) with onnxruntime on 256 training images.
The few-shot classes of the firmware (5-9) are ones it never saw.

    python3 tools/tiny_cnn.py models/tiny_cnn_fmnist04_int8.onnx

Input `image` [1,1,28,28] = (pixel - 127) / 128; outputs `features` [1,32] (global
average pool) and `logits` [1,5].
"""
import gzip, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_num_threads(1)
D = "/usr/share/datasets/fashion-mnist"


def idx(path, off):
    return np.frombuffer(gzip.open(path).read()[off:], np.uint8)


x = idx(f"{D}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
y = idx(f"{D}/train-labels-idx1-ubyte.gz", 8)
keep = y < 5
x = torch.from_numpy((x[keep].astype(np.float32) - 127.0) / 128.0)
y = torch.from_numpy(y[keep].astype(np.int64))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, 2, 1)   # 14x14
        self.c2 = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.c3 = nn.Conv2d(16, 32, 1)
        self.c4 = nn.Conv2d(32, 32, 3, 2, 1, groups=32)  # 7x7
        self.c5 = nn.Conv2d(32, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = F.relu6(self.c1(x))
        x = F.relu6(self.c3(F.relu6(self.c2(x))))
        x = F.relu6(self.c5(F.relu6(self.c4(x))))
        f = F.adaptive_avg_pool2d(x, 1)
        return f.flatten(1), self.fc(f.flatten(1))


m = Tiny()
opt = torch.optim.AdamW(m.parameters(), 3e-3)
for epoch in range(3):
    perm = torch.randperm(len(x))
    for i in range(0, len(x), 128):
        b = perm[i:i + 128]
        loss = F.cross_entropy(m(x[b])[1], y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (m(x[:5000])[1].argmax(1) == y[:5000]).float().mean().item()
    print(f"epoch {epoch}: loss {loss.item():.3f}, train accuracy (5000) {acc:.3f}", flush=True)

out = sys.argv[1]
fp32 = out.replace("_int8", "_fp32")
m.eval()
torch.onnx.export(m, x[:1], fp32, input_names=["image"], output_names=["features", "logits"],
                  opset_version=13, dynamo=False)

from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)


class Calib(CalibrationDataReader):
    def __init__(self):
        self.it = iter([{"image": x[i:i + 1].numpy()} for i in range(0, 256 * 40, 40)])

    def get_next(self):
        return next(self.it, None)


quantize_static(fp32, out, Calib(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
import os
os.remove(fp32)
print("wrote", out)
