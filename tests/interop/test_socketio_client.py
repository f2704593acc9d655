"""The official `socket.io-client` (npm, 4.x) drives a real `huddle serve`: the seed scenarios.

The seed (`seed/websocket-server-fixes.md`) promised a Node.js client six
things: a valid token authenticates, an expired one is told to refresh and may
do so on the same socket, localhost gets a burst of 20 connection attempts,
both forms of token refresh work, the user's teams and tasks come with
`authenticated` and REST changes arrive live, and reconnect storms with an
expired token are not rate-limited like normal attempts. Each runs here with
the client browsers and Node.js apps use, over `transports: ['websocket']`,
over the client's default (HTTP long-polling, then the upgrade to WebSocket)
and over long-polling alone.

How: one `huddle serve` subprocess on a free port for the module (default rate
limits; AUTH_GRACE short so the grace period can be watched end to end;
JWT_LEEWAY=0). Each test makes its own users, teams and tasks through the REST
API, signs the tokens it needs (expired ones included) with the server's
secret, and runs `scenarios.js <scenario>` under Node with a bounded timeout.
The driver prints one JSON line of observations; the assertions are here.
Every test connects from a loopback address of its own (127.0.0.x, through the
client's `agent` option) and so has rate-limit buckets of its own, except the
rate-limit scenario over WebSocket, which uses plain 127.0.0.1.

Needs Node.js >= 18 and `npm ci` in tests/interop (`make node`; `make test`
runs it). Without them the tests skip, or fail when HUDDLE_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.factories import Factory, TestUser
from tests.gateway.live import LiveServer
from tests.nodejs import node_with, run_report, unavailable

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "scenarios.js"
CLIENT_PACKAGE = HERE / "node_modules" / "socket.io-client" / "package.json"

SECRET = "interop-test-secret-not-for-production-0123456789abcdef"
GRACE_S = 2.0
NODE_TIMEOUT_S = 45.0
DRIVER_DEADLINE_MS = 30_000
MIN_NODE = 18

EXPIRED_MESSAGE = "Token has expired. Please refresh your session or log in again."
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
AUTHENTICATED_KEYS = {
    "success",
    "user",
    "teams",
    "tasks",
    "timestamp",
    "expiresAt",
    "lastEventId",
    "degraded",
}
# SPEC §5 defaults under test (the server runs with them).
LOCALHOST_BURST = 20
LOCALHOST_COOLDOWN_MS = 500
EXPIRED_RECONNECTS = 30

SCENARIOS = (
    "valid_token",
    "expired_token",
    "rate_limit",
    "token_refresh",
    "backend_integration",
    "expired_reconnects",
)
TRANSPORTS = {
    # parameter id: the driver's `transports` setting
    "websocket": "websocket",
    "polling-upgrade": "default",
    # Long-polling throughout, as behind a proxy that blocks WebSocket: with the
    # default the upgrade often completes before the first event is sent.
    "polling-only": "polling",
}
transports = pytest.mark.parametrize("transport", list(TRANSPORTS.values()), ids=list(TRANSPORTS))


# --- prerequisites ------------------------------------------------------------


def _node() -> str:
    """`node` with the pinned socket.io-client 4.x; LookupError says what is missing."""
    node = node_with(
        HERE, "socket.io-client", min_node=MIN_NODE, install_hint="`make node` (npm ci)"
    )
    version = json.loads(CLIENT_PACKAGE.read_text())["version"]
    if not version.startswith("4."):
        raise LookupError(f"socket.io-client 4.x is needed, found {version}")
    return node


def _loopback_range_usable() -> bool:
    """Whether this host lets a client bind 127.0.0.x besides 127.0.0.1 (Linux does)."""
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.2", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with socket.io-client installed as pinned."""
    try:
        executable = _node()
    except LookupError as missing:
        unavailable(str(missing))
    if not _loopback_range_usable():
        unavailable("the interop tests bind 127.0.0.x source addresses; this host cannot")
    return executable


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, node: str) -> Iterator[LiveServer]:
    env = {
        "JWT_SECRET": SECRET,
        "JWT_LEEWAY": "0",
        "AUTH_GRACE": str(GRACE_S),
        "AUTH_TIMEOUT": "5",
        "RATE_LIMIT_ENABLED": "true",
        # Not under test, and the rate-limit bursts hold 20+ sockets of one user.
        "MAX_CONNECTIONS_PER_USER": "100",
        # The scenario reuses a spent refresh token at once and expects reuse.
        "REFRESH_REUSE_GRACE": "0",
    }
    with LiveServer(tmp_path_factory.mktemp("interop"), env=env) as live:
        yield live


