#!/usr/bin/env node
'use strict';
/**
 * Lean Socket.IO load generator for the Huddle benchmark (SPEC section 8).
 *
 * Speaks Engine.IO v4 / Socket.IO v5 by hand over `ws` (see client.js), so it
 * drives any Socket.IO 4 server: the Node peer in bench/peer/ or Huddle.
 * Prints one JSON object on stdout when done; progress and errors go to
 * stderr. Every loop is bounded by a count and by --timeout; only loopback
 * addresses are accepted. See USAGE below.
 */

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { performance } = require('node:perf_hooks');
const { BenchClient, frameCounter, startsWith } = require('./client');
const { Histogram, cpuMsSince, procSample, procDelta, round } = require('./stats');
const { secretFromEnv, mintToken, parseUserRange, parsePhases, userFor } = require('./tokens');

const USAGE = `usage: node loadgen.js <mode> [options]      (JWT_SECRET in the environment)

modes
  handshake  open --clients connections, --concurrency at a time, each with a
             valid token; measure authenticated handshakes/s (open -> authenticated);
             each closes once authenticated (--keep-open: hold all until the end)
  reject     the same with --kind expired (default) or invalid tokens; measure
             authentication_error rejections/s; each closes on its error
  fanout     open --clients authenticated connections, then per round call the
             trigger (--trigger-repeat times) and count --expect events per client;
             report msgs/s, latency (receive time - sentAt), loss, duplicates, order
  idle       open --clients authenticated connections, print READY on stderr, hold
             them --hold seconds or until stdin (when a pipe) closes
  storm      for each range of --phases in turn, connect every user of the range
             (--concurrency at a time) and keep them all connected; after each
             phase wait until no event frame arrived for --quiet ms; report per
             phase handshakes/s, latency, server CPU, presence frames, and the
             server's RSS per connection at the end over its RSS before phase 1

Every mode counts the presence_changed frames its clients receive (a prefix
test, no decoding) and reports them under "presence".

common options
  --url URL               server base, http:// or ws:// on loopback [http://127.0.0.1:3101]
  --path PATH             Socket.IO path [/socket.io/]
  --clients N             connections [200]
  --concurrency C         connection attempts in flight at once [50]
  --users A-B             user ids for the tokens' sub, cycled [1-10000]
                          (give as many ids as --clients for distinct users)
  --connect-timeout S     per connection, until authenticated or refused [10]
  --timeout S             whole run [120]
  --server-pid PID        also report that process's CPU and RSS from /proc
  --deflate               offer per-message deflate (off by default, as the servers' default)
fanout options
  --trigger-url URL       HTTP URL on loopback that makes the server broadcast; {{i}} = call index
  --trigger-method M      [POST]
  --trigger-body JSON     request body (content-type application/json); {{i}} = call index
  --trigger-auth SPEC     bearer token: mint:<userId> (minted here) or env:<VAR>
  --trigger-repeat R      trigger calls per round (per worker), one after another [1]
  --trigger-plan JSON     several callers at once: a list of {url?, body?, auth?}, one
                          per worker, each falling back to the options above; each
                          worker makes --trigger-repeat calls one after another.
                          In URL and body, {{i}} = call index within the worker's
                          round, {{w}} = worker index, {{n}} = a number unique in the run
  --expect K              events each client should receive per round [required]
  --event NAME            event counted [task_updated]
  --rounds R              measured rounds on the same connections [1]
  --warmup W              unmeasured rounds before them (warm JITs, HTTP client) [0]
  --round-timeout S       [30]
  --settle MS             pause before each round [500]
  --quiet MS              after connecting, wait until no event frame came for MS
                          (presence settling), at most --drain-timeout [500]
  --drain-timeout S       [120]
idle options
  --hold S                [30]
storm options
  --phases A-B,C-D        user ranges, one per phase, not overlapping [1-200]
  --quiet MS, --drain-timeout S   as for fanout, after each phase
`;

const OPTIONS = {
  url: { type: 'string', default: 'http://127.0.0.1:3101' },
  path: { type: 'string', default: '/socket.io/' },
  clients: { type: 'string', default: '200' },
  concurrency: { type: 'string', default: '50' },
  users: { type: 'string', default: '1-10000' },
  'connect-timeout': { type: 'string', default: '10' },
  timeout: { type: 'string', default: '120' },
  'server-pid': { type: 'string' },
  deflate: { type: 'boolean', default: false },
  'keep-open': { type: 'boolean', default: false },
  kind: { type: 'string', default: 'expired' },
  'trigger-url': { type: 'string' },
  'trigger-method': { type: 'string', default: 'POST' },
  'trigger-body': { type: 'string' },
  'trigger-auth': { type: 'string' },
  'trigger-repeat': { type: 'string', default: '1' },
  expect: { type: 'string' },
  event: { type: 'string', default: 'task_updated' },
  rounds: { type: 'string', default: '1' },
  warmup: { type: 'string', default: '0' },
  'round-timeout': { type: 'string', default: '30' },
  settle: { type: 'string', default: '500' },
  hold: { type: 'string', default: '30' },
  'trigger-plan': { type: 'string' },
  quiet: { type: 'string', default: '500' },
  'drain-timeout': { type: 'string', default: '120' },
  phases: { type: 'string', default: '1-200' },
  help: { type: 'boolean', short: 'h', default: false },
};

