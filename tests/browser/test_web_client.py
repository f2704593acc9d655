"""The web client (SPEC §7) in a real browser against a real `huddle serve`.

Pages are Debian's chromium, driven by playwright-core from `drive.js`. What a
user would notice:

The board (user A in the page, user B through the REST API):
- Before anyone signs in there is no connection badge (no "offline").
- A logs in, lands on the team's board, and the connection badge reads
  "connected"; the tokens stay out of the URL.
- A task created in A's dialog (description, due day) exists on the server
  with what A chose and shows them on its card; tasks B creates or moves over
  REST appear in the right column of A's board live.
- A's edit of a task B changed meanwhile answers 409 VERSION_CONFLICT: the
  dialog shows both versions field by field, naming B, and "take theirs"
  leaves B's version untouched.
- The access token expires soon after each login here (short JWT_ACCESS_TTL),
  so the page refreshes silently on the socket ("refreshing token", then
  "connected" again) and stores the rotated pair; and a page reopened with an
  expired access token renews it over REST and carries on.
- A title full of markup is shown as text; nothing in it runs.
- A removes B from the members panel, after confirming.
- Without the socket.io-client bundle, the page says so.

A team (two people, two browser contexts; the test stops and restarts the
server when the driver asks): the welcome after registering, an empty board
that says what to do next, adding by email (an unknown address, then the
teammate), roles and rename followed live, due days and overdue, filters, a
conflict resolved with "keep mine", the offline banner while the server is
down and the recovery when it is back, leaving, and deleting with confirmation.

Prerequisites, installed by `make browser-deps` (`make test` runs it):
/usr/bin/chromium (apt) and playwright-core (`npm ci` here). Without them the
test skips, or fails when HUDDLE_REQUIRE_SERVICES=1. Screenshots of the main
states are written to tests/browser/artifacts/ (web-client.png and
TEAM_SCREENSHOTS below).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from huddle.web import BUNDLE
from tests.factories import PASSWORD, Factory
from tests.gateway.live import LiveServer, mint_token
from tests.nodejs import node_with, run_report, unavailable

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "drive.js"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = HERE / "artifacts"
SCREENSHOT = ARTIFACTS / "web-client.png"
NODE_TIMEOUT_S = 60.0
DRIVER_DEADLINE_MS = 50_000
MIN_NODE = 20
TEAM_DEADLINE_MS = 55_000
TEAM_TIMEOUT_S = 65.0
# The team scenario stops the server and starts it again: the page retries on a
# backoff of at most 8 s (±25 %), so it is back within about 10 s of the restart.
RECOVER_WITHIN_MS = 20_000
# What the team scenario leaves in ARTIFACTS, and what each shows.
TEAM_SCREENSHOTS = (
    "welcome.png",  # a user in no team yet: start one, or be added by this email
    "empty-board.png",  # a new team: the board and the members panel say what to do next
    "members.png",  # the members panel: names, emails, roles, presence, add by email
    "board-due-dates.png",  # due dates, overdue, descriptions on cards
    "board-filtered.png",  # the filter bar in use, a column with no match
    "conflict.png",  # a 409: both versions field by field, who changed it, keep mine / take theirs
    "offline.png",  # the server stopped: the banner, paused editing, presence greyed
)

# Tokens live 30 s and `token_expiring` comes 26 s before expiry: a silent
# refresh on the socket about every 4 s while the test runs.
ACCESS_TTL_S = 30
EXPIRY_WARNING_S = 26
REFRESH_WITHIN_MS = 15_000
# The expiry scenario: tokens of 5 s, so the socket's runs out while the page is open.
SHORT_TTL_S = 5
# A due day far ahead (never overdue whatever today is), and how the API stores it.
FAR_DUE_DAY = "2031-05-17"
FAR_DUE_STORED = "2031-05-17T00:00:00.000Z"


class Secrets(dict[str, Any]):
    """The driver's configuration (tokens among it): never shown in a traceback."""

    def __repr__(self) -> str:
        return f"Secrets({', '.join(self)})"


