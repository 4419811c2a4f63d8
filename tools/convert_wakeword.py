#!/usr/bin/env python3
"""Regenerates edgetune's wake-word backbone: openWakeWord's speech embedding, int8.

Fetch (pinned):  pip download --no-deps openwakeword==0.4.0   (Apache-2.0; models inside)
                 pip install onnx onnxruntime numpy; apt-get install espeak-ng sox
Run:             python3 tools/convert_wakeword.py [path/to/openwakeword-0.4.0.whl]
Writes models/oww_embedding_int8.onnx, models/oww_melw.f32 (the mel filter bank of
melspectrogram.onnx, 257x32 little-endian f32) and models/golden/oww_* (a reference clip,
onnxruntime's mel frames and embeddings for it).

The graph is simplified before quantisation: the model's NHWC input [N,76,32,1] goes
through Pad(W by 1) and a Reshape to [N,1,76,34]; with one channel that is the NCHW tensor
[N,1,76,32] padded by one column each side, so the rewrite feeds `mel[1,1,76,32]` straight
to the first convolution with pads [0,1,0,1]. The mel front end stays float (edgetune's
`audio::MelFrontEnd`, checked against melspectrogram.onnx).
"""
import glob, os, subprocess, sys, tempfile, zipfile
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wheel():
    if len(sys.argv) > 1:
        return sys.argv[1]
    d = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                           "openwakeword==0.4.0", "-d", d])
    return glob.glob(os.path.join(d, "openwakeword-0.4.0-*.whl"))[0]


def speech(text, voice, out, speed=160, pitch=50):
    raw = out + ".raw.wav"
    subprocess.check_call(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                           "-w", raw, text])
    subprocess.check_call(["sox", raw, "-r", "16000", "-c", "1", "-b", "16", out])
    os.remove(raw)


