#!/usr/bin/env python3
"""Writes models/golden/prep/: oracle tensors for the image preprocessing policies, pictures
with every EXIF orientation, and WAV clips resampled by sox, for runtime/tests/prep_oracle.rs.

Images: the photos of examples/data/photos/ decoded by PIL (saved as lossless PNG, so the
Rust side preprocesses the same pixels), and for each policy the input tensor PIL + numpy
make by the steps of the pipeline the policy names:
  - torchvision: F.resize(img, int) on a PIL image is Image.resize((w, h), BILINEAR) with
    the longer side int(size * long / short); CenterCrop offsets int(round((n - crop) / 2));
    ToTensor (/255) then Normalize;
  - keras load_img(target_size): Image.resize(NEAREST); preprocess_input 'tf': x/127.5 - 1;
  - ultralytics LetterBox: r = min(H/h, W/w), new = round(w*r), round(h*r), offsets
    round(d/2 - 0.1), border 114, cv2.resize INTER_LINEAR; x/255;
  - OpenCV INTER_LINEAR (paddle, yolo, the first form) is written here in numpy from its
    definition (half-pixel centres, edge clamp, no antialiasing), in float.
Each policy's tensors are stacked into <policy>.npy (float32, [photos, ...tensor shape]);
manifest.txt lists policy, declaration (edgetune's syntax) and photos, tab-separated.

EXIF: exif_<o>.jpg for o = 1..8 hold a picture stored turned so that orientation o brings
it upright; exif_<o>.png is PIL's ImageOps.exif_transpose of that file.

Audio: tone_44k_stereo.wav (16-bit, 44.1 kHz, 2 channels) and tone_8k.wav (16-bit, 8 kHz,
mono), and sox's 16 kHz mono float conversions of them (`sox IN -e float -b 32 -r 16000
-c 1 OUT`, sox's default high-quality rate effect, channels averaged).

Needs: Python 3 with pillow and numpy (pip install pillow==13.0.0 numpy==2.4.6), sox 14.4.
Run from anywhere: python3 tools/make_prep_goldens.py
"""
import os
import subprocess
import wave

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PHOTOS = os.path.join(ROOT, "examples", "data", "photos")
OUT = os.path.join(ROOT, "models", "golden", "prep")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def sources():
    """name -> PIL RGB image: one photo per class, and one turned to portrait."""
    pick = [("cat", 0), ("coffee", 2), ("astronaut", 1), ("rocket", 3)]
    out = {}
    for cls, k in pick:
        out[f"{cls}{k}"] = Image.open(os.path.join(PHOTOS, cls, f"{k}.jpg")).convert("RGB")
    out["cat4_portrait"] = (
        Image.open(os.path.join(PHOTOS, "cat", "4.jpg")).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    )
    return out


# --- steps, as the producers define them ---------------------------------------------

def tv_resize(im, size):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    return im.resize((nw, nh), Image.BILINEAR)


def tv_center_crop(im, cw, ch):
    w, h = im.size
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return im.crop((left, top, left + cw, top + ch))


def to_tensor(a, mean01, std01, layout="nchw"):
    """ToTensor + Normalize on an HWC uint8 (or float 0..255) array."""
    x = np.asarray(a, np.float32) / np.float32(255.0)
    if x.ndim == 2:
        x = x[:, :, None]
    x = (x - mean01) / std01
    return x.transpose(2, 0, 1) if layout == "nchw" else x


def cv2_linear(a, nw, nh):
    """OpenCV INTER_LINEAR in float: half-pixel centres, clamped at the edges."""
    a = np.asarray(a, np.float64)
    h, w = a.shape[:2]

    def axis(n_out, n_in):
        s = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        s = np.clip(s, 0, n_in - 1)
        i0 = np.floor(s).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, s - i0

    y0, y1, fy = axis(nh, h)
    x0, x1, fx = axis(nw, w)
    fx = fx[None, :, None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy[:, None, None]) + bot * fy[:, None, None]


