"""SPEC §6 for the gateway: the collectors move when sockets and events do."""

from __future__ import annotations

import re

import httpx

from tests.factories import Factory
from tests.gateway.conftest import ProbeMaker


def _value(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_gateway_metrics_count_sockets_attempts_errors_and_events(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    before = (await api.get("/metrics")).text
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await connect({"token": owner.access_token})
    await probe.next("authenticated")
    bad = await connect({"token": "not.a.jwt"})
    await bad.gone()
    await factory.task(team["id"], owner)
    await probe.next("task_created")

    after = (await api.get("/metrics")).text
    assert _value(after, "huddle_gateway_connections") >= 1
    assert _value(after, "huddle_gateway_authenticated_connections") >= 1
    for name, labels in [
        ("huddle_gateway_connection_attempts_total", '{outcome="authenticated"}'),
        ("huddle_gateway_connection_attempts_total", '{outcome="rejected"}'),
        ("huddle_gateway_auth_errors_total", '{code="TOKEN_INVALID"}'),
        ("huddle_gateway_events_emitted_total", '{type="task_created"}'),
        ("huddle_gateway_fanout_seconds_count", ""),
    ]:
        assert _value(after, name, labels) > _value(before, name, labels), (name, labels)