const MODES = new Set(['handshake', 'reject', 'fanout', 'idle', 'storm']);
const MAX_TRIGGER_WORKERS = 100;
const TRIGGER_AUTH_RE = /^(mint:\d+|env:[A-Za-z_][A-Za-z0-9_]*)$/;
const MAX_CLIENTS = 50_000;
const MAX_TRACKED_DELIVERIES = 50_000_000;
const POLL_MS = 5;

class UsageError extends Error {}

function intOption(values, name, min, max) {
  const raw = values[name];
  const value = Number(raw);
  if (raw === undefined || !Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`--${name} must be an integer between ${min} and ${max}`);
  }
  return value;
}

function isLoopbackHost(hostname) {
  const h = hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

function loopbackUrl(text, what, protocols) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${what} is not a URL`);
  }
  if (!protocols.includes(url.protocol)) throw new UsageError(`${what} must use ${protocols.join(' or ')}`);
  if (!isLoopbackHost(url.hostname)) throw new UsageError(`${what} must be on a loopback address`);
  return url;
}

/** Fills {{i}}, {{w}} and {{n}} of a trigger URL or body. */
function fillTemplate(text, i, w, n) {
  return text.replaceAll('{{i}}', String(i)).replaceAll('{{w}}', String(w)).replaceAll('{{n}}', String(n));
}

/** One {url, body, auth} per trigger worker: --trigger-plan's entries, or the single caller. */
function parseTriggerPlan(text, base) {
  let plan = [{}];
  if (text !== undefined) {
    try {
      plan = JSON.parse(text);
    } catch {
      throw new UsageError('--trigger-plan must be JSON');
    }
    if (!Array.isArray(plan) || plan.length < 1 || plan.length > MAX_TRIGGER_WORKERS
        || !plan.every((e) => e !== null && typeof e === 'object' && !Array.isArray(e))) {
      throw new UsageError(`--trigger-plan must be a list of 1..${MAX_TRIGGER_WORKERS} objects`);
    }
  }
  return plan.map((entry, w) => {
    const worker = { url: entry.url ?? base.url, body: entry.body ?? base.body, auth: entry.auth ?? base.auth };
    for (const key of ['url', 'body', 'auth']) {
      if (worker[key] !== undefined && typeof worker[key] !== 'string') throw new UsageError(`--trigger-plan[${w}].${key} must be a string`);
    }
    if (worker.url === undefined) throw new UsageError(`--trigger-plan[${w}]: no url`);
    loopbackUrl(fillTemplate(worker.url, 0, w, 0), '--trigger-url', ['http:', 'https:']);
    if (worker.body !== undefined) {
      try {
        JSON.parse(fillTemplate(worker.body, 0, w, 0));
      } catch {
        throw new UsageError('--trigger-body must be JSON');
      }
    }
    if (worker.auth !== undefined && !TRIGGER_AUTH_RE.test(worker.auth)) {
      throw new UsageError('--trigger-auth must be mint:<userId> or env:<VAR>');
    }
    return worker;
  });
}

function parseCli(argv) {
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  if (values.help) return { help: true };
  if (positionals.length !== 1 || !MODES.has(positionals[0])) throw new UsageError('give exactly one mode: handshake, reject, fanout, idle or storm');
  const mode = positionals[0];
  const base = loopbackUrl(values.url, '--url', ['http:', 'https:', 'ws:', 'wss:']);
  const wsProtocol = base.protocol === 'https:' || base.protocol === 'wss:' ? 'wss:' : 'ws:';
  const path = values.path.endsWith('/') ? values.path : `${values.path}/`;
  const cfg = {
    mode,
    wsUrl: `${wsProtocol}//${base.host}${path}?EIO=4&transport=websocket`,
    clients: intOption(values, 'clients', 1, MAX_CLIENTS),
    concurrency: intOption(values, 'concurrency', 1, 10_000),
    users: parseUserRange(values.users),
    connectTimeoutMs: intOption(values, 'connect-timeout', 1, 600) * 1000,
    timeoutMs: intOption(values, 'timeout', 1, 7200) * 1000,
    serverPid: values['server-pid'] === undefined ? null : intOption(values, 'server-pid', 1, 2 ** 22),
    deflate: values.deflate,
    keepOpen: values['keep-open'],
    kind: values.kind,
    event: values.event,
    holdMs: intOption(values, 'hold', 0, 3600) * 1000,
    quietMs: intOption(values, 'quiet', 0, 60_000),
    drainTimeoutMs: intOption(values, 'drain-timeout', 0, 3600) * 1000,
  };
  if (mode === 'storm') {
    try {
      cfg.phases = parsePhases(values.phases);
    } catch (err) {
      throw new UsageError(err.message);
    }
    cfg.clients = cfg.phases.reduce((a, r) => a + r.size, 0);
    if (cfg.clients > MAX_CLIENTS) throw new UsageError(`--phases: at most ${MAX_CLIENTS} users in all`);
  }
  if (!['expired', 'invalid'].includes(cfg.kind)) throw new UsageError('--kind must be expired or invalid');
  if (!/^[A-Za-z0-9_:.-]{1,100}$/.test(cfg.event)) throw new UsageError('--event: letters, digits, _ : . - only');
  if (mode === 'fanout') {
    if (values['trigger-url'] === undefined && values['trigger-plan'] === undefined) {
      throw new UsageError('fanout needs --trigger-url or --trigger-plan');
    }
    cfg.trigger = {
      url: values['trigger-url'],
      method: values['trigger-method'].toUpperCase(),
      body: values['trigger-body'],
      auth: values['trigger-auth'],
      repeat: intOption(values, 'trigger-repeat', 1, 100_000),
    };
    cfg.trigger.workers = parseTriggerPlan(values['trigger-plan'], cfg.trigger);
    cfg.expect = intOption(values, 'expect', 1, 1_000_000);
    cfg.rounds = intOption(values, 'rounds', 1, 100);
    cfg.warmup = intOption(values, 'warmup', 0, 10);
    cfg.roundTimeoutMs = intOption(values, 'round-timeout', 1, 3600) * 1000;
    cfg.settleMs = intOption(values, 'settle', 0, 60_000);
    if (cfg.clients * cfg.expect > MAX_TRACKED_DELIVERIES) {
      throw new UsageError(`--clients x --expect must stay under ${MAX_TRACKED_DELIVERIES}`);
    }
  }
  return cfg;
}

