// Runs a wasm32-wasip1 program under Node's WASI (the cargo runner for that target:
// `CARGO_TARGET_WASM32_WASIP1_RUNNER="node tools/wasi_run.mjs"`). Arguments and the
// environment pass through; the working directory is the program's `.`; the exit code
// is the program's.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const [file, ...args] = process.argv.slice(2);
if (!file) {
  console.error("usage: node wasi_run.mjs PROGRAM.wasm [ARGS...]");
  process.exit(2);
}
const wasi = new WASI({
  version: "preview1",
  args: [file, ...args],
  env: process.env,
  preopens: { ".": process.cwd() },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
