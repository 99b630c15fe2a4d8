/* @ts-self-types="./api.d.ts" */
// Cloudflare Workers (workerd): no filesystem and no fetch of `import.meta.url`, but `.wasm`
// files import as compiled `WebAssembly.Module`s (wrangler's default `CompiledWasm` rule).
import wasmModule from "./pulsebeam_bg.wasm";
import { initSync } from "./pulsebeam.js";

initSync({ module: wasmModule });

export * from "./api.js";
