// The shared suite on Bun, through the package's own exports map (the `bun` condition).
import { test } from "bun:test";
import { readFileSync } from "node:fs";
import * as api from "@pulsebeam/server";
import { cases } from "../suite.js";

const vectors = JSON.parse(readFileSync(new URL("../../../../testdata/original-tokens.json", import.meta.url), "utf8"));

for (const { name, fn } of cases(api, vectors)) test(name, fn);
