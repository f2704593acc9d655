"""The lean page reads (`huddle.api.lean`) answer exactly what FastAPI's own path answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response

from huddle.api.deps import CurrentActor, RuntimeDep
from huddle.api.lean import LeanRoute, PageRead, lean
from tests.factories import Factory


def _unused() -> None:
    """A dependency no route has: overriding it sends every request FastAPI's way."""


async def test_page_reads_answer_the_same_on_the_lean_path_and_fastapis(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, other, admin = await factory.user(), await factory.user(), await factory.user(admin=True)
    teams = [await factory.team(owner) for _ in range(3)]
    callers: list[dict[str, str]] = [
        owner.headers,
        other.headers,
        admin.headers,
        {},
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": f"Basic {owner.access_token}"},
        {"Authorization": f"bearer  {owner.access_token} "},
    ]
    paths = [
        f"/api/users/{owner.id}/teams",
        f"/api/users/{other.id}/teams",
        "/api/users/999999/teams",
        "/api/users/0/teams",
        f"/api/users/0{owner.id}/teams",
        "/api/users/2147483648/teams",
        "/api/teams",
    ]
    queries = [
        "",
        "?limit=2",
        f"?limit=1&cursor={teams[0]['id']}",
        "?cursor=0",
        "?limit=0",
        "?limit=101",
        "?limit=05",
        "?cursor=",
        "?cursor=abc",
        "?limit=2&limit=3",
        "?other=1",
    ]

    async def answers() -> list[tuple[Any, ...]]:
        seen = []
        for path in paths:
            for query in queries:
                for headers in callers:
                    response = await client.get(
                        path + query, headers={**headers, "X-Request-ID": "pinned"}
                    )
                    seen.append(
                        (path + query, response.status_code, response.headers.multi_items(),
                         response.content)
                    )  # fmt: skip
        return seen

    served: list[bool] = []
    arguments = PageRead.arguments

    async def counted(self: PageRead, request: Request) -> dict[str, Any] | None:
        given = await arguments(self, request)
        served.append(given is not None)
        return given

    monkeypatch.setattr(PageRead, "arguments", counted)
    lean_answers = await answers()
    lean_served = sum(served)
    served.clear()
    app.dependency_overrides[_unused] = _unused
    try:
        stock_answers = await answers()
    finally:
        app.dependency_overrides.clear()

    assert lean_served > 0 and not any(served)
    assert lean_answers == stock_answers
    statuses = {status for _, status, _, _ in lean_answers}
    assert statuses == {200, 401, 403, 404, 422}


def test_a_page_read_must_give_every_parameter_of_its_endpoint() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def pinned(actor: CurrentActor, runtime: RuntimeDep, extra: int = 0) -> Response:
        return Response()

    with pytest.raises(TypeError, match="pinned"):
        router.get("/pinned")(lean(PageRead())(pinned))
