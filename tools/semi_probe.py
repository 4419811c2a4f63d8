"""Two more ways to learn from unlabeled examples, tried on taps edgetune exported, to see
whether they beat the product's (soft k-means for `ncm`, capped self-training for `linear`
and `moment`) before building them in (not product methods):

    edgetune eval --data bundled --ways 10 --shots 5 --episodes 5 --method ncm \
        --unlabeled 20 --export /tmp/export
    python3 tools/semi_probe.py /tmp/export

- Entropy minimisation: the `linear` probe (unit-norm pooled features, L2 1/(C·n) with
  C = 10, AdamW at 0.01 for 300 full-batch steps from zeros, as edgetune trains it), then
  fine-tuned with the mean softmax entropy of the unlabeled examples' predictions added to
  the loss at weight λ.
- Label propagation: a k-nearest-neighbour graph over the support and unlabeled examples
  (unit norm, centred on their mean; cosine³ weights, symmetric normalisation),
  labels spread with (I - αS)⁻¹Y, then class means of the support and the unlabeled
  examples weighted by their spread labels, and the nearest mean.

- Consistency under the trainer's augmentations (with `--augment K` at export, which
  also gives the support its views): the `linear` probe, then fine-tuned with, for each
  unlabeled example whose prediction on the original is at least τ confident, the
  cross-entropy of its views' predictions against that prediction's class (FixMatch's
  rule on frozen features, weight λ), or with the views' predictions pulled to the
  original's (soft, no threshold).

    edgetune eval --data bundled --ways 10 --shots 5 --episodes 5 --method linear \
        --unlabeled 20 --augment 2 --export /tmp/export-aug
    python3 tools/semi_probe.py /tmp/export-aug consistency

Prints the mean query accuracy over the episodes for each setting.
"""
import sys
import numpy as np

D = sys.argv[1]
EPISODES = 5


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def load(e, part):
    x = np.load(f"{D}/e{e}_{part}_t0.npy").astype(np.float64)
    return x.reshape(x.shape[0], -1, x.shape[-1]).mean(1)


def labels(e, part):
    return np.load(f"{D}/e{e}_{part}_y.npy").astype(int).ravel()


def softmax(z):
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def probe(xs, ys, xu, k, lam, steps, w=None, b=None, c=10.0, lr=0.01):
    n, d = xs.shape
    if w is None:
        w, b = np.zeros((d, k)), np.zeros(k)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    y = np.eye(k)[ys]
    for t in range(1, steps + 1):
        gz = (softmax(xs @ w + b) - y) / n
        g = [xs.T @ gz + w / (c * n), gz.sum(0)]
        if lam > 0:
            q = softmax(xu @ w + b)
            lq = np.log(np.maximum(q, 1e-30))
            h = -(q * lq).sum(1, keepdims=True)
            gu = -q * (lq + h) * lam / len(xu)
            g[0] += xu.T @ gu
            g[1] += gu.sum(0)
        for i, p in enumerate((w, b)):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.999 * v[i] + 0.001 * g[i] ** 2
            p -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return w, b


def spread(x, y0, knn, alpha):
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    nn = np.argsort(-s, axis=1)[:, :knn]
    w = np.zeros_like(s)
    for i in range(len(x)):
        w[i, nn[i]] = np.maximum(s[i, nn[i]], 0) ** 3
    w = w + w.T
    d = 1 / np.sqrt(np.maximum(w.sum(1), 1e-30))
    return np.linalg.solve(np.eye(len(x)) - alpha * w * d[:, None] * d[None, :], y0)


def episodes(f):
    acc = []
    for e in range(EPISODES):
        s, u, q = load(e, "support"), load(e, "unlabeled"), load(e, "query")
        ys, yq = labels(e, "support"), labels(e, "query")
        acc.append((f(s, ys, u, q, ys.max() + 1) == yq).mean())
    return np.mean(acc)


