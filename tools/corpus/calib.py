#!/usr/bin/env python3
"""Calibration inputs for the corpus's float (and dynamically quantised) vision, OCR and
speech models, for `edgetune compile --calibrate` (tools/corpus/run.py --calibrate): the same inputs
onnxruntime's quantize_static calibrates the corpus's int8 entries on (all twenty photos,
the rendered calibration text lines, or the calibration phrases), written as `<entry>/calib/NN.npy`.

    python3 tools/corpus/calib.py [NAME ...]
"""
import os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build as b  # noqa: E402

ZERO_ONE = dict(mean=[0.0] * 3, std=[255.0] * 3)
CALIB = {
    "effnet_lite2_dynamo_f32": lambda d: b.vision_calib(260, 260, **b.EFF),
    "mtcnn_pnet_ts_f32": lambda d: b.vision_calib(120, 160, **b.MTCNN),
    # Dynamically quantised: `--calibrate` undoes the dynamic quantisation first.
    "mtcnn_onet_dynamo_dyn": lambda d: b.vision_calib(48, 48, **b.MTCNN),
    "ppocr_v4_rec_dyn": lambda d: [b.text_input(t, 48, 320) for t in b.CALIB_TEXTS],
    "ppocr_v4_det_f32": lambda d: b.vision_calib(480, 640, **b.PPN, bgr=True),
    "ppocr_mobile_v2_cls_f32": lambda d: [b.text_input(t, 48, 192) for t in b.CALIB_TEXTS],
    "nudenet_320n_f32": lambda d: b.vision_calib(320, 320, **ZERO_ONE),
    "mp_face_detection_short_f32": lambda d: b.vision_calib(128, 128, **b.MPN, layout="NCHW"),
    "mp_hand_landmark_lite_f32": lambda d: b.vision_calib(224, 224, **ZERO_ONE, layout="NHWC"),
    "oww_embedding_f32": lambda d: oww_windows(d),
    "oww_alexa_head_f32": lambda d: oww_embedding_windows(d),
}

# The phrases onnxruntime's quantiser calibrates oww_embedding_qdq on (tools/corpus/build.py).
OWW_TEXTS = ["okay google", "set a timer for ten minutes", "what is the weather",
             "play some music", "hey mycroft", "turn off the kitchen light",
             "how far is the moon", "call my mother"]


def oww_windows(d):
    """76-frame mel windows of the calibration phrases, every 40 frames."""
    out = []
    for t in OWW_TEXTS:
        m = b.oww_mel(d, b.speech_samples(t, 32000))
        out += [m[None, i:i + 76, :, None] for i in range(0, len(m) - 76 + 1, 40)]
    return out


def oww_embedding_windows(d):
    """16 consecutive speech embeddings of the calibration phrases, every 4."""
    out = []
    for t in OWW_TEXTS:
        e = b.oww_embed(d, b.oww_mel(d, b.speech_samples(t, 32000)))
        out += [e[None, i:i + 16] for i in range(0, len(e) - 16 + 1, 4)]
    return out


def main():
    names = sys.argv[1:] or list(CALIB)
    for n in names:
        d = os.path.join(b.OUT, n)
        if n not in CALIB or not os.path.isdir(d):
            print(f"{n}: no calibration recipe or not built", flush=True)
            continue
        out = os.path.join(d, "calib")
        os.makedirs(out, exist_ok=True)
        xs = CALIB[n](d)
        for i, x in enumerate(xs):
            np.save(os.path.join(out, f"{i:02d}.npy"), np.ascontiguousarray(x, np.float32))
        print(f"{n}: {len(xs)} calibration inputs of shape {list(xs[0].shape)}", flush=True)


if __name__ == "__main__":
    main()