@pytest.fixture
async def factory(server: LiveServer) -> AsyncIterator[Factory]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield Factory(client)


# --- helpers -------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A user of the test. Its tokens stay out of its repr, and so out of failure reports."""

    id: int
    email: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)

    @classmethod
    def of(cls, user: TestUser) -> Account:
        return cls(user.id, user.email, user.access_token, user.refresh_token)


async def account(factory: Factory, name: str = "Interop User") -> Account:
    return Account.of(await factory.user(name=name))


class Inputs(dict[str, Any]):
    """What a scenario is given (tokens among it): never shown in a traceback."""

    def __repr__(self) -> str:
        return f"Inputs({', '.join(self)})"


def mint(user_id: int, *, ttl: float) -> str:
    """An access token signed with the server's secret; a negative `ttl` makes it expired."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "type": "access",
        "iat": now if ttl > 0 else now + int(ttl) - 60,
        "exp": now + int(ttl),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def fingerprint(token: str) -> str:
    """What the driver prints in place of a token (the `jwt` field)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def iso_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def exp_of(token: str) -> int:
    exp: int = jwt.decode(token, options={"verify_signature": False})["exp"]
    return exp


def expires(token: str) -> str:
    """The `expiresAt` the gateway announces for `token`."""
    return iso_of(exp_of(token))


def source_address(scenario: str, transport: str) -> str | None:
    """A loopback address per test, so that each has rate-limit buckets of its own."""
    if (scenario, transport) == ("rate_limit", "websocket"):
        return None  # plain 127.0.0.1, like a developer's client
    index = SCENARIOS.index(scenario) * len(TRANSPORTS) + list(TRANSPORTS.values()).index(transport)
    return f"127.0.0.{10 + index}"


async def drive(
    node: str, server: LiveServer, scenario: str, transport: str, inputs: Inputs
) -> dict[str, Any]:
    """Run one scenario of scenarios.js and return its observations (tokens redacted)."""
    settings = {
        "url": server.url,
        "transports": transport,
        "localAddress": source_address(scenario, transport),
        "deadlineMs": DRIVER_DEADLINE_MS,
        **inputs,
    }
    return await run_report(
        [node, str(DRIVER), scenario],
        cwd=HERE,
        env_name="HUDDLE_INTEROP",
        config=settings,
        timeout=NODE_TIMEOUT_S,
        label=f"{scenario} ({transport})",
        server_log=lambda: server.log_text(tail=3000),
    )


def assert_transport(socket_summary: dict[str, Any], transport: str) -> None:
    """The socket really used the transport setting under test."""
    used = socket_summary["transport"]
    if transport == "websocket":
        assert used == {"initial": "websocket", "upgradedTo": None, "current": "websocket"}, used
    elif transport == "polling":
        assert used == {"initial": "polling", "upgradedTo": None, "current": "polling"}, used
    else:
        assert used == {"initial": "polling", "upgradedTo": "websocket", "current": "websocket"}, (
            used
        )


def assert_authenticated(
    body: dict[str, Any],
    user: Account,
    expires_at: str,
    *,
    teams: dict[int, str] | None = None,
    tasks: list[dict[str, Any]] | None = None,
) -> None:
    """SPEC §4.1 `authenticated`: the user, their teams (id -> role) and assigned tasks."""
    assert set(body) == AUTHENTICATED_KEYS, body
    assert body["success"] is True
    assert body["degraded"] is False
    assert body["user"]["id"] == user.id
    assert body["user"]["email"] == user.email
    assert ISO_UTC.match(body["timestamp"]), body["timestamp"]
    stamp = datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(stamp.timestamp() - time.time()) < 60
    assert body["expiresAt"] == expires_at
    assert type(body["lastEventId"]) is int and body["lastEventId"] >= 0
    if teams is not None:
        assert {t["id"]: t["role"] for t in body["teams"]} == teams
        for team in body["teams"]:
            assert {"id", "name", "description", "createdAt", "role"} <= set(team), team
    if tasks is not None:
        assert sorted(body["tasks"], key=lambda t: t["id"]) == sorted(tasks, key=lambda t: t["id"])


