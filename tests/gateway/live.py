"""Real servers and real clients for gateway tests (and any suite that wants them).

- `LiveServer`: `huddle serve` (or `gateway`, `api`) as a subprocess on a free
  port, with the environment a test chooses, migrated (PostgreSQL here; SQLite
  by the process itself), and waited for until
  `/healthz` answers. Stop it with SIGTERM like an orchestrator would.
- `SocketProbe`: a python-socketio `AsyncClient` that records every event the
  server sends, in order, and lets a test wait for the next one of a name.
- `mint_token`: an access token signed with the servers' test secret, with any
  lifetime — already expired included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import socketio

from huddle.config import Settings
from huddle.db.migrate import upgrade

SECRET = "gateway-live-secret-long-enough-for-hs256-0123456789"
HUDDLE = Path(sys.executable).with_name("huddle")
# Variables of the outer environment that would point a server at shared services.
_SCRUB = (
    "DATABASE_URL",
    "REDIS_URL",
    "BACKEND_URL",
    "PYTHON_BACKEND_URL",
    "PORT",
    "HOST",
    "JWT_SECRET",
    "APP_ENV",
    "NODE_ENV",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mint_token(user_id: int, *, ttl: float = 900, issued_at: float | None = None) -> str:
    """An access token for `user_id`; a negative `ttl` gives one that has already expired."""
    now = time.time() if issued_at is None else issued_at
    claims = {
        "sub": str(user_id),
        "type": "access",
        "iat": now if ttl > 0 else now + ttl - 60,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def changes_about(frames: list[Any], user_id: int) -> list[dict[str, Any]]:
    """`presence_changed {teamId, online: [...], offline: [...]}` frames, read as one
    `{teamId, userId, online}` change per frame that names `user_id`."""
    said = []
    for frame in frames:
        for key, online in (("online", True), ("offline", False)):
            if user_id in frame[key]:
                said.append({"teamId": frame["teamId"], "userId": user_id, "online": online})
    return said


class LiveServer:
    """A `huddle` server process. `env` adds to (and overrides) the test defaults."""

    def __init__(
        self,
        data_dir: Path,
        *,
        role: str = "serve",
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        huddle: Path | None = None,
    ) -> None:
        """`huddle`: the `huddle` executable to run (another virtualenv's), else this one's."""
        self.data_dir = data_dir
        self.huddle = huddle
        self.role = role
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "APP_ENV": "test",
            "HUDDLE_DATA_DIR": str(data_dir),
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "warning",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = data_dir / f"{role}-{self.port}.log"

    def settings(self) -> Settings:
        """Settings equal to the server's, for a test that reaches its database directly."""
        values: dict[str, Any] = {
            k.lower(): v for k, v in self.env.items() if k not in ("PORT", "HOST")
        }
        return Settings(_env_file=None, **values)

    def start(self, timeout: float = 60.0) -> LiveServer:
        """Launch and wait until `/healthz` answers."""
        self.launch()
        self.wait_healthy(timeout)
        return self

    def launch(self, *, migrate: bool = True) -> LiveServer:
        """Start the process without waiting (start several, then `wait_healthy` each).

        `migrate=False` skips bringing the database up to date first (a restart)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate and self.role != "gateway" and "DATABASE_URL" in self.env:
            # PostgreSQL refuses to start behind the code; SQLite the process migrates itself.
            upgrade(self.settings())
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.update(self.env)
        if self.huddle is not None:
            command = [str(self.huddle)]
        else:
            command = [str(HUDDLE)] if HUDDLE.exists() else [sys.executable, "-m", "huddle.cli"]
        with self._log_path.open("ab") as log:  # a restart appends
            self.process = subprocess.Popen(
                [*command, self.role],
                env=env,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_healthy(
        self, timeout: float = 60.0, *, path: str = "/healthz", interval: float = 0.05
    ) -> None:
        """Wait until `path` answers 200 (`/readyz`: every part the process needs is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.role} exited early:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(interval)
        self.stop()
        raise RuntimeError(f"{self.role} did not become healthy:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the process and wait; returns its exit code (None if it was not running)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(5)

    def log_text(self, *, tail: int | None = 5000) -> str:
        """What the process wrote (stdout and stderr), the last `tail` characters by default."""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SocketProbe:
    """A Socket.IO client that records what it receives, for assertions."""

    def __init__(self, url: str, *, source_ip: str | None = None, **client_options: Any) -> None:
        """`source_ip` binds the client to a local address (e.g. 127.0.0.7): its own client IP."""
        self.url = url
        self._http: aiohttp.ClientSession | None = None
        if source_ip is not None:
            connector = aiohttp.TCPConnector(local_addr=(source_ip, 0))
            self._http = aiohttp.ClientSession(connector=connector)
            client_options["http_session"] = self._http
        self.client = socketio.AsyncClient(reconnection=False, **client_options)
        self.events: list[tuple[str, Any]] = []
        self.disconnected = asyncio.Event()
        self._arrived = asyncio.Event()
        self._cursor: dict[str, int] = {}
        self.client.on("*", self._record)
        self.client.on("disconnect", self._on_disconnect)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if len(args) == 1 else list(args)))
        self._arrived.set()

    async def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()
        self._arrived.set()

    async def connect(
        self,
        auth: Any = None,
        *,
        transports: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> SocketProbe:
        await self.client.connect(
            self.url,
            auth=auth,
            transports=transports or ["websocket"],
            headers=headers or {},
            wait_timeout=5,
        )
        return self

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def all(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def next(self, event: str, timeout: float = 5.0) -> Any:
        """The next `event` not yet returned by `next` (waiting for it if needed)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self._arrived.clear()
            seen = self._cursor.get(event, 0)
            matches = self.all(event)
            if len(matches) > seen:
                self._cursor[event] = seen + 1
                return matches[seen]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no {event!r} within {timeout}s; got {self.names}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue

    async def first(self, *events: str, timeout: float = 5.0) -> tuple[str, Any]:
        """The first event received (from the start) whose name is one of `events`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self._arrived.clear()
            for name, data in self.events:
                if name in events:
                    return name, data
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"none of {events} within {timeout}s; got {self.names}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue

    async def gone(self, timeout: float = 5.0) -> None:
        """Wait until the server has disconnected this client."""
        await asyncio.wait_for(self.disconnected.wait(), timeout)

    async def quiet(self, event: str, seconds: float) -> None:
        """Assert that no (further) `event` arrives within `seconds`."""
        before = len(self.all(event))
        await asyncio.sleep(seconds)
        assert len(self.all(event)) == before, f"unexpected {event!r}: {self.all(event)}"

    async def call(self, event: str, data: Any = None, timeout: float = 5.0) -> Any:
        """Emit with an acknowledgement callback and return the acknowledgement."""
        return await self.client.call(event, data, timeout=timeout)

    async def emit(self, event: str, data: Any = None) -> None:
        await self.client.emit(event, data)

    async def close(self) -> None:
        # python-socketio's client can wait out a whole long-poll (~30 s) when it
        # closes a polling connection; the server side is not what is tested here.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                if self.client.connected:
                    await self.client.disconnect()
                await self.client.shutdown()
        if self._http is not None:
            await self._http.close()