def entropy(lam):
    def f(s, ys, u, q, k):
        s, u, q = unit(s), unit(u), unit(q)
        w, b = probe(s, ys, u, k, 0, 300)
        if lam > 0:
            w, b = probe(s, ys, u, k, lam, 300, w, b)
        return (q @ w + b).argmax(1)
    return f


def propagation(knn, alpha):
    def f(s, ys, u, q, k):
        s, u, q = unit(s), unit(u), unit(q)
        mean = np.concatenate([s, u]).mean(0)
        s, u, q = unit(s - mean), unit(u - mean), unit(q - mean)
        y0 = np.zeros((len(s) + len(u), k))
        y0[np.arange(len(s)), ys] = 1
        p = spread(np.concatenate([s, u]), y0, knn, alpha)[len(s):]
        p = p / np.maximum(p.sum(1, keepdims=True), 1e-30)
        wt = np.concatenate([np.eye(k)[ys], p])
        protos = unit(wt.T @ np.concatenate([s, u]) / wt.sum(0)[:, None])
        return (q @ protos.T).argmax(1)
    return f


def consistent(s, ys, u, uv, k, lam, tau, soft, steps=300, c=10.0, lr=0.01):
    """The probe from `s`, then `steps` more with the consistency term on the views `uv`
    (`[len(u), views, d]`)."""
    w, b = probe(s, ys, u, k, 0, 300)
    if lam == 0:
        return w, b
    n, d = s.shape
    views = uv.shape[1]
    flat = uv.reshape(-1, d)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    y = np.eye(k)[ys]
    for t in range(1, steps + 1):
        gz = (softmax(s @ w + b) - y) / n
        g = [s.T @ gz + w / (c * n), gz.sum(0)]
        pu = softmax(u @ w + b)
        pv = softmax(flat @ w + b)
        if soft:
            target = np.repeat(pu, views, axis=0)
            keep = np.ones(len(flat))
        else:
            target = np.repeat(np.eye(k)[pu.argmax(1)], views, axis=0)
            keep = np.repeat(pu.max(1) >= tau, views).astype(float)
        gv = (pv - target) * keep[:, None] * lam / len(flat)
        g[0] += flat.T @ gv
        g[1] += gv.sum(0)
        for i, p in enumerate((w, b)):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.999 * v[i] + 0.001 * g[i] ** 2
            p -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return w, b


if sys.argv[2:] == ["consistency"]:
    # The support with its views (as edgetune trains with --augment), or its originals only.
    for originals in [False, True]:
        for lam, tau, soft in [(0, 0, False), (0.1, 0.5, False), (0.3, 0.5, False),
                               (1, 0.5, False), (1, 0.8, False), (3, 0.8, False),
                               (0.1, 0, True), (1, 0, True), (3, 0, True)]:
            acc = []
            for e in range(EPISODES):
                s, u, q = load(e, "support"), load(e, "unlabeled"), load(e, "query")
                uv = load(e, "unlabeled_views")
                ys, yq = labels(e, "support"), labels(e, "query")
                s, u, q, uv = unit(s), unit(u), unit(q), unit(uv)
                uv = uv.reshape(len(u), -1, uv.shape[-1])
                if originals:
                    s, ys = s[:: uv.shape[1] + 1], ys[:: uv.shape[1] + 1]
                w, b = consistent(s, ys, u, uv, ys.max() + 1, lam, tau, soft)
                acc.append(((q @ w + b).argmax(1) == yq).mean())
            rule = "soft" if soft else f"tau = {tau}"
            sup = "support originals" if originals else "support and views"
            print(f"linear ({sup}), consistency weight {lam}, {rule}: {np.mean(acc):.3f}")
    sys.exit()

for lam in [0, 0.1, 0.3, 1.0, 3.0]:
    print(f"linear, entropy weight {lam}: {episodes(entropy(lam)):.3f}")
for knn in [5, 10, 20]:
    for alpha in [0.5, 0.8, 0.95]:
        print(f"label propagation, k = {knn}, alpha = {alpha}: {episodes(propagation(knn, alpha)):.3f}")
