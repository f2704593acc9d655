#!/usr/bin/env node
// The seed's six gateway scenarios, driven by the official socket.io-client.
//
//   HUDDLE_INTEROP='{"url": "http://127.0.0.1:8000", ...}' node scenarios.js <scenario>
//
// The configuration (a JSON object in the HUDDLE_INTEROP environment variable,
// so that no token shows in a process list) names the server, the transports
// (`websocket`: WebSocket only; `default`: the client's default, HTTP
// long-polling then the upgrade to WebSocket; `polling`: long-polling only),
// an optional local source address and what the scenario needs.
// The driver only observes: it prints one JSON line, {scenario, ok, result}
// or {scenario, ok: false, error, partial}, and the pytest module
// test_socketio_client.py decides what is right. Every JWT in the output is
// replaced by {jwt, sub, type}: `jwt` is the first 16 hex digits of its
// SHA-256, enough to compare tokens without printing them.
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const { io } = require('socket.io-client');

const WAIT_MS = 5000;
const JWT_SHAPE = /^eyJ[\w-]*\.[\w-]+\.[\w-]+$/;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function fingerprint(token) {
  const digest = crypto.createHash('sha256').update(token).digest('hex').slice(0, 16);
  let claims = {};
  try {
    claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
  } catch {
    // not decodable: the digest alone identifies it
  }
  return { jwt: digest, sub: claims.sub ?? null, type: claims.type ?? null };
}

function redact(value) {
  if (typeof value === 'string') return JWT_SHAPE.test(value) ? fingerprint(value) : value;
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v)]));
  }
  return value;
}

/** One Socket.IO client that records, in order, everything that happens to it. */
class Probe {
  constructor(cfg, auth, label) {
    this.label = label;
    this.started = Date.now();
    this.events = [];
    this.cursor = new Map();
    this.listeners = new Set();
    this.transport = { initial: null, upgradedTo: null };
    const options = { forceNew: true, reconnection: false, timeout: WAIT_MS };
    if (auth !== undefined) options.auth = auth;
    if (cfg.transports === 'websocket') options.transports = ['websocket'];
    if (cfg.transports === 'polling') options.transports = ['polling'];
    if (cfg.localAddress) {
      // Both transports open their connections through this agent: a source
      // address of our own is a client IP of our own, with its own buckets.
      this.agent = new http.Agent({ localAddress: cfg.localAddress });
      options.agent = this.agent;
    }
    this.socket = io(cfg.url, options);
    this.socket.io.on('open', () => {
      const engine = this.socket.io.engine;
      this.transport.initial = engine.transport.name;
      engine.on('upgrade', (transport) => {
        this.transport.upgradedTo = transport.name;
        this.record('$upgrade', transport.name);
      });
    });
    this.socket.on('connect', () => this.record('connect', null));
    this.socket.on('connect_error', (err) => this.record('connect_error', String(err.message)));
    this.socket.on('disconnect', (reason) => this.record('disconnect', reason));
    this.socket.onAny((name, ...args) => this.record(name, args.length === 1 ? args[0] : args));
  }

  record(name, data) {
    this.events.push({ name, data, at: Date.now() - this.started });
    for (const listener of [...this.listeners]) listener();
  }

  all(name) {
    return this.events.filter((e) => e.name === name).map((e) => e.data);
  }

  get names() {
    return this.events.filter((e) => e.name !== '$upgrade').map((e) => e.name);
  }

