/* @ts-self-types="./api.d.ts" */
// Browsers and bundlers: fetch the WebAssembly file next to this module (bundlers rewrite the
// `new URL(…, import.meta.url)` to the emitted asset) before the module finishes evaluating.
import init from "./pulsebeam.js";

await init({ module_or_path: new URL("./pulsebeam_bg.wasm", import.meta.url) });

export * from "./api.js";