def read_wav16(path):
    import wave
    with wave.open(path) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def main():
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import (quantize_static, CalibrationDataReader,
                                          QuantType, QuantFormat)
    whl = wheel()
    tmp = tempfile.mkdtemp()
    with zipfile.ZipFile(whl) as z:
        for n in ("melspectrogram.onnx", "embedding_model.onnx"):
            z.extract("openwakeword/resources/models/" + n, tmp)
    mdir = os.path.join(tmp, "openwakeword/resources/models")
    mel_path = os.path.join(mdir, "melspectrogram.onnx")
    mel = onnx.load(mel_path)
    init = {t.name: numpy_helper.to_array(t) for t in mel.graph.initializer}
    melw = init["1.melW"].astype("<f4")
    assert melw.shape == (257, 32)
    melw.tofile(os.path.join(ROOT, "models/oww_melw.f32"))

    # Rewrite the embedding model's Pad + Reshape front (see the module comment).
    emb = onnx.load(os.path.join(mdir, "embedding_model.onnx"))
    g = emb.graph
    pad, reshape, conv0 = g.node[0], g.node[1], g.node[2]
    assert pad.op_type == "Pad" and reshape.op_type == "Reshape" and conv0.op_type == "Conv"
    assert list(numpy_helper.to_array([t for t in g.initializer if t.name == pad.input[1]][0])) \
        == [0, 0, 1, 0, 0, 0, 1, 0]
    conv0.input[0] = "mel"
    conv0.attribute.append(helper.make_attribute("pads", [0, 1, 0, 1]))
    del g.node[0:2]
    while len(g.input):
        g.input.pop()
    g.input.append(helper.make_tensor_value_info("mel", onnx.TensorProto.FLOAT, [1, 1, 76, 32]))
    out = g.output[0]
    out.type.tensor_type.shape.dim[0].dim_value = 1
    keep = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in keep]
    del g.initializer[:]
    g.initializer.extend(live)
    del g.value_info[:]
    fp32 = os.path.join(tmp, "embedding_nchw.onnx")
    onnx.save(emb, fp32)

    # Calibration: mel windows of synthetic speech and noise.
    wavs = []
    phrases = ["hey edge tune", "turn on the lights", "what time is it", "play some music",
               "open the door", "good morning", "stop", "computer"]
    for i, p in enumerate(phrases):
        for v in ("en-us", "en-gb+f2", "en+m3"):
            w = os.path.join(tmp, f"cal{i}_{v.replace('+', '_')}.wav")
            speech(p, v, w)
            wavs.append(read_wav16(w))
    rng = np.random.default_rng(0)
    wavs.append((rng.normal(0, 800, 32000)).astype(np.int16))
    sess = ort.InferenceSession(mel_path, providers=["CPUExecutionProvider"])
    windows = []
    for a in wavs:
        a = np.concatenate([np.zeros(8000, np.int16), a, np.zeros(8000, np.int16)])
        a = a + rng.normal(0, 30, a.shape)
        m = sess.run(None, {"input": a[None].astype(np.float32)})[0][0, 0] / 10 + 2
        for s in range(0, m.shape[0] - 76 + 1, 8):
            windows.append(m[s:s + 76][None, None].astype(np.float32))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(windows)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"mel": x}

    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = os.path.join(tmp, "embedding_pre.onnx")
    quant_pre_process(fp32, pre)
    int8 = os.path.join(ROOT, "models/oww_embedding_int8.onnx")
    # Calibration is not bit-reproducible across runs (scales move in the last digits):
    # EDGETUNE_KEEP_MODEL=1 keeps the committed int8 model and regenerates the goldens only.
    if os.environ.get("EDGETUNE_KEEP_MODEL") != "1":
      quantize_static(pre, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                      activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    # Golden: one clip, its mel frames from onnxruntime, its embeddings fp32 and int8.
    w = os.path.join(tmp, "golden.wav")
    speech("hey edge tune", "en-us", w)
    a = read_wav16(w)
    gold = os.path.join(ROOT, "models/golden")
    os.makedirs(gold, exist_ok=True)
    np.save(os.path.join(gold, "oww_clip.npy"), a.astype(np.float32))
    m = sess.run(None, {"input": a[None].astype(np.float32)})[0][0, 0]
    np.save(os.path.join(gold, "oww_mel.npy"), m.astype(np.float32))
    # int8 golden with graph optimisations off: the QDQ graph as the ONNX spec defines it
    # (onnxruntime's fused int8 kernels land at cosine 0.96 to it on this model).
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # 24 windows of real speech: 4 phrases × 2 voices (none of them the calibration set's
    # words), 3 windows each, mel frames from onnxruntime's front end.
    wins = []
    for i, (text, voice) in enumerate([(t, v) for t in ("hey edge tune", "switch off the radio",
                                                         "seven apples", "where is the station")
                                       for v in ("en-us", "en-gb-x-rp+f3")]):
        w = os.path.join(tmp, f"g{i}.wav")
        speech(text, voice, w)
        a = read_wav16(w).astype(np.float32)
        a = np.concatenate([np.zeros(4000, np.float32), a, np.zeros(4000, np.float32)])
        a += rng.normal(0, 30, a.shape).astype(np.float32)
        m2 = sess.run(None, {"input": a[None]})[0][0, 0] / 10 + 2
        for s0 in np.linspace(0, m2.shape[0] - 76, 3).astype(int):
            wins.append(m2[s0:s0 + 76][None, None])
    x = np.stack(wins).astype(np.float32)
    np.save(os.path.join(gold, "oww_windows.npy"), x)
    for name, path in (("fp32", fp32), ("int8", int8)):
        s = ort.InferenceSession(path, plain, providers=["CPUExecutionProvider"])
        e = np.concatenate([s.run(None, {"mel": w})[0].reshape(1, -1) for w in x])
        np.save(os.path.join(gold, f"oww_embeddings_{name}.npy"), e.astype(np.float32))
    e8, e32 = (np.load(os.path.join(gold, f"oww_embeddings_{n}.npy")) for n in ("int8", "fp32"))
    cos = (e8 * e32).sum(1) / np.linalg.norm(e8, axis=1) / np.linalg.norm(e32, axis=1)
    print("cosine int8 vs fp32 over", len(x), "windows: min", cos.min(), "mean", cos.mean())
    print("wrote", int8, os.path.getsize(int8), "bytes")


if __name__ == "__main__":
    main()
