#!/usr/bin/env python3
"""Measures an edgetune binary on the import corpus (tools/corpus/build.py).

    python3 tools/corpus/run.py --bin PATH/TO/edgetune [--out DIR] [--calibrate [--calibrate-range R]] [NAME ...]
    (EDGETUNE_BIN may stand for --bin; tools/corpus/run.sh builds the binary first)

Per model: `edgetune compile --check` (printed verbatim), `edgetune compile` with the
model's fixed input shapes, `edgetune inspect` (ops of the plan; those named *F32 run in
float), then `edgetune run` on every reference input (8 per model): cosine of each output
against onnxruntime with graph optimisation off (the graph as written), beside the cosine of
onnxruntime's own optimised session to it (the yardstick where quantised arithmetic
differs), the top-1 class of classifiers against it, the cosine against onnxruntime's
default session and, for quantised entries, both against the float model; and the latency
of `edgetune run --profile N` against onnxruntime's on the same input, both with one thread
on one pinned core: `--rounds` rounds (3) alternate the two, each a median of N runs, and
each side's best round counts. One model's failure
(error, crash, time-out) is recorded and the next model runs.

Writes DIR/<name>/{check,compile,inspect,run-*}.txt, DIR/results.json and DIR/table.md
(also printed). Needs numpy and onnxruntime.
"""
import argparse, datetime, json, os, re, shutil, subprocess, sys, time
import numpy as np

CORPUS = os.environ.get("EDGETUNE_CORPUS", os.path.expanduser("~/.cache/edgetune/corpus"))
TIMEOUT = 600


def sh(cmd, log, timeout=TIMEOUT):
    """Runs cmd, writes the command and its combined output to log; (exit code, output)."""
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        code, out = p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        code, out = "timeout", (e.stdout or b"").decode("utf-8", "replace") + f"\n[timed out after {timeout} s]"
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n" + out + f"\n[exit {code}, {time.perf_counter() - t:.1f} s]\n")
    return code, out


def first_error(code, out):
    """The CLI's error line (the last line naming an error), else a note of the exit."""
    if code == "timeout":
        return "timed out"
    if isinstance(code, int) and code < 0:
        return f"killed by signal {-code}"
    lines = [l.strip() for l in out.splitlines() if l.strip()]
    for l in reversed(lines):
        if re.search(r"error|panicked|cannot|unsupported", l, re.I):
            return l
    return lines[-1] if lines else f"exit {code}"


# Outputs whose every value is below this (a detector's probability map of a photo without
# text: sigmoids of very negative logits, which onnxruntime flushes to 0 and edgetune keeps
# near 1e-8) have no direction to compare: two such outputs count as equal.
NEAR_ZERO = 1e-5


def cosine(a, b):
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if np.abs(a).max(initial=0) < NEAR_ZERO and np.abs(b).max(initial=0) < NEAR_ZERO:
        return 1.0
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def safe(name):
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def pin():
    """Pins this process (onnxruntime) to the core `taskset -c` pins edgetune to."""
    cores = sorted(os.sched_getaffinity(0))
    core = cores[-1]
    os.sched_setaffinity(0, {core})
    return core


def ort_session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def ort_median(s, feed, runs):
    s.run(None, feed)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, feed)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def feed_file(d, od, k, inp):
    """The input as `edgetune run` reads it: float32 .npy (integer ids cast to float)."""
    src = os.path.join(d, "inputs", str(k), inp["file"])
    a = np.load(src)
    if a.dtype == np.float32:
        return src
    dst = os.path.join(od, f"in{k}_{inp['file']}")
    np.save(dst, a.astype(np.float32))
    return dst


