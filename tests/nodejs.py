"""Prerequisites of the suites that drive Node.js programs (interop, browser).

Missing prerequisites skip a test with the reason, except under
HUDDLE_REQUIRE_SERVICES=1 (CI), where they fail it: a green CI must not hide
a missing install step.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

REQUIRE_SERVICES = os.environ.get("HUDDLE_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under HUDDLE_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (HUDDLE_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def node_with(folder: Path, package: str, *, min_node: int, install_hint: str) -> str:
    """The `node` executable, once `folder` has exactly the pinned `package` installed.

    Raises LookupError saying what is missing.
    """
    node = shutil.which("node")
    if node is None:
        raise LookupError("Node.js is not installed (`node` is not on PATH)")
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise LookupError(f"`node --version` failed: {exc!r}") from None
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < min_node:
        raise LookupError(f"Node.js >= {min_node} is needed, found {version!r}")
    wanted = json.loads((folder / "package.json").read_text())["dependencies"][package]
    installed_file = folder / "node_modules" / package / "package.json"
    try:
        installed = json.loads(installed_file.read_text())["version"]
    except (OSError, ValueError, KeyError):
        raise LookupError(
            f"{package} is not installed in {folder.name}: run {install_hint}"
        ) from None
    if installed != wanted:
        raise LookupError(
            f"{folder.name} has {package} {installed}, package.json pins {wanted}: "
            f"run {install_hint}"
        )
    return node


async def run_report(
    argv: list[str],
    *,
    cwd: Path,
    env_name: str,
    config: object,
    timeout: float,
    label: str,
    server_log: Callable[[], str],
) -> dict[str, Any]:
    """Run a Node.js driver that prints one JSON report line; its `result`, or fail the test.

    The configuration (tokens among it) travels in the environment variable
    `env_name`, never on the command line. DEBUG is dropped: it would make
    socket.io-client log packets, tokens included.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", env_name)}
    env[env_name] = json.dumps(config)
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{label} did not finish in {timeout}s\nstderr: {str(exc.stderr or '')[-2000:]}"
            f"\nserver log:\n{server_log()}",
            pytrace=False,
        )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        report = {"ok": False, "error": f"no JSON line on stdout: {done.stdout[-2000:]!r}"}
    if done.returncode != 0 or not report.get("ok"):
        details = {k: v for k, v in report.items() if k not in ("ok", "scenario")}
        pytest.fail(
            f"{label} failed (exit {done.returncode}):\n"
            f"{json.dumps(details, indent=1)[-6000:]}\n"
            f"stderr: {done.stderr[-2000:]}\nserver log:\n{server_log()}",
            pytrace=False,
        )
    result: dict[str, Any] = report["result"]
    return result