def timeline(socket_summary: dict[str, Any]) -> list[str]:
    """What a socket went through, in order, without presence noise."""
    return [name for name in socket_summary["names"] if name != "presence_changed"]


def names(events: list[dict[str, Any]], name: str) -> list[Any]:
    return [e["data"] for e in events if e["name"] == name]


async def user_with_data(factory: Factory) -> tuple[Account, Account, dict[int, str], list[Any]]:
    """A user in two teams (owner of one, member of another) with tasks assigned in both.

    Returns the user, the other team's owner, the user's teams (id -> role)
    and the tasks assigned to the user.
    """
    user, other = await factory.user(name="Interop User"), await factory.user(name="Colleague")
    own = await factory.team(user)
    shared = await factory.team(other)
    await factory.member(shared["id"], other, user)
    assigned = [
        await factory.task(own["id"], user, assigneeId=user.id, priority="high"),
        await factory.task(shared["id"], other, assigneeId=user.id),
    ]
    await factory.task(own["id"], user)  # unassigned: not among the user's tasks
    await factory.task(shared["id"], other, assigneeId=other.id)  # someone else's
    teams = {own["id"]: "owner", shared["id"]: "member"}
    return Account.of(user), Account.of(other), teams, assigned


# --- the six scenarios ---------------------------------------------------------------
# Tokens go to the driver inside `Inputs`; assertions compare ids, expiry times
# and fingerprints computed beforehand, so no token is ever part of a report.


@transports
async def test_1_valid_token_authenticates_with_teams_and_tasks(
    node: str, server: LiveServer, factory: Factory, transport: str
) -> None:
    user, _, teams, tasks = await user_with_data(factory)
    expires_at = expires(user.access_token)
    result = await drive(node, server, "valid_token", transport, Inputs(token=user.access_token))

    handshake = result["handshake"]
    assert_authenticated(handshake["authenticated"], user, expires_at, teams=teams, tasks=tasks)
    assert timeline(handshake["socket"]) == ["connect", "authenticated"]
    assert handshake["socket"]["connected"] is True
    assert_transport(handshake["socket"], transport)

    # The same through `authenticate {token}` after an anonymous connect, acknowledged.
    event = result["event"]
    assert event["ack"] == {"ok": True, "data": event["authenticated"]}
    assert_authenticated(event["authenticated"], user, expires_at, teams=teams, tasks=tasks)
    assert timeline(event["socket"]) == ["connect", "authenticated"]
    assert event["socket"]["connected"] is True
    assert_transport(event["socket"], transport)


@transports
async def test_2_expired_token_is_told_to_refresh_and_refreshes_on_the_same_socket(
    node: str, server: LiveServer, factory: Factory, transport: str
) -> None:
    user, _, teams, tasks = await user_with_data(factory)
    spent = fingerprint(user.refresh_token)
    inputs = Inputs(
        expiredToken=mint(user.id, ttl=-60),
        refreshToken=user.refresh_token,
        graceMs=int(GRACE_S * 1000),
    )
    result = await drive(node, server, "expired_token", transport, inputs)

    told = {
        "message": EXPIRED_MESSAGE,
        "code": "TOKEN_EXPIRED",
        "action": "REFRESH_TOKEN",
        "retryAfter": 2000,
    }
    assert result["error"] == told
    assert result["idleError"] == told
    assert result["openDuringGrace"] == {"refreshing": True, "idle": True}

    # refresh_token {refreshToken} on the same socket: token_refreshed, then authenticated.
    ack = result["ack"]
    assert ack["ok"] is True, ack
    refreshed = ack["data"]
    assert result["refreshed"] == refreshed
    assert set(refreshed) == {"accessToken", "refreshToken", "expiresIn", "expiresAt"}
    assert refreshed["accessToken"]["sub"] == str(user.id)
    assert refreshed["accessToken"]["type"] == "access"
    assert refreshed["refreshToken"]["type"] == "refresh"
    assert refreshed["refreshToken"]["jwt"] != spent
    assert type(refreshed["expiresIn"]) is int and refreshed["expiresIn"] > 0
    assert ISO_UTC.match(refreshed["expiresAt"])
    # Teams and tasks fetched again, for the new token.
    assert_authenticated(
        result["authenticated"], user, refreshed["expiresAt"], teams=teams, tasks=tasks
    )
    socket = result["socket"]
    assert timeline(socket)[:4] == [
        "connect",
        "authentication_error",
        "token_refreshed",
        "authenticated",
    ]
    # ... and it is not cut off when the grace its expired token began runs out.
    assert socket["connected"] is True
    assert "disconnect" not in socket["names"]
    assert_transport(socket, transport)

    # A socket that does nothing with its grace is disconnected when it ends.
    idle = result["idleDisconnect"]
    assert idle["reason"] == "io server disconnect"
    assert GRACE_S * 1000 - 500 <= idle["afterErrorMs"] <= GRACE_S * 1000 + 3000, idle
    assert timeline(result["idle"]) == ["connect", "authentication_error", "disconnect"]


