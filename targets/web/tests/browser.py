#!/usr/bin/env python3
"""The demo page in headless Chromium against the native CLI.

Serves the built page (targets/web/build.sh) on localhost, drives Chromium through
chromedriver's WebDriver HTTP API (Python's standard library only), and in the page
enrols the bundled photos 0-2 of each class, trains, and predicts photos 3-4. The native
CLI does the same with `adapt` and `predict --json` on the same plan, method and seed.
Asserts the predicted classes are equal (the ranking of every class) and the scores
close (the two decode the JPEGs with different decoders), and prints the latency per
image of the page beside the CLI's.

usage: browser.py [--method linear]
"""

import argparse
import functools
import http.server
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/edgetune-target"))
OUT = TARGET / "web"
CLI = pathlib.Path(os.environ.get("EDGETUNE_CLI", TARGET / "release" / "edgetune"))
PHOTOS = REPO / "examples" / "data" / "photos"
TRAIN, QUERY = (0, 1, 2), (3, 4)
# Scores of the page and the CLI: the same plan, adapter method and seed, on pixels from
# two JPEG decoders (Chromium's and the `image` crate's), which differ by a few levels.
SCORE_TOL = 0.05


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(directory):
    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                          ".wasm": "application/wasm", ".js": "text/javascript"}

        def log_message(self, *a):
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(Handler, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, port


class WebDriver:
    """The few WebDriver commands the test needs, over HTTP."""

    def __init__(self, driver, browser):
        self.port = free_port()
        self.proc = subprocess.Popen([driver, f"--port={self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self._req("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        self.profile = tempfile.mkdtemp(prefix="edgetune-chromium-")
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={self.profile}"]},
            "timeouts": {"script": 600_000, "pageLoad": 60_000},
        }}}
        self.sid = self._req("POST", "/session", caps)["sessionId"]

    def _req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=700) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {path}: {e.read().decode()[:2000]}") from None

    def get(self, url):
        self._req("POST", f"/session/{self.sid}/url", {"url": url})

    def run_async(self, script, *args):
        return self._req("POST", f"/session/{self.sid}/execute/async", {"script": script, "args": list(args)})

    def browser_version(self):
        return self._req("GET", "/status").get("build", {}).get("version", "?")

    def quit(self):
        try:
            self._req("DELETE", f"/session/{self.sid}")
        finally:
            self.proc.terminate()
            self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)


# Runs in the page: the enrolments in the CLI's order (classes sorted, files sorted),
# the fit, then the predictions; returns everything as JSON.
PAGE_FLOW = """
const [method, train, query, done] = arguments;
(async () => {
  const api = window.edgetune;
  await window.edgetuneReady;
  const info = await api.open(method);
  const enrol = [];
  for (const [url, label] of train) enrol.push(await api.enrolUrl(url, label));
  const fit = await api.fit(0);
  // The progress bar, as the worker's progress messages left it.
  await new Promise((r) => setTimeout(r, 100));
  fit.bar = [document.getElementById("bar").value, document.getElementById("bar").max];
  // Twice over: the second pass times code the engine has already optimised; each
  // image's latency is the lower of its two.
  const preds = [];
  for (const url of query) preds.push(await api.predictUrl(url, 4));
  for (const [i, url] of query.entries()) {
    const again = await api.predictUrl(url, 4);
    if (JSON.stringify(again.top) !== JSON.stringify(preds[i].top)) throw new Error(`${url}: two predictions differ`);
    preds[i].ms = Math.min(preds[i].ms, again.ms);
    preds[i].decode_ms = Math.min(preds[i].decode_ms, again.decode_ms);
  }
  done({ ok: true, info, enrol, fit, preds, agent: navigator.userAgent });
})().catch((e) => done({ ok: false, error: String(e && e.stack || e) }));
"""


