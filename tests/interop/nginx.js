#!/usr/bin/env node
// The official socket.io-client through nginx in front of several gateways
// (tests/cluster/test_nginx.py decides what is right; this driver only observes).
//
//   HUDDLE_NGINX='{"url": "http://127.0.0.1:8080", "clients": [...], ...}' node nginx.js <scenario>
//
// Each client: {label, token, localAddress, transports: websocket|default|polling,
// extraHeaders}. A source address of its own (127.x.y.z) is a client IP of its
// own: nginx picks its gateway by that address, Huddle charges its buckets to it.
//
// connect: every client connects once (no reconnection) and its outcome is
//   recorded; then {"control": "connected", sids} and, once the test has made
//   its REST writes and answered {"done", value: {taskCreated: n}}, every
//   authenticated client waits for n `task_created` (and, with `default`
//   transports, for the upgrade to WebSocket).
// stream: every client connects and stays, reconnecting as docs/protocol.md
//   tells a client to: on `server_shutdown {retryAfter}` disconnect and come
//   back after retryAfter; on a dropped transport, socket.io's own backoff; each
//   time with `auth: {token, lastEventId}`. Then {"control": "ready"}; the test
//   runs its load and faults and answers with the event ids every socket must
//   hold; each socket is waited for until it holds them. Reported per socket:
//   missing, duplicated and out-of-order ids, errors, and each reconnect's delay.
//
// Output: one JSON line {scenario, ok, result} or {scenario, ok: false, error}.
// Tokens never appear in it.
'use strict';

const http = require('node:http');
const readline = require('node:readline');
const { io } = require('socket.io-client');

const WAIT_MS = 20000; // a handshake during a restart on a loaded 2-core CI machine

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let stdinLines = null;
function nextStdinLine() {
  if (stdinLines === null) {
    stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  }
  return stdinLines.next().then((r) => (r.done ? null : r.value));
}

/** Ask the test to act; resolves with the value it answers. */
async function control(name, extra = {}) {
  await print({ control: name, ...extra });
  for (;;) {
    const line = await nextStdinLine();
    if (line === null) throw new Error(`stdin closed while waiting for control '${name}'`);
    const message = JSON.parse(line);
    if (message.done === name) return message.value;
  }
}

function options(client, extra = {}) {
  const opts = { forceNew: true, timeout: WAIT_MS, ...extra };
  if (client.transports === 'websocket') opts.transports = ['websocket'];
  if (client.transports === 'polling') opts.transports = ['polling'];
  if (client.localAddress) opts.agent = new http.Agent({ localAddress: client.localAddress, keepAlive: true });
  if (client.extraHeaders) opts.extraHeaders = client.extraHeaders;
  // Reconnect straight over WebSocket once an upgrade has worked (docs/operations.md,
  // "Rolling restart": a polling session does not survive its gateway coming back).
  if (client.rememberUpgrade) opts.rememberUpgrade = true;
  return opts;
}

async function waitFor(check, what, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return;
    if (Date.now() > end) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await sleep(20);
  }
}

// --- connect ---------------------------------------------------------------

async function connectOnce(client) {
  const seen = { label: client.label, outcome: null, code: null, sid: null, initial: null, upgradedTo: null, created: [], errors: [] };
  const socket = io(client.url, options(client, { reconnection: false, auth: { token: client.token } }));
  socket.io.on('open', () => {
    const engine = socket.io.engine;
    seen.initial = engine.transport.name;
    engine.on('upgrade', (t) => { seen.upgradedTo = t.name; });
  });
  const outcome = new Promise((resolve) => {
    socket.on('authenticated', () => { seen.sid = socket.id; resolve('authenticated'); });
    socket.on('authentication_error', (e) => { seen.code = e.code; resolve('authentication_error'); });
    socket.on('connect_error', (e) => { seen.errors.push(String(e.message)); resolve('connect_error'); });
    socket.on('disconnect', (reason) => resolve(`disconnect:${reason}`));
    setTimeout(() => resolve('timeout'), WAIT_MS);
  });
  socket.on('task_created', (e) => seen.created.push({ eventId: e.eventId, taskId: e.task.id }));
  socket.on('error', (e) => seen.errors.push(e.code));
  seen.outcome = await outcome;
  return { socket, seen };
}

async function connectScenario(cfg) {
  const all = [];
  // One at a time per source address (so rate-limit outcomes come in attempt order),
  // different addresses at once.
  const byAddress = new Map();
  for (const client of cfg.clients) {
    const key = client.localAddress ?? '';
    if (!byAddress.has(key)) byAddress.set(key, []);
    byAddress.get(key).push(client);
  }
  await Promise.all([...byAddress.values()].map(async (clients) => {
    for (const client of clients) all.push(await connectOnce({ ...client, url: cfg.url }));
  }));
  try {
    const sids = all.filter((c) => c.seen.sid).map((c) => c.seen.sid);
    const answer = await control('connected', { sids });
    const want = answer?.taskCreated ?? 0;
    const live = all.filter((c) => c.seen.outcome === 'authenticated');
    await Promise.all(live.map(async ({ seen }) => {
      await waitFor(() => seen.created.length >= want, `${want} task_created on ${seen.label}`, WAIT_MS);
      if (seen.initial === 'polling' && cfg.clients.find((c) => c.label === seen.label).transports === 'default') {
        await waitFor(() => seen.upgradedTo === 'websocket', `upgrade on ${seen.label}`, WAIT_MS);
      }
    }));
    await sleep(cfg.settleMs ?? 300); // anything extra (a duplicate) would show up now
    return { clients: all.map((c) => c.seen) };
  } finally {
    for (const { socket } of all) socket.close();
  }
}