@transports
async def test_3_localhost_gets_a_burst_of_20_then_rate_limited_then_room_after_cooldown(
    node: str, server: LiveServer, factory: Factory, transport: str
) -> None:
    user = await account(factory)
    inputs = Inputs(token=user.access_token, burst=LOCALHOST_BURST, maxExtra=10)
    result = await drive(node, server, "rate_limit", transport, inputs)

    assert result["burst"] == ["authenticated"] * LOCALHOST_BURST
    *more, refused = result["extra"]
    # The bucket refills one attempt per cooldown: only a slow burst earns more than 20.
    assert [m["name"] for m in more] == ["authenticated"] * len(more)
    assert len(more) <= result["refusedAfterMs"] // LOCALHOST_COOLDOWN_MS + 1, result
    assert refused["name"] == "authentication_error", refused
    error = refused["data"]
    assert set(error) == {"message", "code", "action", "retryAfter"}
    assert (error["code"], error["action"]) == ("RATE_LIMITED", "RETRY")
    assert type(error["retryAfter"]) is int
    assert 0 < error["retryAfter"] <= LOCALHOST_COOLDOWN_MS
    assert result["refusedDisconnect"] == "io server disconnect"
    assert result["afterCooldown"]["name"] == "authenticated", result["afterCooldown"]


@transports
async def test_4_token_refresh_both_forms_with_acknowledgements(
    node: str, server: LiveServer, factory: Factory, transport: str
) -> None:
    user = await account(factory)
    fresh = mint(user.id, ttl=600)
    fresh_print, fresh_expiry, spent = (
        fingerprint(fresh),
        expires(fresh),
        fingerprint(user.refresh_token),
    )
    inputs = Inputs(token=user.access_token, freshToken=fresh, refreshToken=user.refresh_token)
    result = await drive(node, server, "token_refresh", transport, inputs)

    assert_authenticated(result["authenticated"], user, expires(user.access_token))

    # {token}: an access token the client renewed itself, same user; nothing rotates.
    access = result["access"]
    assert access["ack"]["ok"] is True, access["ack"]
    data = access["ack"]["data"]
    assert access["refreshed"] == data
    assert data["accessToken"]["jwt"] == fresh_print
    assert data["refreshToken"] is None
    assert 590 <= data["expiresIn"] <= 600
    assert data["expiresAt"] == fresh_expiry
    assert_authenticated(access["authenticated"], user, fresh_expiry)

    # {refreshToken}: rotated through the API; a new pair.
    rotate = result["rotate"]
    assert rotate["ack"]["ok"] is True, rotate["ack"]
    pair = rotate["ack"]["data"]
    assert rotate["refreshed"] == pair
    assert pair["accessToken"]["sub"] == str(user.id)
    assert pair["accessToken"]["type"] == "access"
    assert pair["refreshToken"]["type"] == "refresh"
    assert pair["refreshToken"]["jwt"] != spent
    assert type(pair["expiresIn"]) is int and pair["expiresIn"] > 0
    assert_authenticated(rotate["authenticated"], user, pair["expiresAt"])

    # The rotated-out refresh token is spent: reusing it is caught and kills the family.
    assert result["reuse"]["status"] == 401
    assert result["reuse"]["body"]["error"]["code"] == "REFRESH_TOKEN_REUSED"
    assert result["afterReuse"]["status"] == 401

    # The reuse revoked the family, and with it the access token this socket was
    # renewed with (SPEC §3: open sockets too): told, then disconnected.
    socket = result["socket"]
    assert timeline(socket) == [
        "connect",
        "authenticated",
        "token_refreshed",
        "authenticated",
        "token_refreshed",
        "authenticated",
        "authentication_error",
        "disconnect",
    ]
    assert socket["connected"] is False
    assert socket["disconnect"] == "io server disconnect"
    assert_transport(socket, transport)


