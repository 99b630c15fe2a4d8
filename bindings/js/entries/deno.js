/* @ts-self-types="./api.d.ts" */
// Deno: read the WebAssembly file next to this module (needs read permission for a local
// install), or fetch it when the package is served over HTTP(S) (JSR).
import { initSync } from "./pulsebeam.js";

const wasmUrl = new URL("./pulsebeam_bg.wasm", import.meta.url);
const wasmBytes = wasmUrl.protocol === "file:"
  ? await Deno.readFile(wasmUrl)
  : new Uint8Array(await (await fetch(wasmUrl)).arrayBuffer());
initSync({ module: wasmBytes });

export * from "./api.js";