  /** Resolves with check()'s first non-undefined answer, re-checked after every event. */
  until(check, what, timeoutMs = WAIT_MS) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const listener = () => {
        const value = check();
        if (value === undefined) return;
        this.listeners.delete(listener);
        clearTimeout(timer);
        resolve(value);
      };
      timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms; got ${this.names}`));
      }, timeoutMs);
      this.listeners.add(listener);
      listener();
    });
  }

  /** The next `name` event not returned by next() before. */
  next(name, timeoutMs = WAIT_MS) {
    return this.until(
      () => {
        const seen = this.cursor.get(name) ?? 0;
        const found = this.all(name);
        if (found.length <= seen) return undefined;
        this.cursor.set(name, seen + 1);
        return found[seen];
      },
      `'${name}'`,
      timeoutMs,
    );
  }

  /** The first event, from the start, whose name is one of `names`: {name, data, at}. */
  first(names, timeoutMs = WAIT_MS) {
    return this.until(() => this.events.find((e) => names.includes(e.name)), names.join('|'), timeoutMs);
  }

  /** The first authentication outcome (or a transport failure). */
  outcome(timeoutMs = WAIT_MS) {
    return this.first(
      ['authenticated', 'authentication_error', 'connect_error', 'disconnect'],
      timeoutMs,
    );
  }

  connected(timeoutMs = WAIT_MS) {
    return this.until(() => (this.socket.connected ? true : undefined), 'connect', timeoutMs);
  }

  disconnected(timeoutMs = WAIT_MS) {
    return this.until(
      () => this.events.find((e) => e.name === 'disconnect'),
      'disconnect',
      timeoutMs,
    );
  }

  upgraded(timeoutMs = WAIT_MS) {
    return this.until(() => this.transport.upgradedTo ?? undefined, 'transport upgrade', timeoutMs);
  }

  /** Emit with an acknowledgement callback; resolves with the acknowledgement. */
  call(event, data, timeoutMs = WAIT_MS) {
    return this.socket.timeout(timeoutMs).emitWithAck(event, data);
  }

  summary() {
    return {
      names: this.names,
      connected: this.socket.connected,
      transport: {
        ...this.transport,
        current: this.socket.io.engine ? this.socket.io.engine.transport.name : null,
      },
      disconnect: this.events.find((e) => e.name === 'disconnect')?.data ?? null,
    };
  }

  close() {
    this.socket.disconnect();
    if (this.agent) this.agent.destroy();
  }
}

/** Opens probes and closes every one of them at the end, whatever happens. */
class Clients {
  constructor(cfg) {
    this.cfg = cfg;
    this.probes = [];
  }

  open(auth, label) {
    const probe = new Probe(this.cfg, auth, label ?? `socket ${this.probes.length + 1}`);
    this.probes.push(probe);
    return probe;
  }

  closeAll() {
    for (const probe of this.probes) probe.close();
  }
}

async function rest(cfg, method, path, { token, body } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(new URL(path, cfg.url), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { unparsed: text.slice(0, 200) };
  }
  return { status: response.status, body: json };
}

// --- the scenarios ---------------------------------------------------------
// Each gets the configuration, the clients to open sockets with, and a
// `partial` object to fill as it goes (printed if the scenario fails midway).

/** 1. A valid token: in the handshake, and with the `authenticate` event. */
async function validToken(cfg, clients, partial) {
  const handshake = clients.open({ token: cfg.token }, 'handshake');
  partial.handshake = { authenticated: await handshake.next('authenticated') };
  if (cfg.transports === 'default') await handshake.upgraded();
  const later = clients.open(undefined, 'authenticate-event');
  await later.connected();
  partial.event = { ack: await later.call('authenticate', { token: cfg.token }) };
  partial.event.authenticated = await later.next('authenticated');
  if (cfg.transports === 'default') await later.upgraded();
  await sleep(200); // anything unexpected that follows would show in `names`
  partial.handshake.socket = handshake.summary();
  partial.event.socket = later.summary();
  return partial;
}

/** 2. An expired token: told to refresh, kept open for the grace, refreshed on the same socket. */
async function expiredToken(cfg, clients, partial) {
  const socket = clients.open({ token: cfg.expiredToken }, 'refreshing');
  const idle = clients.open({ token: cfg.expiredToken }, 'idle');
  partial.error = await socket.next('authentication_error');
  const errorAt = Date.now();
  partial.idleError = await idle.next('authentication_error');
  await sleep(cfg.graceMs / 2);
  partial.openDuringGrace = { refreshing: socket.socket.connected, idle: idle.socket.connected };
  partial.ack = await socket.call('refresh_token', { refreshToken: cfg.refreshToken });
  partial.refreshed = await socket.next('token_refreshed');
  partial.authenticated = await socket.next('authenticated');
  const gone = await idle.disconnected(cfg.graceMs + WAIT_MS);
  const idleErrorAt = idle.events.find((e) => e.name === 'authentication_error').at;
  partial.idleDisconnect = { reason: gone.data, afterErrorMs: gone.at - idleErrorAt };
  // The refreshed socket outlives the grace period its expired token began.
  await sleep(Math.max(0, errorAt + cfg.graceMs + 500 - Date.now()));
  partial.socket = socket.summary();
  partial.idle = idle.summary();
  return partial;
}

/** 3. Localhost rate limiting: a burst of 20, then RATE_LIMITED, then room again after the cooldown. */
async function rateLimit(cfg, clients, partial) {
  const auth = { token: cfg.token };
  const started = Date.now();
  const burst = Array.from({ length: cfg.burst }, (_, n) => clients.open(auth, `burst ${n + 1}`));
  const outcomes = await Promise.all(burst.map((probe) => probe.outcome()));
  partial.burst = outcomes.map((o) => o.name);
  partial.burstMs = Date.now() - started;
  // Further attempts until one is refused. Normally the very next one is; the
  // bucket refills one attempt every cooldown, so a slow burst may earn more.
  partial.extra = [];
  let refused = null;
  for (let n = 0; n < cfg.maxExtra && refused === null; n += 1) {
    const probe = clients.open(auth, `extra ${n + 1}`);
    const outcome = await probe.outcome();
    partial.extra.push({ name: outcome.name, data: outcome.data });
    if (outcome.name !== 'authenticated') refused = probe;
  }
  partial.refusedAfterMs = Date.now() - started;
  if (refused === null) return partial;
  partial.refusedDisconnect = (await refused.disconnected()).data;
  for (const probe of clients.probes) probe.close();
  const retryAfter = Number(refused.all('authentication_error')[0]?.retryAfter ?? 0);
  await sleep(retryAfter + 50);
  const after = clients.open(auth, 'after cooldown');
  const outcome = await after.outcome();
  partial.afterCooldown = { name: outcome.name, waitedMs: retryAfter + 50 };
  return partial;
}

/** 4. Token refresh, both forms, with acknowledgements; the rotated-out refresh token is dead. */
async function tokenRefresh(cfg, clients, partial) {
  const socket = clients.open({ token: cfg.token }, 'refreshing');
  partial.authenticated = await socket.next('authenticated');
  partial.access = { ack: await socket.call('refresh_token', { token: cfg.freshToken }) };
  partial.access.refreshed = await socket.next('token_refreshed');
  partial.access.authenticated = await socket.next('authenticated');
  partial.rotate = { ack: await socket.call('refresh_token', { refreshToken: cfg.refreshToken }) };
  partial.rotate.refreshed = await socket.next('token_refreshed');
  partial.rotate.authenticated = await socket.next('authenticated');
  // The API refuses the old refresh token now, and (reuse revokes the family) the new one too.
  partial.reuse = await rest(cfg, 'POST', '/api/auth/refresh', {
    body: { refresh_token: cfg.refreshToken },
  });
  const rotated = partial.rotate.ack?.data?.refreshToken;
  if (typeof rotated === 'string') {
    partial.afterReuse = await rest(cfg, 'POST', '/api/auth/refresh', {
      body: { refresh_token: rotated },
    });
  }
  await sleep(200);
  partial.socket = socket.summary();
  return partial;
}

/** 5. Teams and tasks on authentication; REST changes made while connected arrive live. */
async function backendIntegration(cfg, clients, partial) {
  const user = clients.open({ token: cfg.userToken }, 'user');
  const newcomer = clients.open({ token: cfg.newcomerToken }, 'newcomer');
  partial.authenticated = await user.next('authenticated');
  partial.newcomerAuthenticated = await newcomer.next('authenticated');
  if (cfg.transports === 'default') await Promise.all([user.upgraded(), newcomer.upgraded()]);
  const post = (path, token, body) => rest(cfg, 'POST', path, { token, body });
  const { otherToken, userToken } = cfg;
  partial.rest = {};
  // In a team the user is not in: must not reach the user.
  partial.rest.privateTask = await post(`/api/teams/${cfg.privateTeamId}/tasks`, cfg.outsiderToken, {
    title: 'not for the user',
  });
  // By another member, in a team the user belongs to, assigned to the user.
  partial.rest.sharedTask = await post(`/api/teams/${cfg.sharedTeamId}/tasks`, otherToken, {
    title: 'made while the user is online',
    priority: 'high',
    assigneeId: cfg.userId,
  });
  await user.next('task_created');
  // The user adds the newcomer to their team, then creates a task there.
  partial.rest.member = await post(`/api/teams/${cfg.ownTeamId}/members`, userToken, {
    email: cfg.newcomerEmail,
    role: 'member',
  });
  await Promise.all([user.next('member_added'), newcomer.next('member_added')]);
  partial.rest.ownTask = await post(`/api/teams/${cfg.ownTeamId}/tasks`, userToken, {
    title: 'seen by the newcomer too',
  });
  await Promise.all([user.next('task_created'), newcomer.next('task_created')]);
  await sleep(300); // stragglers (e.g. the private team's event) would land by now
  partial.user = { events: user.events.map(({ name, data }) => ({ name, data })) };
  partial.user.socket = user.summary();
  partial.newcomer = { events: newcomer.events.map(({ name, data }) => ({ name, data })) };
  partial.newcomer.socket = newcomer.summary();
  return partial;
}

/** 6. Many reconnects with an expired token: TOKEN_EXPIRED each time; the normal bucket untouched. */
async function expiredReconnects(cfg, clients, partial) {
  partial.expired = [];
  for (let n = 0; n < cfg.attempts; n += 1) {
    const probe = clients.open({ token: cfg.expiredToken }, `expired ${n + 1}`);
    const outcome = await probe.outcome();
    partial.expired.push(outcome.name === 'authentication_error' ? outcome.data : outcome);
    probe.close(); // and reconnect, like a client that has not refreshed yet
  }
  const started = Date.now();
  const burst = Array.from({ length: cfg.burst }, (_, n) =>
    clients.open({ token: cfg.token }, `valid ${n + 1}`),
  );
  partial.valid = (await Promise.all(burst.map((p) => p.outcome()))).map((o) => o.name);
  partial.validMs = Date.now() - started;
  return partial;
}

const SCENARIOS = {
  valid_token: validToken,
  expired_token: expiredToken,
  rate_limit: rateLimit,
  token_refresh: tokenRefresh,
  backend_integration: backendIntegration,
  expired_reconnects: expiredReconnects,
};

function print(line) {
  return new Promise((resolve) => process.stdout.write(`${JSON.stringify(redact(line))}\n`, resolve));
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
    cfg = JSON.parse(process.env.HUDDLE_INTEROP ?? '');
  } catch (err) {
    await print({ scenario: name, ok: false, error: `HUDDLE_INTEROP is not JSON: ${err.message}` });
    return 2;
  }
  const clients = new Clients(cfg);
  const partial = {};
  let timer = null;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`deadline of ${cfg.deadlineMs} ms passed`)), cfg.deadlineMs ?? 30000);
  });
  try {
    const result = await Promise.race([scenario(cfg, clients, partial), deadline]);
    await print({ scenario: name, ok: true, result });
    return 0;
  } catch (err) {
    const sockets = Object.fromEntries(clients.probes.map((p) => [p.label, p.summary()]));
    await print({ scenario: name, ok: false, error: String(err?.stack ?? err), partial, sockets });
    return 1;
  } finally {
    clearTimeout(timer);
    clients.closeAll();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${err?.stack ?? err}\n`);
    process.exit(3);
  },
);
