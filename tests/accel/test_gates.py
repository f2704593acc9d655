"""The accel gates: each module runs only on the exact library versions it was tested on.

A deliberately wrong version makes a module (and every module that needs it)
decline with one warning line, and Huddle serves on the libraries' public
paths; `ACCEL=off` declines them all.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator

import httpx
import pytest
from structlog.testing import capture_logs

from huddle import accel
from huddle.accel import MODULES, Gate
from huddle.accel import Tested as Library
from tests.factories import Factory
from tests.gateway.live import LiveServer, SocketProbe

# The modules that decline when the library a module's gate names first is off its
# version: every module tested on that library, and every module needing one of them.
DECLINES_WITH = {
    "pyjwt": {"pyjwt"},  # PyJWT
    "sqlalchemy": {"sqlalchemy"},  # SQLAlchemy
    "uvicorn": {"uvicorn", "engineio", "socketio"},  # uvicorn
    "engineio": {"engineio", "socketio"},  # python-engineio
    "socketio": {"engineio", "socketio"},  # python-socketio
}


@pytest.fixture(autouse=True)
def fresh_decision() -> Iterator[None]:
    accel.load.cache_clear()
    yield
    accel.load.cache_clear()


def _first_library(name: str) -> Library:
    gate: Gate = importlib.import_module(f"huddle.accel.{name}").GATE
    return gate.libraries[0]


def test_on_the_tested_versions_every_module_runs() -> None:
    assert accel.load("auto").decided() == dict.fromkeys(MODULES, True)


def test_off_runs_none() -> None:
    assert accel.load("off").decided() == dict.fromkeys(MODULES, False)
    assert not accel.load("off").any


@pytest.mark.parametrize("name", MODULES)
def test_a_wrong_version_declines_with_one_warning(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = _first_library(name)
    monkeypatch.setattr(sys.modules[library.module], "__version__", "0.0.0", raising=False)
    with capture_logs() as logs:
        chosen = accel.load("auto").decided()
        accel.load("auto").decided()  # decided once per process: no second warning
    declined = {module for module, runs in chosen.items() if not runs}
    assert declined == DECLINES_WITH[name]
    warnings = [entry for entry in logs if entry["event"] == "accel_declined"]
    assert sorted(w["module"] for w in warnings) == sorted(declined)
    assert all("0.0.0" in w["reason"] or "needs" in w["reason"] for w in warnings)


def test_a_module_that_cannot_be_imported_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def broken(module: str, *args: object) -> object:
        if module == "huddle.accel.pyjwt":
            raise ImportError("cannot import name '_jws'")
        return real(module, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", broken)
    with capture_logs() as logs:
        assert accel.load("auto").pyjwt is False
    assert [e["module"] for e in logs if e["event"] == "accel_declined"] == ["pyjwt"]


@pytest.fixture(scope="module")
def wrong_versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`huddle serve` whose libraries all report a version no accel module was tested on."""
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(
        "import jwt, sqlalchemy, uvicorn, engineio, socketio\n"
        "for module in (jwt, sqlalchemy, uvicorn, engineio, socketio):\n"
        "    module.__version__ = '0.0.0'\n"
    )
    server = LiveServer(
        tmp_path_factory.mktemp("wrong"),
        env={"PYTHONPATH": str(site), "ACCEL": "auto", "LOG_LEVEL": "info"},
    )
    with server:
        yield server


async def test_the_stock_path_serves_when_every_module_declines(
    wrong_versions: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=wrong_versions.url, timeout=10) as client:
        factory = Factory(client)
        owner, mate = await factory.user(), await factory.user()
        team = await factory.team(owner)
        await factory.member(team["id"], owner, mate)
        probe = SocketProbe(wrong_versions.url)
        try:
            await probe.connect({"token": mate.access_token})
            assert (await probe.next("authenticated"))["teams"][0]["id"] == team["id"]
            task = await factory.task(team["id"], owner, title="made on the stock path")
            created = await probe.next("task_created")
            assert created["task"]["id"] == task["id"]
        finally:
            await probe.close()
    log = wrong_versions.log_text(tail=None)
    declined = [line for line in log.splitlines() if "accel_declined" in line]
    assert len(declined) == len(MODULES), declined  # one line per module, once
    assert "Traceback" not in log


def test_a_module_is_decided_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`huddle gateway` never asks for the SQLAlchemy module, so never imports SQLAlchemy."""
    monkeypatch.delitem(sys.modules, "huddle.accel.sqlalchemy", raising=False)
    assert accel.load("auto").pyjwt is True
    assert "huddle.accel.sqlalchemy" not in sys.modules
