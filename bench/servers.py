"""The two servers under test, started the same way: a fresh process, pinned, on loopback.

- `node`: the Node.js Socket.IO peer (bench/peer/server.js).
- `huddle`: `huddle serve` on a copy of a seeded SQLite database, with the
  bench trigger on (BENCH_ENDPOINTS), rate limits off, warnings-only logs.

Both answer `POST /bench/broadcast?room=team:1&count=N&size=S` and accept the
load generator's tokens (HS256 with the same secret, `sub` = 1..N), and both
put each user in the same teams (`bench.seed.Layout`: the seed writes it into
Huddle's database, the peer gets it in its environment).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from bench import peer_driver
from bench.peer_driver import ServerProcess
from bench.seed import Layout

ServerName = Literal["node", "huddle"]
SERVERS: Final[tuple[ServerName, ...]] = ("node", "huddle")
SECRET: Final = "huddle-bench-secret-0123456789abcdef-0123456789abcdef"  # noqa: S105 - loopback fixture
DB_NAME: Final = "huddle.db"


def huddle_executable() -> str:
    """The `huddle` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("huddle")
    if not script.is_file():
        raise peer_driver.BenchDriverError(f"{script} not found: install huddle in this venv")
    return str(script)


@dataclass
class Template:
    """A seeded database that each Huddle server starts from a copy of."""

    directory: Path
    users: int
    layout: Layout

    @property
    def database(self) -> Path:
        return self.directory / DB_NAME


def make_template(parent: Path, users: int, layout: Layout) -> tuple[Template, dict[str, object]]:
    """Seed `users` users, laid out by `layout`, into a new SQLite database under `parent`."""
    from bench.seed import seed

    directory = parent / "template"
    info = seed(directory, users=users, layout=layout)
    return Template(directory, users, layout), info


@dataclass(frozen=True)
class ServerOptions:
    """What a scenario asks of the server it runs against."""

    compression: bool = False
    max_connections_per_user: int = 20
    extra_env: tuple[tuple[str, str], ...] = ()
    """Huddle settings given with `--huddle-env` (e.g. to compare two code paths)."""


@dataclass
class Running:
    """A started server and the data directory it was given (none for the peer)."""

    name: ServerName
    process: ServerProcess
    data_dir: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def stop(self) -> None:
        """Stop the process by PID and remove its data copy; its log stays."""
        try:
            peer_driver.stop_process(self.process)
        finally:
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)


def start(
    name: ServerName,
    *,
    template: Template,
    work_dir: Path,
    options: ServerOptions,
    cpu: int | None,
    log_dir: Path,
) -> Running:
    """A fresh server `name`; the caller stops it with `Running.stop`."""
    fd, log_name = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
    os.close(fd)
    log_path = Path(log_name)
    if name == "node":
        env = {
            "PEER_PER_MESSAGE_DEFLATE": "true" if options.compression else "false",
            "PEER_MAX_USER_ID": str(template.users),
            **template.layout.peer_env(),
        }
        peer = peer_driver.start_peer(SECRET, cpu=cpu, env=env, log_path=log_path)
        return Running(name, peer)
    data_dir = Path(tempfile.mkdtemp(prefix="huddle-", dir=work_dir))
    try:
        shutil.copyfile(template.database, data_dir / DB_NAME)
        port = peer_driver.free_port()
        process = peer_driver.start_server(
            [huddle_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            name="huddle",
            port=port,
            health_url=f"http://127.0.0.1:{port}/healthz",
            env=huddle_env(data_dir, options),
            cwd=data_dir,  # so that no .env file of the caller's is read
            cpu=cpu,
            log_path=log_path,
            ready_timeout=60.0,
        )
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return Running(name, process, data_dir)


def huddle_env(data_dir: Path, options: ServerOptions) -> Mapping[str, str]:
    """Huddle's settings for a benchmark server (the harness scrubs the others, see main)."""
    env = {
        "APP_ENV": "development",
        "HUDDLE_DATA_DIR": str(data_dir),
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "warning",
        "RATE_LIMIT_ENABLED": "false",
        "WS_COMPRESSION": "true" if options.compression else "false",
        "MAX_CONNECTIONS_PER_USER": str(options.max_connections_per_user),
        "BENCH_ENDPOINTS": "true",
    }
    env.update(options.extra_env)
    return env
