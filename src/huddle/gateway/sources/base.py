"""Where the gateway gets a user's teams and tasks, refreshes tokens and replays events.

One protocol, two implementations; the composition root (`huddle.app`) picks:

- `InProcessSource(runtime)` (`inprocess.py`, `huddle serve`): the services,
  in this process, with a warm per-user cache.
- `HttpSource(settings)` (`http.py`, `huddle gateway`): the REST API at
  BACKEND_URL, called with the user's own access token, through a pooled
  httpx client with a timeout, one retry on connection errors, a circuit
  breaker (`breaker.py`) and a per-user cache for degraded answers
  (`cache.py`).

What the gateway calls:

    await source.start()                             # in the lifespan; `stop()` at shutdown
    data = await source.fetch(claims, token)         # UserData(user, teams, tasks, degraded)
    tokens = await source.rotate(refresh_token)      # RefreshedTokens
    replay = await source.replay(user_id, token, after)  # Replay(events, resync_required,
                                                         #        last_event_id, more)
    source.invalidate(stale)                         # an event changed these users' data
    source.on_recovered(refresh_degraded_sockets)    # async () -> None, after an outage

Contract:
- `fetch` takes the verified claims of `token` (the gateway verifies a token
  once, where it enters). It never raises for a backend failure (timeout,
  5xx, connection refused, open breaker, database down): it answers within
  BACKEND_TIMEOUT with the cached data (HTTP: cached less than 60 s ago and
  not made stale since) or else `{id}` and empty lists, and `degraded=True`.
  It raises the matching AuthError when the backend rejects the token
  (TOKEN_REVOKED, TOKEN_INVALID for an unknown or disabled user): that is an
  answer, not a failure. Over HTTP the cache is a fallback only: a working
  backend is always asked, so it re-checks the token on every fetch. In
  process the cache is warm, and the relay keeps it exact (`invalidate`).
- `rotate` raises REFRESH_TOKEN_EXPIRED/INVALID/REUSED as the API answers, and
  BackendUnavailable when the backend (or database) cannot answer.
- `replay` returns at most `MAX_PAGE` (1,000) events; `more` says to call again
  with `after=last_event_id`. It raises BackendUnavailable when the backend
  cannot answer, AuthError when it rejects the token, BadRequest for a
  negative `after`. Visibility and edge cases: `huddle.services.events`.
- `invalidate(stale)`: the relay hands every event's `StaleData` (from the
  event catalogue, `huddle.events.types`) here; the users named, and every
  member of the teams named, are fetched fresh next time.
- `on_recovered(callback)`: after a failed call, a background probe (started
  by `start()`) watches the backend; the first success after the failure runs
  each callback once, as a task. The gateway keeps the sockets it sent
  `degraded: true`, and in the callback calls `fetch` again for each and
  emits `data_refreshed {teams, tasks}` for those that come back not degraded.

Limits, the same on both paths: all of a user's teams up to `MAX_TEAMS` (1,000)
and the first `MAX_TASKS` (500) tasks assigned to them, by id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from huddle.events.envelope import Envelope
from huddle.events.types import StaleData
from huddle.security.tokens import Claims

MAX_TEAMS = 1000
"""A user's teams fetched at most (all of them, in practice)."""
MAX_TASKS = 500
"""Tasks assigned to the user fetched at most: the first ones, by id."""


@dataclass(frozen=True, slots=True)
class UserData:
    """What `authenticated` and `data_refreshed` carry (wire dicts, camelCase)."""

    user: dict[str, Any]
    teams: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    degraded: bool = False
    head: int | None = None
    """The event log's newest id when the data was read (every event up to it is
    reflected in it); None when the source cannot tell (a cached copy, an older API)."""

    @property
    def team_ids(self) -> list[int]:
        return [int(team["id"]) for team in self.teams]


def fallback(user_id: int) -> UserData:
    """What a degraded fetch answers without a cached copy: the id from the token, no lists."""
    return UserData(user={"id": user_id}, teams=[], tasks=[], degraded=True)


@dataclass(frozen=True, slots=True)
class RefreshedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Replay:
    """Events after a client's `lastEventId`, or `resync_required` when they are gone.

    `last_event_id`: the position the client is synced through after `events`.
    `more`: a page limit cut the replay short; call again with `after=last_event_id`.
    """

    events: list[Envelope] = field(default_factory=list)
    resync_required: bool = False
    last_event_id: int | None = None
    more: bool = False


RecoveredCallback = Callable[[], Awaitable[None]]


class UserDataSource(Protocol):
    async def fetch(self, claims: Claims, token: str) -> UserData:
        """The user's profile, teams and assigned tasks; degraded, never raising, on failure."""
        ...

    async def rotate(self, refresh_token: str) -> RefreshedTokens:
        """Redeem a refresh token through the auth service; raises REFRESH_TOKEN_* errors."""
        ...

    async def replay(self, user_id: int, token: str, after: int) -> Replay:
        """Events of the user's teams (and about the user) with id > after, in order."""
        ...

    def invalidate(self, stale: StaleData) -> None:
        """Forget the cached data an event made stale."""
        ...

    def on_recovered(self, callback: RecoveredCallback) -> None:
        """Run `callback` (as a task) each time the backend answers again after failing."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
