// The Web Worker that owns the edgetune session: it loads the WebAssembly module and
// the plan, enrols decoded images, trains (posting each step's progress) and predicts.
// Messages in: {id, op: "open"|"enrol"|"fit"|"predict", ...}; out: {id, ok, result|error}
// and {op: "progress", step, steps, loss, accuracy} during a fit.

let wasm = null;
const enc = new TextEncoder();
const dec = new TextDecoder();

function text(ptr, len) {
  return dec.decode(new Uint8Array(wasm.memory.buffer, ptr, len));
}

function check(rc) {
  if (rc < 0) throw new Error(text(wasm.et_error(), wasm.et_error_len()));
  return rc;
}

function out() {
  return JSON.parse(text(wasm.et_out_ptr(), wasm.et_out_len()));
}

// Copies bytes into a fresh module buffer, runs f(ptr, len), frees the buffer.
function withBytes(bytes, f) {
  const ptr = wasm.et_alloc(bytes.length);
  new Uint8Array(wasm.memory.buffer, ptr, bytes.length).set(bytes);
  try {
    return f(ptr, bytes.length);
  } finally {
    wasm.et_free(ptr, bytes.length);
  }
}

async function open({ module, plan, method }) {
  const imports = {
    env: {
      et_progress: (step, steps, loss, accuracy) => {
        postMessage({ op: "progress", step, steps, loss, accuracy });
        return 0;
      },
    },
  };
  const { instance } = await WebAssembly.instantiateStreaming(fetch(module), imports);
  wasm = instance.exports;
  const planBytes = new Uint8Array(await (await fetch(plan)).arrayBuffer());
  const t0 = performance.now();
  withBytes(planBytes, (pp, pl) =>
    withBytes(enc.encode(method), (mp, ml) => check(wasm.et_open(pp, pl, mp, ml))),
  );
  return { ...out(), plan_bytes: planBytes.length, open_ms: performance.now() - t0 };
}

function enrol({ rgba, width, height, label }) {
  const t0 = performance.now();
  const n = withBytes(rgba, (p) =>
    withBytes(enc.encode(label), (cp, cl) => check(wasm.et_enrol_rgba(p, width, height, cp, cl))),
  );
  return { examples: n, ms: performance.now() - t0 };
}

function fit({ seed }) {
  const t0 = performance.now();
  check(wasm.et_fit(seed >>> 0));
  return { ...out(), ms: performance.now() - t0 };
}

function predict({ rgba, width, height, top }) {
  const t0 = performance.now();
  withBytes(rgba, (p) => check(wasm.et_predict_rgba(p, width, height, top)));
  return { ...out(), ms: performance.now() - t0 };
}

const ops = { open, enrol, fit, predict };

onmessage = async (e) => {
  const { id, op } = e.data;
  try {
    const result = await ops[op](e.data);
    postMessage({ id, ok: true, result });
  } catch (err) {
    postMessage({ id, ok: false, error: String(err && err.message ? err.message : err) });
  }
};