def measure(et, name, out_dir, runs, core, calibrate=False, calibrate_range="minmax", rounds=3):
    d = os.path.join(CORPUS, name)
    meta = json.load(open(os.path.join(d, "meta.json")))
    od = os.path.join(out_dir, name)
    os.makedirs(od, exist_ok=True)
    model = os.path.join(d, "model.onnx")
    shapes = []
    for s in meta["edgetune_input_args"]:
        shapes += ["--input", s]
    # A scalar input (a sample rate, a mode flag) holds one value on every reference
    # input: it is fixed at compile time, so the branches it selects fold.
    consts = [i for i in meta["inputs"] if i["shape"] == []]
    for i in consts:
        vals = {np.load(os.path.join(d, "inputs", str(k), i["file"])).item() for k in range(meta["n_refs"])}
        if len(vals) != 1:
            raise SystemExit(f"{name}: scalar input {i['name']} differs between inputs: {vals}")
        shapes += ["--constant", f"{i['name']}={vals.pop()}"]
    r = {"name": name, "producer": meta["producer"], "quantisation": meta["quantisation"],
         "layout": meta["layout"], "inputs": meta["edgetune_input_args"]}

    code, out = sh([et, "compile", "--check", model] + shapes, os.path.join(od, "check.txt"))
    r["check_ok"] = code == 0
    r["check_output"] = out.strip()
    r["check_summary"] = "every node imports" if code == 0 else first_error(code, out)

    plan = os.path.join(od, "plan.etm")
    # A float model with calibration inputs (tools/corpus/calib.py) is quantised by
    # edgetune itself on the inputs onnxruntime's quantiser used for the int8 entries.
    calib = os.path.join(d, "calib")
    extra = []
    if calibrate and meta["quantisation"] in ("float", "dynamic") and os.path.isdir(calib):
        extra = ["--calibrate", calib, "--calibrate-count", "64", "--calibrate-range", calibrate_range]
        r["quantisation"] = meta["quantisation"] + " → edgetune --calibrate" + (
            "" if calibrate_range == "minmax" else f" ({calibrate_range})")
    code, out = sh([et, "compile", model, "-o", plan] + shapes + extra, os.path.join(od, "compile.txt"))
    r["compile_output"] = out.strip()
    if code != 0 or not os.path.exists(plan):
        r["compiles"] = False
        r["first_error"] = first_error(code, out)
        return r
    r["compiles"] = True

    code, out = sh([et, "inspect", plan], os.path.join(od, "inspect.txt"))
    m = re.search(r"^ops (\d+): (.*)$", out, re.M)
    if m:
        kinds = re.findall(r'\("(\w+)", (\d+)\)', m.group(2))
        r["plan_ops"] = {k: int(c) for k, c in kinds}
        r["float_ops"] = {k: int(c) for k, c in kinds if k.endswith("F32")}

    # Accuracy: every reference input, every output the plan and onnxruntime share.
    cos, cos_f, cos_n, top1, notes = [], [], [], [], []
    classifier = "classifier" in meta.get("task", "").lower()
    for k in range(meta["n_refs"]):
        feeds = []
        for i in meta["inputs"]:
            if i in consts:
                continue
            feeds.append(f"{i['name']}=" + feed_file(d, od, k, i))
        sd = os.path.join(od, f"out{k}")
        shutil.rmtree(sd, ignore_errors=True)
        code, out = sh([et, "run", plan] + feeds + ["--save-outputs", sd], os.path.join(od, f"run-{k}.txt"))
        if code != 0:
            r["run_error"] = first_error(code, out)
            break
        got, by_index = {}, {}
        for f in os.listdir(sd) if os.path.isdir(sd) else []:
            m = re.match(r"^(\d+)_(.*)$", f)
            if m:
                got[m.group(2)] = by_index[int(m.group(1))] = np.load(os.path.join(sd, f))
        for j, o in enumerate(meta["outputs"]):
            ref = np.load(os.path.join(d, "ref", str(k), o["file"]))
            e = got.get(o["file"])
            if e is None and j in by_index and len(by_index) >= len(meta["outputs"]):
                e = by_index[j]  # the plan renamed its outputs: take them in graph order
                notes.append(f"output {o['name']} matched by position")
            if e is None:
                notes.append(f"output {o['name']} not in the plan's outputs")
                continue
            if e.size != ref.size:
                notes.append(f"output {o['name']}: {e.size} values, onnxruntime {ref.size}")
                continue
            cos.append((o["name"], k, cosine(e, ref)))
            # The yardstick: onnxruntime with graph optimisation off runs the graph as
            # written; how close its own optimised session stays to that bounds what to ask.
            nref = os.path.join(d, "ref_noopt", str(k), o["file"])
            if os.path.exists(nref):
                n0 = np.load(nref)
                cos_n.append((o["name"], k, cosine(e, n0), cosine(ref, n0)))
                if classifier and j == 0:
                    top1.append((k, int(np.argmax(e)) == int(np.argmax(n0)),
                                 int(np.argmax(ref)) == int(np.argmax(n0))))
            fref = os.path.join(d, "ref_fp32", str(k), o["file"])
            if os.path.exists(fref):
                f32 = np.load(fref)
                cos_f.append((o["name"], k, cosine(e, f32), cosine(ref, f32)))
    if cos:
        worst = min(cos, key=lambda c: c[2])
        r["cosine_min"] = worst[2]
        r["cosine_worst"] = f"{worst[0]} (input {worst[1]})"
        r["cosines"] = cos
    if cos_n:
        r["cosine_noopt_min"] = min(c[2] for c in cos_n)
        r["ort_opt_cosine_noopt_min"] = min(c[3] for c in cos_n)
        r["cosines_noopt"] = cos_n
        r["n_inputs"] = len({c[1] for c in cos_n})
    if top1:
        r["top1_agree"] = sum(t[1] for t in top1)
        r["ort_opt_top1_agree"] = sum(t[2] for t in top1)
        r["top1_of"] = len(top1)
    if cos_f:
        r["cosine_float_min"] = min(c[2] for c in cos_f)
        r["ort_cosine_float_min"] = min(c[3] for c in cos_f)
        r["cosines_float"] = cos_f
    if notes:
        r["output_notes"] = sorted(set(notes))

    if "run_error" not in r:
        feeds = [f"{i['name']}=" + feed_file(d, od, 0, i) for i in meta["inputs"] if i not in consts]
        feed = {i["name"]: np.load(os.path.join(d, "inputs", "0", i["file"])) for i in meta["inputs"]}
        sess = ort_session(model)
        # Rounds alternate the two sides so that both see the same stretches of a shared
        # machine; each side's latency is its best round's median.
        et_ms, ort_ms = [], []
        for k in range(rounds):
            code, out = sh(["taskset", "-c", str(core), et, "run", plan] + feeds + ["--profile", str(runs)],
                           os.path.join(od, "profile.txt" if k == 0 else f"profile-{k}.txt"))
            m = re.search(r"median ([\d.]+) ms", out)
            if code == 0 and m:
                et_ms.append(float(m.group(1)))
            ort_ms.append(ort_median(sess, feed, runs))
        if et_ms:
            r["edgetune_ms"] = min(et_ms)
            r["edgetune_rounds_ms"] = et_ms
        r["ort_ms"] = min(ort_ms)
        r["ort_rounds_ms"] = ort_ms
    return r


