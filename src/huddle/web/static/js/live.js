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
// - The state shown: "connected", "refreshing token", "degraded" (the gateway
//   could not fetch fresh data: until `data_refreshed`), "offline".

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

  /**
   * `handlers`: {state(name), authenticated(data), dataRefreshed(data),
   * event(type, payload), resync(), notice(message)}.
   */
  constructor(io, session, handlers) {
    this.#io = io;
    this.#session = session;
    this.#on = handlers;
  }

  get authenticated() {
    return this.#authenticated;
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
      reconnectionDelay: 1_000,
      reconnectionDelayMax: 10_000,
    });
    this.#socket = socket;
    this.#state("offline");

    socket.on("authenticated", (data) => {
      this.#authenticated = true;
      this.#renewFailures = 0;
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
      this.#reconnectIn(payload?.retryAfter ?? RECONNECT_AFTER_MS);
    });
    socket.on("connect_error", () => this.#lost());
    socket.on("disconnect", (reason) => {
      this.#lost();
      // socket.io reconnects by itself after network failures, but not after a
      // disconnect by the server; an authentication_error said what to do then,
      // and this is the fallback when nothing did.
      if (reason === "io server disconnect") this.#reconnectIn(RECONNECT_AFTER_MS);
    });
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#socket?.disconnect();
    this.#state("offline");
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
      this.#state("offline"); // RATE_LIMITED, CONNECTION_LIMIT: the server disconnects us
      this.#reconnectIn(error.retryAfter ?? RECONNECT_AFTER_MS);
    } else {
      this.stop(); // LOGIN
      this.#session.end(error.message || "Please log in again.");
    }
  }

  async #renew() {
    if (this.#renewing || this.#stopped) return;
    this.#renewing = true;
    this.#state("refreshing token");
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

  #reconnectIn(ms) {
    if (this.#stopped || this.#retryTimer !== null) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (!this.#stopped && this.#socket && !this.#socket.connected) this.#socket.connect();
    }, ms);
  }

  #lost() {
    this.#authenticated = false;
    this.#state("offline");
  }

  #showConnected() {
    if (this.#authenticated) this.#state(this.#degraded ? "degraded" : "connected");
    else this.#state("offline");
  }

  #state(name) {
    this.#on.state(name);
  }
}
