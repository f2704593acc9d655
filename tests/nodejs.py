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
from collections.abc import Awaitable, Callable
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
    control: Callable[[str], Awaitable[Any]] | None = None,
    control_data: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """Run a Node.js driver that prints one JSON report line; its `result`, or fail the test.

    The configuration (tokens among it) travels in the environment variable
    `env_name`, never on the command line. DEBUG is dropped: it would make
    socket.io-client log packets, tokens included.

    `control` lets the driver ask the test to act mid-run (stop a server,
    start it again): a stdout line `{"control": "<name>"}` awaits
    `control(name)`, then the driver reads `{"done": "<name>"}` on stdin.
    With `control_data` instead, the callback gets the whole line too
    (`control_data(name, message)`: what the driver reports at that point), and
    what it returns (if not None) goes back as `{"done": "<name>", "value": …}`.
    """
    if control_data is None and control is not None:
        plain = control

        async def control_data(name: str, message: dict[str, Any]) -> Any:
            return await plain(name)

    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", env_name)}
    env[env_name] = json.dumps(config)
    if control_data is None:
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
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    else:
        returncode, stdout, stderr = await _run_with_control(
            argv,
            cwd=cwd,
            env=env,
            timeout=timeout,
            label=label,
            control=control_data,
            server_log=server_log,
        )
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        report = {"ok": False, "error": f"no JSON line on stdout: {stdout[-2000:]!r}"}
    if returncode != 0 or not report.get("ok"):
        details = {k: v for k, v in report.items() if k not in ("ok", "scenario")}
        pytest.fail(
            f"{label} failed (exit {returncode}):\n"
            f"{json.dumps(details, indent=1)[-6000:]}\n"
            f"stderr: {stderr[-2000:]}\nserver log:\n{server_log()}",
            pytrace=False,
        )
    result: dict[str, Any] = report["result"]
    return result


async def _run_with_control(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    label: str,
    control: Callable[[str, dict[str, Any]], Awaitable[Any]],
    server_log: Callable[[], str],
) -> tuple[int, str, str]:
    """Run the driver, answering its control requests; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=2**24,  # the report line can be long
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    stdin, stdout_stream = process.stdin, process.stdout
    stderr_task = asyncio.ensure_future(process.stderr.read())
    out: list[str] = []

    async def converse() -> None:
        while line := (await stdout_stream.readline()).decode(errors="replace"):
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and isinstance(message.get("control"), str):
                name = message["control"]
                value = await control(name, message)
                answer = {"done": name} if value is None else {"done": name, "value": value}
                stdin.write((json.dumps(answer) + "\n").encode())
                await stdin.drain()
            else:
                out.append(line)
        await process.wait()

    try:
        await asyncio.wait_for(converse(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        stderr = (await stderr_task).decode(errors="replace")
        pytest.fail(
            f"{label} did not finish in {timeout}s\nstderr: {stderr[-2000:]}"
            f"\nserver log:\n{server_log()}",
            pytrace=False,
        )
    stderr = (await stderr_task).decode(errors="replace")
    returncode = process.returncode
    assert returncode is not None
    return returncode, "".join(out), stderr
