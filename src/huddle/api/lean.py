"""A lean way into the busiest page reads, FastAPI's own for anything unusual.

FastAPI solves a route's parameters on every request by walking its
dependency tree: each dependency, each path and query parameter through its
own validator, errors gathered. For `GET /api/users/{id}/teams` that was the
largest part of the request (about a quarter of its instructions, more than
the database read). A `LeanRoute` — FastAPI's documented way to customize a
route's handler: an `APIRoute` subclass overriding `get_route_handler` —
first tries the endpoint's `PageRead`, which reads the arguments straight
from the request when each is in its plain form:

- the path parameter as canonical ASCII digits within its bounds;
- no query string, or `limit` and `cursor` once each, `limit` canonical
  digits within 1..`MAX_LIMIT` and `cursor` matching `CURSOR_PATTERN` (`plain_cursor`);
- no dependency overrides on the app (tests swap dependencies that way).

The caller then comes from the same `bearer_token` and `get_actor`/`get_current_user`
FastAPI would call, and the endpoint is called with the arguments FastAPI
would have given it. Anything else — an odd number, a repeated or unknown
query parameter, an empty cursor — takes FastAPI's own handler, unchanged, so
every validation error is FastAPI's. The answer is the same either way: with
valid parameters FastAPI's only other outcome is its dependencies raising,
and those are the same functions raising the same errors, before the
endpoint runs.

Hand-written, in a few lines per parameter kind, because no library offers a
cheaper FastAPI parameter solver; it only ever accepts a subset of what
FastAPI accepts, giving the same values (`tests/api/test_lean.py` compares the
two paths answer for answer). The endpoints it serves return their own
`Response` (`huddle.api.responses`), so FastAPI's response validation is not
skipped either; `get_route_handler` refuses an endpoint whose parameters the
`PageRead` does not cover.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.routing import APIRoute

from huddle.api.deps import MAX_LIMIT, bearer_token, get_actor, get_current_user
from huddle.services.access import MAX_ID, plain_cursor

Endpoint = Callable[..., Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)


@dataclass(frozen=True, slots=True)
class PageRead:
    """The parameters of a page read: one integer path parameter or none, the caller
    (`actor`: `CurrentActor`, `user`: `CurrentUser`), `runtime`, `cursor` and `limit`."""

    path: str | None = None
    """The integer path parameter's name in the endpoint (and the route's path)."""
    maximum: int = MAX_ID
    """Its largest value (its smallest is 1), as its `Path(ge=1, le=...)` says."""
    caller: Literal["actor", "user"] = "actor"

    def parameters(self) -> set[str]:
        names = {self.caller, "runtime", "cursor", "limit"}
        return names | {self.path} if self.path else names

    async def arguments(self, request: Request) -> dict[str, Any] | None:
        """The endpoint's arguments, or None when anything is not in its plain form."""
        if request.app.dependency_overrides:
            return None
        arguments: dict[str, Any] = {}
        if self.path is not None:
            value = _plain_int(request.path_params.get(self.path), self.maximum)
            if value is None:
                return None
            arguments[self.path] = value
        query: bytes = request.scope["query_string"]
        if query and not _page_query(query, arguments):
            return None
        token = await bearer_token(request)
        if self.caller == "actor":
            arguments["actor"] = await get_actor(request, token)
        else:
            arguments["user"] = await get_current_user(request, token)
        arguments["runtime"] = request.app.state.runtime
        return arguments


_LEAN: dict[Callable[..., Any], PageRead] = {}


def lean(read: PageRead) -> Callable[[E], E]:
    """Declare how a `LeanRoute` reads the decorated endpoint's arguments."""

    def declare(endpoint: E) -> E:
        _LEAN[endpoint] = read
        return endpoint

    return declare


class LeanRoute(APIRoute):
    """An `APIRoute` whose handler takes its endpoint's `PageRead` when it can."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        read = _LEAN.get(self.endpoint)
        if read is None:
            return handler
        endpoint: Endpoint = self.endpoint
        declared = set(inspect.signature(endpoint).parameters)
        if declared != read.parameters() or self.dependencies:
            raise TypeError(
                f"{endpoint.__name__}: its PageRead gives {sorted(read.parameters())}, "
                f"it takes {sorted(declared)}"
                + (" and route dependencies" if self.dependencies else "")
            )

        async def lean_handler(request: Request) -> Response:
            arguments = await read.arguments(request)
            if arguments is None:
                return await handler(request)
            return await endpoint(**arguments)

        return lean_handler


def _plain_int(text: str | None, maximum: int, minimum: int = 1) -> int | None:
    """`text` as an int when it is canonical ASCII digits in minimum..maximum; else None."""
    if (
        not text
        or len(text) > len(str(maximum))
        or not (text.isascii() and text.isdigit())
        or (text[0] == "0" and len(text) > 1)
    ):
        return None
    value = int(text)
    return value if minimum <= value <= maximum else None


def _page_query(query: bytes, arguments: dict[str, Any]) -> bool:
    """`cursor` and `limit` from a query string into `arguments`; False if not plain.

    Split as Starlette's `QueryParams` does (blank values kept), so a name is
    the one FastAPI would look up.
    """
    for name, text in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in arguments:
            return False  # repeated
        if name == "limit":
            value = _plain_int(text, MAX_LIMIT)
            if value is None:
                return False
            arguments["limit"] = value
        elif name == "cursor" and plain_cursor(text):
            arguments["cursor"] = text
        else:
            return False
    return True
