"""PyTorch reference trainers on the taps edgetune cached and exported.

    edgetune eval --data bundled --ways 10 --shots 5 --episodes 5 \
        --method linear,ladder,tail --epochs 1 --export /tmp/export
    python3 tools/torch_reference.py /tmp/export tools/reference/torch_fmnist.json

(`--epochs 1` only shortens edgetune's own training in that run: the export holds the
cached taps, labels and frozen tail, which do not depend on it.)

Same episodes, same cached taps, an independent implementation of the same methods and
recipes as edgetune's defaults (runtime/src/adapt/method.rs `Spec::new`, train.rs and
linear.rs `Default`s; no augmentation): the linear probe (L2-normalised pooled features,
softmax regression with an L2 penalty 1/(C·n) on the weights, C = 10, zero init, AdamW
lr 0.1 without weight decay or label smoothing, 300 full-batch steps, cosine with 10
warm-up steps), the ladder side network (pooled taps → down-projection → LayerNorm → GELU,
gated side stream, LayerNorm + linear head, width = widest tap / 16 but at least 16; AdamW
lr 3e-3, weight decay 1e-2, label smoothing 0.1, 200 full-batch steps, cosine with 10
warm-up steps) and the three tail variants (the plan's float tail after the cut, cosine
classifier initialised from the class prototypes, scale 10; AdamW lr 3e-3 for the
classifier and lr × body_lr for the tail's own parameters, body_lr 0.3 for `tail`, 1.0 for
`bias`, 0.1 for `lora`; weight decay 1e-2 on every parameter, label smoothing 0.1, 150
steps of 10 examples, cosine with 10 warm-up steps; `lora` rank 4, ΔW = A·B·(2/4), A
uniform ±1/√cin, B zero; `bias` unit scales). One CPU thread, like edgetune's measurement.
Writes per-episode accuracy and training time (seconds) as JSON.
"""
import json, math, re, sys, time
import numpy as np
import os
import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
torch.manual_seed(0)


def cosine_lr(base, step, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return 0.5 * base * (1 + math.cos(math.pi * t))


def load(d, e, part, j):
    return torch.from_numpy(np.load(f"{d}/e{e}_{part}_t{j}.npy"))


def linear_probe(xs, ys, xq, k, c=10.0, steps=300, lr=0.1):
    xs, xq = F.normalize(xs, dim=1), F.normalize(xq, dim=1)
    n, d = xs.shape
    w = torch.zeros(d, k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=0.0, eps=1e-8)
    l2 = 1.0 / (c * n)
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr, s, 10, steps)
        loss = F.cross_entropy(xs @ w + b, ys) + 0.5 * l2 * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (xq @ w + b).argmax(1)


class Ladder(torch.nn.Module):
    def __init__(self, dims, width, k):
        super().__init__()
        self.down = torch.nn.ModuleList(torch.nn.Linear(d, width) for d in dims)
        self.ln = torch.nn.ModuleList(torch.nn.LayerNorm(width, eps=1e-5) for _ in dims)
        self.side = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in dims[1:])
        self.gate = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(width)) for _ in dims[1:])
        self.out = torch.nn.LayerNorm(width, eps=1e-5)
        self.head = torch.nn.Linear(width, k)
        for lin, d in zip(self.down, dims):
            torch.nn.init.normal_(lin.weight, std=1 / math.sqrt(d))
            torch.nn.init.zeros_(lin.bias)
        for lin in self.side:
            torch.nn.init.normal_(lin.weight, std=1 / math.sqrt(width))
            torch.nn.init.zeros_(lin.bias)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, taps):
        s = None
        for i, x in enumerate(taps):
            z = F.gelu(self.ln[i](self.down[i](x)), approximate="tanh")
            if s is None:
                s = z
            else:
                h = F.gelu(self.side[i - 1](s), approximate="tanh")
                g = torch.sigmoid(self.gate[i - 1])
                s = g * z + (1 - g) * h
        return self.head(self.out(s))


