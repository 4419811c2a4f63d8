#!/usr/bin/env python3
"""Op histograms of the import corpus: (domain, op type, count) per model, plus the ops
over the whole corpus and how many models use each.

    python3 tools/corpus/ops.py [--corpus DIR] [MODEL.onnx | NAME ...]

Needs only the `onnx` package. Nodes inside subgraphs (If/Loop/Scan bodies) are counted
under their parent op's name, marked `(in subgraph)`.
"""
import argparse, collections, glob, os, sys


def walk(graph, hist, inner=False):
    for n in graph.node:
        key = (n.domain or "ai.onnx", n.op_type + (" (in subgraph)" if inner else ""))
        hist[key] += 1
        for a in n.attribute:
            if a.g.node:
                walk(a.g, hist, True)
            for g in a.graphs:
                walk(g, hist, True)


def histogram(path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    hist = collections.Counter()
    walk(m.graph, hist)
    return m, hist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--compact", action="store_true", help="one line per model")
    ap.add_argument("--corpus", default=os.environ.get(
        "EDGETUNE_CORPUS", os.path.expanduser("~/.cache/edgetune/corpus")))
    a = ap.parse_args()
    paths = []
    for x in a.models or sorted(os.listdir(a.corpus)):
        p = x if x.endswith(".onnx") else os.path.join(a.corpus, x, "model.onnx")
        if os.path.exists(p):
            paths.append(p)
        else:
            print(f"{x}: no model at {p}", file=sys.stderr)
    total, used_by = collections.Counter(), collections.Counter()
    for p in paths:
        m, hist = histogram(p)
        name = os.path.basename(os.path.dirname(p)) if p.endswith("/model.onnx") else p
        opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import)
        ins = "; ".join(
            f"{i.name} {[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]}"
            for i in m.graph.input)
        items = sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))
        for (dom, op), c in items:
            total[(dom, op)] += c
            used_by[(dom, op)] += 1
        if a.compact:
            ops = ", ".join(f"{'' if dom == 'ai.onnx' else dom + ':'}{op} {c}" for (dom, op), c in items)
            print(f"- {name} ({sum(hist.values())} nodes): {ops}")
            continue
        print(f"## {name}: {sum(hist.values())} nodes (opsets: {opsets}; inputs: {ins})")
        for (dom, op), c in items:
            print(f"  {dom:<20} {op:<32} {c}")
        print()
    if len(paths) > 1 and a.compact:
        print(f"- whole corpus ({len(paths)} models), op: nodes/models: " + ", ".join(
            f"{'' if dom == 'ai.onnx' else dom + ':'}{op} {c}/{used_by[(dom, op)]}"
            for (dom, op), c in sorted(total.items(), key=lambda kv: (-used_by[kv[0]], -kv[1]))))
    elif len(paths) > 1:
        print(f"## whole corpus ({len(paths)} models): op, nodes, models using it")
        for (dom, op), c in sorted(total.items(), key=lambda kv: (-used_by[kv[0]], -kv[1])):
            print(f"  {dom:<20} {op:<32} {c:>5} {used_by[(dom, op)]:>3}")


if __name__ == "__main__":
    main()
