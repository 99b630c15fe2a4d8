/* @ts-self-types="./api.d.ts" */
// Node.js and Bun: read the WebAssembly file next to this module, synchronously, so the API is
// ready as soon as the import resolves.
import { readFileSync } from "node:fs";
import { initSync } from "./pulsebeam.js";

initSync({ module: readFileSync(new URL("./pulsebeam_bg.wasm", import.meta.url)) });

export * from "./api.js";
