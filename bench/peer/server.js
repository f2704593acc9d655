'use strict';
/**
 * The Node.js peer of the Huddle benchmark (SPEC section 8).
 *
 * A Socket.IO 4 server doing the same per-connection work as the Huddle
 * gateway, so that the two can be measured against each other:
 *   - verifies the handshake token (HS256, claims `sub`, `type: "access"`,
 *     `exp`) in the connection handler, so that a refused client is told why
 *     (`authentication_error`) rather than getting a bare `connect_error`;
 *   - joins `user:<id>` and `team:<id>` for each of the user's teams, and emits
 *     `authenticated` with the user's teams and tasks from an in-memory map
 *     (a warm cache: every user is in one big team plus a few small ones, the
 *     layout bench/seed.py gives Huddle's database);
 *   - arms the `token_expiring` and expiry timers of SPEC 4.1.
 *
 * Deliberate differences from Huddle, each because the benchmark does not
 * exercise it: an expired token is disconnected right after its
 * `authentication_error` (no AUTH_GRACE wait for `refresh_token`), there is
 * no rate limiting, no event log or replay, and no presence events.
 *
 * Bench-only HTTP endpoints on the same port:
 *   POST /bench/broadcast?room=team:1&count=50&size=300[&event=task_updated]
 *        emits `count` events back to back to the room, answers when done
 *   GET  /bench/stats   process.memoryUsage(), process.cpuUsage(), connections
 *   GET  /healthz       liveness, for the driver's readiness poll
 *
 * Environment: JWT_SECRET (required), PORT (default 3101), HOST (loopback
 * only, default 127.0.0.1), JWT_LEEWAY (s, default 10, as Huddle),
 * PEER_BIG_TEAMS (sizes of the big teams, default "2000,3000": users 1-2000
 * are team 1, the next 3,000 team 2, any later user team 3), PEER_EXTRA_TEAMS
 * (small teams per user besides the big one, default 2), PEER_TASKS (tasks per
 * user, default 3), PEER_MAX_USER_ID (largest user id that exists, default
 * 1000000).
 */

const crypto = require('node:crypto');
const http = require('node:http');
const { Server } = require('socket.io');
const jwt = require('jsonwebtoken');

const EXPIRED_MESSAGE = 'Token has expired. Please refresh your session or log in again.';
const AUTH_TIMEOUT_MS = 10_000;
const TOKEN_EXPIRY_WARNING_MS = 60_000;
const MAX_BROADCAST_COUNT = 100_000;
const MAX_EVENT_SIZE = 65_536;
// setTimeout silently fires at once for delays past 2^31-1 ms.
const MAX_TIMER_MS = 2_147_483_647;

function fail(message) {
  process.stderr.write(`peer: ${message}\n`);
  process.exit(2);
}

function intFromEnv(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    fail(`${name} must be an integer between ${min} and ${max}`);
  }
  return value;
}

