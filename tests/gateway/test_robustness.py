"""SPEC §4.5: malformed events, oversized payloads, arbitrary JSON; no socket hurts another."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import Factory, TestUser
from tests.gateway.conftest import ProbeMaker
from tests.gateway.live import LiveServer, SocketProbe

CLIENT_EVENTS = ("authenticate", "refresh_token", "team_presence", "resume")
# Answers after which the server disconnects the socket.
TERMINAL = frozenset(
    {
        "TOKEN_INVALID",
        "TOKEN_REVOKED",
        "REFRESH_TOKEN_INVALID",
        "REFRESH_TOKEN_EXPIRED",
        "REFRESH_TOKEN_REUSED",
    }
)

MALFORMED: dict[str, list[Any]] = {
    "authenticate": [None, "token", 42, [], {}, {"token": 5}, {"token": ""}, {"token": "x" * 9000}],
    "refresh_token": [
        None,
        "x",
        {},
        {"refreshToken": 1},
        {"token": None},
        {"refreshToken": "a", "token": "b"},
    ],
    "team_presence": [None, {}, {"teamId": "1"}, {"teamId": 0}, {"teamId": 1.5}, {"teamId": True}],
    "resume": [None, [], {"lastEventId": -1}, {"lastEventId": "3"}, {"lastEventId": 2**64}],
}


def _well_formed_failure(ack: Any) -> str:
    assert isinstance(ack, dict) and ack.get("ok") is False, ack
    error = ack["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return str(error["code"])


@pytest.mark.parametrize("event", CLIENT_EVENTS)
async def test_a_payload_of_the_wrong_shape_answers_bad_request(
    connect: ProbeMaker, factory: Factory, event: str
) -> None:
    user = await factory.user()
    probe = await connect({"token": user.access_token})
    await probe.next("authenticated")
    for payload in MALFORMED[event]:
        ack = await probe.call(event, payload)
        assert _well_formed_failure(ack) == "BAD_REQUEST", (event, payload)
        assert (await probe.next("error"))["code"] == "BAD_REQUEST"
    assert probe.client.connected


async def test_a_malformed_event_without_a_callback_gets_an_error_event(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect({"token": user.access_token})
    await probe.next("authenticated")
    await probe.emit("team_presence", "not an object")
    error = await probe.next("error")
    assert set(error) == {"code", "message"}
    assert error["code"] == "BAD_REQUEST"


async def test_an_unknown_event_answers_bad_request(connect: ProbeMaker, factory: Factory) -> None:
    user = await factory.user()
    probe = await connect({"token": user.access_token})
    await probe.next("authenticated")
    ack = await probe.call("drop_all_tables", {"please": True})
    assert _well_formed_failure(ack) == "BAD_REQUEST"


async def test_errors_never_echo_the_token(connect: ProbeMaker, factory: Factory) -> None:
    user = await factory.user()
    probe = await connect()
    ack = await probe.call("refresh_token", {"refreshToken": user.access_token, "token": "x"})
    assert user.access_token not in str(ack)


async def test_an_oversized_message_is_refused_and_others_carry_on(
    connect: ProbeMaker, factory: Factory, live: LiveServer
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    bystander = await connect({"token": owner.access_token})
    await bystander.next("authenticated")
    probe = await connect({"token": owner.access_token})
    await probe.next("authenticated")

    await probe.emit("team_presence", {"teamId": team["id"], "padding": "x" * 70_000})
    await probe.gone()

    task = await factory.task(team["id"], owner)
    assert (await bystander.next("task_created"))["task"]["id"] == task["id"]
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_a_disallowed_origin_cannot_open_a_socket(live: LiveServer) -> None:
    probe = SocketProbe(live.url)
    try:
        with pytest.raises(Exception, match=r"(?i)connect"):
            await probe.connect(headers={"Origin": "https://evil.example"})
    finally:
        await probe.close()
    allowed = SocketProbe(live.url)
    try:
        await allowed.connect(headers={"Origin": "http://localhost:3000"})
        assert allowed.client.connected
    finally:
        await allowed.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
payloads = json_values | st.fixed_dictionaries(
    {},
    optional={
        "token": json_values,
        "refreshToken": json_values,
        "teamId": json_values,
        "lastEventId": json_values,
    },
)


class Session:
    """An authenticated socket that is reopened whenever the server closes it."""

    def __init__(self, url: str, user: TestUser) -> None:
        self.url = url
        self.user = user
        self.probe: SocketProbe | None = None

    async def get(self) -> SocketProbe:
        if self.probe is None or not self.probe.client.connected:
            if self.probe is not None:
                await self.probe.close()
            self.probe = SocketProbe(self.url)
            await self.probe.connect({"token": self.user.access_token})
            await self.probe.next("authenticated")
        return self.probe

    async def close(self) -> None:
        if self.probe is not None:
            await self.probe.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event=st.sampled_from(CLIENT_EVENTS), payload=payloads)
async def test_arbitrary_json_gets_a_well_formed_answer_and_the_server_lives(
    live: LiveServer, event: str, payload: Any
) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        user = await Factory(client).user()
        session = Session(live.url, user)
        try:
            probe = await session.get()
            ack = await probe.call(event, payload, timeout=5)
            assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
            if ack["ok"]:
                assert "data" in ack
            else:
                code = _well_formed_failure(ack)
                if code in TERMINAL:
                    error = await probe.next("authentication_error")
                    assert error["code"] == code and error["action"] == "LOGIN"
                    await probe.gone()
            # The server still answers (on a new socket if that one was closed).
            answer = await (await session.get()).call("resume", {"lastEventId": 0})
            assert answer["ok"] is True
        finally:
            await session.close()
