// Starts and stops what the end-to-end tests need: the `pulsebeam dev` server, coturn, and
// headless Chromium. Every process started here is killed when the test ends, pass or fail.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/** How the dev server is started: `PULSEBEAM_DEV_BIN` (+ `PULSEBEAM_DEV_SUBCOMMAND`, e.g. `dev`). */
function devCommand() {
  const bin = process.env.PULSEBEAM_DEV_BIN ?? path.join(repoRoot, 'target/debug/pulsebeam');
  const sub = process.env.PULSEBEAM_DEV_SUBCOMMAND ?? 'dev';
  return { bin, args: sub ? [sub] : [] };
}

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  // The tests run with loopback only: let WebRTC use it, and show raw addresses (no mDNS names).
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/** A temporary directory removed by `cleanup`. */
export function tempDir(t, prefix) {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A TCP/UDP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function stopProcess(child, name) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(killer);
      resolve();
    });
    if (!child.kill('SIGTERM')) {
      clearTimeout(killer);
      resolve();
    }
  }).catch((err) => console.error(`stopping ${name}: ${err.message}`));
}

// Whatever happens to the test runner (a timeout, an uncaught error), nothing outlives it.
const liveChildren = new Set();
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

/** Spawns a process, keeps its output for failure messages, and kills it when the test ends. */
function spawnTracked(t, name, bin, args, options = {}) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  const output = [];
  const keep = (chunk) => {
    output.push(chunk.toString());
    if (output.length > 400) output.shift();
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('error', (err) => output.push(`cannot start ${name} (${bin}): ${err.message}\n`));
  t.after(() => stopProcess(child, name));
  return { child, output: () => output.join('') };
}

/**
 * Starts `pulsebeam dev --port 0` with a fresh state directory and resolves to `{ url, output }`
 * once it prints the URL it bound. `turn`: `{ url, secret }`; `turnStatsRedis`: the Redis URL
 * coturn publishes its statistics to; `storeRedis`: a Redis URL for the mailboxes; `stateDir`:
 * a state directory (so a key) shared with another dev server.
 */
export async function startDev(t, { turn, turnStatsRedis, storeRedis, stateDir } = {}) {
  const { bin, args } = devCommand();
  const all = [...args, '--port', '0', '--state-dir', stateDir ?? tempDir(t, 'pulsebeam-dev-state-')];
  if (turnStatsRedis) all.push('--turn-stats-redis', turnStatsRedis);
  if (storeRedis) all.push('--store-redis', storeRedis);
  const env = { ...process.env, RUST_LOG: 'warn' };
  delete env.PULSEBEAM_TURN_SECRET;
  if (turn) {
    // The secret goes through the environment, not argv, as the CLI recommends.
    all.push('--turn-url', turn.url);
    env.PULSEBEAM_TURN_SECRET = turn.secret;
  }
  const proc = spawnTracked(t, 'pulsebeam dev', bin, all, { env });
  const url = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`pulsebeam dev printed no URL within 30 s:\n${proc.output()}`)), 30_000);
    const onData = (chunk) => {
      seen += chunk.toString();
      const match = seen.match(/listening on (http:\/\/\S+?)\/?\s/);
      if (match) {
        clearTimeout(timer);
        proc.child.stdout.off('data', onData);
        resolve(match[1]);
      }
    };
    proc.child.stdout.on('data', onData);
    proc.child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`pulsebeam dev exited (${code ?? signal}) before listening:\n${proc.output()}`));
    });
  });
  return { url, output: proc.output, child: proc.child };
}