// ---------------------------------------------------------------------------
// Run state shared by the modes
// ---------------------------------------------------------------------------

const run = {
  aborted: false,
  deadline: Infinity,
};

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `done` until it holds, the deadline passes or the run is aborted; true if it held. */
async function waitFor(done, untilMs) {
  const limit = Math.min(untilMs, run.deadline);
  while (!done()) {
    if (run.aborted || Date.now() >= limit) return false;
    await sleep(POLL_MS);
  }
  return true;
}

function authJsonFor(cfg, secret, index, kind) {
  return JSON.stringify({ token: mintToken(secret, userFor(cfg.users, index), kind) });
}

/**
 * Opens `cfg.clients` connections, `cfg.concurrency` at a time, and resolves
 * once each has settled (authenticated, refused, failed) or the run ends.
 * `accept(outcome, detail)` says whether a settlement counts as success.
 */
function openPool(cfg, auths, { accept, keepOpen, onEvent }) {
  const result = {
    started: 0,
    settled: 0,
    ok: 0,
    failures: {},
    latency: new Histogram(),
    clients: [],
    t0: performance.now(),
    tLastOk: 0,
  };
  return new Promise((resolve) => {
    let inFlight = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearInterval(guard);
      resolve(result);
    };
    const onSettled = (client, outcome, detail) => {
      inFlight -= 1;
      result.settled += 1;
      if (accept(outcome, detail)) {
        result.ok += 1;
        result.tLastOk = performance.now();
        result.latency.record(client.settleMs());
      } else {
        const key = detail === null || outcome === 'connect_error' ? outcome : `${outcome}:${detail}`;
        result.failures[key] = (result.failures[key] || 0) + 1;
      }
      if (!(keepOpen && client.authenticated)) client.close();
      if (result.settled === cfg.clients) finish();
      else startMore();
    };
    const hooks = { onSettled, onEvent };
    const startMore = () => {
      while (!done && inFlight < cfg.concurrency && result.started < cfg.clients) {
        if (run.aborted || Date.now() >= run.deadline) return;
        const index = result.started;
        result.started += 1;
        inFlight += 1;
        const client = new BenchClient(index, cfg.wsUrl, auths[index], cfg, hooks);
        result.clients.push(client); // closed ones too: their presence counts are reported
      }
    };
    const guard = setInterval(() => {
      if (run.aborted || Date.now() >= run.deadline) finish();
    }, 50);
    startMore();
  });
}

function poolReport(pool, cfg) {
  const elapsedMs = (pool.tLastOk || performance.now()) - pool.t0;
  return {
    requested: cfg.clients,
    started: pool.started,
    succeeded: pool.ok,
    failures: pool.failures,
    durationMs: round(elapsedMs, 1),
    perSec: elapsedMs > 0 ? round((pool.ok * 1000) / elapsedMs, 1) : null,
    latencyMs: pool.latency.summary(),
  };
}

