// The page: decodes images (files, URLs or camera frames) to RGBA with createImageBitmap
// and a canvas, and hands them to the worker that runs edgetune. `window.edgetune` is the
// same API for scripts (the headless browser test drives the page through it).

const $ = (id) => document.getElementById(id);
const worker = new Worker("worker.js");
let nextId = 1;
const pending = new Map();
const counts = new Map();
let trained = false;

worker.onmessage = (e) => {
  const m = e.data;
  if (m.op === "progress") {
    $("bar").max = m.steps;
    $("bar").value = m.step + 1;
    $("fitinfo").textContent = `step ${m.step + 1}/${m.steps} loss ${m.loss.toFixed(4)}`;
    return;
  }
  const p = pending.get(m.id);
  pending.delete(m.id);
  if (m.ok) p.resolve(m.result);
  else p.reject(new Error(m.error));
};

function call(op, args = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}

// RGBA pixels of an image source (Blob, ImageBitmap, video), upright by its EXIF
// orientation as createImageBitmap applies it.
async function rgbaOf(source) {
  const t0 = performance.now();
  const bmp = source instanceof Blob ? await createImageBitmap(source) : source;
  const w = bmp.width || bmp.videoWidth;
  const h = bmp.height || bmp.videoHeight;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  const data = ctx.getImageData(0, 0, w, h).data;
  if (bmp.close) bmp.close();
  return { rgba: new Uint8Array(data.buffer), width: w, height: h, decode_ms: performance.now() - t0 };
}

async function blobOf(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.blob();
}

function log(s) {
  $("log").textContent += s + "\n";
}

function showClasses() {
  $("classes").innerHTML = "";
  for (const [c, n] of counts) {
    const li = document.createElement("li");
    li.textContent = `${c}: ${n} example${n === 1 ? "" : "s"}`;
    $("classes").appendChild(li);
  }
  $("train").disabled = counts.size < 2;
}

let method = "linear";
let opened = null;

async function open(m = $("method").value) {
  method = m;
  counts.clear();
  trained = false;
  showClasses();
  opened = await call("open", { module: "edgetune_web.wasm", plan: "plan.etm", method });
  $("status").textContent =
    `plan: ${opened.ops} ops, ${(opened.plan_bytes / 1e6).toFixed(1)} MB; kernels: ` +
    Object.values(opened.kernels).join(", ") + `; method ${opened.method}`;
  return opened;
}

async function enrol(source, label) {
  const img = await rgbaOf(source);
  const r = await call("enrol", { ...img, label }, [img.rgba.buffer]);
  counts.set(label, (counts.get(label) || 0) + 1);
  showClasses();
  return { ...r, decode_ms: img.decode_ms };
}

async function fit(seed = 0) {
  $("train").disabled = true;
  $("bar").value = 0;
  try {
    const r = await call("fit", { seed });
    trained = true;
    $("fitinfo").textContent = `trained: ${r.steps} steps, ${r.params} parameters, ${r.ms.toFixed(0)} ms`;
    return r;
  } finally {
    $("train").disabled = counts.size < 2;
  }
}

async function predict(source, top = 3) {
  const img = await rgbaOf(source);
  const r = await call("predict", { ...img, top }, [img.rgba.buffer]);
  return { ...r, decode_ms: img.decode_ms };
}

function showPrediction(name, r) {
  const div = document.createElement("div");
  const best = r.top[0];
  div.innerHTML = `${name}: <span class="top"></span> ${r.top
    .slice(1)
    .map((t) => `${t.class} ${t.score.toFixed(3)}`)
    .join(", ")} (${(r.ms + r.decode_ms).toFixed(0)} ms)`;
  div.querySelector(".top").textContent = `${best.class} ${best.score.toFixed(3)}`;
  $("pred").prepend(div);
}

// The API scripts use: URLs in, JSON out.
window.edgetune = {
  open,
  enrolUrl: async (url, label) => enrol(await blobOf(url), label),
  fit,
  predictUrl: async (url, top = 3) => predict(await blobOf(url), top),
};

$("files").onchange = async (e) => {
  const label = $("cls").value.trim();
  if (!label) return alert("name the class first");
  for (const f of e.target.files) {
    try {
      await enrol(f, label);
    } catch (err) {
      log(`${f.name}: ${err.message}`);
    }
  }
  e.target.value = "";
};

$("method").onchange = () => open().catch((e) => log(e.message));
$("train").onclick = () => fit().catch((e) => log(e.message));

$("query").onchange = async (e) => {
  for (const f of e.target.files) {
    try {
      showPrediction(f.name, await predict(f));
    } catch (err) {
      log(`${f.name}: ${err.message}`);
    }
  }
  e.target.value = "";
};

let live = false;
$("camera").onclick = async () => {
  const v = $("video");
  if (!v.srcObject) {
    try {
      v.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
    } catch (err) {
      return log(`camera: ${err.message}`);
    }
    v.hidden = false;
    $("snap").disabled = false;
  }
  live = !live;
  $("camera").textContent = live ? "pause live prediction" : "resume live prediction";
  // Predict frame after frame while live (once the model is trained).
  while (live) {
    if (trained && v.videoWidth) {
      const r = await predict(await createImageBitmap(v), 3);
      $("pred").textContent = `camera: ${r.top[0].class} ${r.top[0].score.toFixed(3)} (${r.ms.toFixed(0)} ms)`;
    } else {
      await new Promise((res) => setTimeout(res, 200));
    }
  }
};

$("snap").onclick = async () => {
  const label = $("cls").value.trim();
  if (!label) return alert("name the class first");
  await enrol(await createImageBitmap($("video")), label).catch((e) => log(e.message));
};

window.edgetuneReady = open().catch((e) => {
  $("status").textContent = `failed: ${e.message}`;
  throw e;
});