def _node() -> str:
    """The node executable with the pinned playwright-core; LookupError says what is missing."""
    return node_with(HERE, "playwright-core", min_node=MIN_NODE, install_hint="`make browser-deps`")


@pytest.fixture(scope="module")
def node() -> str:
    try:
        executable = _node()
    except LookupError as missing:
        unavailable(str(missing))
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    if not BUNDLE.is_file():
        unavailable("the web client's socket.io-client bundle is missing: run `make install`")
    return executable


@pytest.fixture
def server(tmp_path: Path, node: str) -> Iterator[LiveServer]:
    env = {
        "JWT_ACCESS_TTL": str(ACCESS_TTL_S),
        "TOKEN_EXPIRY_WARNING": str(EXPIRY_WARNING_S),
        "JWT_LEEWAY": "0",
    }
    with LiveServer(tmp_path, env=env) as live:
        yield live


@pytest.fixture
def expiring_server(tmp_path: Path, node: str) -> Iterator[LiveServer]:
    """Access tokens of a few seconds and no `token_expiring`: sockets see TOKEN_EXPIRED."""
    env = {"JWT_ACCESS_TTL": str(SHORT_TTL_S), "TOKEN_EXPIRY_WARNING": "0", "JWT_LEEWAY": "0"}
    with LiveServer(tmp_path, env=env) as live:
        yield live


@asynccontextmanager
async def factory_for(server: LiveServer) -> AsyncIterator[Factory]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield Factory(client)


@pytest.fixture
def team_server(tmp_path: Path, node: str) -> Iterator[LiveServer]:
    """Default token lifetimes: this scenario is about people, not expiry."""
    with LiveServer(tmp_path) as live:
        yield live


