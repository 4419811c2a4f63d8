#!/usr/bin/env python3
"""Runs a model written by `edgetune export` in onnxruntime (graph optimisation off) on
image files and compares its top-1 with `edgetune predict --json` on the same files.

usage: edgetune predict --plan P --adapter A --top 1 --json IMAGES... > pred.jsonl
       python3 tools/export_check.py model.onnx pred.jsonl [SIZE MEAN STD]
The images are preprocessed as the plan's `image:SIZE:MEAN:STD` (RGB, half-pixel bilinear
resize to SIZE x SIZE, (x - MEAN) / STD), the formula of runtime/src/preprocess.rs.
Needs: numpy, pillow, onnxruntime (PyPI)."""
import json, sys

import numpy as np
import onnxruntime as ort
from PIL import Image


def coords(n_out, n_in):
    s = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(s).astype(int)
    return i0, np.minimum(i0 + 1, n_in - 1), (s - i0).astype(np.float32)


def prep(path, size, mean, std):
    x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    h, w, _ = x.shape
    y0, y1, fy = coords(size, h)
    x0, x1, fx = coords(size, w)
    top = x[y0][:, x0] * (1 - fx)[None, :, None] + x[y0][:, x1] * fx[None, :, None]
    bot = x[y1][:, x0] * (1 - fx)[None, :, None] + x[y1][:, x1] * fx[None, :, None]
    r = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return ((r - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def main():
    model, preds = sys.argv[1], sys.argv[2]
    size, mean, std = (int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])) if len(sys.argv) > 5 else (224, 127.0, 128.0)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    classes = s.get_modelmeta().custom_metadata_map["edgetune.classes"].split("\n")
    agree = total = 0
    for line in open(preds):
        p = json.loads(line)
        scores = s.run(["scores"], {s.get_inputs()[0].name: prep(p["input"], size, mean, std)})[0][0]
        ort_top = classes[int(np.argmax(scores))]
        et_top = p["top"][0]["class"]
        agree += ort_top == et_top
        total += 1
        print(f"{p['input']}: edgetune {et_top} {p['top'][0]['score']:.4f}, onnxruntime {ort_top} {scores.max():.4f}")
    print(f"top-1 agreement {agree}/{total}")
    sys.exit(0 if agree == total else 1)


if __name__ == "__main__":
    main()
