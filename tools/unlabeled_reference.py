"""scikit-learn / numpy references of the methods that learn from unlabeled examples,
on the taps edgetune cached and exported:

    edgetune eval --data bundled --ways 10 --shots 5 --episodes 5 --method ncm,linear \
        --unlabeled 20 --export /tmp/export
    python3 tools/unlabeled_reference.py /tmp/export tools/reference/unlabeled_fmnist.json

Same episodes and cached taps (the `features` tap, tap t0 of taps.txt), an independent
implementation of the same recipes (runtime/src/adapt/unlabeled.rs `Default`):
- ncm + soft k-means: unit-norm features; class sums of the support set; 10 iterations
  of r[u][c] = softmax_c(20 · cos(x_u, p_c)), p_c the direction of class c's sum, each
  sum recomputed as the support's plus Σ_u r[u][c] · x_u; cosine to the sums.
- linear + self-training: scikit-learn's LogisticRegression (C = 10, lbfgs) on unit-norm
  features; each of at most 5 rounds gives the unlabeled examples not yet labelled whose
  top probability is above 0.3 that class, at most 3 per class (most confident first),
  and refits on the support set and every pseudo-labelled example; it stops when a round
  labels nothing. edgetune's probe is AdamW on the same objective, not lbfgs: the
  comparison is of accuracy (within 1.5 points, runtime/tests/unlabeled_reference.rs).
Writes per-episode accuracy, without and with the unlabeled examples, as JSON.
"""
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression

D, OUT = sys.argv[1], sys.argv[2]
SCALE, ITERS, THRESHOLD, PER_CLASS, ROUNDS, C = 20.0, 10, 0.3, 3, 5, 10.0


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def load(e, part):
    x = np.load(f"{D}/e{e}_{part}_t0.npy").astype(np.float64)
    return x.reshape(x.shape[0], -1, x.shape[-1]).mean(1)


def soft_kmeans(xs, ys, xu, k):
    xs, xu = unit(xs), unit(xu)
    base = np.stack([xs[ys == c].sum(0) for c in range(k)])
    cur = base
    for _ in range(ITERS):
        z = SCALE * xu @ unit(cur).T
        r = np.exp(z - z.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        cur = base + r.T @ xu
    return unit(base), unit(cur)


def fit(x, y):
    return LogisticRegression(C=C, max_iter=2000).fit(unit(x), y)


def self_train(xs, ys, xu, k):
    m = fit(xs, ys)
    label = -np.ones(len(xu), int)
    for _ in range(ROUNDS):
        free = np.where(label < 0)[0]
        if len(free) == 0:
            break
        p = m.predict_proba(unit(xu[free]))
        c, conf = p.argmax(1), p.max(1)
        added = 0
        for cls in range(k):
            pick = free[(c == cls) & (conf > THRESHOLD)]
            order = np.argsort(-conf[(c == cls) & (conf > THRESHOLD)], kind="stable")
            for j in pick[order][:PER_CLASS]:
                label[j] = cls
                added += 1
        if added == 0:
            break
        keep = label >= 0
        m = fit(np.concatenate([xs, xu[keep]]), np.concatenate([ys, label[keep]]))
    return m


episodes = []
e = 0
while True:
    try:
        xs, xq, xu = load(e, "support"), load(e, "query"), load(e, "unlabeled")
    except FileNotFoundError:
        break
    ys = np.load(f"{D}/e{e}_support_y.npy").astype(int)
    yq = np.load(f"{D}/e{e}_query_y.npy").astype(int)
    k = ys.max() + 1
    p0, p1 = soft_kmeans(xs, ys, xu, k)
    acc = lambda pred: float((pred == yq).mean())
    episodes.append({
        "ncm": acc((unit(xq) @ p0.T).argmax(1)),
        "ncm+unlabeled": acc((unit(xq) @ p1.T).argmax(1)),
        "linear": acc(fit(xs, ys).predict(unit(xq))),
        "linear+unlabeled": acc(self_train(xs, ys, xu, k).predict(unit(xq))),
    })
    print(e, episodes[-1], flush=True)
    e += 1
summary = {m: {"mean": float(np.mean([x[m] for x in episodes])),
               "std": float(np.std([x[m] for x in episodes]))} for m in episodes[0]}
json.dump({"episodes": episodes, "summary": summary}, open(OUT, "w"), indent=1)
print(json.dumps(summary))
