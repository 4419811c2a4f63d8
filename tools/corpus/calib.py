#!/usr/bin/env python3
"""Calibration inputs for the corpus's float vision and OCR models, for
`edgetune compile --calibrate` (tools/corpus/run.py --calibrate): the same inputs
onnxruntime's quantize_static calibrates the corpus's int8 entries on (all twenty photos,
or the rendered calibration text lines), written as `<entry>/calib/NN.npy`.

    python3 tools/corpus/calib.py [NAME ...]
"""
import os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build as b  # noqa: E402

ZERO_ONE = dict(mean=[0.0] * 3, std=[255.0] * 3)
CALIB = {
    "effnet_lite2_dynamo_f32": lambda: b.vision_calib(260, 260, **b.EFF),
    "mtcnn_pnet_ts_f32": lambda: b.vision_calib(120, 160, **b.MTCNN),
    "ppocr_v4_det_f32": lambda: b.vision_calib(480, 640, **b.PPN, bgr=True),
    "ppocr_mobile_v2_cls_f32": lambda: [b.text_input(t, 48, 192) for t in b.CALIB_TEXTS],
    "nudenet_320n_f32": lambda: b.vision_calib(320, 320, **ZERO_ONE),
    "mp_face_detection_short_f32": lambda: b.vision_calib(128, 128, **b.MPN, layout="NCHW"),
    "mp_hand_landmark_lite_f32": lambda: b.vision_calib(224, 224, **ZERO_ONE, layout="NHWC"),
}


def main():
    names = sys.argv[1:] or list(CALIB)
    for n in names:
        d = os.path.join(b.OUT, n)
        if n not in CALIB or not os.path.isdir(d):
            print(f"{n}: no calibration recipe or not built", flush=True)
            continue
        out = os.path.join(d, "calib")
        os.makedirs(out, exist_ok=True)
        xs = CALIB[n]()
        for i, x in enumerate(xs):
            np.save(os.path.join(out, f"{i:02d}.npy"), np.ascontiguousarray(x, np.float32))
        print(f"{n}: {len(xs)} calibration inputs of shape {list(xs[0].shape)}", flush=True)


if __name__ == "__main__":
    main()