async function waitForTcp(port, deadlineMs, isAlive) {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (!isAlive()) return false;
    const ok = await new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

/** Starts coturn on 127.0.0.1 with `static-auth-secret` and resolves to `{ port, url }`. */
export async function startCoturn(t, { secret, redisStatsPort, maxAllocateLifetime }) {
  const dir = tempDir(t, 'pulsebeam-coturn-');
  const port = await freePort();
  const conf = path.join(dir, 'turnserver.conf');
  writeFileSync(
    conf,
    [
      `listening-port=${port}`,
      'listening-ip=127.0.0.1',
      'relay-ip=127.0.0.1',
      'min-port=49152',
      'max-port=65535',
      'use-auth-secret',
      `static-auth-secret=${secret}`,
      'realm=pulsebeam.test',
      'fingerprint',
      'no-tls',
      'no-dtls',
      'no-cli',
      'no-multicast-peers',
      'allow-loopback-peers',
      'no-stdout-log',
      `log-file=${path.join(dir, 'turn.log')}`,
      `pidfile=${path.join(dir, 'turn.pid')}`,
      `userdb=${path.join(dir, 'turndb')}`,
      'simple-log',
      'verbose',
      ...(redisStatsPort ? [`redis-statsdb="ip=127.0.0.1 port=${redisStatsPort} dbname=0 connect_timeout=5"`] : []),
      // Short lifetimes make an allocation a closing browser leaves behind expire (and be reported)
      // within seconds; clients refresh them in time while they use them.
      ...(maxAllocateLifetime ? [`max-allocate-lifetime=${maxAllocateLifetime}`] : []),
      '',
    ].join('\n'),
  );
  const proc = spawnTracked(t, 'coturn', 'turnserver', ['-c', conf]);
  const up = await waitForTcp(port, 15_000, () => proc.child.exitCode === null);
  if (!up) throw new Error(`coturn did not start listening on 127.0.0.1:${port}:\n${proc.output()}`);
  return { port, url: `turn:127.0.0.1:${port}?transport=udp`, logDir: dir };
}

/** Starts a throwaway redis-server on a free loopback port (no persistence): `{ port, url }`. */
export async function startRedis(t) {
  const dir = tempDir(t, 'pulsebeam-redis-');
  const port = await freePort();
  const proc = spawnTracked(t, 'redis-server', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
  ]);
  const up = await waitForTcp(port, 15_000, () => proc.child.exitCode === null);
  if (!up) throw new Error(`redis-server did not start listening on 127.0.0.1:${port}:\n${proc.output()}`);
  return { port, url: `redis://127.0.0.1:${port}` };
}

/**
 * Subscribes to `pattern` on the Redis at `port` with `redis-cli psubscribe`; resolves once
 * subscribed to `{ messages }`, an array that fills with `{ channel, message }` as they come.
 */
export async function psubscribe(t, port, pattern) {
  const proc = spawnTracked(t, 'redis-cli psubscribe', 'redis-cli', ['-p', String(port), 'psubscribe', pattern]);
  const messages = [];
  let lines = [];
  let rest = '';
  let subscribed;
  const ready = new Promise((resolve) => {
    subscribed = resolve;
  });
  proc.child.stdout.on('data', (chunk) => {
    const text = rest + chunk.toString();
    const parts = text.split('\n');
    rest = parts.pop();
    for (const line of parts) {
      lines.push(line);
      if (lines[0] === 'psubscribe' && lines.length === 3) {
        lines = [];
        subscribed();
      } else if (lines[0] === 'pmessage' && lines.length === 4) {
        messages.push({ channel: lines[2], message: lines[3] });
        lines = [];
      } else if (lines[0] !== 'psubscribe' && lines[0] !== 'pmessage') {
        lines = [];
      }
    }
  });
  const timer = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`redis-cli did not subscribe within 10 s:\n${proc.output()}`)), 10_000).unref(),
  );
  await Promise.race([ready, timer]);
  return { messages };
}

/**
 * Launches headless Chromium (Debian's) with a fake camera; closed when the test ends.
 * `args`: more command-line switches, e.g. `--ignore-certificate-errors` for a throwaway cert.
 */
export async function launchBrowser(t, { args = [] } = {}) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...args], timeout: 30_000 });
  t.after(() => browser.close().catch(() => {}));
  return browser;
}

const dumps = new WeakMap();

/** Runs a test body; when it fails, prints every page's log before rethrowing. */
export async function withPageLogs(t, body) {
  try {
    await body();
  } catch (err) {
    for (const dump of dumps.get(t) ?? []) await dump();
    throw err;
  }
  if (process.env.E2E_VERBOSE) for (const dump of dumps.get(t) ?? []) await dump();
}

/**
 * Opens the demo page as one peer in its own browser context. Query: groupId, peerId, connect,
 * allow, relay, transport, server... The tests written before the page spoke gRPC-web test
 * Twirp, so `transport` is `twirp` unless given; `transport: null` leaves the page's default.
 * `beforeLoad(page)` runs before the page is loaded, e.g. to watch its first requests.
 */