function serverSample(cfg) {
  return cfg.serverPid === null ? null : procSample(cfg.serverPid);
}

/** A copy of the process-wide frame counts, to subtract later. */
function frameMark() {
  return { ...frameCounter };
}

function framesSince(mark) {
  return {
    eventFrames: frameCounter.frames - mark.frames,
    presenceFrames: frameCounter.presenceFrames - mark.presenceFrames,
    presenceBytes: frameCounter.presenceBytes - mark.presenceBytes,
  };
}

/**
 * Presence frames each client received over its whole life in this run:
 * their total, bytes, and the per-client mean, median and maximum.
 */
function presenceReport(clients) {
  const counts = clients.map((c) => c.presenceFrames).sort((a, b) => a - b);
  const total = counts.reduce((a, c) => a + c, 0);
  return {
    clients: counts.length,
    frames: total,
    bytes: frameCounter.presenceBytes,
    perClientMean: counts.length > 0 ? round(total / counts.length, 2) : null,
    perClientP50: counts.length > 0 ? counts[Math.floor(counts.length / 2)] : null,
    perClientMax: counts.length > 0 ? counts[counts.length - 1] : null,
  };
}

/**
 * Waits until no event frame has arrived for `quietMs` (presence announcements
 * of a connection storm settling), at most `timeoutMs`. Resolves with how long
 * it waited in all and whether it went quiet.
 */
async function waitQuiet(quietMs, timeoutMs) {
  const started = performance.now();
  const limit = Date.now() + timeoutMs;
  let seen = frameCounter.frames;
  let quietSince = performance.now();
  while (performance.now() - quietSince < quietMs) {
    if (run.aborted || Date.now() >= Math.min(limit, run.deadline)) {
      return { quiet: false, waitedMs: round(performance.now() - started, 1), lastFrameMs: round(quietSince - started, 1) };
    }
    await sleep(Math.min(20, Math.max(1, quietMs / 10)));
    if (frameCounter.frames !== seen) {
      seen = frameCounter.frames;
      quietSince = performance.now();
    }
  }
  // lastFrameMs: when the last frame came, after the wait began (0 if none came).
  return { quiet: true, waitedMs: round(performance.now() - started, 1), lastFrameMs: round(quietSince - started, 1) };
}

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

async function handshakeMode(cfg, secret, kind) {
  const mintStart = performance.now();
  const auths = Array.from({ length: cfg.clients }, (_, i) => authJsonFor(cfg, secret, i, kind));
  const mintMs = round(performance.now() - mintStart, 1);
  const expectCode = kind === 'expired' ? 'TOKEN_EXPIRED' : 'TOKEN_INVALID';
  const accept = kind === 'valid'
    ? (outcome) => outcome === 'authenticated'
    : (outcome, detail) => outcome === 'auth_error' && detail === expectCode;
  const cpu0 = process.cpuUsage();
  const srv0 = serverSample(cfg);
  const pool = await openPool(cfg, auths, { accept, keepOpen: kind === 'valid' && cfg.keepOpen });
  const report = poolReport(pool, cfg);
  const out = {
    ok: pool.ok === cfg.clients,
    [kind === 'valid' ? 'handshakes' : 'rejections']: report,
    presence: presenceReport(pool.clients),
    tokenMintMs: mintMs,
    loadgenCpu: withPct(cpuMsSince(cpu0), report.durationMs),
    server: procDelta(srv0, serverSample(cfg), pool.ok, kind === 'valid' ? 'cpuUsPerHandshake' : 'cpuUsPerRejection'),
  };
  if (kind !== 'valid') out.expectedCode = expectCode;
  return { out, clients: pool.clients };
}

async function idleMode(cfg, secret) {
  const auths = Array.from({ length: cfg.clients }, (_, i) => authJsonFor(cfg, secret, i, 'valid'));
  const srvBefore = serverSample(cfg);
  const pool = await openPool(cfg, auths, { accept: (o) => o === 'authenticated', keepOpen: true });
  const live = pool.clients.filter((c) => c.authenticated);
  // The arrivals' presence announcements settle before the caller reads the server.
  const drain = await waitQuiet(cfg.quietMs, cfg.drainTimeoutMs);
  const srvReady = serverSample(cfg);
  process.stderr.write('READY\n');
  let stdinClosed = false;
  let watchingStdin = false;
  try {
    const st = fs.fstatSync(0);
    watchingStdin = st.isFIFO() || st.isSocket();
  } catch {
    watchingStdin = false;
  }
  if (watchingStdin) {
    process.stdin.on('end', () => { stdinClosed = true; });
    process.stdin.on('close', () => { stdinClosed = true; });
    process.stdin.on('error', () => { stdinClosed = true; });
    process.stdin.resume();
  }
  const holdStart = performance.now();
  await waitFor(() => stdinClosed, Date.now() + cfg.holdMs);
  const srvEnd = serverSample(cfg);
  const dropped = live.filter((c) => c.closed && !c.closing).length;
  const rss = (s) => (s === null ? null : s.rssBytes);
  const server = srvBefore === null ? null : {
    rssBeforeBytes: rss(srvBefore),
    rssReadyBytes: rss(srvReady),
    rssEndBytes: rss(srvEnd),
    rssPerConnBytes: live.length > 0 && srvEnd !== null ? Math.round((srvEnd.rssBytes - srvBefore.rssBytes) / live.length) : null,
  };
  return {
    out: {
      ok: live.length === cfg.clients && dropped === 0,
      connect: poolReport(pool, cfg),
      held: live.length,
      heldMs: Math.round(performance.now() - holdStart),
      droppedWhileHeld: dropped,
      endedBy: stdinClosed ? 'stdin' : run.aborted ? 'signal' : 'hold',
      drain,
      presence: presenceReport(live),
      server,
    },
    clients: pool.clients,
  };
}