@transports
async def test_5_backend_data_on_authentication_and_rest_changes_arrive_live(
    node: str, server: LiveServer, factory: Factory, transport: str
) -> None:
    user, other, teams, tasks = await user_with_data(factory)
    own_team, shared_team = list(teams)
    outsider = await factory.user(name="Outsider")
    private_team = (await factory.team(outsider))["id"]
    newcomer = await account(factory, "Newcomer")
    user_expiry, newcomer_expiry = expires(user.access_token), expires(newcomer.access_token)
    inputs = Inputs(
        userId=user.id,
        userToken=user.access_token,
        otherToken=other.access_token,
        outsiderToken=outsider.access_token,
        newcomerId=newcomer.id,
        newcomerEmail=newcomer.email,
        newcomerToken=newcomer.access_token,
        ownTeamId=own_team,
        sharedTeamId=shared_team,
        privateTeamId=private_team,
    )
    result = await drive(node, server, "backend_integration", transport, inputs)

    start = result["authenticated"]
    assert_authenticated(start, user, user_expiry, teams=teams, tasks=tasks)
    assert_authenticated(result["newcomerAuthenticated"], newcomer, newcomer_expiry, teams={})
    rest = result["rest"]
    assert {k: v["status"] for k, v in rest.items()} == dict.fromkeys(rest, 201), rest

    events = result["user"]["events"]
    created = names(events, "task_created")
    assert [c["task"]["id"] for c in created] == [
        rest["sharedTask"]["body"]["id"],
        rest["ownTask"]["body"]["id"],
    ], "the user gets the tasks of their teams, and only those"
    shared_created, own_created = created
    assert set(shared_created) == {"eventId", "teamId", "task", "actorId", "timestamp"}
    assert shared_created["teamId"] == shared_team
    assert shared_created["task"] == rest["sharedTask"]["body"]
    assert shared_created["task"]["assigneeId"] == user.id
    assert shared_created["actorId"] == other.id
    assert ISO_UTC.match(shared_created["timestamp"])
    assert own_created["teamId"] == own_team
    assert own_created["task"] == rest["ownTask"]["body"]
    assert own_created["actorId"] == user.id

    (added,) = names(events, "member_added")
    assert set(added) == {"eventId", "teamId", "user", "role", "actorId", "timestamp"}
    assert added["teamId"] == own_team
    assert added["user"]["id"] == newcomer.id
    assert added["user"]["email"] == newcomer.email
    assert added["role"] == "member"
    assert added["actorId"] == user.id
    assert ISO_UTC.match(added["timestamp"])

    live = [e["data"]["eventId"] for e in events if e["name"] in ("task_created", "member_added")]
    assert live == sorted(live) and len(set(live)) == len(live), live
    assert live[0] > start["lastEventId"]

    # The newcomer hears of being added, then receives the team's events at once.
    newcomer_events = result["newcomer"]["events"]
    assert names(newcomer_events, "member_added") == [added]
    assert names(newcomer_events, "task_created") == [own_created]
    for party in ("user", "newcomer"):
        socket = result[party]["socket"]
        assert socket["connected"] is True
        assert not {"authentication_error", "error", "disconnect"} & set(socket["names"])
        assert_transport(socket, transport)


@transports
async def test_6_expired_token_reconnect_storm_never_rate_limited_nor_blocks_valid_ones(
    node: str, server: LiveServer, factory: Factory, transport: str
) -> None:
    user = await account(factory)
    inputs = Inputs(
        expiredToken=mint(user.id, ttl=-60),
        token=user.access_token,
        attempts=EXPIRED_RECONNECTS,
        burst=LOCALHOST_BURST,
    )
    result = await drive(node, server, "expired_reconnects", transport, inputs)

    codes = [answer.get("code") for answer in result["expired"]]
    assert codes == ["TOKEN_EXPIRED"] * EXPIRED_RECONNECTS, result["expired"]
    assert all(answer["action"] == "REFRESH_TOKEN" for answer in result["expired"])
    # Those attempts went to the expired-token bucket: the full localhost burst is still there.
    assert result["valid"] == ["authenticated"] * LOCALHOST_BURST
