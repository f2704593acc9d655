"""/metrics in production (SPEC §3): METRICS_TOKEN as a bearer token, or loopback only.

Both apps that serve it: the API's, and the stand-alone gateway's (`huddle gateway`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from huddle.api.app import create_api
from huddle.app import build_app
from huddle.config import Settings
from tests.api.conftest import make_settings

PRODUCTION_SECRET = "Xq3-production-secret-with-enough-entropy-8f1c2a"
METRICS_TOKEN = "metrics-token-0123456789abcdef"


def production(tmp: Path, **extra: Any) -> Settings:
    return make_settings(
        tmp,
        app_env="production",
        jwt_secret=PRODUCTION_SECRET,
        backend_url="http://127.0.0.1:9",  # the gateway app needs one; never called here
        **extra,
    )


def api_app(settings: Settings) -> ASGIApp:
    return create_api(settings)


def gateway_app(settings: Settings) -> ASGIApp:
    return build_app(settings, "gateway")


APPS: dict[str, Callable[[Settings], ASGIApp]] = {"api": api_app, "gateway": gateway_app}


async def get_metrics(
    app: ASGIApp, ip: str, headers: dict[str, str | bytes] | None = None
) -> httpx.Response:
    # /metrics needs no lifespan state: the runtime is reached through the request only
    # for its settings, which both apps hold from the start.
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://huddle.test") as client:
        return await client.get("/metrics", headers=headers or {})


def is_metrics(response: httpx.Response) -> bool:
    return response.status_code == 200 and "huddle_" in response.text


def refused(response: httpx.Response, status: int, code: str) -> bool:
    return response.status_code == status and response.json()["error"]["code"] == code


@pytest.fixture(params=sorted(APPS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_development_and_test_are_unchanged(tmp_path: Path, kind: str) -> None:
    for env in ("development", "test"):
        settings = make_settings(tmp_path, app_env=env, backend_url="http://127.0.0.1:9")
        app = APPS[kind](settings)
        assert is_metrics(await get_metrics(app, "203.0.113.7"))


async def test_production_without_a_token_answers_loopback_only(tmp_path: Path, kind: str) -> None:
    app = APPS[kind](production(tmp_path))
    assert is_metrics(await get_metrics(app, "127.0.0.1"))
    assert is_metrics(await get_metrics(app, "::1"))
    assert refused(await get_metrics(app, "203.0.113.7"), 403, "FORBIDDEN")
    assert refused(await get_metrics(app, "10.1.2.3"), 403, "FORBIDDEN")


async def test_a_forwarded_header_never_makes_a_client_local(tmp_path: Path, kind: str) -> None:
    app = APPS[kind](production(tmp_path, trusted_proxies=["127.0.0.1/32"]))
    # nginx on this host passes on a remote client's request, or a client's forged claim.
    for forwarded in ("203.0.113.7", "127.0.0.2", "127.0.0.1", "::1", "127.0.0.1, 127.0.0.1"):
        response = await get_metrics(app, "127.0.0.1", {"X-Forwarded-For": forwarded})
        assert refused(response, 403, "FORBIDDEN"), forwarded
    # Without a proxy to believe, the header is ignored: the peer decides.
    plain = APPS[kind](production(tmp_path))
    response = await get_metrics(plain, "203.0.113.7", {"X-Forwarded-For": "127.0.0.1"})
    assert refused(response, 403, "FORBIDDEN")
    # The proxy's own request (no forwarded header) is local.
    assert is_metrics(await get_metrics(app, "127.0.0.1"))


async def test_production_with_a_token_needs_it_from_everywhere(tmp_path: Path, kind: str) -> None:
    app = APPS[kind](production(tmp_path, metrics_token=METRICS_TOKEN))
    right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert is_metrics(await get_metrics(app, "203.0.113.7", right))
    assert is_metrics(await get_metrics(app, "127.0.0.1", right))
    assert refused(await get_metrics(app, "127.0.0.1"), 401, "TOKEN_MISSING")
    assert refused(await get_metrics(app, "203.0.113.7"), 401, "TOKEN_MISSING")
    wrongs: tuple[str | bytes, ...] = (
        f"Bearer {METRICS_TOKEN}x",
        f"Bearer {METRICS_TOKEN[:-1]}",
        b"Bearer \xe9",
        f"Basic {METRICS_TOKEN}",
    )
    for wrong in wrongs:
        response = await get_metrics(app, "203.0.113.7", {"Authorization": wrong})
        assert response.status_code == 401, wrong
        assert METRICS_TOKEN not in response.text