// --- stream ----------------------------------------------------------------

class Streamer {
  constructor(cfg, client) {
    this.label = client.label;
    this.ids = [];
    this.lastEventId = null;
    this.errors = [];
    this.shutdowns = [];
    this.reconnects = [];
    this.offlineSince = null;
    this.offlineReason = null;
    this.retryAfter = null;
    this.authenticated = 0;
    this.socket = io(cfg.url, options(client, {
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      auth: (cb) => cb(this.lastEventId === null ? { token: client.token } : { token: client.token, lastEventId: this.lastEventId }),
    }));
    const s = this.socket;
    s.on('authenticated', (a) => {
      this.authenticated += 1;
      if (this.lastEventId === null) {
        this.lastEventId = a.lastEventId;
        this.firstHead = a.lastEventId;
      }
      if (this.offlineSince !== null) {
        this.reconnects.push({ delayMs: Date.now() - this.offlineSince, reason: this.offlineReason, retryAfter: this.retryAfter });
        this.offlineSince = null;
      }
    });
    s.on('task_updated', (e) => {
      if (e.teamId !== cfg.teamId) return;
      this.ids.push(e.eventId);
      this.lastEventId = Math.max(this.lastEventId ?? 0, e.eventId);
    });
    s.on('sync_complete', (e) => { this.lastEventId = Math.max(this.lastEventId ?? 0, e.lastEventId); });
    s.on('server_shutdown', ({ retryAfter }) => {
      this.shutdowns.push(retryAfter);
      this.goOffline('server_shutdown', retryAfter);
      s.disconnect();
      setTimeout(() => s.connect(), retryAfter);
    });
    s.on('disconnect', (reason) => { if (reason !== 'io client disconnect') this.goOffline(reason, null); });
    s.on('connect_error', (e) => this.errors.push(`connect_error: ${e.message}`));
    s.on('authentication_error', (e) => this.errors.push(`authentication_error: ${e.code}`));
    s.on('error', (e) => this.errors.push(`error: ${e.code}`));
    s.on('resync_required', () => this.errors.push('resync_required'));
  }

  goOffline(reason, retryAfter) {
    if (this.offlineSince !== null) return; // already counting from the first sign
    this.offlineSince = Date.now();
    this.offlineReason = reason;
    this.retryAfter = retryAfter;
  }

  summary(expected) {
    const got = new Set(this.ids);
    const counts = new Map();
    for (const id of this.ids) counts.set(id, (counts.get(id) ?? 0) + 1);
    let outOfOrder = 0;
    for (let i = 1; i < this.ids.length; i += 1) if (this.ids[i] <= this.ids[i - 1]) outOfOrder += 1;
    const wanted = new Set(expected);
    return {
      label: this.label,
      received: this.ids.length,
      missing: expected.filter((id) => !got.has(id)).slice(0, 20),
      missingCount: expected.filter((id) => !got.has(id)).length,
      duplicates: [...counts].filter(([, n]) => n > 1).map(([id]) => id).slice(0, 20),
      unexpected: this.ids.filter((id) => !wanted.has(id)).slice(0, 20),
      outOfOrder,
      errors: this.errors.slice(0, 20),
      shutdowns: this.shutdowns.length,
      reconnects: this.reconnects,
      online: this.offlineSince === null && this.socket.connected,
    };
  }
}

async function streamScenario(cfg) {
  const streamers = [];
  for (const client of cfg.clients) {
    streamers.push(new Streamer(cfg, client));
    if (streamers.length % 50 === 0) await sleep(50); // no storm at the start
  }
  try {
    await waitFor(() => streamers.every((s) => s.authenticated > 0), 'authentication of every socket', cfg.connectMs ?? 20000);
    // The cursor before the test's writes: the oldest head any socket was told.
    const cursor = Math.min(...streamers.map((s) => s.firstHead));
    const answer = await control('ready', { sids: streamers.map((s) => s.socket.id), cursor });
    const expected = answer.expected;
    const complete = (s) => {
      const got = new Set(s.ids);
      return expected.every((id) => got.has(id));
    };
    const end = Date.now() + (cfg.catchUpMs ?? 20000);
    while (Date.now() < end && !streamers.every(complete)) await sleep(50);
    await sleep(cfg.settleMs ?? 300);
    return { expected: expected.length, sockets: streamers.map((s) => s.summary(expected)) };
  } finally {
    for (const s of streamers) s.socket.close();
  }
}

// --- main ------------------------------------------------------------------

const SCENARIOS = { connect: connectScenario, stream: streamScenario };

function print(line) {
  return new Promise((resolve) => process.stdout.write(`${JSON.stringify(line)}\n`, resolve));
}

async function main() {
  const name = process.argv[2];
  const scenario = SCENARIOS[name];
  if (!scenario) {
    await print({ scenario: name ?? null, ok: false, error: `unknown scenario; one of ${Object.keys(SCENARIOS)}` });
    return 2;
  }
  let cfg;
  try {
    cfg = JSON.parse(process.env.HUDDLE_NGINX ?? '');
  } catch (err) {
    await print({ scenario: name, ok: false, error: `HUDDLE_NGINX is not JSON: ${err.message}` });
    return 2;
  }
  try {
    const result = await scenario(cfg);
    await print({ scenario: name, ok: true, result });
    return 0;
  } catch (err) {
    await print({ scenario: name, ok: false, error: String(err?.stack ?? err) });
    return 1;
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${err?.stack ?? err}\n`);
    process.exit(3);
  },
);
