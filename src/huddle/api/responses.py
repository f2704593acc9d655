"""Answers built as JSON bytes by the route itself, for the busiest reads.

FastAPI validates a route's return value against its `response_model` and
serializes it; for a read whose data comes straight from the database in wire
form (`TeamService.teams_of`), that costs more than the read. Such a route
keeps `response_model` (it documents the answer in OpenAPI) and returns
`json_response(...)`, which FastAPI sends as it is. The body is what FastAPI's
own serialization writes: compact JSON, UTF-8, `application/json`.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response


def json_response(content: Any, status_code: int = 200) -> Response:
    """`content` (JSON-ready: str, int, bool, None, lists, dicts) as a JSON answer."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def page(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    """A `Page` of items already in wire form."""
    return json_response({"items": items, "nextCursor": next_cursor})