// --- storm ------------------------------------------------------------------

/**
 * A restart's reconnection storm: each phase connects every user of its range,
 * `--concurrency` at a time, and all stay connected; then the wire must go
 * quiet (presence settling) before the next phase. Server CPU is reported for
 * the connect window and through the quiet wait (what the arrivals cost in
 * all, presence included); RSS per connection is taken at the end, over the
 * fresh server's RSS before phase 1.
 */
async function stormMode(cfg, secret) {
  const srvStart = serverSample(cfg);
  const cpuStart = process.cpuUsage();
  const phases = [];
  const pools = [];
  for (const range of cfg.phases) {
    if (run.aborted || Date.now() >= run.deadline) break;
    const auths = Array.from({ length: range.size }, (_, i) => JSON.stringify({ token: mintToken(secret, range.first + i, 'valid') }));
    const phaseCfg = { ...cfg, clients: range.size };
    const mark = frameMark();
    const lg0 = process.cpuUsage();
    const srv0 = serverSample(cfg);
    const pool = await openPool(phaseCfg, auths, { accept: (o) => o === 'authenticated', keepOpen: true });
    const srvConnected = serverSample(cfg);
    const atConnected = framesSince(mark);
    const handshakes = poolReport(pool, phaseCfg);
    const lgConnect = cpuMsSince(lg0);
    const drain = await waitQuiet(cfg.quietMs, cfg.drainTimeoutMs);
    const srvQuiet = serverSample(cfg);
    pools.push(pool);
    const online = pools.reduce((a, p) => a + p.clients.filter((c) => c.authenticated && !c.closed).length, 0);
    const frames = framesSince(mark);
    phases.push({
      users: `${range.first}-${range.last}`,
      handshakes,
      // CPU per handshake over the connect window, and through the quiet wait.
      server: procDelta(srv0, srvConnected, pool.ok, 'cpuUsPerHandshake'),
      serverUntilQuiet: procDelta(srv0, srvQuiet, pool.ok, 'cpuUsPerHandshake'),
      drain,
      onlineAtEnd: online,
      presence: {
        framesDuringConnect: atConnected.presenceFrames,
        frames: frames.presenceFrames,
        bytes: frames.presenceBytes,
        perOnlineClient: online > 0 ? round(frames.presenceFrames / online, 2) : null,
        perArrival: pool.ok > 0 ? round(frames.presenceFrames / pool.ok, 2) : null,
      },
      otherEventFrames: frames.eventFrames - frames.presenceFrames,
      loadgenCpu: withPct(lgConnect, handshakes.durationMs),
    });
  }
  const srvEnd = serverSample(cfg);
  const all = pools.flatMap((p) => p.clients);
  const live = all.filter((c) => c.authenticated && !c.closed);
  const failed = all.filter((c) => !c.authenticated).length;
  const wantedPhases = cfg.phases.length;
  return {
    out: {
      ok: phases.length === wantedPhases && live.length === cfg.clients && failed === 0,
      phases,
      held: live.length,
      presence: presenceReport(all),
      loadgenCpu: cpuMsSince(cpuStart),
      server: srvStart === null || srvEnd === null ? null : {
        cpuMs: round(srvEnd.cpuMs - srvStart.cpuMs, 1),
        rssStartBytes: srvStart.rssBytes,
        rssEndBytes: srvEnd.rssBytes,
        rssPerConnBytes: live.length > 0 ? Math.round((srvEnd.rssBytes - srvStart.rssBytes) / live.length) : null,
      },
    },
    clients: all,
  };
}

// --- fanout -----------------------------------------------------------------

const EVENT_ID_KEY = Buffer.from('"eventId"');
const SENT_AT_KEY = Buffer.from('"sentAt"');
const TIMESTAMP_KEY = Buffer.from('"timestamp"');

/**
 * The number after `"key"` at or beyond `from` (tolerating `: `, spaces and a
 * quote, so Python's and Node's JSON both parse), or NaN. A substring search
 * and a digit loop: far cheaper than JSON.parse of every frame.
 */