def cell_compiles(r):
    if r.get("compiles"):
        return "yes"
    e = r.get("first_error", "").replace(CORPUS + "/", "")
    # Converters name nodes after every fused source op; the table keeps the start.
    e = re.sub(r"node '([^']{48})[^']+'", lambda m: f"node '{m.group(1)}...'", e)
    return "no: " + e.replace("|", "\\|")


def table(results):
    rows = ["| model | producer | quantisation | compiles (yes / first error) | inputs | "
            "cosine vs ORT with optimisation off: edgetune / ORT optimised (min) | "
            "top-1 = ORT (classifiers) | cosine vs ORT default (min) | "
            "cosine vs float model: edgetune / ORT (min) | latency edgetune / ORT (ms, ratio) | float ops in plan |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cos = f"{r['cosine_min']:.4f}" if "cosine_min" in r else ("run error: " + r["run_error"] if "run_error" in r else "-")
        if "edgetune_ms" in r and "ort_ms" in r:
            lat = f"{r['edgetune_ms']:.2f} / {r['ort_ms']:.2f} ({r['edgetune_ms'] / r['ort_ms']:.2f}x)"
        elif "ort_ms" in r:
            lat = f"- / {r['ort_ms']:.2f}"
        else:
            lat = "-"
        if "float_ops" in r:
            tot = sum(r["plan_ops"].values())
            fl = sum(r["float_ops"].values())
            kinds = ", ".join(f"{k} {c}" for k, c in r["float_ops"].items())
            fops = f"{fl} of {tot}" + (f" ({kinds})" if kinds else "")
        else:
            fops = "-"
        if "cosine_float_min" in r:
            cf = f"{r['cosine_float_min']:.4f} / {r['ort_cosine_float_min']:.4f}"
        else:
            cf = "-"
        if "cosine_noopt_min" in r:
            cn = f"{r['cosine_noopt_min']:.4f} / {r['ort_opt_cosine_noopt_min']:.4f}"
        else:
            cn = "-"
        if "top1_of" in r:
            t1 = f"{r['top1_agree']}/{r['top1_of']} (ORT optimised {r['ort_opt_top1_agree']}/{r['top1_of']})"
        else:
            t1 = "-"
        n_in = str(r.get("n_inputs", "-"))
        rows.append(f"| {r['name']} | {r['producer']} | {r['quantisation']} | {cell_compiles(r)} | "
                    f"{n_in} | {cn} | {t1} | {cos} | {cf} | {lat} | {fops} |")
    rows += ["", "`edgetune compile --check` per model (its closing line):", ""]
    for r in results:
        rows.append(f"- {r['name']}: " + r.get("check_summary", "-").replace(CORPUS + "/", ""))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--bin", default=os.environ.get("EDGETUNE_BIN"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per latency median")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds of edgetune and onnxruntime; each side's best median counts")
    ap.add_argument("--calibrate", action="store_true",
                    help="compile float entries that have calib/ (tools/corpus/calib.py) with --calibrate")
    ap.add_argument("--calibrate-range", default="minmax",
                    help="edgetune compile --calibrate-range: minmax or percentile:P")
    a = ap.parse_args()
    if not a.bin or not os.access(a.bin, os.X_OK):
        sys.exit(f"no edgetune binary at {a.bin!r}: pass --bin or set EDGETUNE_BIN")
    names = a.names or sorted(n for n in os.listdir(CORPUS) if os.path.exists(os.path.join(CORPUS, n, "meta.json")))
    out = a.out or os.path.join(os.path.dirname(CORPUS), "corpus-runs",
                                datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(out, exist_ok=True)
    core = pin()
    results = []
    for n in names:
        print(f"== {n}", flush=True)
        try:
            r = measure(a.bin, n, out, a.runs, core, a.calibrate, a.calibrate_range, a.rounds)
        except Exception as e:  # the runner's own failure on one model must not stop the rest
            r = {"name": n, "producer": "?", "quantisation": "?", "compiles": False,
                 "first_error": f"runner: {type(e).__name__}: {e}"}
        results.append(r)
        print("   compiles:", cell_compiles(r), "| cosine:", r.get("cosine_min"),
              "| ms:", r.get("edgetune_ms"), "/", r.get("ort_ms"), flush=True)
        if not r.get("check_ok", True):
            print("   --check:\n" + "\n".join("     " + l for l in r["check_output"].splitlines()), flush=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"bin": a.bin, "corpus": CORPUS, "results": results}, f, indent=1)
    t = table(results)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(t + "\n")
    print("\n" + t)
    print(f"\nlogs, results.json and table.md in {out}")


if __name__ == "__main__":
    main()
