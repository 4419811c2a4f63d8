"""The Python binding end to end on the bundled EfficientNet-Lite0 int8 backbone and the
bundled photos (4 classes, 5 crops each: 0-2 enrolled, 3-4 held out)."""

import json
import math
import os
import pathlib
import subprocess
import threading

import numpy as np
import pytest

import edgetune
from edgetune import EdgetuneError

REPO = pathlib.Path(__file__).resolve().parents[3]
MODEL = REPO / "models" / "efficientnet_lite0_int8.onnx"
PHOTOS = REPO / "examples" / "data" / "photos"
CLASSES = ["astronaut", "cat", "coffee", "rocket"]
METHODS = ["ncm", "linear", "moment", "ladder", "query", "tail"]
TARGET = pathlib.Path(
    os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache" / "edgetune-target")
)
CLI = TARGET / "release" / "edgetune"

try:
    from PIL import Image, ImageOps
except ImportError:  # pragma: no cover - the CI step installs pillow
    Image = None


def train_set():
    return [(PHOTOS / c / f"{i}.jpg", c) for c in CLASSES for i in range(3)]


def held_out():
    return [(PHOTOS / c / f"{i}.jpg", c) for c in CLASSES for i in (3, 4)]


def need_pil():
    if Image is None:
        pytest.skip("Pillow is not installed: numpy-array examples decoded by PIL not tested")


