#!/usr/bin/env python3
"""Regenerates examples/data/photos/: small RGB photos for the tests that feed camera-like
frames (RGB, RGBA, BGRA, NV21) through the C ABI and the Session.

Source: the sample images that ship inside the scikit-image wheel (PyPI
scikit-image==0.26.0, skimage/data/): chelsea.png (a cat, CC0, Stefan van der Walt),
coffee.png (CC0, Rachel Michetti), astronaut.png (public domain, NASA), rocket.jpg (public
domain, SpaceX). Each is cut into 2x2 overlapping crops, and the crops resized so the
longest side is 96 px, saved as JPEG quality 92: examples/data/photos/<name>/<k>.jpg.
Needs: pip install pillow==11.* (fetches the wheel with pip download, no model hub).
"""
import io, os, subprocess, sys, tempfile, zipfile

from PIL import Image

PHOTOS = {"cat": "chelsea.png", "coffee": "coffee.png", "astronaut": "astronaut.png", "rocket": "rocket.jpg"}
OUT = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "photos")


def main():
    with tempfile.TemporaryDirectory() as d:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "scikit-image==0.26.0", "-d", d])
        whl = [f for f in os.listdir(d) if f.endswith(".whl")][0]
        z = zipfile.ZipFile(os.path.join(d, whl))
        for cls, name in PHOTOS.items():
            im = Image.open(io.BytesIO(z.read(f"skimage/data/{name}"))).convert("RGB")
            w, h = im.size
            os.makedirs(os.path.join(OUT, cls), exist_ok=True)
            # Four overlapping crops (70% of each side) from the corners, then the whole.
            cw, ch = int(w * 0.7), int(h * 0.7)
            boxes = [(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)]
            crops = [im.crop((x, y, x + cw, y + ch)) for x, y in boxes] + [im]
            for k, c in enumerate(crops):
                s = 96 / max(c.size)
                c = c.resize((max(1, round(c.size[0] * s)), max(1, round(c.size[1] * s))), Image.BILINEAR)
                c.save(os.path.join(OUT, cls, f"{k}.jpg"), quality=92)


if __name__ == "__main__":
    main()
