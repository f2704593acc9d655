"""Prerequisites of the suites that drive Node.js programs (interop, browser).

Missing prerequisites skip a test with the reason, except under
HUDDLE_REQUIRE_SERVICES=1 (CI), where they fail it: a green CI must not hide
a missing install step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

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
