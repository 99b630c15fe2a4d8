// The shared suite on Deno, through the `./deno` entry point (reads the wasm file: --allow-read).
import * as api from "../../dist/deno.js";
import { cases } from "../suite.js";

const vectors = JSON.parse(await Deno.readTextFile(new URL("../../../../testdata/original-tokens.json", import.meta.url)));

for (const { name, fn } of cases(api, vectors)) Deno.test(name, fn);
