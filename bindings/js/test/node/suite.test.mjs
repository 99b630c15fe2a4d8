// The shared suite on Node, through the package's own exports map (`@pulsebeam/server/node`).
import { test } from "node:test";
import { readFileSync } from "node:fs";
import * as api from "@pulsebeam/server/node";
import { cases } from "../suite.js";

const vectors = JSON.parse(readFileSync(new URL("../../../../testdata/original-tokens.json", import.meta.url), "utf8"));

for (const { name, fn } of cases(api, vectors)) test(name, fn);
