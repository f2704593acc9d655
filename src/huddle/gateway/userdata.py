"""Where the gateway gets a user's teams and tasks, refreshes tokens and replays events.

One protocol, two implementations chosen at start:
- `InProcessSource` (under `huddle serve`): calls the services directly.
- `HttpSource` (under `huddle gateway` with BACKEND_URL): calls the REST API
  with the user's own token, through a pooled httpx client with a timeout,
  one retry on connection errors, a circuit breaker and a per-user cache.

Backend failures never raise out of `fetch`: it answers from the cache, or
empty, with `degraded=True`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from huddle.events.envelope import Envelope


@dataclass(frozen=True, slots=True)
class UserData:
    """What `authenticated` and `data_refreshed` carry (wire dicts, camelCase)."""

    user: dict[str, Any]
    teams: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    degraded: bool = False

    @property
    def team_ids(self) -> list[int]:
        return [int(team["id"]) for team in self.teams]


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


class UserDataSource(Protocol):
    async def fetch(self, user_id: int, token: str) -> UserData:
        """The user's profile, teams and assigned tasks; degraded, never raising, on failure.

        Raises AuthError (TOKEN_REVOKED, TOKEN_INVALID) when the backend rejects the token.
        """
        ...

    async def rotate(self, refresh_token: str) -> RefreshedTokens:
        """Redeem a refresh token through the auth service; raises REFRESH_TOKEN_* errors."""
        ...

    async def replay(self, user_id: int, token: str, after: int) -> Replay:
        """Events of the user's teams (and about the user) with id > after, in order."""
        ...

    def invalidate(self, user_id: int) -> None:
        """Drop the cached data of a user (an event changed their teams or tasks)."""
        ...

    def on_recovered(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` (as a task) each time the backend answers again after failing."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