def ladder(ts, ys, tq, k, reduction=16, steps=200, lr=3e-3):
    dims = [t.shape[1] for t in ts]
    m = Ladder(dims, max(max(dims) // reduction, 16), k)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=1e-2)
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr, s, 10, steps)
        loss = F.cross_entropy(m(ts), ys, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return m(tq).argmax(1)


def parse_tail(d):
    lines = open(f"{d}/tail.txt").read().splitlines()
    tokens, ch = map(int, lines[0].split()[1:])
    frozen = torch.from_numpy(np.load(f"{d}/tail_frozen.npy"))
    layers = []
    for l in lines[1:]:
        kind = l.split()[0]
        f = {k: v for k, v in re.findall(r"(\w+): ([-\w.]+)", l)}
        layers.append((kind, f))
    return tokens, ch, frozen, layers


class Tail(torch.nn.Module):
    """The plan's tail in float, NHWC tokens × channels, weights from the plan."""

    def __init__(self, spec, k, variant="tail", rank=4, proto=None):
        super().__init__()
        tokens, ch, frozen, layers = spec
        self.variant, self.rank = variant, rank
        self.extra = torch.nn.ParameterList()
        self.hw = int(math.isqrt(tokens))
        self.layers = layers
        self.p = torch.nn.ParameterList()
        self.idx = []
        for kind, f in layers:
            if kind == "Pw":
                cin, cout, w, b = (int(f[x]) for x in ("cin", "cout", "w", "b"))
                W = frozen[w:w + cin * cout].reshape(cin, cout).clone()
                B = frozen[b:b + cout].clone()
            elif kind == "Dw":
                c, kh, kw = int(f["c"]), int(f["kh"]), int(f["kw"])
                w, b = int(f["w"]), int(f["b"])
                W = frozen[w:w + kh * kw * c].reshape(kh, kw, c).permute(2, 0, 1).unsqueeze(1).clone()
                B = frozen[b:b + c].clone()
            else:
                self.idx.append(None)
                continue
            self.idx.append(len(self.p))
            train = variant == "tail"
            self.p.append(torch.nn.Parameter(W, requires_grad=train))
            self.p.append(torch.nn.Parameter(B, requires_grad=train or variant == "bias"))
            cout = B.shape[0]
            if variant == "bias":
                self.extra.append(torch.nn.Parameter(torch.ones(cout)))
            elif variant == "lora" and kind == "Pw":
                cin = W.shape[0]
                bound = 1 / math.sqrt(cin)
                self.extra.append(torch.nn.Parameter((torch.rand(cin, rank) * 2 - 1) * bound))
                self.extra.append(torch.nn.Parameter(torch.zeros(rank, cout)))
        self.head = torch.nn.Parameter(proto if proto is not None else torch.zeros(k, 1))

    def features(self, x):
        # x: (n, tokens, ch); slots as in edgetune's TailNet.
        slots = {0: x}
        n = x.shape[0]
        ei = 0
        for (kind, f), pi in zip(self.layers, self.idx):
            gamma = None
            if pi is not None and self.variant == "bias":
                gamma = self.extra[ei]
                ei += 1
            y = int(f["y"])
            if kind == "Pw":
                W = self.p[pi]
                if self.variant == "lora":
                    W = W + (2.0 / self.rank) * self.extra[ei] @ self.extra[ei + 1]
                    ei += 2
                z = slots[int(f["x"])] @ W
                if gamma is not None:
                    z = z * gamma
                slots[y] = torch.clamp(z + self.p[pi + 1], float(f["lo"]), float(f["hi"]))
            elif kind == "Dw":
                xi = slots[int(f["x"])]
                c = int(f["c"])
                h = w = int(math.isqrt(xi.shape[1]))
                img = xi.reshape(n, h, w, c).permute(0, 3, 1, 2)
                z = F.conv2d(img, self.p[pi], None, stride=self.stride(f), padding=self.pad(f), groups=c)
                z = z.permute(0, 2, 3, 1).reshape(n, -1, c)
                if gamma is not None:
                    z = z * gamma
                slots[y] = torch.clamp(z + self.p[pi + 1], float(f["lo"]), float(f["hi"]))
            elif kind == "Add":
                slots[y] = slots[int(f["a"])] + slots[int(f["b"])]
            elif kind == "Gap":
                slots[y] = slots[int(f["x"])].mean(1)
                return F.normalize(slots[y], dim=1, eps=1e-6)
        raise ValueError("tail has no pooling")

    @staticmethod
    def stride(f):
        return f["_stride"]

    @staticmethod
    def pad(f):
        return f["_pad"]

    def forward(self, x):
        return 10.0 * self.features(x) @ self.head.t()


# Learning-rate multiplier of the tail's own parameters per variant: edgetune's
# `Spec::new` defaults (chosen on held-out support shots, tools/select_defaults.sh).
BODY_LR = {"tail": 0.3, "bias": 1.0, "lora": 0.1}


def tail(spec, variant, xs, ys, xq, k, steps=150, batch=10, lr=3e-3, body_lr=None, rank=4):
    body_lr = BODY_LR[variant] if body_lr is None else body_lr
    m = Tail(spec, k, variant, rank=rank)
    with torch.no_grad():
        f = m.features(xs)
        proto = torch.stack([f[ys == c].mean(0) for c in range(k)])
        m.head = torch.nn.Parameter(F.normalize(proto, dim=1))
    body = [p for p in list(m.p.parameters()) + list(m.extra.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW([{"params": body, "lr": lr * body_lr, "scale": body_lr},
                             {"params": [m.head], "lr": lr, "scale": 1.0}], lr=lr, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    n = xs.shape[0]
    order = torch.randperm(n, generator=g)
    cur = 0
    for s in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = cosine_lr(lr, s, 10, steps) * grp["scale"]
        take = []
        for _ in range(min(batch, n)):
            if cur == 0:
                order = torch.randperm(n, generator=g)
            take.append(order[cur])
            cur = (cur + 1) % n
        take = torch.stack(take)
        loss = F.cross_entropy(m(xs[take]), ys[take], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return m(xq).argmax(1)


def main():
    # tools/torch_reference.py EXPORT OUT.json [methods] [episodes]
    d, out = sys.argv[1], sys.argv[2]
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else ["linear", "ladder", "tail", "bias", "lora"]
    last = int(sys.argv[4]) if len(sys.argv) > 4 else None
    taps, methods = {}, {}
    for l in open(f"{d}/taps.txt").read().splitlines():
        p = l.split()
        if p[0] == "method":
            methods[p[1]] = p[2].split(",")
        else:
            taps[p[3]] = int(p[0][1:])
    episodes = sorted({int(m.group(1)) for m in (re.match(r"e(\d+)_support_y", f) for f in __import__("os").listdir(d)) if m})
    spec = None
    try:
        spec = parse_tail(d)
        # Depthwise stride and padding from the Debug text.
        lines = open(f"{d}/tail.txt").read().splitlines()[1:]
        for (kind, f), l in zip(spec[3], lines):
            if kind == "Dw":
                st = re.search(r"stride: \((\d+), (\d+)\)", l)
                pd = re.search(r"pad: \((\d+), (\d+)\)", l)
                f["_stride"] = (int(st.group(1)), int(st.group(2)))
                f["_pad"] = (int(pd.group(1)), int(pd.group(2)))
                f["lo"] = f["lo"].replace("inf", "inf")
    except FileNotFoundError:
        pass
    res = {"episodes": []}
    for e in episodes[:last]:
        ys = torch.from_numpy(np.load(f"{d}/e{e}_support_y.npy")).long()
        yq = torch.from_numpy(np.load(f"{d}/e{e}_query_y.npy")).long()
        k = int(ys.max()) + 1
        row = {}
        if "linear" in methods and "linear" in only:
            j = taps[methods["linear"][0]]
            t0 = time.perf_counter()
            pred = linear_probe(load(d, e, "support", j).mean(1), ys, load(d, e, "query", j).mean(1), k)
            row["linear"] = {"accuracy": (pred == yq).float().mean().item(), "train_s": time.perf_counter() - t0}
        if "ladder" in methods and "ladder" in only:
            js = [taps[t] for t in methods["ladder"]]
            ts = [load(d, e, "support", j).mean(1) for j in js]
            tq = [load(d, e, "query", j).mean(1) for j in js]
            t0 = time.perf_counter()
            pred = ladder(ts, ys, tq, k)
            row["ladder"] = {"accuracy": (pred == yq).float().mean().item(), "train_s": time.perf_counter() - t0}
        for v in ("tail", "bias", "lora"):
            if v not in only or spec is None or "tail" not in methods:
                continue
            j = taps[methods["tail"][0]]
            xs, xq = load(d, e, "support", j), load(d, e, "query", j)
            t0 = time.perf_counter()
            pred = tail(spec, v, xs, ys, xq, k)
            row[v] = {"accuracy": (pred == yq).float().mean().item(), "train_s": time.perf_counter() - t0,
                      "body_lr": BODY_LR[v]}
        print(e, {m: round(v["accuracy"], 4) for m, v in row.items()}, {m: round(v["train_s"], 2) for m, v in row.items()}, flush=True)
        res["episodes"].append(row)
    for m in res["episodes"][0]:
        a = np.array([r[m]["accuracy"] for r in res["episodes"]])
        t = np.array([r[m]["train_s"] for r in res["episodes"]])
        res[m] = {"mean": float(a.mean()), "std": float(a.std()), "train_s": float(t.mean())}
        print(f"{m}: {a.mean():.3f} ± {a.std():.3f}, train {t.mean():.3f} s/episode")
    import resource
    res["torch"] = torch.__version__
    res["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