def letterbox_geometry(w, h, W, H):
    r = min(H / h, W / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = (W - nw) / 2, (H - nh) / 2
    return nw, nh, int(round(dw - 0.1)), int(round(dh - 0.1))


# --- policies: (declaration, function of the PIL image -> tensor) ---------------------

def torchvision(im, size=224, resize=256):
    return to_tensor(tv_center_crop(tv_resize(im, resize), size, size), IMAGENET_MEAN, IMAGENET_STD)


def stretch_bilinear(im):
    a = np.asarray(im.resize((37, 29), Image.BILINEAR))
    return to_tensor(a, np.array([10, 20, 30], np.float32) / 255, np.array([50, 60, 70], np.float32) / 255)


def stretch_nearest_nhwc(im):
    a = np.asarray(im.resize((40, 40), Image.NEAREST))
    return to_tensor(a, np.zeros(3, np.float32), np.ones(3, np.float32), "nhwc")


def tf_keras(im, size=64):
    x = np.asarray(im.resize((size, size), Image.NEAREST), np.float32)
    return x / np.float32(127.5) - np.float32(1.0)


def letterbox_pil_bgr(im, W=48, H=48, fill=(0, 128, 255)):
    nw, nh, left, top = letterbox_geometry(*im.size, W, H)
    canvas = Image.new("RGB", (W, H), fill)
    canvas.paste(im.resize((nw, nh), Image.BILINEAR), (left, top))
    a = np.asarray(canvas)[:, :, ::-1]
    return to_tensor(a, np.zeros(3, np.float32), np.ones(3, np.float32))


def yolo(im, size=64):
    w, h = im.size
    nw, nh, left, top = letterbox_geometry(w, h, size, size)
    canvas = np.full((size, size, 3), 114.0)
    canvas[top:top + nh, left:left + nw] = cv2_linear(np.asarray(im), nw, nh)
    return (canvas / 255.0).transpose(2, 0, 1)


def paddle(im, size=40, resize=45):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    nl = int(resize * long / short)
    nw, nh = (resize, nl) if w <= h else (nl, resize)
    a = cv2_linear(np.asarray(im), nw, nh)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    a = a[top:top + size, left:left + size, ::-1]  # BGR
    return ((a - IMAGENET_MEAN * 255) / (IMAGENET_STD * 255)).transpose(2, 0, 1)


def grey_luma(im):
    a = np.asarray(im.convert("L").resize((32, 32), Image.BILINEAR), np.float32)
    return ((a - 128) / 64)[None]


def first_form_rgb(im):
    a = cv2_linear(np.asarray(im), 32, 32)
    return ((a - 127) / 128).transpose(2, 0, 1)


def first_form_grey(im):
    g = np.asarray(im, np.float32).sum(axis=2) / 3
    a = cv2_linear(g[:, :, None], 28, 28)
    return ((a - 127) / 128).transpose(2, 0, 1)


POLICIES = [
    ("torchvision", "torchvision", torchvision, ["cat0"]),
    ("torchvision_small", "preset=torchvision size=40 resize=50", lambda im: torchvision(im, 40, 50), None),
    ("stretch_bilinear", "image size=37x29 mean=10,20,30 std=50,60,70", stretch_bilinear, None),
    ("stretch_nearest_nhwc", "image size=40 interp=nearest layout=nhwc scale=1/255", stretch_nearest_nhwc, None),
    ("tf_keras", "preset=tf-keras size=64", tf_keras, None),
    ("letterbox_bgr", "image size=48 resize=letterbox fill=0,128,255 order=bgr scale=1/255", letterbox_pil_bgr, None),
    ("yolo", "preset=yolo size=64", yolo, None),
    ("paddle", "preset=paddle size=40 resize=45", paddle, None),
    ("grey", "image size=32 order=grey mean=128 std=64", grey_luma, None),
    ("first_form_rgb", "image:32:127:128", first_form_rgb, None),
    ("first_form_grey", "image:28:127:128:1", first_form_grey, None),
]

# ImageOps.exif_transpose applies, per orientation: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180,
# 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90; the file stores
# the inverse.
T = Image.Transpose
STORE = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
         6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}


def write_wav(path, rate, chans):
    n = rate // 2
    t = np.arange(n) / rate
    left = 0.25 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    f0, f1 = 100.0, 0.4 * rate if rate < 16000 else 6000.0
    right = 0.3 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * t[-1]) * t * t))
    x = np.stack([left, right], 1)[:, :chans] if chans == 2 else ((left + right) / 2)[:, None]
    pcm = np.round(x * 32767).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(chans)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def main():
    os.makedirs(OUT, exist_ok=True)
    src = sources()
    for name, im in src.items():
        im.save(os.path.join(OUT, f"src_{name}.png"))
    lines = []
    for name, declaration, fn, photos in POLICIES:
        photos = photos or sorted(src)
        t = np.stack([np.asarray(fn(src[p]), np.float32) for p in photos])
        np.save(os.path.join(OUT, f"{name}.npy"), t)
        lines.append(f"{name}\t{declaration}\t{','.join(photos)}")
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    base = src["coffee2"].crop((10, 8, 58, 40))
    for o, store in STORE.items():
        stored = base if store is None else base.transpose(store)
        exif = Image.Exif()
        exif[0x0112] = o
        p = os.path.join(OUT, f"exif_{o}.jpg")
        stored.save(p, quality=95, exif=exif.tobytes())
        ImageOps.exif_transpose(Image.open(p)).convert("RGB").save(os.path.join(OUT, f"exif_{o}.png"))

    for name, rate, chans in [("tone_44k_stereo", 44100, 2), ("tone_8k", 8000, 1)]:
        p = os.path.join(OUT, f"{name}.wav")
        write_wav(p, rate, chans)
        subprocess.check_call(["sox", p, "-e", "float", "-b", "32", "-r", "16000", "-c", "1",
                               os.path.join(OUT, f"{name}_sox16k.wav")])


if __name__ == "__main__":
    main()