def decode(path):
    """RGB pixels as PIL decodes them, upright by EXIF (HxWx3 uint8)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "lite0.etm"
    info = edgetune.compile(str(MODEL), out, taps="blocks", preprocess="image:224:127:128")
    assert info["ops"] > 0 and info["bytes"] == out.stat().st_size
    assert len(info["taps"]) > 3
    return out


def enrolled(plan, method, arrays=False):
    s = edgetune.Session(plan, method=method)
    for i, (p, c) in enumerate(train_set()):
        # File paths as str and as pathlib.Path; arrays decoded by PIL.
        s.enrol(decode(p) if arrays else (str(p) if i % 2 else p), c)
    return s


def test_enrol_many_equals_enrol_one_at_a_time(plan):
    # One example per thread at a time (as many threads as cores) against enrol one by
    # one: the same linear probe, score for score; a bad label anywhere refuses the whole
    # batch.
    one = edgetune.Session(plan, method="linear")
    for p, c in train_set():
        one.enrol(p, c)
    many = edgetune.Session(plan, method="linear")
    xs, labels = zip(*train_set())
    with pytest.raises(edgetune.EdgetuneError):
        many.enrol_many(list(xs), list(labels[:-1]) + [""])
    assert many.examples == 0 and many.classes == []
    many.enrol_many(list(xs), list(labels))
    assert many.examples == one.examples == 12 and many.classes == one.classes
    one.fit()
    many.fit()
    for p, _ in held_out():
        assert np.array_equal(one.scores(p), many.scores(p))


@pytest.fixture(scope="module")
def ncm(plan):
    s = enrolled(plan, "ncm")
    s.fit()
    return s


@pytest.mark.parametrize("method", METHODS)
def test_fit_predict_save_reload(plan, tmp_path, method):
    s = enrolled(plan, method)
    assert s.method == method and s.classes == CLASSES and s.examples == 12
    # ncm and linear train in well under a second at their defaults; the others get 10
    # steps to keep the suite short.
    steps = None if method in ("ncm", "linear") else 10
    fit = s.fit(steps=steps)
    assert fit["method"] == method
    assert fit["examples"] == 12 and fit["params"] > 0
    assert fit["adapter_bytes"] > 0 and fit["cache_bytes"] > 0
    assert fit["peak_bytes"] >= fit["cache_bytes"]
    if method == "ncm":
        assert fit["steps"] == 0 and fit["loss"] is None
    else:
        assert fit["steps"] == (steps or fit["steps"]) > 0
        assert math.isfinite(fit["loss"])
    a = tmp_path / f"{method}.eta"
    s.save(a)
    r = edgetune.Session(plan, adapter=a)
    assert r.method == method and r.classes == CLASSES
    # A ladder adapter predicts only after a reload (test_ladder_predicts_where_it_was_fitted).
    live = r if method == "ladder" else s
    preds = {}
    for p, c in held_out():
        top = live.predict(p, top=4)
        assert {n for n, _ in top} == set(CLASSES)
        assert all(math.isfinite(v) for _, v in top)
        assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)
        if method in ("ncm", "linear"):
            assert top[0][0] == c, f"{method}: {p.name} of {c} predicted {top}"
        preds[p] = (top, live.scores(p))
    for p, (top, sc) in preds.items():
        assert r.predict(p, top=4) == top
        assert np.array_equal(r.scores(p), sc)
        assert r.scores(p).dtype == np.float32
    # The same through load_adapter on a fresh session.
    r2 = edgetune.Session(plan)
    r2.load_adapter(str(a))
    p = next(iter(preds))
    assert np.array_equal(r2.scores(p), preds[p][1])


def test_pil_arrays_train_and_predict(plan):
    need_pil()
    s = enrolled(plan, "ncm", arrays=True)
    s.fit()
    for p, c in held_out():
        assert s.predict(decode(p), top=1)[0][0] == c


def test_array_gives_the_file_scores(ncm, tmp_path):
    """Same pixels through a file and through an array: identical scores. PNG keeps the
    pixels PIL decoded, so the file and the array hold the same image."""
    need_pil()
    for p, _ in held_out()[:3]:
        px = decode(p)
        png = tmp_path / (p.parent.name + p.stem + ".png")
        Image.fromarray(px).save(png)
        assert np.array_equal(ncm.scores(px), ncm.scores(png))
        assert ncm.predict(px, top=4) == ncm.predict(png, top=4)
        # The JPEG itself through the library's decoder: same class, close scores.
        assert ncm.predict(p, top=1)[0][0] == ncm.predict(px, top=1)[0][0]
        np.testing.assert_allclose(ncm.scores(p), ncm.scores(px), atol=0.05)


def test_array_layouts(ncm):
    """Grey HxW equals HxWx1; RGBA with opaque alpha equals RGB; strided views equal
    their contiguous copies."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    grey = rgb[:, :, 0].copy()
    assert np.array_equal(ncm.scores(grey), ncm.scores(grey[:, :, None]))
    rgba = np.concatenate([rgb, np.full((60, 80, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(ncm.scores(rgba), ncm.scores(rgb))
    flipped = rgb[::-1, ::2]
    assert not flipped.flags["C_CONTIGUOUS"]
    assert np.array_equal(ncm.scores(flipped), ncm.scores(np.ascontiguousarray(flipped)))


def test_classes_and_remove_class(plan):
    s = enrolled(plan, "ncm")
    s.fit()
    s.remove_class("cat")
    assert s.classes == ["astronaut", "coffee", "rocket"] and s.examples == 9
    for p, c in held_out():
        top = s.predict(p, top=3)
        assert "cat" not in [n for n, _ in top]
        if c != "cat":
            assert top[0][0] == c
    with pytest.raises(EdgetuneError, match="no class 'cat'"):
        s.remove_class("cat")
    s.add_class("cat", [PHOTOS / "cat" / f"{i}.jpg" for i in range(3)])
    assert s.classes == ["astronaut", "coffee", "rocket", "cat"]
    assert s.predict(PHOTOS / "cat" / "4.jpg", top=1)[0][0] == "cat"


def test_memory(plan):
    s = enrolled(plan, "linear")
    m = s.memory()
    assert set(m) == {"cache_bytes", "arena_bytes", "peak_bytes"}
    assert m["peak_bytes"] >= m["cache_bytes"] + m["arena_bytes"] and m["cache_bytes"] > 0
    assert s.memory(rows=1000)["cache_bytes"] > m["cache_bytes"]
    assert s.fit()["peak_bytes"] == m["peak_bytes"]


def test_ladder_predicts_where_it_was_fitted(plan):
    s = enrolled(plan, "ladder")
    s.fit(steps=10)
    assert s.predict(PHOTOS / "cat" / "3.jpg", top=1)[0][0] in CLASSES


def test_progress_callback_and_cancel(plan):
    s = enrolled(plan, "query")
    seen = []
    fit = s.fit(steps=10, progress=lambda *a: seen.append(a))
    assert len(seen) > 0 and seen[-1][1] == 10 and fit["steps"] == 10
    step, steps, loss, acc = seen[0]
    assert isinstance(step, int) and isinstance(loss, float) and 0.0 <= acc <= 1.0

    calls = []

    def stop_at_3(step, steps, loss, acc):
        calls.append(step)
        return len(calls) < 3

    with pytest.raises(EdgetuneError, match="cancel"):
        s.fit(steps=10, progress=stop_at_3)
    assert len(calls) == 3

    def boom(*_):
        raise RuntimeError("stop from the callback")

    with pytest.raises(RuntimeError, match="stop from the callback"):
        s.fit(steps=10, progress=boom)
    # The session is still usable after a cancelled fit.
    assert s.fit(steps=10)["steps"] == 10
    assert s.predict(PHOTOS / "cat" / "3.jpg", top=1)[0][0] in CLASSES


def test_bad_input_raises_edgetune_error(plan, ncm, tmp_path):
    with pytest.raises(EdgetuneError, match="nope.jpg"):
        ncm.predict(tmp_path / "nope.jpg")
    with pytest.raises(EdgetuneError, match="nope.etm"):
        edgetune.Session(tmp_path / "nope.etm")
    data = plan.read_bytes()
    cut = tmp_path / "cut.etm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgetuneError, match="plan"):
        edgetune.Session(cut)
    # An adapter trained on another plan (same backbone compiled without taps).
    other = tmp_path / "other.etm"
    edgetune.compile(MODEL, other, preprocess="image:224:127:128")
    a = tmp_path / "a.eta"
    ncm.save(a)
    with pytest.raises(EdgetuneError, match="trained on plan"):
        edgetune.Session(other, adapter=a)
    with pytest.raises(EdgetuneError, match="HxWxC"):
        ncm.predict(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(EdgetuneError, match="1-D audio"):
        ncm.predict(np.zeros((8, 8), np.float32))
    with pytest.raises(EdgetuneError, match="float64"):
        ncm.predict(np.zeros((8, 8, 3)))
    with pytest.raises(EdgetuneError, match="image of 0x8x3"):
        ncm.predict(np.zeros((8, 0, 3), np.uint8))
    with pytest.raises(EdgetuneError, match="audio given to a plan"):
        ncm.predict(np.zeros(16000, np.int16))
    with pytest.raises(EdgetuneError, match="cannot use a int"):
        ncm.predict(3)
    with pytest.raises(EdgetuneError, match="unknown method 'knn'"):
        edgetune.Session(plan, method="knn")
    fresh = edgetune.Session(plan)
    with pytest.raises(EdgetuneError, match="no adapter"):
        fresh.predict(PHOTOS / "cat" / "3.jpg")
    with pytest.raises(EdgetuneError, match="no adapter to save"):
        fresh.save(tmp_path / "x.eta")
    with pytest.raises(EdgetuneError, match="class names"):
        fresh.enrol(PHOTOS / "cat" / "0.jpg", "")
    with pytest.raises(EdgetuneError, match="preprocess 'image:0'"):
        edgetune.compile(MODEL, tmp_path / "x.etm", preprocess="image:0")
    with pytest.raises(EdgetuneError, match="taps"):
        edgetune.compile(MODEL, tmp_path / "x.etm", taps="every")
    # Errors are ValueErrors too.
    assert issubclass(EdgetuneError, ValueError)


def test_listening_streams_examples_like_the_library(tmp_path):
    """listen() on an audio:oww:76:4 plan: one example per 80 ms once 4 windows are in, the
    same whatever the chunking; they enrol and predict like any input, and the same stream
    fed again gives the same predictions."""
    onnx = REPO / "models" / "oww_embedding_int8.onnx"
    mel = REPO / "models" / "oww_melw.f32"
    p = tmp_path / "oww4.etm"
    edgetune.compile(onnx, p, preprocess="audio:oww:76:4", mel_filters=mel)
    s = edgetune.Session(p, method="ncm")
    rng = np.random.default_rng(1)
    t = np.arange(40000) / 16000.0
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = rng.normal(0, 0.1, 40000).astype(np.float32)
    stream = np.concatenate([tone, noise])
    chunked = []
    for i in range(0, len(stream), 1280):
        chunked += s.listen(stream[i:i + 1280])
    s.listen_reset()
    whole = s.listen(stream)
    assert len(chunked) == len(whole) >= 40
    assert all(isinstance(e, edgetune.StreamExample) for e in whole)
    # Windows are 0.76 s; examples end every 80 ms from 0.76 + 3 * 0.08 s on.
    half = len(whole) // 2
    for i, e in enumerate(chunked):
        s.enrol(e, "tone" if i < half - 8 else "noise" if i > half + 8 else "mixed")
    s.fit()
    a = [s.predict(e, top=1)[0][0] for e in chunked]
    b = [s.predict(e, top=1)[0][0] for e in whole]
    assert a == b
    tone, noise = a[:half - 8], a[half + 9:]
    assert tone.count("tone") >= 0.9 * len(tone), a
    assert noise.count("noise") >= 0.9 * len(noise), a
    np.testing.assert_array_equal(s.scores(chunked[3]), s.scores(whole[3]))
    with pytest.raises(EdgetuneError, match="1-D int16 or float32"):
        s.listen(np.zeros((2, 2), np.uint8))
    bad = np.zeros(1280, np.float32)
    bad[5] = np.inf
    with pytest.raises(EdgetuneError, match="non-finite"):
        s.listen(bad)


def test_audio_plan_arrays(tmp_path):
    """An audio plan takes 1-D int16 or float32 arrays; NaN is refused."""
    onnx = REPO / "models" / "oww_embedding_int8.onnx"
    mel = REPO / "models" / "oww_melw.f32"
    p = tmp_path / "oww.etm"
    edgetune.compile(onnx, p, preprocess="audio:oww:76", mel_filters=mel)
    s = edgetune.Session(p, method="ncm")
    t = np.arange(16000) / 16000.0
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    s.enrol(tone, "tone")
    s.enrol((noise * 32768).astype(np.int16), "noise")
    s.fit()
    # float32 in -1..1 and int16 units of the same samples agree.
    q = (tone * 32768).round().astype(np.int16)
    np.testing.assert_allclose(s.scores(q), s.scores(q.astype(np.float32) / 32768), rtol=1e-5)
    assert s.predict(tone, top=1)[0][0] == "tone"
    bad = tone.copy()
    bad[100] = np.nan
    with pytest.raises(EdgetuneError, match="non-finite"):
        s.enrol(bad, "tone")
    with pytest.raises(EdgetuneError, match="an image given to a plan"):
        s.enrol(np.zeros((8, 8, 3), np.uint8), "tone")


def test_matches_cli_predict_json(plan, tmp_path):
    if not CLI.exists():
        pytest.skip(
            f"CLI binary {CLI} absent: cargo build --release -p edgetune --features cli --bin edgetune"
        )
    s = enrolled(plan, "linear")
    s.fit()
    a = tmp_path / "linear.eta"
    s.save(a)
    files = [p for p, _ in held_out()]
    out = subprocess.run(
        [str(CLI), "predict", "--plan", str(plan), "--adapter", str(a), "--top", "4", "--json"]
        + [str(f) for f in files],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.strip()]
    assert len(lines) == len(files)
    for f, line in zip(files, lines):
        assert line["input"] == str(f)
        ours = s.predict(f, top=4)
        assert [t["class"] for t in line["top"]] == [n for n, _ in ours]
        # The CLI prints 5 decimals.
        for t, (_, v) in zip(line["top"], ours):
            assert abs(t["score"] - v) <= 6e-6, (f, t, v)


def test_unlabeled_examples_match_the_cli(plan, ncm, tmp_path):
    """ncm with the held-out crops given unlabeled: the same scores as `edgetune adapt
    --unlabeled` on the same files, other scores than without them, and the plain fit
    again after clear_unlabeled."""
    if not CLI.exists():
        pytest.skip(
            f"CLI binary {CLI} absent: cargo build --release -p edgetune --features cli --bin edgetune"
        )
    train, unl = tmp_path / "train", tmp_path / "unlabeled"
    for p, c in train_set():
        (train / c).mkdir(parents=True, exist_ok=True)
        (train / c / p.name).symlink_to(p)
    unl.mkdir()
    for p, c in held_out():
        (unl / f"{c}-{p.name}").symlink_to(p)
    s = enrolled(plan, "ncm")
    for p, _ in held_out():
        s.add_unlabeled(p)
    assert s.unlabeled == len(held_out())
    s.fit()
    a = tmp_path / "cli.eta"
    subprocess.run(
        [str(CLI), "adapt", "--plan", str(plan), "--train", str(train), "--method", "ncm",
         "--unlabeled", str(unl), "-o", str(a)],
        check=True,
        capture_output=True,
    )
    cli = edgetune.Session(plan, adapter=a)
    queries = [p for p, _ in train_set() + held_out()]
    changed = False
    for q in queries:
        assert np.array_equal(s.scores(q), cli.scores(q)), q
        changed |= not np.array_equal(s.scores(q), ncm.scores(q))
    assert changed, "the unlabeled examples changed no score"
    # A method that does not learn from them refuses to fit while they are kept.
    with pytest.raises(EdgetuneError, match="unlabeled"):
        s.fit(method="ladder", steps=1)
    with pytest.raises(EdgetuneError, match="HxWxC"):
        s.add_unlabeled(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(EdgetuneError, match="nope.jpg"):
        s.add_unlabeled(tmp_path / "nope.jpg")
    assert s.unlabeled == len(held_out())
    s.clear_unlabeled()
    assert s.unlabeled == 0
    s.fit(method="ncm")
    for q in queries:
        assert np.array_equal(s.scores(q), ncm.scores(q)), q


def test_eval_episodes(plan):
    res = edgetune.eval(plan, PHOTOS, ways=2, shots=2, episodes=3, methods=["ncm", "linear"], seed=1)
    assert [r["method"] for r in res] == ["ncm", "linear"]
    for r in res:
        assert r["episodes"] == 3 and 0.0 <= r["accuracy"] <= 1.0 and r["std"] >= 0.0
    with pytest.raises(EdgetuneError, match="ways 9"):
        edgetune.eval(plan, PHOTOS, ways=9, shots=2, episodes=1)


def test_sessions_on_threads_agree(plan, ncm):
    """Two threads predict at once (the interpreter is released during the backbone)."""
    p = PHOTOS / "coffee" / "4.jpg"
    want = ncm.scores(p)
    got = [None, None]

    def run(i):
        s = edgetune.Session(plan, method="ncm")
        for q, c in train_set():
            s.enrol(q, c)
        s.fit()
        got[i] = s.scores(p)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(np.array_equal(g, want) for g in got)


@pytest.mark.parametrize("method", ["ncm", "linear", "moment"])
def test_export_onnx_runs_in_onnxruntime_with_the_same_top1(plan, tmp_path, method):
    try:
        import onnxruntime as ort
    except ImportError:
        pytest.skip("onnxruntime is not installed: the exported model is not run")
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_check", REPO / "tools" / "export_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    s = enrolled(plan, method)
    s.fit()
    out = tmp_path / f"{method}.onnx"
    s.export_onnx(MODEL, out)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    o = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    names = o.get_modelmeta().custom_metadata_map["edgetune.classes"].split("\n")
    for p, _ in held_out():
        scores = o.run(["scores"], {"image": check.prep(p, 224, 127.0, 128.0)})[0][0]
        assert names[int(np.argmax(scores))] == s.predict(p, top=1)[0][0], p
    # Heads that are not a function of one tap are refused with the library's message.
    s = enrolled(plan, "ladder")
    s.fit(steps=5)
    with pytest.raises(EdgetuneError, match="closed-form"):
        s.export_onnx(MODEL, tmp_path / "ladder.onnx")


def test_choose_method_matches_the_cli(plan, tmp_path):
    """Session.choose_method picks what `edgetune adapt --method auto` picks on the same
    files, the lowest held-out log-loss, and the fits then score alike."""
    if not CLI.exists():
        pytest.skip(
            f"CLI binary {CLI} absent: cargo build --release -p edgetune --features cli --bin edgetune"
        )
    train = tmp_path / "train"
    for p, c in train_set():
        (train / c).mkdir(parents=True, exist_ok=True)
        (train / c / p.name).symlink_to(p)
    s = enrolled(plan, "linear")
    ch = s.choose_method(candidates=["ncm", "linear", "moment"])
    assert s.method == ch["method"]
    tried = [(a, l) for _, a, l, _ in ch["trials"] if l is not None]
    assert ch["log_loss"] == min(l for _, l in tried)
    assert (ch["accuracy"], ch["log_loss"]) in tried
    assert [t[0] for t in ch["trials"]][:2] == ["ncm", "linear C=1"]
    s.fit()
    a = tmp_path / "cli.eta"
    out = subprocess.run(
        [str(CLI), "adapt", "--plan", str(plan), "--train", str(train), "--method", "auto",
         "--candidates", "ncm,linear,moment", "--json", "-o", str(a)],
        check=True,
        capture_output=True,
        text=True,
    )
    cli = json.loads(out.stdout.strip().splitlines()[-1])
    assert cli["method"] == ch["method"]
    # The same line but for the seconds it took.
    assert cli["auto"].rsplit("; ", 1)[0] == ch["why"].rsplit("; ", 1)[0]
    other = edgetune.Session(plan, adapter=a)
    for q, _ in held_out():
        assert np.array_equal(s.scores(q), other.scores(q)), q
    with pytest.raises(EdgetuneError, match="bogus"):
        s.choose_method(candidates=["bogus"])
