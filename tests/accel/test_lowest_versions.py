"""The stock path on the lowest version of each library the accel modules reach into.

`pyproject.toml` allows ranges of uvicorn, websockets, python-socketio,
python-engineio, SQLAlchemy and PyJWT in which the stock path (the libraries'
public APIs) works. This builds a virtualenv with the lowest allowed version
of each (the rest as resolved), starts `huddle serve` from it — every accel
module declines there — and runs a short end-to-end smoke: register, log in,
a socket authenticates, a REST change arrives live.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.factories import Factory
from tests.gateway.live import LiveServer, SocketProbe

ROOT = Path(__file__).resolve().parents[2]
REACHED_INTO = (
    "uvicorn",
    "websockets",
    "python-socketio",
    "python-engineio",
    "sqlalchemy",
    "pyjwt",
)

pytestmark = pytest.mark.slow


def lowest_versions() -> dict[str, str]:
    """`name -> lowest allowed version` of the six, from pyproject.toml's dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest: dict[str, str] = {}
    for requirement in project["dependencies"]:
        match = re.match(
            r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)\s*,\s*<", requirement
        )
        if match and match.group(1).lower() in REACHED_INTO:
            lowest[match.group(1).lower()] = match.group(3)
    return lowest


def test_every_library_reached_into_has_a_bounded_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0].lower(): r for r in project["dependencies"]}
    for name in REACHED_INTO:
        assert ",<" in named[name].replace(" ", ""), f"{name} has no upper bound: {named[name]}"
    assert set(lowest_versions()) == set(REACHED_INTO)


@pytest.fixture(scope="module")
def lowest_venv() -> Iterator[Path]:
    """A virtualenv with Huddle and the lowest allowed versions (reused while pyproject
    is unchanged: `.venv-lowest/`, git-ignored)."""
    pins = lowest_versions()
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    venv = ROOT / ".venv-lowest"
    done = venv / f".installed-{stamp}"
    python = venv / "bin" / "python"
    if not done.exists():
        constraints = venv.with_suffix(".constraints")
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            constraints.write_text("".join(f"{name}=={v}\n" for name, v in pins.items()))
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "-c", str(constraints), "-e", str(ROOT)],
                check=True, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            output = getattr(exc, "stderr", "") or ""
            if REQUIRE_SERVICES:
                pytest.fail(f"could not build the lowest-versions virtualenv: {exc}\n{output}")
            pytest.skip(f"could not build the lowest-versions virtualenv: {exc}")
        done.touch()
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        check=True, capture_output=True, text=True,
    ).stdout.lower()  # fmt: skip
    for name, version in pins.items():
        assert f"{name}=={version}" in installed, f"{name} is not at {version}"
    yield venv / "bin" / "huddle"


async def test_the_stock_path_serves_on_the_lowest_versions(
    lowest_venv: Path, tmp_path: Path
) -> None:
    with LiveServer(tmp_path, huddle=lowest_venv, env={"LOG_LEVEL": "info"}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            factory = Factory(client)
            owner, mate = await factory.user(), await factory.user()
            team = await factory.team(owner)
            await factory.member(team["id"], owner, mate)
            probe = SocketProbe(server.url)
            try:
                await probe.connect({"token": mate.access_token})
                assert (await probe.next("authenticated"))["teams"][0]["id"] == team["id"]
                task = await factory.task(team["id"], owner, title="on the lowest versions")
                assert (await probe.next("task_created"))["task"]["id"] == task["id"]
            finally:
                await probe.close()
        log = server.log_text(tail=None)
    assert "accel_declined" in log  # the accel modules stood aside
    assert "Traceback" not in log
