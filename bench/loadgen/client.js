'use strict';
/**
 * A minimal Socket.IO v5 (Engine.IO v4) client over a bare `ws` WebSocket.
 *
 * It does only what the benchmark needs, and cheaply: answers the server's
 * pings, sends the CONNECT packet with the auth payload, recognises
 * `authenticated` / `authentication_error` by a byte-prefix comparison, and
 * hands every other EVENT frame to the caller as the raw Buffer, undecoded.
 * Over the websocket transport Engine.IO sends one packet per WebSocket
 * message, so one message is one packet.
 *
 * Every client counts the `presence_changed` frames it receives (and their
 * bytes), before and after it settles, with the same prefix comparison: the
 * benchmark reports what presence costs each user without decoding a frame.
 * `frameCounter.frames` counts every EVENT frame of every client, so that a
 * caller can wait until the wire has gone quiet.
 */

const WebSocket = require('ws');

const CH_0 = 0x30;
const CH_1 = 0x31;
const CH_2 = 0x32;
const CH_4 = 0x34;

const AUTHENTICATED = Buffer.from('42["authenticated"');
const AUTH_ERROR = Buffer.from('42["authentication_error"');
const PRESENCE = Buffer.from('42["presence_changed"');
const PONG = '3';

/**
 * EVENT frames received by all clients of this process (any event name), for
 * quiet detection, and the `presence_changed` ones among them. Pings are not
 * counted: they never stop while sockets are held.
 */
const frameCounter = { frames: 0, presenceFrames: 0, presenceBytes: 0 };

function startsWith(buf, prefix) {
  return buf.length >= prefix.length && buf.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/** The `code` of an `authentication_error` frame, or null. Rare path: decodes JSON. */
function authErrorCode(buf) {
  try {
    const packet = JSON.parse(buf.toString('utf8', 2));
    const payload = packet[1];
    return payload !== null && typeof payload === 'object' && typeof payload.code === 'string' ? payload.code : 'UNKNOWN';
  } catch {
    return 'MALFORMED';
  }
}

/**
 * One benchmark connection.
 *
 * hooks (all optional except onSettled):
 *   onSettled(client, outcome, detail)  once: outcome is 'authenticated',
 *       'auth_error' (detail = code), 'connect_error', 'closed', 'timeout' or 'error'
 *   onEvent(client, buf)  every EVENT frame after the client is settled
 *   onClose(client)       the WebSocket closed, whatever the reason
 */
class BenchClient {
  constructor(index, wsUrl, authJson, options, hooks) {
    this.index = index;
    this.hooks = hooks;
    this.settled = false;
    this.authenticated = false;
    this.closed = false;
    this.closing = false; // set when this side chose to close
    this.startedAt = process.hrtime.bigint();
    this.settledAt = 0n;
    this.authJson = authJson;
    this.presenceFrames = 0;
    this.timer = setTimeout(() => this.settle('timeout', null), options.connectTimeoutMs);
    this.ws = new WebSocket(wsUrl, {
      perMessageDeflate: options.deflate,
      skipUTF8Validation: true,
      handshakeTimeout: options.connectTimeoutMs,
      followRedirects: false,
    });
    this.ws.on('message', (data) => this.onMessage(data));
    this.ws.on('error', (err) => this.settle('error', err.code || err.message));
    this.ws.on('close', () => {
      this.closed = true;
      this.settle('closed', null);
      if (this.hooks.onClose) this.hooks.onClose(this);
    });
  }

  settle(outcome, detail) {
    if (this.settled) return;
    this.settled = true;
    this.settledAt = process.hrtime.bigint();
    clearTimeout(this.timer);
    this.authenticated = outcome === 'authenticated';
    this.hooks.onSettled(this, outcome, detail);
  }

  onMessage(buf) {
    const c0 = buf[0];
    if (c0 === CH_4) {
      const c1 = buf[1];
      if (c1 === CH_2) {
        frameCounter.frames += 1;
        if (buf[4] === 0x70 && startsWith(buf, PRESENCE)) { // 'p': 42["p…
          this.presenceFrames += 1;
          frameCounter.presenceFrames += 1;
          frameCounter.presenceBytes += buf.length;
        }
        if (this.settled) {
          if (this.hooks.onEvent) this.hooks.onEvent(this, buf);
        } else if (startsWith(buf, AUTHENTICATED)) {
          this.settle('authenticated', null);
        } else if (startsWith(buf, AUTH_ERROR)) {
          this.settle('auth_error', authErrorCode(buf));
        }
        // Any other event before authentication is of no interest here.
      } else if (c1 === CH_4) {
        this.settle('connect_error', buf.toString('utf8', 2, Math.min(buf.length, 200)));
      }
      // 40 (CONNECT ack), 41 (DISCONNECT) and 43 (ACK) need no action: a
      // server DISCONNECT is followed by the transport closing.
    } else if (c0 === CH_2) {
      this.ws.send(PONG);
    } else if (c0 === CH_0) {
      this.ws.send(`40${this.authJson}`);
    } else if (c0 === CH_1) {
      this.terminate();
    }
  }

  /** Elapsed ms from the start of the connection until it settled. */
  settleMs() {
    return Number(this.settledAt - this.startedAt) / 1e6;
  }

  /** Closes with a WebSocket close frame; falls back to terminate if still connecting. */
  close() {
    this.closing = true;
    if (this.closed) return;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    else this.terminate();
  }

  terminate() {
    this.closing = true;
    clearTimeout(this.timer);
    if (!this.closed) this.ws.terminate();
  }
}

module.exports = { BenchClient, frameCounter, startsWith };
