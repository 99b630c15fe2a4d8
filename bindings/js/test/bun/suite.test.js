// The shared suite on Bun, through the package's own exports map (the `bun` condition), on both
// backends (Bun's own Ed25519 by default, and the wasm one).
import { test } from "bun:test";
import { readFileSync } from "node:fs";
import * as api from "@pulsebeam/server";
import { allCases } from "../suite.js";

const read = (url) => JSON.parse(readFileSync(url, "utf8"));
const vectors = read(new URL("../../../../testdata/original-tokens.json", import.meta.url));
vectors.hostile = read(new URL("../hostile-tokens.json", import.meta.url));

for (const { name, fn } of allCases(api, vectors, "node:crypto")) test(name, fn);
