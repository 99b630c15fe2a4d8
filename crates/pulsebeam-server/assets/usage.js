// The usage page: asks for the admin token, then draws each project's last hour on this node
// from the admin API. Charts are plain SVG drawn here; nothing is loaded from elsewhere.
'use strict';

const REFRESH_MS = 5000;
const MINUTES = 60;
const TOKEN_KEY = 'pulsebeam-admin-token';
const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 320;
const HEIGHT = 120;
const LEFT = 40; // room for the y-axis labels
const TOP = 8;
const BOTTOM = 4;

const $ = (id) => document.getElementById(id);
let timer = null;
// Bumped when the token changes, so that answers to an older token are ignored.
let generation = 0;

class WrongToken extends Error {}

function setStatus(state, text) {
  const status = $('status');
  status.dataset.state = state;
  status.textContent = text;
}

async function api(path, token) {
  const response = await fetch(path, { headers: { authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (response.status === 401) throw new WrongToken();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ?? `the admin API answered ${response.status}`);
  return body;
}

const count = (n) => n.toLocaleString('en-US');

function bytes(n) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

const clock = (unix) => new Date(unix * 1000).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });

/** The smallest 1, 2 or 5 times a power of ten at or above `n` (at least 1). */
function niceMax(n) {
  if (n <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 5, 10]) if (step * power >= n) return step * power;
  return 10 * power;
}

