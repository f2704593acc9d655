// The signed-in session: the token pair, the event cursor and the open team,
// kept in memory and in sessionStorage (one tab, gone when it closes; never in
// a URL, never in localStorage).
//
// Refresh tokens rotate and each works once; presenting a spent one revokes
// the whole family (SPEC §3). So every refresh, whether the REST client or the
// socket asks for it, goes through `renew`, which runs one rotation at a time
// and lets every other caller wait for its result instead of spending the same
// refresh token twice.

const KEY = "huddle.session";
const ENDING_CODES = new Set(["TOKEN_INVALID", "TOKEN_REVOKED", "TOKEN_MISSING"]);

export class Session {
  #storage;
  #pending = null;

  constructor(storage = window.sessionStorage) {
    this.#storage = storage;
    const saved = this.#read();
    this.accessToken = typeof saved.accessToken === "string" ? saved.accessToken : null;
    this.refreshToken = typeof saved.refreshToken === "string" ? saved.refreshToken : null;
    this.lastEventId = Number.isInteger(saved.lastEventId) ? saved.lastEventId : null;
    this.teamId = Number.isInteger(saved.teamId) ? saved.teamId : null;
    /** Called once when the session ends (logout, revoked, refresh refused). */
    this.onEnded = () => {};
  }

  get signedIn() {
    return Boolean(this.accessToken && this.refreshToken);
  }

  /** A fresh login: its token pair, no cursor yet. */
  start({ accessToken, refreshToken }) {
    this.accessToken = accessToken;
    this.refreshToken = refreshToken;
    this.lastEventId = null;
    this.#save();
  }

  setTokens({ accessToken, refreshToken }) {
    if (typeof accessToken === "string" && accessToken) this.accessToken = accessToken;
    if (typeof refreshToken === "string" && refreshToken) this.refreshToken = refreshToken;
    this.#save();
  }

  /** Move the event cursor forward (never back). */
  advance(eventId) {
    if (!Number.isInteger(eventId)) return;
    if (this.lastEventId === null || eventId > this.lastEventId) {
      this.lastEventId = eventId;
      this.#save();
    }
  }

  /** Set the cursor outright (after `resync_required`, whose id is the new starting point). */
  setCursor(eventId) {
    if (!Number.isInteger(eventId)) return;
    this.lastEventId = eventId;
    this.#save();
  }

  rememberTeam(teamId) {
    this.teamId = teamId;
    this.#save();
  }

  /**
   * A fresh access token, obtained once however many callers ask.
   *
   * `staleToken` is the access token the caller found expired: when the
   * session already holds another one, a refresh happened meanwhile and that
   * one is returned without spending the refresh token. `rotate(refreshToken)`
   * performs the rotation (over REST or on the socket) and resolves to the new
   * `{accessToken, refreshToken}`.
   */
  renew(staleToken, rotate) {
    if (this.#pending) return this.#pending;
    if (!this.signedIn) return Promise.reject(sessionError("You are not signed in."));
    if (staleToken && staleToken !== this.accessToken) return Promise.resolve(this.accessToken);
    const spent = this.refreshToken;
    this.#pending = (async () => {
      try {
        const pair = await rotate(spent);
        this.setTokens(pair);
        return this.accessToken;
      } catch (error) {
        if (endsSession(error)) this.end(error.message);
        throw error;
      } finally {
        this.#pending = null;
      }
    })();
    return this.#pending;
  }

  /** Forget everything and tell the page (only the first time). */
  end(message) {
    const wasSignedIn = this.signedIn;
    this.accessToken = null;
    this.refreshToken = null;
    this.lastEventId = null;
    this.teamId = null;
    try {
      this.#storage.removeItem(KEY);
    } catch {
      // storage unavailable (private mode quotas): memory is cleared anyway
    }
    if (wasSignedIn) this.onEnded(message);
  }

  #read() {
    try {
      const value = JSON.parse(this.#storage.getItem(KEY) ?? "{}");
      return value && typeof value === "object" ? value : {};
    } catch {
      return {};
    }
  }

  #save() {
    if (!this.signedIn) return;
    const { accessToken, refreshToken, lastEventId, teamId } = this;
    try {
      this.#storage.setItem(KEY, JSON.stringify({ accessToken, refreshToken, lastEventId, teamId }));
    } catch {
      // storage full or disabled: the session still lives in memory for this page
    }
  }
}

/** Whether a failed refresh means the user must log in again. */
export function endsSession(error) {
  const code = error?.code ?? "";
  return code.startsWith("REFRESH_TOKEN") || ENDING_CODES.has(code);
}

function sessionError(message) {
  const error = new Error(message);
  error.code = "TOKEN_MISSING";
  return error;
}
