"""What an operator sees from the `huddle` command: real processes, exit statuses, stderr.

Each test runs the installed command as a subprocess, the way an operator or an
orchestrator does, and asserts what they would read: the exit status, exactly
one line on stderr naming what to fix, and never a traceback (SPEC §2, §3, §4.5).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.live import HUDDLE, free_port

SECRET = "a-cli-test-secret-that-is-long-enough-0123456789"
COMMAND = [str(HUDDLE)] if HUDDLE.exists() else [sys.executable, "-m", "huddle.cli"]
# Variables of the outer environment that would point the command elsewhere.
_SCRUB = ("DATABASE_URL", "REDIS_URL", "BACKEND_URL", "PYTHON_BACKEND_URL", "PORT", "HOST")


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SCRUB and not k.startswith(("JWT_", "APP_", "NODE_ENV", "LOG_"))
    }
    env.update(APP_ENV="test", HUDDLE_DATA_DIR=str(data_dir), JWT_SECRET=SECRET, **extra)
    return env


def huddle(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line the command wrote to stderr (fails on a traceback or more lines)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("huddle: "), lines[0]
    return lines[0]


def wait_healthy(process: subprocess.Popen[bytes], url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early with status {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("never became healthy")


def test_serve_on_a_fresh_data_directory_takes_writes_and_stops_cleanly(tmp_path: Path) -> None:
    """SPEC §3: the embedded SQLite database is migrated at start (no `huddle migrate`);
    a port already taken is one line; SIGTERM drains and exits 0 (SPEC §4.5)."""
    port = free_port()
    env = environment(tmp_path / "data", PORT=str(port))
    assert not (tmp_path / "data").exists()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*COMMAND, "serve"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(process, url)
        created = httpx.post(
            f"{url}/api/auth/register",
            json={"email": "first@example.com", "password": "a-long-password", "name": "First"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200

        # A second process on the same port: one line naming PORT, before anything starts.
        taken = huddle(["serve"], env, tmp_path)
        assert taken.returncode == 1
        line = one_line(taken)
        assert "PORT" in line and f"127.0.0.1:{port}" in line and "in use" in line

        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    output = log_path.read_text()
    assert "database_migrated" in output
    assert "Traceback" not in output
    # A restart finds the database at the latest migration and migrates nothing.
    assert huddle(["token", "--user", "1"], env, tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("command", "url", "says"),
    [
        ("serve", "mysql://root@localhost/huddle", "'mysql' databases are not supported"),
        ("migrate", "huddle.db", "not a database URL"),
    ],
)
def test_an_unsupported_database_url_is_one_line(
    tmp_path: Path, command: str, url: str, says: str
) -> None:
    result = huddle([command], environment(tmp_path, DATABASE_URL=url), tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("huddle: configuration error: DATABASE_URL: ") and says in line
    assert "postgresql+asyncpg://" in line  # and what would work
    assert "root@localhost" not in line  # never the rest of the URL (it may hold a password)


def test_an_unusable_data_directory_is_one_line(tmp_path: Path) -> None:
    """HUDDLE_DATA_DIR below a file: the development secret, then the SQLite file, say so."""
    (tmp_path / "a-file").write_text("")
    env = environment(tmp_path / "a-file" / "data")
    env.pop("JWT_SECRET")
    no_secret = huddle(["serve"], env, tmp_path)
    assert no_secret.returncode == 2
    assert one_line(no_secret).startswith("huddle: configuration error: HUDDLE_DATA_DIR: ")
    no_database = huddle(["serve"], {**env, "JWT_SECRET": SECRET}, tmp_path)
    assert no_database.returncode == 1
    line = one_line(no_database)
    assert line.startswith("huddle: cannot prepare the SQLite database: ") and "a-file" in line


@pytest.mark.postgres
def test_postgresql_behind_the_code_refuses_to_start_naming_huddle_migrate(
    tmp_path: Path, empty_postgres: str
) -> None:
    """SPEC §3: several processes share PostgreSQL; migrating it is `huddle migrate`'s job."""
    env = environment(tmp_path, DATABASE_URL=empty_postgres, PORT=str(free_port()))
    for command in (["api"], ["token", "--user", "1"]):
        result = huddle(command, env, tmp_path)
        assert result.returncode == 1, (command, result.stderr)
        line = one_line(result)
        assert "behind" in line and "`huddle migrate`" in line, line
    # The plain postgresql:// form is accepted (asyncpg is the driver Huddle ships).
    assert empty_postgres.startswith("postgresql://")
    migrated = huddle(["migrate"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == "database at head"
    missing = huddle(["token", "--user", "1"], env, tmp_path)
    assert missing.returncode == 1
    assert one_line(missing) == "huddle: USER_NOT_FOUND: no user has id 1"


def test_user_create_asks_for_what_is_missing_and_prints_only_its_answer(tmp_path: Path) -> None:
    env = environment(tmp_path)
    shown = huddle(["user", "create", "--help"], env, tmp_path)
    assert shown.returncode == 0
    assert "[required]" not in shown.stdout  # they are asked for, not required
    assert shown.stdout.count("Asked for") == 3

    asked = subprocess.run(
        [*COMMAND, "user", "create", "--name", "Asked"],
        input="asked@example.com\na-long-password\na-long-password\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip().endswith("created user 1")
    assert "a-long-password" not in asked.stdout + asked.stderr
    assert "[info" not in asked.stdout + asked.stderr  # no log lines beside the answer

    token = huddle(["token", "--user", "1"], env, tmp_path)
    assert token.returncode == 0 and token.stderr == ""
    assert token.stdout.count(".") == 2  # a JWT, and nothing else


def test_bench_help_cites_only_what_the_repository_has() -> None:
    shown = subprocess.run(
        [*COMMAND, "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0
    assert "SPEC" not in shown.stdout
    assert "docs/benchmarks.md" in shown.stdout
    assert Path(__file__).parents[1].joinpath("docs", "benchmarks.md").is_file()
    assert "Usage: huddle bench [OPTIONS]" in " ".join(shown.stdout.split())
