// The live connection: the official socket.io-client on the page's own origin,
// following the client loop of docs/protocol.md §11.
//
// - The handshake `auth` is a function, so every (re)connection sends the
//   current access token and event cursor (`lastEventId`): the gateway replays
//   what was missed, then `sync_complete`.
// - `token_expiring`, or `authentication_error` TOKEN_EXPIRED (the socket stays
//   open for AUTH_GRACE), renews on the same socket with `refresh_token
//   {refreshToken}` through the session's single refresh path. If the REST
//   client already renewed, the new access token is handed over with
//   `refresh_token {token}` instead of spending the refresh token again.
// - The state shown: "connecting" (the first attempt after signing in),
//   "connected", "refreshing token", "degraded" (the gateway could not fetch
//   fresh data: until `data_refreshed`), "offline".
// - Reconnecting is done here, not by socket.io-client's Manager: the page
//   shows when the connection was lost and when the next attempt starts, and
//   the Manager keeps its schedule to itself (its backoff is internal and it
//   tells only of an attempt as it begins). The schedule is the Manager's kind:
//   1 s doubling to at most 5 s, ±25 % jitter so that clients do not all come
//   back at once; `server_shutdown {retryAfter}` and RETRY errors set the
//   delay themselves, and "Retry now" (or the browser going online) skips it.

import { ApiError } from "./api.js";

const TEAM_EVENTS = [
  "task_created",
  "task_updated",
  "task_deleted",
  "team_updated",
  "team_deleted",
  "member_added",
  "member_updated",
  "member_removed",
];
const ACK_TIMEOUT_MS = 10_000;
const RENEW_RETRY_MS = 2_000;
const RENEW_ATTEMPTS = 5;
const RECONNECT_AFTER_MS = 5_000;
const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 5_000;

