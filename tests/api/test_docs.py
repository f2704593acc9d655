"""/docs works offline and /openapi.json tells the truth (SPEC §3, issue 14 §2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from huddle.api import apidocs
from tests.conftest import REQUIRE_SERVICES

ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture
def assets_installed() -> None:
    if not apidocs.installed():
        message = "Swagger UI's assets are missing: run `make install` (needs npm)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (HUDDLE_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)


async def test_docs_load_everything_from_huddle_itself(
    client: httpx.AsyncClient, assets_installed: None
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # Nothing from elsewhere: every script, stylesheet and icon is one of ours.
    assert not re.search(r"(src|href)=['\"](https?:)?//", page.text), page.text
    assets = re.findall(r"(?:src|href)=['\"](/docs/assets/[^'\"]+)['\"]", page.text)
    assert len(assets) == 3, page.text
    kinds = {"js": "javascript", "css": "text/css", "png": "image/png"}
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert kinds[asset.rsplit(".", 1)[1]] in response.headers["content-type"]
        assert len(response.content) > 500
    assert "/openapi.json" in page.text
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200 and "oauth2" in redirect.text.lower()
    assert (await client.get("/redoc")).status_code == 404  # it would need a CDN


async def test_without_the_assets_docs_says_how_to_install_them(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(apidocs, "VENDOR_DIR", tmp_path / "missing")
    page = await client.get("/docs")
    assert page.status_code == 503
    assert "make install" in page.text
    assert (await client.get("/openapi.json")).status_code == 200


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    resolved: dict[str, Any] = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


async def test_the_schema_has_real_types_and_one_error_body(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    assert components["Error"]["required"] == ["error"]
    info = _resolve(schema, components["Error"]["properties"]["error"])
    assert set(info["required"]) == {"code", "message"}

    task = components["TaskOut"]["properties"]
    assert task["id"]["type"] == "integer" and task["teamId"]["type"] == "integer"
    assert task["version"]["type"] == "integer"
    assert task["assigneeId"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert task["createdAt"] == {"type": "string", "format": "date-time", "title": "Createdat"}
    assert components["UserOut"]["properties"]["isAdmin"]["type"] == "boolean"
    assert components["TokenPair"]["properties"]["expires_in"]["type"] == "integer"

    secured = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            assert operation.get("description"), f"{label} has no description"
            responses = operation["responses"]
            for status, response in responses.items():
                if status.startswith(("4", "5")) and path.startswith("/api/"):
                    content = response["content"]["application/json"]["schema"]
                    assert content == ERROR_REF, f"{label} {status}"
            assert "413" in responses, label
            if operation.get("security"):
                secured += 1
                assert "401" in responses, label
            if path.startswith("/api/"):
                assert "503" in responses, label
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in responses, label
    assert secured >= 19
    paths = schema["paths"]
    assert "409" in paths["/api/tasks/{taskId}"]["patch"]["responses"]
    assert "409" in paths["/api/auth/register"]["post"]["responses"]
    assert "429" in paths["/api/auth/login"]["post"]["responses"]
    assert "403" in paths["/api/teams/{teamId}"]["delete"]["responses"]
    assert "403" in paths["/api/users/{userId}/tasks"]["get"]["responses"]


async def test_the_schema_says_what_the_api_refuses(client: httpx.AsyncClient) -> None:
    """The six disagreements of issue 14: cursors, null status/priority, blank titles."""
    schema = (await client.get("/openapi.json")).json()
    teams = schema["paths"]["/api/teams"]["get"]["parameters"]
    cursor = next(p for p in teams if p["name"] == "cursor")["schema"]
    assert cursor["type"] == "string" and cursor["pattern"] == "^(0|[1-9][0-9]{0,9})$"
    patch = schema["components"]["schemas"]["TaskPatch"]["properties"]
    assert "anyOf" not in patch["status"] and "anyOf" not in patch["priority"]
    assert "anyOf" not in patch["title"]
    title = schema["components"]["schemas"]["TaskIn"]["properties"]["title"]
    assert not re.search(title["pattern"], "   \t") and re.search(title["pattern"], " a ")
