"""MAX_BODY (SPEC §2, §3): REST bodies above it answer 413 PAYLOAD_TOO_LARGE, unread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from huddle.api.app import create_api
from huddle.api.middleware import BodyLimit
from huddle.config import Settings
from tests.api.conftest import LiveServer
from tests.factories import PASSWORD

LIMIT = 4096


def _padded_register(size: int) -> bytes:
    """A valid registration body of exactly `size` bytes (JSON allows trailing spaces)."""
    body = json.dumps(
        {"email": f"pad{size}@example.com", "password": PASSWORD, "name": "Pad"}
    ).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_body": LIMIT})


def test_the_default_is_one_mebibyte(tmp_path: Path) -> None:
    assert Settings(huddle_data_dir=tmp_path).max_body == 1_048_576


async def test_a_declared_length_above_the_limit_is_refused_before_the_body_is_sent(
    limited: Settings,
) -> None:
    """Headers announcing 100 MB and one byte of body: the 413 comes at once."""
    async with LiveServer(create_api(limited)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /api/auth/register HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().splitlines()
            if line.startswith(b"content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), timeout=5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 ")
    error = json.loads(body)["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["details"] == {"maxBody": LIMIT}


async def test_a_streamed_body_is_refused_once_it_crosses_the_limit(limited: Settings) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 1024
            yield b" " * 1024

    async with (
        LiveServer(create_api(limited)) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        for path in ("/api/auth/register", "/api/auth/login", "/api/teams"):
            sent = 0
            response = await client.post(
                path, content=chunks(), headers={"content-type": "application/json"}
            )
            assert response.status_code == 413, (path, response.text)
            assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        # The server is fine afterwards, and a body of exactly the limit is accepted.
        ok = await client.post(
            "/api/auth/register",
            content=_padded_register(LIMIT),
            headers={"content-type": "application/json"},
        )
        assert ok.status_code == 201, ok.text
        over = await client.post(
            "/api/auth/register",
            content=_padded_register(LIMIT + 1),
            headers={"content-type": "application/json"},
        )
        assert over.status_code == 413


async def test_every_body_route_is_covered(limited: Settings) -> None:
    async with LiveServer(create_api(limited)) as server, httpx.AsyncClient() as client:
        big = b"{" + b" " * LIMIT + b"}"
        for method, path in (
            ("POST", "/api/auth/login"),
            ("POST", "/api/auth/refresh"),
            ("POST", "/api/teams"),
            ("PATCH", "/api/teams/1"),
            ("POST", "/api/teams/1/members"),
            ("POST", "/api/teams/1/tasks"),
            ("PATCH", "/api/tasks/1"),
            ("GET", "/api/users/me"),  # a body where none belongs still counts
        ):
            response = await client.request(
                method,
                server.url + path,
                content=big,
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 413, (path, response.text)


async def _run(app: BodyLimit, path: str, chunks: int, size: int) -> tuple[int, list[Message]]:
    """Drive the middleware with a chunked body; returns the chunks read and what was sent."""
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * size, "more_body": pulled < chunks}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST", "headers": []}
    await app(scope, receive, send)
    return pulled, sent


async def _greedy(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, however large, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_no_more_than_the_limit_plus_one_chunk_is_read() -> None:
    app = BodyLimit(_greedy, max_body=10_000)
    pulled, sent = await _run(app, "/api/teams", chunks=10_000, size=1_000)  # a 10 MB upload
    assert pulled == 11
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_socket_io_is_left_to_max_payload() -> None:
    app = BodyLimit(_greedy, max_body=10_000)
    pulled, sent = await _run(app, "/socket.io/", chunks=20, size=1_000)
    assert pulled == 20
    assert sent[0]["status"] == 200
