// The shared suite on Deno, through the `./deno` entry point (reads the wasm file: --allow-read),
// on both backends (Deno's own Ed25519 by default, and the wasm one).
import * as api from "../../dist/deno.js";
import { allCases } from "../suite.js";

const read = async (url) => JSON.parse(await Deno.readTextFile(url));
const vectors = await read(new URL("../../../../testdata/original-tokens.json", import.meta.url));
vectors.hostile = await read(new URL("../hostile-tokens.json", import.meta.url));

for (const { name, fn } of allCases(api, vectors, "node:crypto")) Deno.test(name, fn);