export async function openPeer(t, browser, baseUrl, query, { beforeLoad } = {}) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const logs = [];
  page.on('console', (msg) => logs.push(`[${query.peerId} console] ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`[${query.peerId} pageerror] ${err.message}`));
  const dump = async () => {
    const pageLog = await page.locator('#log').innerText({ timeout: 1000 }).catch(() => '(no log)');
    console.error(`--- ${query.peerId} page log ---\n${pageLog}\n${logs.join('\n')}`);
  };
  if (!dumps.has(t)) dumps.set(t, []);
  dumps.get(t).push(dump);
  t.after(() => context.close().catch(() => {}));
  const all = { groupId: 'default', autostart: '1', transport: 'twirp', ...query };
  if (all.transport === null) delete all.transport;
  const params = new URLSearchParams(all);
  beforeLoad?.(page);
  await page.goto(`${baseUrl}/?${params}`);
  return page;
}

/** Waits until the page's overall status has `data-state` = state. */
export async function waitForState(page, state, timeout = 30_000) {
  await page.waitForSelector(`#status[data-state="${state}"]`, { timeout });
}

/** The page's status line and error text, for assertion messages. */
export async function describe(page) {
  const status = await page.locator('#status').innerText().catch(() => '?');
  const error = await page.locator('#error').innerText().catch(() => '');
  return `status: ${status}; error: ${error}`;
}

/**
 * The `pulsebeam` binary: `PULSEBEAM_BIN`, else `PULSEBEAM_DEV_BIN` when it is the CLI (its dev
 * subcommand is `dev`), else the workspace's debug build.
 */
export function pulsebeamBin() {
  if (process.env.PULSEBEAM_BIN) return process.env.PULSEBEAM_BIN;
  const { bin, args } = devCommand();
  return args[0] === 'dev' ? bin : path.join(repoRoot, 'target/debug/pulsebeam');
}

/**
 * Starts `pulsebeam serve --config FILE` and resolves once it accepts connections on every
 * port of `ports` (its `listen` and `admin.listen`); killed when the test ends.
 */
export async function startServe(t, configFile, ports) {
  const env = { ...process.env, RUST_LOG: 'warn' };
  const proc = spawnTracked(t, 'pulsebeam serve', pulsebeamBin(), ['serve', '--config', configFile], { env });
  for (const port of ports) {
    const up = await waitForTcp(port, 30_000, () => proc.child.exitCode === null);
    if (!up) throw new Error(`pulsebeam serve did not listen on 127.0.0.1:${port} within 30 s:\n${proc.output()}`);
  }
  return { output: proc.output, child: proc.child };
}

/** A fresh project key from `pulsebeam keygen --json`: `{ api_key, api_secret, public_key }`. */
export function keygen() {
  return JSON.parse(execFileSync(pulsebeamBin(), ['keygen', '--json'], { encoding: 'utf8' }));
}

/** Mints a token with `pulsebeam create-token`; rejects with the CLI's error. */
export function mintToken(keys, { groupId, peerId, allow = `${groupId}:*`, duration = '10m' }) {
  return new Promise((resolve, reject) => {
    execFile(
      pulsebeamBin(),
      ['create-token', '--api-key', keys.api_key, '--group-id', groupId, '--peer-id', peerId, '--allow-policy', allow, '--duration', duration, '--quiet'],
      { encoding: 'utf8', env: { ...process.env, PULSEBEAM_API_SECRET: keys.api_secret } },
      (err, stdout, stderr) => (err ? reject(new Error(stderr.trim() || err.message)) : resolve(stdout.trim())),
    );
  });
}

/** A throwaway self-signed certificate for 127.0.0.1 and localhost: `{ cert, key }` file paths. */
export function selfSignedCert(t) {
  const dir = tempDir(t, 'pulsebeam-cert-');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'pipe' });
  return { cert, key };
}

const ASSETS = path.join(repoRoot, 'crates/pulsebeam-dev/assets');
const ASSET_TYPES = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.html': 'text/html; charset=utf-8' };

/**
 * Serves the demo page (from the dev crate's assets, as `pulsebeam dev` embeds them) and an
 * `/auth` that mints tokens of `keys` with `pulsebeam create-token`, on 127.0.0.1: the page for
 * a `pulsebeam serve` (pass it `server=<its origin>`), which serves no page of its own.
 * Resolves to the page server's URL; stopped when the test ends.
 */
export async function startPageServer(t, keys) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const reply = (status, type, body) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-cache' });
      res.end(body);
    };
    if (url.pathname === '/auth') {
      const groupId = url.searchParams.get('groupId') ?? '';
      const peerId = url.searchParams.get('peerId') ?? '';
      const allow = url.searchParams.get('allow') || '*:*';
      try {
        const token = await mintToken(keys, { groupId, peerId, allow });
        reply(200, 'application/json', JSON.stringify({ groupId, peerId, token }));
      } catch (err) {
        reply(400, 'application/json', JSON.stringify({ code: 'invalid_argument', error: err.message }));
      }
      return;
    }
    const file = url.pathname === '/' ? 'index.html' : url.pathname.match(/^\/demo\/([a-z]+\.(?:js|css))$/)?.[1];
    if (!file) {
      reply(404, 'text/plain', 'not found');
      return;
    }
    try {
      reply(200, ASSET_TYPES[path.extname(file)], readFileSync(path.join(ASSETS, file)));
    } catch {
      reply(404, 'text/plain', 'not found');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  }));
  return `http://127.0.0.1:${server.address().port}`;
}

/** The value of each `name{labels}` sample on a Prometheus page, by its label text. */
export async function metricSamples(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const samples = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels = line.slice(name.length + 1, line.lastIndexOf('}'));
    samples[labels] = Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return samples;
}