function isLoopback(host) {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

const SECRET_TEXT = process.env.JWT_SECRET || '';
if (!SECRET_TEXT) fail('JWT_SECRET is not set');
// A KeyObject, not the string: given a string, jsonwebtoken 9 first tries to
// parse it as a PEM public key on every verify (~360 µs against ~8 µs).
const SECRET = crypto.createSecretKey(Buffer.from(SECRET_TEXT, 'utf8'));
const PORT = intFromEnv('PORT', 3101, 0, 65535);
const HOST = process.env.HOST || '127.0.0.1';
if (!isLoopback(HOST)) fail('HOST must be a loopback address (the peer is a benchmark server)');
const LEEWAY_S = intFromEnv('JWT_LEEWAY', 10, 0, 3600);
const EXTRA_TEAMS = intFromEnv('PEER_EXTRA_TEAMS', 2, 0, 50);
const TASKS_PER_USER = intFromEnv('PEER_TASKS', 3, 0, 200);
const MAX_USER_ID = intFromEnv('PEER_MAX_USER_ID', 1_000_000, 1, 2 ** 31);
const BIG_TEAMS_TEXT = process.env.PEER_BIG_TEAMS || '2000,3000';
if (!/^[1-9]\d{0,6}(,[1-9]\d{0,6}){0,49}$/.test(BIG_TEAMS_TEXT)) fail('PEER_BIG_TEAMS must be comma-separated team sizes');
const BIG_TEAMS = BIG_TEAMS_TEXT.split(',').map(Number);
const DEFLATE_TEXT = process.env.PEER_PER_MESSAGE_DEFLATE || 'false';
if (!['true', 'false'].includes(DEFLATE_TEXT)) fail('PEER_PER_MESSAGE_DEFLATE must be true or false');
// threshold 0: compress every frame, as the websockets library under Huddle
// does (Socket.IO's own default threshold, 1 KiB, would leave small events raw).
const PER_MESSAGE_DEFLATE = DEFLATE_TEXT === 'true' ? { threshold: 0 } : false;

// ---------------------------------------------------------------------------
// The warm cache: what Huddle's gateway would have cached for each user after
// a first fetch from the API. Built on first use and kept.
// ---------------------------------------------------------------------------

const CREATED_AT = '2026-01-01T00:00:00.000Z';
const SMALL_TEAM_BASE = 1000;
const userData = new Map();

/**
 * The user's big team and whether they own it (its first user does): team k
 * holds the k-th run of BIG_TEAMS[k-1] users; later users share one more team.
 * The same rule as bench/seed.py's `Layout`.
 */
function bigTeamOf(userId) {
  let first = 1;
  for (let k = 0; k < BIG_TEAMS.length; k += 1) {
    if (userId < first + BIG_TEAMS[k]) return { teamId: k + 1, owner: userId === first };
    first += BIG_TEAMS[k];
  }
  return { teamId: BIG_TEAMS.length + 1, owner: userId === first };
}

/** The big team first, then the small ones (`SMALL_TEAM_BASE + k*100 + id % 100`). */
function teamIdsOf(userId) {
  const ids = [bigTeamOf(userId).teamId];
  for (let k = 0; k < EXTRA_TEAMS; k += 1) ids.push(SMALL_TEAM_BASE + k * 100 + (userId % 100));
  return ids;
}

// Entity ids are numbers, as in Huddle's REST schemas; only the JWT `sub` is a string.
function buildUserData(userId) {
  const id = userId;
  const user = { id, email: `user${id}@bench.huddle.test`, name: `Bench User ${id}`, isAdmin: false, createdAt: CREATED_AT };
  const teamIds = teamIdsOf(userId);
  const owner = bigTeamOf(userId).owner;
  const teams = teamIds.map((teamId, k) => ({
    id: teamId,
    name: `Team ${teamId}`,
    description: `Benchmark team ${teamId}`,
    createdAt: CREATED_AT,
    role: k === 0 && owner ? 'owner' : 'member',
  }));
  const tasks = [];
  for (let k = 0; k < TASKS_PER_USER; k += 1) {
    const teamId = teamIds[k % teamIds.length];
    tasks.push({
      id: userId * 1000 + k,
      teamId,
      title: `Task ${k} of user ${id}`,
      description: 'A task assigned to a benchmark user',
      status: 'todo',
      priority: 'medium',
      assigneeId: id,
      dueDate: null,
      createdBy: id,
      createdAt: CREATED_AT,
      updatedAt: CREATED_AT,
      version: 1,
    });
  }
  return { user, teams, tasks, rooms: [`user:${id}`, ...teams.map((t) => `team:${t.id}`)] };
}

function lookupUser(sub) {
  let data = userData.get(sub);
  if (data === undefined) {
    if (!/^[1-9]\d{0,9}$/.test(sub)) return null;
    const userId = Number(sub);
    if (userId > MAX_USER_ID) return null;
    data = buildUserData(userId);
    userData.set(sub, data);
  }
  return data;
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

function authError(socket, code, message, action, retryAfter) {
  const payload = { message, code, action };
  if (retryAfter !== undefined) payload.retryAfter = retryAfter;
  socket.emit('authentication_error', payload);
  // The emit is queued on the engine.io socket, which flushes before closing.
  socket.disconnect(true);
}

function verify(token) {
  try {
    const claims = jwt.verify(token, SECRET, { algorithms: ['HS256'], clockTolerance: LEEWAY_S });
    if (claims.type !== 'access' || typeof claims.sub !== 'string' || typeof claims.exp !== 'number') {
      return { error: 'TOKEN_INVALID' };
    }
    return { claims };
  } catch (err) {
    return { error: err instanceof jwt.TokenExpiredError ? 'TOKEN_EXPIRED' : 'TOKEN_INVALID' };
  }
}

function clearTimers(socket) {
  const t = socket.data.timers;
  if (t === undefined) return;
  for (const timer of t) clearTimeout(timer);
  socket.data.timers = undefined;
}

function onTokenExpired(socket) {
  clearTimers(socket);
  socket.data.userId = undefined;
  for (const room of socket.rooms) if (room !== socket.id) socket.leave(room);
  authError(socket, 'TOKEN_EXPIRED', EXPIRED_MESSAGE, 'REFRESH_TOKEN', 2000);
}

function authenticate(socket, token) {
  const { claims, error } = verify(token);
  if (error === 'TOKEN_EXPIRED') {
    authError(socket, 'TOKEN_EXPIRED', EXPIRED_MESSAGE, 'REFRESH_TOKEN', 2000);
    return false;
  }
  const data = error === undefined ? lookupUser(claims.sub) : null;
  if (data === null) {
    authError(socket, 'TOKEN_INVALID', 'Invalid authentication token. Please log in again.', 'LOGIN');
    return false;
  }
  clearTimers(socket);
  socket.data.userId = data.user.id;
  socket.join(data.rooms);
  const expiresAtMs = claims.exp * 1000;
  const untilExpiry = expiresAtMs - Date.now();
  const warnIn = Math.min(MAX_TIMER_MS, Math.max(0, untilExpiry - TOKEN_EXPIRY_WARNING_MS));
  const expiresAt = new Date(expiresAtMs).toISOString();
  socket.data.timers = [
    setTimeout(() => socket.emit('token_expiring', { expiresAt }), warnIn),
    setTimeout(() => onTokenExpired(socket), Math.min(MAX_TIMER_MS, Math.max(0, untilExpiry))),
  ];
  socket.emit('authenticated', {
    success: true,
    user: data.user,
    teams: data.teams,
    tasks: data.tasks,
    timestamp: new Date().toISOString(),
    expiresAt,
    lastEventId: null,
    degraded: false,
  });
  return true;
}

function onConnection(socket) {
  socket.on('disconnect', () => clearTimers(socket));
  socket.on('authenticate', (payload, ack) => {
    const token = payload !== null && typeof payload === 'object' ? payload.token : undefined;
    if (typeof token !== 'string' || token === '') {
      if (typeof ack === 'function') ack({ ok: false, error: { code: 'BAD_REQUEST', message: 'token is required' } });
      return;
    }
    const ok = authenticate(socket, token);
    if (typeof ack === 'function') {
      ack(ok ? { ok: true, data: { userId: socket.data.userId } } : { ok: false, error: { code: 'AUTHENTICATION_FAILED', message: 'authentication failed' } });
    }
  });
  const auth = socket.handshake.auth;
  const token = auth !== null && typeof auth === 'object' ? auth.token : undefined;
  if (typeof token === 'string' && token !== '') {
    authenticate(socket, token);
    return;
  }
  // No token in the handshake: wait AUTH_TIMEOUT for an `authenticate` event.
  socket.data.timers = [
    setTimeout(() => {
      if (socket.data.userId === undefined) {
        authError(socket, 'TOKEN_MISSING', 'Authentication token is required.', 'LOGIN');
      }
    }, AUTH_TIMEOUT_MS),
  ];
}

// ---------------------------------------------------------------------------
// Bench-only HTTP endpoints
// ---------------------------------------------------------------------------

let lastEventId = 0;

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function boundedInt(params, name, fallback, min, max) {
  const raw = params.get(name);
  if (raw === null) return fallback;
  const value = Number(raw);
  return Number.isInteger(value) && value >= min && value <= max ? value : NaN;
}

/** Emits `count` events back to back; each one's JSON frame is about `size` bytes. */
function broadcast(io, room, event, count, size) {
  const teamMatch = /^team:(\d+)$/.exec(room);
  const teamId = teamMatch ? Number(teamMatch[1]) : 1;
  const makePayload = (eventId, sentAt, description) => {
    const timestamp = new Date(sentAt).toISOString();
    return {
      eventId,
      teamId,
      task: {
        id: 424242,
        teamId,
        title: 'Benchmark task',
        description,
        status: eventId % 2 === 0 ? 'in_progress' : 'done',
        priority: 'high',
        assigneeId: 1,
        dueDate: null,
        createdBy: 1,
        createdAt: CREATED_AT,
        updatedAt: timestamp,
        version: eventId,
      },
      changes: ['status'],
      actorId: 1,
      timestamp,
      sentAt,
    };
  };
  // Socket.IO frame: 42["<event>",<payload>]
  const overhead = 6 + event.length;
  const bare = JSON.stringify(makePayload(lastEventId + 1, Date.now(), '')).length + overhead;
  const description = 'x'.repeat(Math.max(0, size - bare));
  const recipients = io.sockets.adapter.rooms.get(room)?.size ?? 0;
  const firstEventId = lastEventId + 1;
  const started = process.hrtime.bigint();
  for (let k = 0; k < count; k += 1) {
    lastEventId += 1;
    io.to(room).emit(event, makePayload(lastEventId, Date.now(), description));
  }
  const emitMs = Number(process.hrtime.bigint() - started) / 1e6;
  return { room, event, count, frameBytes: bare + description.length, recipients, firstEventId, lastEventId, emitMs };
}

function handleRequest(io, req, res) {
  const url = new URL(req.url, 'http://peer.invalid');
  if (url.pathname === '/healthz' && req.method === 'GET') {
    sendJson(res, 200, { status: 'ok' });
  } else if (url.pathname === '/bench/stats' && req.method === 'GET') {
    sendJson(res, 200, {
      pid: process.pid,
      connections: io.engine.clientsCount,
      memory: process.memoryUsage(),
      cpu: process.cpuUsage(),
      uptimeS: process.uptime(),
    });
  } else if (url.pathname === '/bench/broadcast' && req.method === 'POST') {
    req.resume(); // any body is ignored; the parameters are in the query
    const room = url.searchParams.get('room') ?? 'team:1';
    const event = url.searchParams.get('event') ?? 'task_updated';
    const count = boundedInt(url.searchParams, 'count', 1, 1, MAX_BROADCAST_COUNT);
    const size = boundedInt(url.searchParams, 'size', 300, 0, MAX_EVENT_SIZE);
    if (Number.isNaN(count) || Number.isNaN(size) || !/^[a-z_]{1,64}$/.test(event) || room.length > 200) {
      sendJson(res, 400, { error: { code: 'BAD_REQUEST', message: `count 1..${MAX_BROADCAST_COUNT}, size 0..${MAX_EVENT_SIZE}, event [a-z_]+` } });
      return;
    }
    sendJson(res, 200, broadcast(io, room, event, count, size));
  } else {
    sendJson(res, 404, { error: { code: 'NOT_FOUND', message: 'not found' } });
  }
}

function main() {
  // The handler must exist before Socket.IO attaches: engine.io takes over the
  // server's request listeners and calls them only for paths outside /socket.io/.
  let io = null;
  const httpServer = http.createServer((req, res) => handleRequest(io, req, res));
  io = new Server(httpServer, {
    serveClient: false,
    perMessageDeflate: PER_MESSAGE_DEFLATE,
    httpCompression: false,
    maxHttpBufferSize: 65_536,
  });
  io.on('connection', onConnection);

  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  httpServer.listen(PORT, HOST, () => {
    const { port } = httpServer.address();
    process.stdout.write(`${JSON.stringify({ listening: port, host: HOST, pid: process.pid })}\n`);
  });
}

main();
