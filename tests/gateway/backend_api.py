"""Real backends for the gateway's HTTP source: a `huddle api` process, and broken ones.

- `ApiProcess`: `huddle migrate` then `huddle api` on a free port, SQLite in a
  temporary data directory, as a subprocess (what `huddle gateway` talks to).
- `TcpRelay`: a TCP relay in front of it that a test stops and starts again on
  the same port — the backend going down and coming back.
- `SilentServer`: accepts connections and never answers (a hung backend).
- `FailingServer`: answers every request with a 503 (a broken backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from huddle.config import Settings

SECRET = "gateway-test-secret-long-enough-for-hs256-0123456789"
HUDDLE = str(Path(sys.executable).with_name("huddle"))
# Variables that would point the subprocess at shared services.
_SCRUB = ("DATABASE_URL", "REDIS_URL", "BACKEND_URL", "PYTHON_BACKEND_URL", "PORT", "HOST")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_for(data_dir: Path, **extra: Any) -> Settings:
    """Settings of a process sharing the API process's database and secret."""
    values: dict[str, Any] = {
        "app_env": "test",
        "huddle_data_dir": data_dir,
        "jwt_secret": SECRET,
        "database_url": None,
        "redis_url": None,
        "backend_url": None,
        "refresh_reuse_grace": 0,  # reuse is reuse at once (tests/api covers the grace)
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class ApiProcess:
    """`huddle api` in a subprocess on a free port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        self.env.update(
            APP_ENV="test",
            HUDDLE_DATA_DIR=str(data_dir),
            JWT_SECRET=SECRET,
            LOG_LEVEL="warning",
            REFRESH_REUSE_GRACE="0",  # reuse is reuse at once (tests/api covers the grace)
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = data_dir / "api.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [HUDDLE, "migrate"],
            env=self.env,
            cwd=self.data_dir,
            check=True,
            capture_output=True,
            timeout=60,
        )
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [HUDDLE, "api", "--port", str(self.port)],
                env=self.env,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"huddle api exited: {self._log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("huddle api did not start")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


class TcpRelay:
    """Relays 127.0.0.1:<port> to a target; `stop()` refuses connections until `start()`."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Close the listener and cut every relayed connection (pooled ones too)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await asyncio.sleep(0.01)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


class _RawServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> _RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0.01)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class SilentServer(_RawServer):
    """Accepts, reads, never answers."""

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass


class FailingServer(_RawServer):
    """Every request gets `503 Service Unavailable` (the connection is then closed)."""

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"error":{"code":"DATABASE_UNAVAILABLE","message":"down"}}'
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
