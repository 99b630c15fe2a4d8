// The shared suite on Node, through the package's own exports map (`@pulsebeam/server/node`), on
// both backends (Node's own Ed25519 by default, and the wasm one).
import { test } from "node:test";
import { readFileSync } from "node:fs";
import * as api from "@pulsebeam/server/node";
import { allCases } from "../suite.js";

const read = (url) => JSON.parse(readFileSync(url, "utf8"));
const vectors = read(new URL("../../../../testdata/original-tokens.json", import.meta.url));
vectors.hostile = read(new URL("../hostile-tokens.json", import.meta.url));

for (const { name, fn } of allCases(api, vectors, "node:crypto")) test(name, fn);