function numberAfter(buf, key, from) {
  const at = buf.indexOf(key, from);
  if (at < 0) return NaN;
  const end = buf.length;
  let i = at + key.length;
  while (i < end && (buf[i] === 0x3a || buf[i] === 0x20 || buf[i] === 0x22)) i += 1;
  let value = 0;
  let digits = 0;
  while (i < end && buf[i] >= 0x30 && buf[i] <= 0x39) {
    value = value * 10 + (buf[i] - 0x30);
    i += 1;
    digits += 1;
  }
  if (i < end && buf[i] === 0x2e) {
    let scale = 0.1;
    i += 1;
    while (i < end && buf[i] >= 0x30 && buf[i] <= 0x39) {
      value += (buf[i] - 0x30) * scale;
      scale /= 10;
      i += 1;
    }
  }
  return digits > 0 ? value : NaN;
}

/** Epoch ms of the ISO `"timestamp"` after `from`, or NaN: the fallback when there is no sentAt. */
function isoAfter(buf, key, from) {
  const at = buf.indexOf(key, from);
  if (at < 0) return NaN;
  const open = buf.indexOf(0x22, at + key.length);
  if (open < 0) return NaN;
  const close = buf.indexOf(0x22, open + 1);
  if (close < 0 || close - open > 40) return NaN;
  return Date.parse(buf.toString('latin1', open + 1, close));
}

function newRoundState(cfg, liveCount) {
  return {
    prefix: Buffer.from(`42["${cfg.event}"`),
    expectPerClient: cfg.expect,
    idOf: new Map(),
    nextIdx: 0,
    seen: new Uint8Array(liveCount * cfg.expect),
    lastId: new Float64Array(liveCount).fill(-Infinity),
    unique: 0,
    duplicates: 0,
    outOfOrder: 0,
    unexpectedIds: 0,
    otherEvents: 0,
    unparsable: 0,
    latency: new Histogram(),
    latencySource: null,
    firstAt: 0,
    lastAt: 0,
  };
}

function makeFanoutHandler() {
  const handler = {
    round: null,
    strayFrames: 0,
    onEvent(client, buf) {
      const s = handler.round;
      if (s === null || client.slot === undefined) {
        handler.strayFrames += 1;
        return;
      }
      if (!startsWith(buf, s.prefix)) {
        s.otherEvents += 1;
        return;
      }
      const id = numberAfter(buf, EVENT_ID_KEY, s.prefix.length);
      if (Number.isNaN(id)) {
        s.unparsable += 1;
        return;
      }
      let idx = s.idOf.get(id);
      if (idx === undefined) {
        if (s.nextIdx >= s.expectPerClient) {
          s.unexpectedIds += 1;
          return;
        }
        idx = s.nextIdx;
        s.nextIdx += 1;
        s.idOf.set(id, idx);
      }
      const cell = client.slot * s.expectPerClient + idx;
      if (s.seen[cell] === 1) {
        s.duplicates += 1;
        return;
      }
      s.seen[cell] = 1;
      if (id < s.lastId[client.slot]) s.outOfOrder += 1;
      else s.lastId[client.slot] = id;
      s.unique += 1;
      const now = performance.now();
      if (s.firstAt === 0) s.firstAt = now;
      s.lastAt = now;
      let sentAt = numberAfter(buf, SENT_AT_KEY, s.prefix.length);
      if (!Number.isNaN(sentAt)) {
        s.latencySource = 'sentAt';
      } else {
        sentAt = isoAfter(buf, TIMESTAMP_KEY, s.prefix.length);
        if (!Number.isNaN(sentAt)) s.latencySource = s.latencySource || 'timestamp';
      }
      if (!Number.isNaN(sentAt)) s.latency.record(Date.now() - sentAt);
    },
  };
  return handler;
}

function triggerHeaders(body, auth, secret) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (auth === undefined) return headers;
  const [kind, arg] = [auth.slice(0, auth.indexOf(':')), auth.slice(auth.indexOf(':') + 1)];
  // Minted for an hour: longer than any run's --timeout allows.
  const token = kind === 'mint' ? mintToken(secret, Number(arg), 'valid') : process.env[arg];
  if (!token) throw new UsageError(`--trigger-auth ${kind}: no token (is ${arg} set?)`);
  headers.authorization = `Bearer ${token}`;
  return headers;
}

/** Each worker's URL and body templates with its request headers (tokens minted once). */
function triggerWorkers(cfg, secret) {
  return cfg.trigger.workers.map((w) => ({ ...w, headers: triggerHeaders(w.body, w.auth, secret) }));
}

/**
 * One round's trigger calls: every worker at once, each making `repeat` calls
 * one after another (a worker waits for each answer before the next call, as
 * a user editing does). The first failure stops every worker.
 */