function svg(name, attributes = {}, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/**
 * Draws `values` (one per minute, oldest first) into `target` as bars, or as a stepped area
 * when `kind` is 'area'. `describe(value, minute)` labels one minute for its tooltip.
 */
function drawChart(target, { values, minutes, kind, format, describe, summary }) {
  const max = Math.max(0, ...values);
  const top = niceMax(max);
  const plotWidth = WIDTH - LEFT;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const y = (v) => TOP + plotHeight - (v / top) * plotHeight;
  const step = plotWidth / values.length;
  const chart = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': summary });
  chart.append(svg('title', {}, summary));
  for (const fraction of [0, 0.5, 1]) {
    const v = top * fraction;
    chart.append(svg('line', { class: 'grid', x1: LEFT, x2: WIDTH, y1: y(v), y2: y(v) }));
    // Counts and bytes are whole: a half-way tick that is not is left unlabelled.
    if (Number.isInteger(v)) chart.append(svg('text', { class: 'tick', x: LEFT - 6, y: y(v) + 3, 'text-anchor': 'end' }, format(v)));
  }
  if (kind === 'area') {
    let line = `M ${LEFT} ${y(values[0] ?? 0)}`;
    values.forEach((v, i) => {
      line += ` H ${LEFT + i * step} V ${y(v)} H ${LEFT + (i + 1) * step}`;
    });
    const area = `${line} V ${y(0)} H ${LEFT} Z`;
    chart.append(svg('path', { class: 'area', d: area }));
    chart.append(svg('path', { class: 'line', d: line }));
  }
  values.forEach((v, i) => {
    // Bars, or (for areas) invisible columns that carry each minute's tooltip.
    const height = kind === 'area' ? plotHeight : Math.max(v > 0 ? 1.5 : 0, y(0) - y(v));
    const bar = svg('rect', {
      class: kind === 'area' ? 'hit' : 'bar',
      x: LEFT + i * step + 0.5,
      y: kind === 'area' ? TOP : y(0) - height,
      width: Math.max(step - 1, 0.5),
      height,
    });
    bar.append(svg('title', {}, `${clock(minutes[i])}: ${describe(v)}`));
    chart.append(bar);
  });
  if (max === 0) {
    chart.append(svg('text', { class: 'empty', x: LEFT + plotWidth / 2, y: TOP + plotHeight / 2, 'text-anchor': 'middle' }, 'no traffic yet'));
  }
  target.replaceChildren(chart);
}

function card(kind, label) {
  const figure = document.createElement('figure');
  figure.className = 'card';
  figure.dataset.chart = kind;
  figure.innerHTML = `<figcaption><span class="label"></span><span class="value" data-raw="0">0</span><span class="detail"></span></figcaption>
    <div class="plot"></div>
    <div class="axis" aria-hidden="true"><span>${MINUTES} min ago</span><span>now</span></div>`;
  figure.querySelector('.label').textContent = label;
  return figure;
}

function projectSection(id) {
  const section = document.createElement('section');
  section.className = 'project';
  section.dataset.project = id;
  const heading = document.createElement('h2');
  heading.id = `project-${encodeURIComponent(id).replace(/%/g, '_')}`;
  heading.textContent = id;
  section.setAttribute('aria-labelledby', heading.id);
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.textContent = 'No traffic yet';
  const head = document.createElement('div');
  head.className = 'project-head';
  head.append(heading, badge);
  const charts = document.createElement('div');
  charts.className = 'charts';
  charts.append(card('online', 'Connections online'), card('messages', 'Messages per minute'), card('turn', 'TURN relay bytes per minute'));
  section.append(head, charts);
  return section;
}

function setValue(section, kind, raw, text, detail) {
  const figure = section.querySelector(`[data-chart="${kind}"]`);
  const value = figure.querySelector('.value');
  value.dataset.raw = String(raw);
  value.textContent = text;
  figure.querySelector('.detail').textContent = detail;
  return figure.querySelector('.plot');
}

function renderProject(section, data) {
  const rows = data.minutes;
  const minutes = rows.map((m) => m.minute);
  const sum = (field) => rows.reduce((total, m) => total + m[field], 0);
  const online = rows.map((m) => m.online);
  const messages = rows.map((m) => m.messages);
  const relay = rows.map((m) => m.turn_relay_bytes);
  const peak = Math.max(0, ...online);
  const totalMessages = sum('messages');
  const totalBytes = sum('message_bytes');
  const totalRelay = sum('turn_relay_bytes');
  const credentials = sum('turn_credentials');
  const quiet = data.online_now === 0 && peak === 0 && totalMessages === 0 && totalRelay === 0 && credentials === 0 && sum('calls') === 0;
  section.dataset.empty = String(quiet);
  section.querySelector('.badge').hidden = !quiet;
  const span = `the last ${rows.length} minutes`;

  drawChart(setValue(section, 'online', data.online_now, count(data.online_now), `now; at most ${count(peak)} at once in ${span}`), {
    values: online,
    minutes,
    kind: 'area',
    format: count,
    describe: (v) => `${count(v)} online at most`,
    summary: `Connections online in project ${data.project} over ${span}: ${count(data.online_now)} now, at most ${count(peak)} at once.`,
  });
  drawChart(setValue(section, 'messages', totalMessages, count(totalMessages), `in ${span}; ${bytes(totalBytes)}`), {
    values: messages,
    minutes,
    kind: 'bars',
    format: count,
    describe: (v) => `${count(v)} messages`,
    summary: `Messages per minute in project ${data.project} over ${span}: ${count(totalMessages)} in total, at most ${count(Math.max(0, ...messages))} in one minute.`,
  });
  drawChart(setValue(section, 'turn', totalRelay, bytes(totalRelay), `relayed in ${span}; ${count(credentials)} TURN credential${credentials === 1 ? '' : 's'} issued`), {
    values: relay,
    minutes,
    kind: 'bars',
    format: bytes,
    describe: (v) => `${bytes(v)} relayed`,
    summary: `TURN relay bytes per minute in project ${data.project} over ${span}: ${bytes(totalRelay)} in total; ${count(credentials)} credentials issued.`,
  });
}

function render(all) {
  const main = $('projects');
  const seen = new Set();
  for (const data of all) {
    seen.add(data.project);
    let section = [...main.children].find((s) => s.dataset.project === data.project);
    if (!section) {
      section = projectSection(data.project);
      main.append(section);
    }
    renderProject(section, data);
  }
  for (const section of [...main.children]) if (!seen.has(section.dataset.project)) section.remove();
}

function schedule() {
  clearTimeout(timer);
  // A tab in the background asks nothing; it refreshes when shown again.
  if (!document.hidden) timer = setTimeout(refresh, REFRESH_MS);
}

function showLogin(show) {
  $('login').classList.toggle('signed-in', !show);
  $('forget').hidden = show;
}

async function refresh() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    showLogin(true);
    setStatus('need-token', 'Enter the admin token to see usage.');
    return;
  }
  const mine = generation;
  try {
    // Every project in one call: each admin call is audited, so one per refresh.
    const { projects: all } = await api(`/admin/v1/usage/minutes?minutes=${MINUTES}`, token);
    if (mine !== generation) return;
    showLogin(false);
    render(all);
    setStatus(
      'ok',
      all.length === 0
        ? 'No project is configured.'
        : `Updated at ${new Date().toLocaleTimeString('en-GB')}: ${all.length} project${all.length === 1 ? '' : 's'}.`,
    );
    schedule();
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof WrongToken) {
      sessionStorage.removeItem(TOKEN_KEY);
      $('projects').replaceChildren();
      showLogin(true);
      setStatus('wrong-token', 'Wrong admin token: the server refused it. Enter the token whose SHA-256 is admin.token_sha256 in the configuration.');
      $('token').focus();
      return;
    }
    setStatus('error', `Cannot load usage (${err.message}); trying again in ${REFRESH_MS / 1000} s.`);
    schedule();
  }
}

function start() {
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    if (!token) {
      setStatus('need-token', 'Enter the admin token to see usage.');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    generation += 1;
    setStatus('loading', 'Loading usage…');
    refresh();
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    generation += 1;
    clearTimeout(timer);
    $('projects').replaceChildren();
    refresh();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && sessionStorage.getItem(TOKEN_KEY)) refresh();
  });
  refresh();
}

start();