async def drive(
    node: str,
    server: LiveServer,
    config: Secrets,
    *,
    timeout: float = NODE_TIMEOUT_S,
    control: Callable[[str], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run drive.js and return its observations (it never prints a token)."""
    return await run_report(
        [node, str(DRIVER)],
        cwd=HERE,
        env_name="HUDDLE_BROWSER",
        config=config,
        timeout=timeout,
        label="drive.js",
        server_log=lambda: server.log_text(tail=3000),
        control=control,
    )


async def test_board_works_and_shows_other_members_changes_live(
    node: str, server: LiveServer
) -> None:
    async with factory_for(server) as factory:
        a = await factory.user(name="Ada Lovelace")
        b = await factory.user(name="Grace Hopper")
        team = await factory.team(a, name="Launch crew")
        await factory.member(team["id"], a, b)
        seeded = await factory.task(team["id"], b, title="Draft the release notes")
        spare = await factory.login(a.email)  # a second session, for the reopened page
    titles = {
        "byA": "Book the launch venue",
        "byB": "Review the launch checklist",
        "renamedByB": "Review the launch checklist (v2)",
        "markup": '<img src=x onerror="window.__xss=1"><b>bold?</b>',
    }
    ARTIFACTS.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    config = Secrets(
        scenario="board",
        url=server.url,
        chromium=str(CHROMIUM),
        screenshot=str(SCREENSHOT),
        deadlineMs=DRIVER_DEADLINE_MS,
        refreshWithinMs=REFRESH_WITHIN_MS,
        teamId=team["id"],
        teamName=team["name"],
        seededTitle=seeded["title"],
        titles=titles,
        a={
            "id": a.id,
            "email": a.email,
            "password": PASSWORD,
            "expiredToken": mint_token(a.id, ttl=-120),
            "spareRefreshToken": spare["refresh_token"],
        },
        b={"id": b.id, "name": "Grace Hopper", "token": b.access_token},
        descriptionByA="Call the venue first.\nThen the caterer.",
        dueByA=FAR_DUE_DAY,
    )

    result = await drive(node, server, config)

    # Before anyone signs in there is no connection to report: no "offline".
    assert result["loginPage"]["badgeVisible"] is False
    assert "offline" not in result["loginPage"]["text"].lower()

    # Logged in, on the team's board, live; no token in the address bar.
    assert result["heading"] == "Launch crew"
    assert result["teamCurrent"] == "page"
    assert result["seededVisible"] == 1
    assert result["urlAfterLogin"] == f"{server.url}/"
    assert result["loginStored"] == {"access": True, "refresh": True}

    # The task made in the dialog is on the server as chosen there.
    created = result["createdByAServer"]
    assert created["priority"] == "high"
    assert created["assigneeId"] == b.id
    assert created["createdBy"] == a.id
    assert created["description"] == config["descriptionByA"]
    assert created["dueDate"] == FAR_DUE_STORED
    assert "high" in result["createdByA"]["meta"].lower()
    assert "Grace Hopper" in result["createdByA"]["meta"]
    # The card shows the description and the due day, not overdue.
    assert result["createdByA"]["description"] == config["descriptionByA"]
    assert "May 17, 2031" in result["createdByA"]["due"]
    assert result["createdByA"]["overdue"] is None

    # B's REST changes reached A's board live.
    assert result["liveCreateMs"] < 5000
    assert result["liveMoveSeen"] is True

    # The conflicting edit showed both versions, naming B; A took theirs, so
    # the server keeps B's version and A's priority change was not sent.
    assert "Grace Hopper just changed this task" in result["outsideNote"]
    conflict = result["conflict"]
    assert conflict["fieldsHidden"] is True
    assert conflict["message"].startswith("Grace Hopper changed this task")
    assert conflict["theirsHead"] == "Theirs (Grace Hopper)"
    rows = {row["field"]: row for row in conflict["rows"]}
    assert set(rows) == {"title", "priority"}
    assert rows["title"] | {"note": ""} == {
        "field": "title",
        "kind": "theirs",
        "mine": titles["byB"],
        "theirs": titles["renamedByB"],
        "note": "",
    }
    assert (rows["priority"]["kind"], rows["priority"]["mine"], rows["priority"]["theirs"]) == (
        "mine",
        "low",
        "urgent",
    )
    after = result["afterConflict"]
    assert (after["title"], after["priority"], after["version"]) == (
        titles["renamedByB"],
        "urgent",
        2,
    )
    assert result["afterConflictCard"] == "urgent"

    # Presence, and silent refreshes on the socket with the rotated pair stored.
    assert result["onlineAvatars"] >= 1
    assert "refreshing token" in result["badgeHistory"]
    assert result["badgeHistory"][-1] == "connected"
    assert result["rotated"] == {"access": True, "refresh": True}
    assert result["badgeText"] == "connected"
    assert result["loginVisibleAtEnd"] is False
    assert isinstance(result["lastEventId"], int)

    # Markup in data is text.
    assert result["markup"] == {"text": titles["markup"], "injected": 0, "ran": False}

    # A page reopened with an expired access token renewed it over REST.
    assert result["resumed"] == {
        "accessChanged": True,
        "refreshChanged": True,
        "loginVisible": False,
        "badge": "connected",
    }

    # A removed B through the members panel, after confirming: B no longer sees the team.
    assert result["removeConfirm"] == "Remove Grace Hopper from Launch crew?"
    assert result["removedB"] == {"status": 404}

    # No bundle: a clear message instead of silence (and no connection badge
    # on the login page).
    assert "socket.io-client" in result["noBundle"]["banner"]
    assert "make install" in result["noBundle"]["banner"]
    assert result["noBundle"]["badgeVisible"] is False
    assert result["noBundle"]["loginVisible"] is True

    # Nothing went wrong in the page. Chromium logs every failed request; the
    # 409 of the conflict and the 401 of the expired token were the point.
    assert result["pageErrors"] == []
    expected = re.compile(r"^Failed to load resource: .* status of (401|409) ")
    errors = [
        c for c in result["console"] if c["type"] == "error" and not expected.match(c["text"])
    ]
    assert errors == [], errors
    assert SCREENSHOT.stat().st_size > 10_000


async def test_a_team_from_first_visit_to_deletion_with_two_people(
    node: str, team_server: LiveServer
) -> None:
    """Two browser contexts: Ada (registered, no team yet) and Grace, who registers
    in the page. Everything a new team meets, the server's restart included."""
    server = team_server
    async with factory_for(server) as factory:
        ada = await factory.user(name="Ada Lovelace")
        grace_email = factory.email()
    ARTIFACTS.mkdir(exist_ok=True)
    for name in TEAM_SCREENSHOTS:
        (ARTIFACTS / name).unlink(missing_ok=True)
    tasks = {
        "overdue": {
            "title": "Fix the airlock",
            "description": "The seal leaks.",
            "priority": "high",
        },
        "upcoming": {"title": "Plan the garden"},
        "doneLate": {"title": "File the old report"},
        "started": {"title": "Calibrate the antenna"},
    }
    config = Secrets(
        scenario="team",
        url=server.url,
        chromium=str(CHROMIUM),
        artifacts=str(ARTIFACTS),
        deadlineMs=TEAM_DEADLINE_MS,
        recoverWithinMs=RECOVER_WITHIN_MS,
        teamName="Moon base",
        renamedTeam="Moon base crew",
        unknownEmail=f"nobody-{secrets.token_hex(4)}@example.com",
        tasks=tasks,
        conflict={
            "graceTitle": "Plan the vegetable garden",
            "graceDescription": "Tomatoes first.",
            "adaTitle": "Plan the herb garden",
        },
        offlineDescription="Patched while the server was down.",
        ada={
            "id": ada.id,
            "name": "Ada Lovelace",
            "email": ada.email,
            "password": PASSWORD,
            "token": mint_token(ada.id, ttl=600),
        },
        grace={"email": grace_email, "name": "Grace Hopper", "password": PASSWORD},
    )
    stops: list[int | None] = []

    async def control(name: str) -> None:
        if name == "stop":
            stops.append(await asyncio.to_thread(server.stop))
        elif name == "start":
            await asyncio.to_thread(server.start)
        else:
            raise AssertionError(f"unknown control request {name!r}")

    result = await drive(node, server, config, timeout=TEAM_TIMEOUT_S, control=control)
    grace_email = config["grace"]["email"]

    # The login page speaks of no connection; after registering, a welcome that
    # says what to do next (start a team, or be added by this address).
    assert result["loginPage"]["badgeVisible"] is False
    assert "offline" not in result["loginPage"]["text"].lower()
    welcome = result["welcome"]
    assert welcome["title"] == "Welcome to Huddle, Grace Hopper"
    assert welcome["email"] == grace_email
    assert "Start a team" in welcome["text"] and "Join a team" in welcome["text"]
    assert welcome["boardVisible"] is False

    # A new team's empty board and members panel say what to do next.
    empty = result["emptyBoard"]
    assert empty["heading"] == "Moon base" and empty["welcomeVisible"] is False
    assert "no tasks yet" in empty["hint"] and "New task" in empty["hint"]
    assert empty["filterBarVisible"] is False  # nothing to filter yet
    assert len(empty["columnHints"]) == 3
    assert "Add a teammate" in empty["alone"]
    assert empty["adaRole"] == "owner"

    # An unknown address is a clear message; Grace's (in capitals) adds her, her
    # page gets the team live, and both see each other online.
    assert result["unknownEmail"].startswith(f"No Huddle account uses {config['unknownEmail']}.")
    assert result["graceSawTeamMs"] < 5000
    members = result["members"]
    assert members["adaSees"] == [
        {
            "name": "Ada Lovelace (you)",
            "role": "owner",
            "presence": "online",
            "email": config["ada"]["email"],
        },
        {"name": "Grace Hopper", "role": "member", "presence": "online", "email": grace_email},
    ]
    assert members["memberErrorAfter"] == ""
    assert members["graceWelcomeVisible"] is False
    # A plain member manages nothing.
    assert members["graceMemberFormVisible"] is False
    assert members["graceRoleSelects"] == 0

    # Made an admin, Grace's page follows at once: her role, the add form, the
    # settings (but deleting the team stays with owners).
    role = result["roleChange"]
    assert role["graceRoleInAdaPanel"] == "admin"
    assert role["graceSidebarRole"] == "admin"
    assert role["graceToast"] == "Your role in Moon base is now admin."
    assert role["graceSettingsVisible"] is True
    assert role["graceDeleteVisible"] is False

    # The rename reached Grace live.
    assert result["renamed"] == {
        "grace": "Moon base crew",
        "graceSidebar": ["Moon base crew"],
        "ada": "Moon base crew",
    }

    # Due dates: the day picked is stored as that day (00:00 UTC) and shown
    # again; yesterday's open task is overdue, a done one never is.
    due = result["dueDates"]
    assert due["stored"]["Fix the airlock"] == f"{due['expected']['overdue']}T00:00:00.000Z"
    assert due["stored"]["Plan the garden"] == f"{due['expected']['upcoming']}T00:00:00.000Z"
    assert due["stored"]["Calibrate the antenna"] is None
    assert due["reopened"] == due["expected"]["overdue"]
    overdue = due["overdue"]
    assert overdue["due"] == "overdue" and overdue["overdueClass"] is True
    assert overdue["dueText"].startswith("Overdue · ")
    assert overdue["description"] == "The seal leaks."
    assert overdue["assignee"] == "Grace Hopper"
    assert due["upcoming"]["due"] is None and due["upcoming"]["dueText"].startswith("Due ")
    assert due["doneLate"]["status"] == "done" and due["doneLate"]["due"] is None
    assert due["started"]["dueText"] is None and due["started"]["status"] == "in_progress"
    assert due["boardHintVisible"] is False

    # Filters: mine, mine in progress (none: the column says so), unassigned in progress.
    filters = result["filters"]
    assert filters["mine"] == ["File the old report", "Fix the airlock"]
    assert filters["mineSummary"] == "Showing 2 of 4 tasks."
    assert filters["mineInProgress"] == []
    assert filters["visibleColumns"] == ["in_progress"]
    assert filters["emptyNote"] == "No tasks here match the filter."
    assert filters["unassignedInProgress"] == ["Calibrate the antenna"]
    assert filters["cleared"] == 4 and filters["clearVisibleAfter"] is False

    # The conflict: both versions field by field, naming Grace; "keep mine" sent
    # Ada's changes on top of Grace's version, so Grace's description stayed.
    assert result["conflictOutside"].startswith("Grace Hopper just changed this task")
    conflict = result["conflict"]
    assert conflict["fieldsHidden"] is True
    assert conflict["message"].startswith("Grace Hopper changed this task")
    assert conflict["theirsHead"] == "Theirs (Grace Hopper)"
    rows = {row["field"]: (row["kind"], row["mine"], row["theirs"]) for row in conflict["rows"]}
    assert rows == {
        "title": ("both", "Plan the herb garden", "Plan the vegetable garden"),
        "description": ("theirs", "—", "Tomatoes first."),
        "priority": ("mine", "urgent", "medium"),
    }
    kept = result["afterKeepMine"]
    assert (kept["title"], kept["priority"], kept["description"], kept["version"]) == (
        "Plan the herb garden",
        "urgent",
        "Tomatoes first.",
        3,
    )
    assert result["afterKeepMineGraceCard"]["description"] == "Tomatoes first."

    # The server stopped: a banner with the time since and the next retry, the
    # badge, presence greyed (unknown, not "online"), editing paused while what
    # Ada typed stays; nobody is sent to the login page.
    # A graceful SIGTERM shutdown (exit status 0, SPEC §4.5), which told both
    # pages `server_shutdown` first.
    assert stops == [0]
    told = {f["page"] for f in result["frames"] if f["name"] == "server_shutdown"}
    assert told == {"ada", "grace"}
    assert result["offlineShownMs"] < 5000
    offline = result["offline"]
    since = [
        re.fullmatch(r"The connection to the server was lost (\d+) s ago \(at .+\)\.", text)
        for text in offline["since"]
    ]
    assert all(since), offline["since"]
    assert int(since[1].group(1)) > int(since[0].group(1))  # it counts by itself
    assert re.search(r"Next retry in \d+ s \(at |Reconnecting now", offline["retry"])
    assert "Editing is paused" in offline["banner"]
    assert offline["badge"] == "offline"
    assert offline["staleList"] == 1
    assert offline["onlineShown"] == 0
    assert offline["presenceText"] == ["unknown", "unknown"]
    assert offline["newTaskDisabled"] is True
    assert offline["draggable"] == "false"
    assert offline["memberFormDisabled"] is True
    assert offline["adaSaveDisabled"] is True
    assert offline["adaOfflineNote"] is True
    assert offline["adaTyped"] == config["offlineDescription"]
    assert offline["loginVisible"] is False

    # Back by itself once the server was: editing on, presence fresh, the
    # edit typed while offline saved and seen by Grace (the driver waited for it).
    assert result["recoveredMs"] < RECOVER_WITHIN_MS
    assert result["recovered"] == {
        "adaOfflineNote": False,
        "newTaskDisabled": False,
        "staleList": 0,
        "loginVisible": False,
    }

    # Leaving, and deleting only after confirming.
    assert result["left"] == {"graceTeams": 0}
    assert result["deleteConfirm"]["title"] == "Delete Moon base crew?"
    assert "cannot be undone" in result["deleteConfirm"]["text"]
    assert result["afterCancel"] == 200
    assert result["afterDelete"] == 404

    # Nothing went wrong in either page. Chromium logs every failed request:
    # the unknown address (404), the conflict (409) and the refused connections
    # while the server was down were the point.
    assert result["pageErrors"] == []
    expected = re.compile(
        r"^Failed to load resource: (.* status of (404|409) |net::ERR_CONNECTION_REFUSED)"
        r"|^WebSocket connection to .* net::ERR_CONNECTION_REFUSED"
    )
    errors = [
        c for c in result["console"] if c["type"] == "error" and not expected.match(c["text"])
    ]
    assert errors == [], errors
    # The first two are taken by two people acting at once, in either order.
    assert sorted(result["screenshots"]) == sorted(TEAM_SCREENSHOTS)
    for name in TEAM_SCREENSHOTS:
        assert (ARTIFACTS / name).stat().st_size > 10_000, name


async def test_an_expired_token_is_refreshed_on_the_same_socket_without_a_login(
    node: str, expiring_server: LiveServer
) -> None:
    """No `token_expiring` here: the gateway's TOKEN_EXPIRED is what the page acts on."""
    server = expiring_server
    async with factory_for(server) as factory:
        a = await factory.user(name="Ada Lovelace")
        b = await factory.user(name="Grace Hopper")
        team = await factory.team(a, name="Night shift")
        await factory.member(team["id"], a, b)
        # B's token must outlive the scenario: one signed like the server's, for 10 minutes.
        b_token = mint_token(b.id, ttl=600)
    titles = {"byB": "Rotate the on-call pager", "byA": "Write the handover note"}
    config = Secrets(
        scenario="expiry",
        url=server.url,
        chromium=str(CHROMIUM),
        deadlineMs=DRIVER_DEADLINE_MS,
        expireWithinMs=(SHORT_TTL_S + 6) * 1000,
        ttlMs=SHORT_TTL_S * 1000 + 500,
        teamId=team["id"],
        titles=titles,
        a={"id": a.id, "email": a.email, "password": PASSWORD},
        b={"id": b.id, "token": b_token},
    )

    result = await drive(node, server, config)

    received = [f for f in result["frames"] if f["dir"] == "in"]
    names = [f["name"] for f in received]
    expired_at = next(i for i, f in enumerate(received) if f.get("code") == "TOKEN_EXPIRED")
    # TOKEN_EXPIRED, then the refresh on the same socket, then a fresh authentication.
    assert "token_expiring" not in names
    sent_after = [
        f["name"]
        for f in result["frames"][result["frames"].index(received[expired_at]) :]
        if f["dir"] == "out"
    ]
    assert sent_after[:1] == ["refresh_token"]
    assert names[expired_at + 1 : expired_at + 3] == ["token_refreshed", "authenticated"]
    assert result["websockets"] == {"main": 1}  # never reconnected
    assert "refreshing token" in result["badgeHistory"]
    assert result["badgeHistory"][-1] == "connected"
    assert result["rotated"] == {"access": True, "refresh": True}
    assert result["loginVisibleAtEnd"] is False
    assert result["pageErrors"] == []