async function fireTriggers(cfg, workers, untilMs, seq) {
  const calls = { count: 0, workers: workers.length, errors: [], totalMs: 0, firstResponse: null, callMs: null };
  const callLatency = new Histogram();
  const one = async (worker, w) => {
    for (let i = 0; i < cfg.trigger.repeat; i += 1) {
      if (calls.errors.length > 0 || run.aborted || Date.now() >= Math.min(untilMs, run.deadline)) return;
      const n = seq.next;
      seq.next += 1;
      const started = performance.now();
      try {
        const res = await fetch(fillTemplate(worker.url, i, w, n), {
          method: cfg.trigger.method,
          headers: worker.headers,
          body: worker.body === undefined ? undefined : fillTemplate(worker.body, i, w, n),
          redirect: 'error',
          signal: AbortSignal.timeout(Math.max(1, Math.min(untilMs, run.deadline) - Date.now())),
        });
        const text = (await res.text()).slice(0, 2000);
        calls.count += 1;
        if (calls.firstResponse === null) {
          try {
            calls.firstResponse = JSON.parse(text);
          } catch {
            calls.firstResponse = text.slice(0, 300);
          }
        }
        if (!res.ok) {
          calls.errors.push(`HTTP ${res.status}: ${text.slice(0, 200)}`);
          return;
        }
      } catch (err) {
        calls.errors.push(String(err.name || err.message));
        return;
      } finally {
        const ms = performance.now() - started;
        calls.totalMs += ms;
        callLatency.record(ms);
      }
    }
  };
  await Promise.all(workers.map((worker, w) => one(worker, w)));
  calls.totalMs = round(calls.totalMs, 1);
  calls.callMs = callLatency.summary();
  return calls;
}

async function fanoutMode(cfg, secret) {
  const auths = Array.from({ length: cfg.clients }, (_, i) => authJsonFor(cfg, secret, i, 'valid'));
  const handler = makeFanoutHandler();
  const connectMark = frameMark();
  const pool = await openPool(cfg, auths, { accept: (o) => o === 'authenticated', keepOpen: true, onEvent: handler.onEvent });
  const connectFrames = framesSince(connectMark);
  const live = pool.clients.filter((c) => c.authenticated && !c.closed);
  live.forEach((c, slot) => { c.slot = slot; });
  // The arrivals' presence announcements settle before the first round.
  const drain = await waitQuiet(cfg.quietMs, cfg.drainTimeoutMs);
  const afterDrain = framesSince(connectMark);
  const workers = triggerWorkers(cfg, secret);
  const seq = { next: 0 };
  const rounds = [];
  const total = cfg.warmup + cfg.rounds;
  for (let r = 0; r < total && live.length > 0; r += 1) {
    if (run.aborted || Date.now() >= run.deadline) break;
    await sleep(cfg.settleMs);
    const s = newRoundState(cfg, live.length);
    const expected = live.length * cfg.expect;
    const roundMark = frameMark();
    handler.round = s;
    const cpu0 = process.cpuUsage();
    const srv0 = serverSample(cfg);
    const t0 = performance.now();
    const untilMs = Date.now() + cfg.roundTimeoutMs;
    const trigger = await fireTriggers(cfg, workers, untilMs, seq);
    const complete = trigger.errors.length === 0 && (await waitFor(() => s.unique >= expected, untilMs));
    const srv1 = serverSample(cfg);
    const loadgenCpu = cpuMsSince(cpu0);
    handler.round = null;
    const durationMs = s.unique > 0 ? s.lastAt - t0 : performance.now() - t0;
    rounds.push({
      warmup: r < cfg.warmup,
      complete,
      expected,
      delivered: s.unique,
      lost: expected - s.unique,
      duplicates: s.duplicates,
      outOfOrder: s.outOfOrder,
      unexpectedIds: s.unexpectedIds,
      otherEvents: s.otherEvents,
      presenceFrames: framesSince(roundMark).presenceFrames,
      unparsable: s.unparsable,
      durationMs: round(durationMs, 1),
      firstDeliveryMs: s.unique > 0 ? round(s.firstAt - t0, 1) : null,
      msgsPerSec: durationMs > 0 ? Math.round((s.unique * 1000) / durationMs) : null,
      latencyMs: s.latency.summary(),
      latencySource: s.latencySource,
      trigger,
      loadgenCpu: withPct(loadgenCpu, durationMs),
      server: procDelta(srv0, srv1, s.unique, 'cpuUsPerMsg'),
    });
  }
  const dropped = live.filter((c) => c.closed && !c.closing).length;
  const measured = rounds.filter((x) => !x.warmup);
  return {
    out: {
      ok: live.length === cfg.clients && rounds.length === total && rounds.every((x) => x.complete && x.duplicates === 0 && x.outOfOrder === 0),
      connect: poolReport(pool, cfg),
      drain,
      receivers: live.length,
      droppedDuringRun: dropped,
      presence: {
        ...presenceReport(live),
        framesDuringConnect: connectFrames.presenceFrames,
        framesUntilQuiet: afterDrain.presenceFrames,
      },
      strayFrames: handler.strayFrames,
      rounds,
      summary: measured.length === 0 ? null : summarizeRounds(measured),
    },
    clients: pool.clients,
  };
}