def native(method, classes, plan, tmp):
    train = tmp / "train"
    for c in classes:
        (train / c).mkdir(parents=True)
        for i in TRAIN:
            (train / c / f"{i}.jpg").symlink_to(PHOTOS / c / f"{i}.jpg")
    adapter = tmp / "native.eta"
    subprocess.run([str(CLI), "adapt", "--plan", str(plan), "--train", str(train), "--method", method,
                    "--seed", "0", "--json", "-o", str(adapter)], check=True, capture_output=True)
    files = [PHOTOS / c / f"{i}.jpg" for c in classes for i in QUERY]
    # One thread, as in the page; every image twice, its latency the lower of the two.
    out = subprocess.run([str(CLI), "--threads", "1", "predict", "--plan", str(plan), "--adapter", str(adapter),
                          "--top", "4", "--json"] + [str(f) for f in files * 2],
                         check=True, capture_output=True, text=True).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.strip()]
    assert len(lines) == 2 * len(files), out
    first, second = lines[:len(files)], lines[len(files):]
    for a, b in zip(first, second):
        assert a["top"] == b["top"], (a, b)
        # A CLI from before `predict --json` reported "ms" has no latency to show.
        a["ms"] = min(a.get("ms", float("nan")), b.get("ms", float("nan")))
    return first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="linear")
    args = ap.parse_args()
    for what, path in [("page (targets/web/build.sh)", OUT / "index.html"), ("plan", OUT / "plan.etm"),
                       ("CLI", CLI)]:
        if not path.exists():
            sys.exit(f"missing {what}: {path}")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        sys.exit("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")

    classes = sorted(d.name for d in PHOTOS.iterdir() if d.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        want = native(args.method, classes, OUT / "plan.etm", tmp)

        site = tmp / "site"
        shutil.copytree(OUT, site)
        shutil.copytree(PHOTOS, site / "photos")
        httpd, port = serve(site)
        wd = WebDriver(driver, browser)
        try:
            wd.get(f"http://127.0.0.1:{port}/index.html")
            train = [[f"photos/{c}/{i}.jpg", c] for c in classes for i in TRAIN]
            query = [f"photos/{c}/{i}.jpg" for c in classes for i in QUERY]
            got = wd.run_async(PAGE_FLOW, args.method, train, query)
        finally:
            wd.quit()
            httpd.shutdown()
    if not got.get("ok"):
        sys.exit(f"page failed: {got.get('error')}")

    print(f"browser: {got['agent']}")
    print(f"page: plan {got['info']['ops']} ops, kernels {got['info']['kernels']}")
    enrol_ms = [e["ms"] for e in got["enrol"]]
    print(f"page: {len(enrol_ms)} enrolled ({sum(enrol_ms) / len(enrol_ms):.1f} ms each in wasm), "
          f"{args.method} trained in the worker: {got['fit']['steps']} steps, {got['fit']['ms']:.0f} ms, "
          f"progress bar {got['fit']['bar'][0]}/{got['fit']['bar'][1]}")
    print(f"{'image':<22} {'native top-1':<22} {'page top-1':<22} {'native ms (1 thread)':>20} "
          f"{'page ms (decode+wasm)':>22}")
    bad = []
    for f, n, p in zip([q for q in (f"{c}/{i}.jpg" for c in classes for i in QUERY)], want, got["preds"]):
        nt, pt = n["top"], p["top"]
        page_ms = p["decode_ms"] + p["ms"]
        print(f"{f:<22} {nt[0]['class'] + ' ' + format(nt[0]['score'], '.4f'):<22} "
              f"{pt[0]['class'] + ' ' + format(pt[0]['score'], '.4f'):<22} {n['ms']:>20.1f} "
              f"{page_ms:>10.1f} ({p['decode_ms']:.1f}+{p['ms']:.1f})")
        if [t["class"] for t in nt] != [t["class"] for t in pt]:
            bad.append(f"{f}: ranking {[t['class'] for t in pt]} in the page, {[t['class'] for t in nt]} native")
        worst = max(abs(a["score"] - b["score"]) for a, b in zip(nt, pt))
        if worst > SCORE_TOL:
            bad.append(f"{f}: scores differ by {worst:.4f} (> {SCORE_TOL})")
    if args.method != "ncm" and got["fit"]["bar"] != [got["fit"]["steps"]] * 2:
        bad.append(f"progress bar at {got['fit']['bar']} after {got['fit']['steps']} steps")
    nat = [n["ms"] for n in want]
    pag = [p["decode_ms"] + p["ms"] for p in got["preds"]]
    wasm = [p["ms"] for p in got["preds"]]
    print(f"mean per image: native {sum(nat) / len(nat):.1f} ms; page {sum(pag) / len(pag):.1f} ms "
          f"(wasm {sum(wasm) / len(wasm):.1f} ms)")
    if bad:
        sys.exit("page and CLI disagree:\n  " + "\n  ".join(bad))
    print(f"browser test passed: {len(want)} predictions equal to the CLI's ({args.method})")


if __name__ == "__main__":
    main()
