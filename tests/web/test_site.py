"""How `huddle serve` serves the web client: the page at `/`, assets under `/web/`.

In-process through ASGI (no lifespan is needed to serve files). The browser
test (tests/browser) drives the page itself.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

import huddle.web
from huddle.app import Role, build_app
from huddle.config import Settings
from tests.api.conftest import make_settings, migrated


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


async def client_for(settings: Settings, role: Role = "serve") -> httpx.AsyncClient:
    app = build_app(settings, role)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(settings) as client:
        yield client


async def test_the_page_is_at_root_with_a_policy_that_runs_only_its_own_scripts(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/web/js/main.js">' in response.text
    assert '<script src="/web/vendor/socket.io.min.js" defer>' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert (await client.head("/")).status_code == 200


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/web/app.css", "text/css"),
        ("/web/js/main.js", "text/javascript"),
        ("/web/js/live.js", "text/javascript"),
        ("/web/js/dates.js", "text/javascript"),
    ],
)
async def test_assets_are_served_under_web(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert response.headers["cache-control"] == "no-cache"
    again = await client.get(path, headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304


async def test_the_api_and_the_operations_routes_are_not_shadowed(tmp_path: Path) -> None:
    app = build_app(migrated(make_settings(tmp_path)), "serve")
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as client,
    ):
        me = await client.get("/api/users/me")
        assert me.status_code == 401
        assert me.json()["error"]["code"] == "TOKEN_MISSING"
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert "/api/users/me" in schema["paths"]
        assert "/" not in schema["paths"]
        assert not any(path.startswith("/web") for path in schema["paths"])
        handshake = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert handshake.status_code == 200
        assert handshake.text.startswith("0{")


@pytest.mark.parametrize(
    "path",
    [
        "/web/../__init__.py",
        "/web/%2e%2e/__init__.py",
        "/web/vendor/../../__init__.py",
        "/web/vendor/%2e%2e/%2e%2e/package.json",
        "/web/package.json",
        "/web/",
        "/web/vendor/nothing.js",
    ],
)
async def test_nothing_outside_the_asset_folders_is_reachable(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404, path


async def test_only_huddle_serve_serves_the_page(settings: Settings) -> None:
    async with await client_for(settings, "api") as api:
        assert (await api.get("/")).status_code == 404
        assert (await api.get("/web/app.css")).status_code == 404


async def test_a_missing_bundle_is_a_warning_at_start_and_a_404_not_a_crash(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = tmp_path / "no-vendor"
    monkeypatch.setattr(huddle.web, "VENDOR_DIR", vendor)
    monkeypatch.setattr(huddle.web, "BUNDLE", vendor / "socket.io.min.js")
    with capture_logs() as logs:
        client = await client_for(settings)
    async with client:
        assert (await client.get("/web/vendor/socket.io.min.js")).status_code == 404
        assert (await client.get("/")).status_code == 200
    warnings = [entry for entry in logs if entry["event"] == "web_client_bundle_missing"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert "make install" in warnings[0]["hint"]


def test_the_page_needs_nothing_the_policy_forbids() -> None:
    """No inline script, style or event handler in the page, and no script that
    parses markup: under `script-src 'self'; style-src 'self'` they would break
    (or be the hole the policy is there to close)."""
    static = huddle.web.STATIC_DIR
    page = (static / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page
    assert re.findall(r"\sstyle=", page) == []
    assert re.findall(r"\son[a-z]+=", page) == []
    for module in sorted((static / "js").glob("*.js")):
        code = module.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{module.name} uses {sink}"
        assert ".style." not in code and 'setAttribute("style"' not in code, module.name
