// The REST client: same origin, JSON, the access token in the Authorization
// header (never in a URL). An answer of 401 TOKEN_EXPIRED renews the token
// through the session's single refresh path and retries the request once.

const PAGE_LIMIT = 100;
const MAX_PAGES = 50;

/** A failed request: `status` (0 when the server was not reached), `code`, `message`, `details`. */
export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class Api {
  #session;

  constructor(session) {
    this.#session = session;
  }

  // --- auth (no access token) ---

  register(email, password, name) {
    return this.#call("POST", "/api/auth/register", { email, password, name });
  }

  async login(email, password) {
    const pair = await this.#call("POST", "/api/auth/login", { email, password });
    return { accessToken: pair.access_token, refreshToken: pair.refresh_token };
  }

  /** Rotate a refresh token. Only the session calls this, through `renew`. */
  async rotate(refreshToken) {
    const pair = await this.#call("POST", "/api/auth/refresh", { refresh_token: refreshToken });
    return { accessToken: pair.access_token, refreshToken: pair.refresh_token };
  }

  logout(refreshToken) {
    return this.#call("POST", "/api/auth/logout", { refresh_token: refreshToken });
  }

  // --- users, teams, tasks ---

  me() {
    return this.request("GET", "/api/users/me");
  }

  userTeams(userId) {
    return this.#all(`/api/users/${id(userId)}/teams`);
  }

  team(teamId) {
    return this.request("GET", `/api/teams/${id(teamId)}`);
  }

  createTeam(name) {
    return this.request("POST", "/api/teams", { name });
  }

  /** `fields`: {name?, description?} (owners and admins). */
  updateTeam(teamId, fields) {
    return this.request("PATCH", `/api/teams/${id(teamId)}`, fields);
  }

  deleteTeam(teamId) {
    return this.request("DELETE", `/api/teams/${id(teamId)}`);
  }

  members(teamId) {
    return this.#all(`/api/teams/${id(teamId)}/members`);
  }

  /** By the address they registered with: an unknown one answers 404 USER_NOT_FOUND. */
  addMember(teamId, email, role = "member") {
    return this.request("POST", `/api/teams/${id(teamId)}/members`, { email, role });
  }

  setMemberRole(teamId, userId, role) {
    return this.request("PATCH", `/api/teams/${id(teamId)}/members/${id(userId)}`, { role });
  }

  /** Remove a member, or leave (`userId` = yourself). */
  removeMember(teamId, userId) {
    return this.request("DELETE", `/api/teams/${id(teamId)}/members/${id(userId)}`);
  }

  tasks(teamId) {
    return this.#all(`/api/teams/${id(teamId)}/tasks`);
  }

  createTask(teamId, fields) {
    return this.request("POST", `/api/teams/${id(teamId)}/tasks`, fields);
  }

  /** PATCH with the version edited: a stale one answers 409 VERSION_CONFLICT, details.current. */
  updateTask(taskId, fields, version) {
    return this.request("PATCH", `/api/tasks/${id(taskId)}`, { ...fields, version });
  }

  deleteTask(taskId) {
    return this.request("DELETE", `/api/tasks/${id(taskId)}`);
  }

  /** An authenticated request; renews the access token once if it has expired. */
  async request(method, path, body) {
    const session = this.#session;
    const token = session.accessToken;
    if (!token) throw new ApiError(401, "TOKEN_MISSING", "You are not signed in.");
    try {
      return await this.#call(method, path, body, token);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
      if (error.code !== "TOKEN_EXPIRED") {
        session.end(error.message);
        throw error;
      }
    }
    const fresh = await session.renew(token, (refreshToken) => this.rotate(refreshToken));
    try {
      return await this.#call(method, path, body, fresh);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) session.end(error.message);
      throw error;
    }
  }

  async #all(path) {
    const items = [];
    let cursor = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const query = new URLSearchParams({ limit: String(PAGE_LIMIT) });
      if (cursor) query.set("cursor", cursor);
      const body = await this.request("GET", `${path}?${query}`);
      items.push(...body.items);
      cursor = body.nextCursor;
      if (!cursor) break;
    }
    return items;
  }

  async #call(method, path, body, token) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "NETWORK", "The server could not be reached. Check your connection.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      // not JSON (a proxy's error page): described below by the status alone
    }
    if (response.ok) return data;
    const error = data?.error ?? {};
    throw new ApiError(
      response.status,
      error.code ?? `HTTP_${response.status}`,
      error.message ?? `The server answered ${response.status}.`,
      error.details ?? null,
    );
  }
}

/** A positive integer for a URL path segment (ids come from the server, but never trust). */
function id(value) {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new ApiError(0, "BAD_ID", "Invalid id.");
  return number;
}
