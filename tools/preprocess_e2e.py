#!/usr/bin/env python3
"""End to end: a third-party ImageNet backbone compiled with a declared preprocessing, run by
`edgetune run` on real RGB photos, against the producer's own pipeline (torchvision
transforms on PIL images) feeding the same ONNX model in onnxruntime (graph optimisation
off). Prints, per photo, both top-1 classes and the cosine of the logits, then the top-1
agreement per model.

Models come from the import corpus (tools/corpus/build.py): EfficientNet-Lite1 and -Lite2
quantised by onnxruntime (QDQ and QOperator; edgetune and onnxruntime run the same int8
graph) and EfficientNet-Lite2 in float (edgetune quantises it with --calibrate on the corpus calibration tensors;
onnxruntime runs it in float). The producer's pipeline is the standard ImageNet evaluation
transform of the package's README (torchvision Resize of the shorter side to size·256/224,
CenterCrop(size), ToTensor) with EfficientNet-Lite's normalisation (x·255 - 127) / 128,
declared to edgetune as `preset=torchvision size=S mean=127 std=128`.

Run with a Python that has torch, torchvision and onnxruntime (the corpus venv):
    ~/.cache/edgetune-corpus/venv/bin/python tools/preprocess_e2e.py \
        --bin $CARGO_TARGET_DIR/release/edgetune
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = [
    # (corpus entry, input size, compile flags beyond --input/--preprocess)
    ("effnet_lite1_ts_qdq", 240, []),
    ("effnet_lite2_dynamo_qop", 260, []),
    ("effnet_lite2_dynamo_f32", 260, ["--calibrate", "{dir}/calib"]),
]


def producer_tensor(path, size):
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize(size * 256 // 224),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize([127 / 255] * 3, [128 / 255] * 3),
    ])
    return tf(Image.open(path).convert("RGB")).unsqueeze(0).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the edgetune CLI binary")
    ap.add_argument("--corpus", default=os.path.expanduser("~/.cache/edgetune/corpus"))
    ap.add_argument("--photos", default=os.path.join(ROOT, "examples/data/photos"))
    ap.add_argument("--json", help="write the per-photo results here")
    args = ap.parse_args()

    import onnxruntime as ort

    photos = sorted(glob.glob(os.path.join(args.photos, "*", "*.jpg")))
    if not photos:
        sys.exit(f"no photos under {args.photos}")
    report = {}
    work = tempfile.mkdtemp(prefix="edgetune-e2e-")
    for name, size, extra in MODELS:
        d = os.path.join(args.corpus, name)
        model = os.path.join(d, "model.onnx")
        if not os.path.exists(model):
            sys.exit(f"{model} missing: build the corpus first (tools/corpus/build.py)")
        meta = json.load(open(os.path.join(d, "meta.json")))
        decl = f"preset=torchvision size={size} mean=127 std=128"
        plan = os.path.join(work, name + ".etm")
        cmd = [args.bin, "compile", model, "-o", plan, "--preprocess", decl]
        for a in meta["edgetune_input_args"]:
            cmd += ["--input", a]
        cmd += [x.format(dir=d) for x in extra]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        rows = []
        for p in photos:
            out = os.path.join(work, "out")
            subprocess.run([args.bin, "run", plan, p, "--save-outputs", out], check=True,
                           stdout=subprocess.DEVNULL)
            first = sorted(glob.glob(os.path.join(out, "0_*.npy")))[0]
            ours = np.load(first).ravel()
            ref = sess.run(None, {in_name: producer_tensor(p, size)})[0].ravel()
            cos = float(ours @ ref / (np.linalg.norm(ours) * np.linalg.norm(ref)))
            rows.append(dict(photo=os.path.relpath(p, args.photos), edgetune=int(ours.argmax()),
                             onnxruntime=int(ref.argmax()), cosine=cos))
        agree = sum(r["edgetune"] == r["onnxruntime"] for r in rows)
        print(f"{name} ({meta['quantisation']}), --preprocess '{decl}'"
              f"{' ' + ' '.join(extra) if extra else ''}")
        print(f"  {'photo':<16} {'edgetune':>8} {'onnxruntime':>11} {'cosine':>7}")
        for r in rows:
            mark = "" if r["edgetune"] == r["onnxruntime"] else "  differs"
            print(f"  {r['photo']:<16} {r['edgetune']:>8} {r['onnxruntime']:>11} "
                  f"{r['cosine']:7.4f}{mark}")
        cmin = min(r["cosine"] for r in rows)
        print(f"  top-1 agreement {agree}/{len(rows)}, logits cosine min {cmin:.4f}")
        report[name] = dict(declaration=decl, agree=agree, n=len(rows), rows=rows)
    if args.json:
        json.dump(report, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
