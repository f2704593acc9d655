"""Raw Engine.IO / Socket.IO frames, generated, against a live `huddle serve` (issue 10).

hypothesis writes sequences of frames — every packet type and junk ones,
namespaces, acknowledgement ids, attachment counts, JSON of any shape and
depth, reserved, known and unknown event names, text and binary — and sends
them on fresh WebSockets, before and after authenticating. Whatever it sends:

- the server logs no traceback and stays up, answering a well-behaved client;
- its memory stays bounded;
- once every fuzzing socket has closed, the connection gauges are back to
  what they were (no session outlives its connection).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
import websockets.sync.client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import PASSWORD
from tests.gateway.conftest import FAST_TIMINGS, NO_PRACTICAL_LIMITS
from tests.gateway.live import LiveServer
from tests.gateway.raw import ws_url

EXAMPLES = 150
"""Generated sequences (each on its own WebSocket): ~1,000 frames, a few seconds."""

EVENT_NAMES = st.sampled_from(
    [
        "connect",
        "disconnect",
        "disconnecting",
        "connect_error",
        "newListener",
        "removeListener",
        "authenticate",
        "refresh_token",
        "team_presence",
        "resume",
        "\x00malformed",
        "",
        "x" * 300,
    ]
) | st.text(max_size=12)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def socketio_packets(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from("0123456") | st.text(min_size=1, max_size=1))
    attachments = draw(st.sampled_from(["", "1-", "0-", "1000000-", "99999999999-", "-"]))
    namespace = draw(st.sampled_from(["", "/", "/admin,", "/,", "/x?y=1,"]))
    ack = draw(st.sampled_from(["", "1", "42", "9" * 25]))
    event = st.builds(
        lambda name, args: json.dumps([name, *args]), EVENT_NAMES, st.lists(json_values, max_size=3)
    )
    body = draw(
        st.one_of(
            event,
            json_values.map(json.dumps),
            st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
            st.sampled_from(['{"token":', "[", "]", "{}", "[]", '"x"', "null", ""]),
            st.text(max_size=30),
        )
    )
    return f"4{kind}{attachments}{namespace}{ack}{body}"


frames = st.one_of(
    socketio_packets(),
    st.sampled_from(["2", "3", "5", "6", "1", "0", "9", "x", "", "4", "2probe", "3probe"]),
    st.text(max_size=40),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        **FAST_TIMINGS,
        **NO_PRACTICAL_LIMITS,
        "MAX_CONNECTIONS_PER_USER": "1000",
        "SOCKET_PING_INTERVAL": "2",
        "SOCKET_PING_TIMEOUT": "2",
        "LOG_LEVEL": "info",
    }
    with LiveServer(tmp_path_factory.mktemp("fuzz"), env=env) as live:
        yield live


def _metric(server: LiveServer, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _token(server: LiveServer) -> str:
    email = f"fuzz-{time.monotonic_ns()}@example.com"
    body = {"email": email, "password": PASSWORD, "name": "Fuzz"}
    assert httpx.post(f"{server.url}/api/auth/register", json=body, timeout=10).status_code == 201
    login = httpx.post(
        f"{server.url}/api/auth/login", json={"email": email, "password": PASSWORD}, timeout=10
    )
    return str(login.json()["access_token"])


def _drain(ws: Any, seconds: float) -> None:
    """Read (answering pings) until quiet or closed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return
        except websockets.ConnectionClosed:
            return
        if message == "2":
            try:
                ws.send("3")
            except websockets.ConnectionClosed:
                return


def _authenticate(ws: Any, token: str) -> None:
    assert str(ws.recv(timeout=5)).startswith("0{")
    ws.send("40" + json.dumps({"token": token}))
    _drain(ws, 0.2)


def test_generated_frames_never_hurt_the_server(server: LiveServer) -> None:
    token = _token(server)
    assert server.process is not None
    pid = server.process.pid
    connections = _metric(server, "huddle_gateway_connections")
    rss_before = _rss_kib(pid)
    sent = 0

    @given(st.booleans(), st.lists(frames, min_size=1, max_size=8))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def one_socket(authenticate: bool, sequence: list[str | bytes]) -> None:
        nonlocal sent
        with websockets.sync.client.connect(ws_url(server), max_size=2**20) as ws:
            if authenticate:
                _authenticate(ws, token)
            for frame in sequence:
                try:
                    ws.send(frame)
                except websockets.ConnectionClosed:
                    break
                sent += 1
            _drain(ws, 0.05)

    started = time.monotonic()
    one_socket()
    fuzzing = time.monotonic() - started

    # A well-behaved client is still served, at once.
    with websockets.sync.client.connect(ws_url(server)) as ws:
        assert str(ws.recv(timeout=5)).startswith("0{")
        ws.send("40" + json.dumps({"token": _token(server)}))
        assert str(ws.recv(timeout=5)).startswith("40{")
        assert str(ws.recv(timeout=5)).startswith('42["authenticated"')
    # Every fuzzing socket is gone, and no session outlived its connection (at the
    # latest a heartbeat later: 2 + 2 s here).
    started = time.monotonic()
    while _metric(server, "huddle_gateway_connections") != connections:
        assert time.monotonic() - started < 15, "a session outlived its connection"
        time.sleep(0.2)
    drained = time.monotonic() - started
    assert _metric(server, "huddle_gateway_authenticated_connections") == 0
    grown_kib = _rss_kib(pid) - rss_before
    assert grown_kib < 32 * 1024, f"RSS grew {grown_kib} KiB over {sent} frames"
    log = server.log_text(tail=None)
    assert "Traceback" not in log, log[-3000:]
    assert sent > EXAMPLES  # it really sent
    print(
        f"\nfuzzed: {EXAMPLES} sockets, {sent} frames in {fuzzing:.1f} s, "
        f"RSS +{grown_kib} KiB, gauges back in {drained:.1f} s"
    )
