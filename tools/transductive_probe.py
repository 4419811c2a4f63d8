"""Transductive prototype variants on taps edgetune exported, to see how far the unlabeled
examples can take a prototype classifier on a backbone's features (not a product method):

    edgetune eval --data bundled --ways 10 --shots 5 --episodes 5 --method ladder \
        --unlabeled 20 --export /tmp/export
    python3 tools/transductive_probe.py /tmp/export

For each set of taps (indices into taps.txt; `ladder` exports three) and feature (the
tokens' mean, or mean and standard deviation), with and without a power transform
(sign(x)·|x|^0.5): unit-norm per tap, centred on the support and unlabeled mean, unit-norm
again, taps concatenated; then nearest class mean (`proto`) and 20 iterations of soft
k-means over the unlabeled examples with Sinkhorn-balanced assignments (λ = 10, prototypes
moved 0.2 of the way each step: the PT-MAP recipe) before the nearest prototype (`+unl`).
Prints the mean query accuracy over the episodes.
"""
import sys
import numpy as np

D = sys.argv[1]
EPISODES = 5


def load(e, part, t, mode):
    x = np.load(f"{D}/e{e}_{part}_t{t}.npy").astype(np.float64)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    return x.mean(1) if mode == "mean" else np.concatenate([x.mean(1), x.std(1)], 1)


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def feats(e, part, taps, beta, mode):
    out = []
    for t in taps:
        x = load(e, part, t, mode)
        out.append(np.sign(x) * np.abs(x) ** beta if beta != 1 else x)
    return out


def prep(fs, fu, fq):
    out = [[], [], []]
    for a, b, c in zip(fs, fu, fq):
        a, b, c = unit(a), unit(b), unit(c)
        m = np.concatenate([a, b]).mean(0)
        for o, v in zip(out, (a, b, c)):
            o.append(unit(v - m))
    return [np.concatenate(o, 1) / np.sqrt(len(fs)) for o in out]


def sinkhorn(p, iters=50):
    n, k = p.shape
    for _ in range(iters):
        p = p / p.sum(0, keepdims=True) * (n / k)
        p = p / p.sum(1, keepdims=True)
    return p


def classify(xs, ys, xu, xq, k, lam, alpha, iters):
    proto = np.stack([xs[ys == c].mean(0) for c in range(k)])
    onehot = np.eye(k)[ys]
    for _ in range(iters):
        d = ((xu[:, None, :] - proto[None]) ** 2).sum(-1)
        p = np.exp(-lam * (d - d.min(1, keepdims=True)))
        p = sinkhorn(p / p.sum(1, keepdims=True))
        w = np.concatenate([onehot, p])
        x = np.concatenate([xs, xu])
        proto = (1 - alpha) * proto + alpha * (w.T @ x) / w.sum(0)[:, None]
    return ((xq[:, None, :] - proto[None]) ** 2).sum(-1).argmin(1)


ntaps = sum(1 for line in open(f"{D}/taps.txt") if line.startswith("t"))
tapsets = [[t] for t in range(ntaps)] + ([list(range(ntaps))] if ntaps > 1 else [])
for taps in tapsets:
    for mode in ["mean", "mean+std"]:
        for beta in [1.0, 0.5]:
            r0, r1 = [], []
            for e in range(EPISODES):
                ys = np.load(f"{D}/e{e}_support_y.npy").astype(int)
                yq = np.load(f"{D}/e{e}_query_y.npy").astype(int)
                k = ys.max() + 1
                xs, xu, xq = prep(*(feats(e, p, taps, beta, mode) for p in ("support", "unlabeled", "query")))
                r0.append((classify(xs, ys, xu, xq, k, 0, 0, 0) == yq).mean())
                r1.append((classify(xs, ys, xu, xq, k, 10, 0.2, 20) == yq).mean())
            print(f"taps {taps} {mode:8} power {beta}: proto {np.mean(r0):.4f}  +unl {np.mean(r1):.4f}")
