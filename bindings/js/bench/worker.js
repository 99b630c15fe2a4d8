// The benchmark's contenders inside workerd (with nodejs_compat), driven by bench/workerd.mjs:
// GET /run?op=mint&name=…&count=1000 runs one batch. Time inside workerd only moves on I/O, so
// the batches are timed from outside.
import * as crypto from "node:crypto";
import { Buffer } from "node:buffer";
import * as jose from "../node_modules/jose/dist/webapi/index.js";
import * as api from "../dist/workerd.js";
import { contenders, repeat } from "./contenders.js";

let ready;

export default {
  async fetch(request) {
    ready ??= contenders({ api, jose, crypto, Buffer });
    const ops = await ready;
    const url = new URL(request.url);
    if (url.pathname === "/names") {
      return Response.json({ mint: Object.keys(ops.mint), verify: Object.keys(ops.verify), base: ops.base, backend: api.backend });
    }
    const fn = ops[url.searchParams.get("op")]?.[url.searchParams.get("name")];
    const count = Number(url.searchParams.get("count") ?? 0);
    if (fn) await repeat(fn, count);
    return new Response("ok");
  },
};