export class Live {
  #io;
  #session;
  #on;
  #socket = null;
  #socketToken = null; // the access token this socket last presented
  #authenticated = false;
  #degraded = false;
  #renewing = false;
  #renewFailures = 0;
  #retryTimer = null;
  #stopped = false;
  #state = "connecting";
  #lostAt = null; // when the connection was lost (ms since the epoch); null while it is up
  #retryAt = null; // when the next attempt starts; null while one runs or none is planned
  #attempts = 0; // failed attempts since the connection was last up
  #everUp = false;
  #onOnline = () => {
    if (this.offline) this.retryNow();
  };

  /**
   * `handlers`: {state(name), connection(info), authenticated(data),
   * dataRefreshed(data), event(type, payload), resync(), notice(message)}.
   * `connection` gets {state, lostAt, retryAt, connecting, everUp} whenever one changes.
   */
  constructor(io, session, handlers) {
    this.#io = io;
    this.#session = session;
    this.#on = handlers;
  }

  get authenticated() {
    return this.#authenticated;
  }

  /** {state, lostAt, retryAt, connecting, everUp}: what the offline banner shows. */
  get connection() {
    return {
      state: this.#state,
      everUp: this.#everUp,
      lostAt: this.#lostAt,
      retryAt: this.#retryAt,
      connecting: this.#lostAt !== null && this.#retryAt === null && !this.#stopped,
    };
  }

  /** Whether the connection was lost (or never came up): the page pauses editing. */
  get offline() {
    return this.#lostAt !== null;
  }

  start() {
    const session = this.#session;
    const socket = this.#io({
      auth: (send) => {
        this.#socketToken = session.accessToken;
        const auth = { token: session.accessToken };
        if (session.lastEventId !== null) auth.lastEventId = session.lastEventId;
        send(auth);
      },
      // WebSocket first (the gateway's lean sessions, no polling round trip);
      // long-polling when a proxy or network refuses WebSockets.
      transports: ["websocket", "polling"],
      tryAllTransports: true,
      reconnection: false, // see the top of this file
    });
    this.#socket = socket;
    this.#setState("connecting");

    socket.on("authenticated", (data) => {
      this.#authenticated = true;
      this.#everUp = true;
      this.#renewFailures = 0;
      this.#attempts = 0;
      this.#lostAt = null;
      this.#cancelRetry();
      this.#degraded = Boolean(data?.degraded);
      if (session.lastEventId === null) session.advance(data?.lastEventId);
      this.#showConnected();
      this.#on.authenticated(data);
    });
    socket.on("data_refreshed", (data) => {
      this.#degraded = false;
      this.#showConnected();
      this.#on.dataRefreshed(data);
      this.resume(); // fetch what the degraded period hid (protocol §9)
    });

    for (const type of TEAM_EVENTS) {
      socket.on(type, (payload) => {
        if (!Number.isInteger(payload?.eventId)) return;
        const cursor = session.lastEventId;
        if (cursor !== null && payload.eventId <= cursor) return; // already applied
        this.#on.event(type, payload);
        session.advance(payload.eventId);
      });
    }
    socket.on("presence_changed", (payload) => this.#on.event("presence_changed", payload));
    socket.on("sync_complete", (payload) => session.advance(payload?.lastEventId));
    socket.on("resync_required", (payload) => {
      // The replay point is gone: start over from the id given, reload through REST.
      session.setCursor(payload?.lastEventId);
      this.#on.resync();
    });

    socket.on("token_expiring", () => this.#renew());
    socket.on("token_refreshed", (tokens) => {
      session.setTokens(tokens ?? {});
      if (tokens?.accessToken) this.#socketToken = tokens.accessToken;
    });
    socket.on("authentication_error", (error) => this.#authError(error ?? {}));
    socket.on("error", (error) => {
      if (error?.message) this.#on.notice(`Live updates: ${error.message}`);
    });

    socket.on("server_shutdown", (payload) => {
      this.#lost();
      socket.disconnect();
      this.#retryIn(delay(payload?.retryAfter) ?? RECONNECT_AFTER_MS);
    });
    socket.on("connect_error", () => {
      this.#lost();
      this.#retryIn(null);
    });
    // The browser says the network is back: no need to wait for the plan.
    window.addEventListener("online", this.#onOnline);
    socket.on("disconnect", (reason) => {
      this.#lost();
      // Our own disconnect (shutdown notice, stop) planned what comes next; an
      // authentication_error RETRY planned its delay already.
      if (reason !== "io client disconnect") this.#retryIn(null);
    });
  }

  stop() {
    this.#stopped = true;
    window.removeEventListener("online", this.#onOnline);
    this.#cancelRetry();
    this.#socket?.disconnect();
    this.#lostAt = null;
    this.#setState("offline");
  }

  /** Try to connect now instead of at the planned time (the banner's button, the browser online). */
  retryNow() {
    if (this.#stopped || !this.#socket || this.#socket.connected) return;
    this.#cancelRetry();
    this.#report();
    this.#socket.connect();
  }

  /** The users online in a team (`team_presence`), or null when that cannot be asked now. */
  presence(teamId) {
    if (!this.#authenticated) return Promise.resolve(null);
    return this.#ask("team_presence", { teamId }).then(
      (data) => (Array.isArray(data?.online) ? data.online : null),
      () => null,
    );
  }

  /** Ask for the events after the cursor (after a degraded period). */
  resume() {
    const lastEventId = this.#session.lastEventId;
    if (!this.#authenticated || lastEventId === null) return;
    this.#ask("resume", { lastEventId }).catch(() => {});
  }

  #authError(error) {
    this.#authenticated = false;
    if (error.action === "REFRESH_TOKEN") {
      this.#renew(); // TOKEN_EXPIRED: the socket stays open for AUTH_GRACE
    } else if (error.action === "RETRY") {
      this.#lost(); // RATE_LIMITED, CONNECTION_LIMIT: the server disconnects us
      this.#retryIn(delay(error.retryAfter) ?? RECONNECT_AFTER_MS);
    } else {
      this.stop(); // LOGIN
      this.#session.end(error.message || "Please log in again.");
    }
  }

  async #renew() {
    if (this.#renewing || this.#stopped) return;
    this.#renewing = true;
    this.#setState("refreshing token");
    try {
      await this.#session.renew(this.#socketToken, (token) => this.#rotateHere(token));
      if (this.#socketToken !== this.#session.accessToken) {
        await this.#ask("refresh_token", { token: this.#session.accessToken });
      }
      // `token_refreshed` stored the pair; `authenticated` (state) follows.
    } catch (error) {
      if (this.#stopped || !this.#session.signedIn) return; // the session ended
      this.#renewFailures += 1;
      if (this.#socket?.connected && this.#renewFailures < RENEW_ATTEMPTS) {
        // BACKEND_UNAVAILABLE or no answer: the socket keeps its grace, try again.
        setTimeout(() => this.#renew(), RENEW_RETRY_MS);
      }
      this.#showConnected();
    } finally {
      this.#renewing = false;
    }
  }

  async #rotateHere(refreshToken) {
    const data = await this.#ask("refresh_token", { refreshToken });
    return { accessToken: data?.accessToken, refreshToken: data?.refreshToken };
  }

  /** Emit with an acknowledgement; resolves to `data`, rejects with an ApiError. */
  #ask(event, payload) {
    if (!this.#socket?.connected) {
      // socket.io would buffer the message and send it after a reconnect: a
      // refresh token sent that late may already be spent, which revokes the family.
      return Promise.reject(new ApiError(0, "NOT_CONNECTED", "Not connected."));
    }
    return new Promise((resolve, reject) => {
      this.#socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (timedOut, ack) => {
        if (timedOut) {
          reject(new ApiError(0, "TIMEOUT", "The server did not answer in time."));
        } else if (ack?.ok) {
          resolve(ack.data);
        } else {
          const error = ack?.error ?? {};
          reject(new ApiError(0, error.code ?? "ERROR", error.message ?? "Request failed."));
        }
      });
    });
  }

  /**
   * Plan the next attempt in `ms`, or on the backoff schedule when null. A
   * plan already made stands (the shutdown notice's delay is not cut short by
   * the disconnect that follows it).
   */
  #retryIn(ms) {
    if (this.#stopped || this.#retryTimer !== null) return;
    let wait = ms;
    if (wait === null) {
      const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.#attempts);
      wait = Math.round(base * (0.75 + Math.random() * 0.5));
    }
    this.#attempts += 1;
    this.#retryAt = Date.now() + wait;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#retryAt = null;
      this.#report();
      if (!this.#stopped && this.#socket && !this.#socket.connected) this.#socket.connect();
    }, wait);
    this.#report();
  }

  #cancelRetry() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#retryAt = null;
  }

  #lost() {
    this.#authenticated = false;
    if (this.#stopped) return;
    this.#lostAt ??= Date.now();
    this.#setState("offline");
  }

  #showConnected() {
    if (this.#authenticated) this.#setState(this.#degraded ? "degraded" : "connected");
    else this.#setState(this.#everUp || this.#lostAt !== null ? "offline" : "connecting");
  }

  #setState(name) {
    this.#state = name;
    this.#on.state(name);
    this.#report();
  }

  #report() {
    this.#on.connection?.(this.connection);
  }
}

/** A server-given delay in ms, or null when it is not a sane number. */
function delay(value) {
  return Number.isFinite(value) && value >= 0 && value <= 600_000 ? value : null;
}