function median(values) {
  const v = values.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : round((v[mid - 1] + v[mid]) / 2, 2);
}

function aggregateCpuUsPerMsg(rounds) {
  const withServer = rounds.filter((r) => r.server && typeof r.server.cpuMs === 'number');
  const delivered = withServer.reduce((a, r) => a + r.delivered, 0);
  if (withServer.length === 0 || delivered === 0) return null;
  const cpuMs = withServer.reduce((a, r) => a + r.server.cpuMs, 0);
  return round((cpuMs * 1000) / delivered, 2);
}

function summarizeRounds(rounds) {
  return {
    rounds: rounds.length,
    medianMsgsPerSec: median(rounds.map((r) => r.msgsPerSec)),
    medianP50Ms: median(rounds.map((r) => r.latencyMs.p50)),
    medianP99Ms: median(rounds.map((r) => r.latencyMs.p99)),
    medianServerCpuUsPerMsg: median(rounds.map((r) => (r.server ? r.server.cpuUsPerMsg : null))),
    // /proc counts CPU in 10 ms ticks: a round of 5,000 messages at a few µs
    // each is a handful of ticks, so per-round figures are coarse. Over all
    // measured rounds together the rounding error shrinks with their number.
    serverCpuUsPerMsg: aggregateCpuUsPerMsg(rounds),
    medianLoadgenCpuPct: median(rounds.map((r) => r.loadgenCpu.pctOfOneCore)),
    totalLost: rounds.reduce((a, r) => a + r.lost, 0),
    totalDuplicates: rounds.reduce((a, r) => a + r.duplicates, 0),
    totalOutOfOrder: rounds.reduce((a, r) => a + r.outOfOrder, 0),
    totalPresenceFrames: rounds.reduce((a, r) => a + r.presenceFrames, 0),
  };
}

function withPct(cpu, wallMs) {
  return { ...cpu, pctOfOneCore: wallMs > 0 ? round((cpu.totalMs * 100) / wallMs, 1) : null };
}

// ---------------------------------------------------------------------------

async function main() {
  let cfg;
  try {
    cfg = parseCli(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`loadgen: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (cfg.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  let secret;
  try {
    secret = secretFromEnv();
  } catch (err) {
    process.stderr.write(`loadgen: ${err.message}\n`);
    return 2;
  }
  const wall0 = performance.now();
  const cpu0 = process.cpuUsage();
  run.deadline = Date.now() + cfg.timeoutMs;
  const onSignal = () => { run.aborted = true; };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let result;
  try {
    if (cfg.mode === 'handshake') result = await handshakeMode(cfg, secret, 'valid');
    else if (cfg.mode === 'reject') result = await handshakeMode(cfg, secret, cfg.kind);
    else if (cfg.mode === 'idle') result = await idleMode(cfg, secret);
    else if (cfg.mode === 'storm') result = await stormMode(cfg, secret);
    else result = await fanoutMode(cfg, secret);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`loadgen: ${err.message}\n`);
    return 2;
  }
  for (const client of result.clients) client.terminate();
  const out = {
    mode: cfg.mode,
    ...result.out,
    aborted: run.aborted,
    timedOut: !run.aborted && Date.now() >= run.deadline,
    target: cfg.wsUrl,
    params: {
      clients: cfg.clients,
      concurrency: cfg.concurrency,
      users: `${cfg.users.first}-${cfg.users.last}`,
      deflate: cfg.deflate,
      ...(cfg.mode === 'fanout' ? { expect: cfg.expect, rounds: cfg.rounds, warmup: cfg.warmup, event: cfg.event, triggerRepeat: cfg.trigger.repeat, triggerWorkers: cfg.trigger.workers.length, triggerMethod: cfg.trigger.method } : {}),
      ...(cfg.mode === 'idle' ? { holdS: cfg.holdMs / 1000 } : {}),
      ...(cfg.mode === 'reject' ? { kind: cfg.kind } : {}),
      ...(cfg.mode === 'storm' ? { phases: cfg.phases.map((r) => `${r.first}-${r.last}`), quietMs: cfg.quietMs } : {}),
      serverPid: cfg.serverPid,
    },
    loadgen: {
      pid: process.pid,
      wallMs: round(performance.now() - wall0, 1),
      cpu: cpuMsSince(cpu0),
      rssBytes: process.memoryUsage().rss,
    },
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  return out.ok ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Sockets are terminated; do not wait for their close handshakes.
    setImmediate(() => process.exit(code));
  },
  (err) => {
    process.stderr.write(`loadgen: crashed: ${err && err.stack ? err.stack : err}\n`);
    process.exit(3);
  },
);
