"""Every reach into a library's private internals, behind a gate on the versions it was tested on.

Huddle is fast partly because some of its code goes below the public APIs of
the libraries it stands on. All of that code lives in this package, one
module per library, and nowhere else:

    accel/pyjwt.py       PyJWT: the base64url check in C, the HMAC key prepared once
    accel/sqlalchemy.py  SQLAlchemy: SQLite run inline on the loop, outbox statements as driver SQL
    accel/uvicorn.py     uvicorn + websockets: shared pre-built frames, coalesced writes,
                         the upgrade handed over parsed
    accel/engineio.py    python-engineio: lean sessions for direct WebSockets
    accel/socketio.py    python-socketio: encode-once broadcasts without a task per recipient

Each module's docstring lists exactly what it overrides and why, the way a
well-kept fork lists its changes, and declares the exact versions it was
built and tested on (`GATE`). `load(mode)` checks them once per process: a
module whose libraries are at another version declines with one warning line
and Huddle runs on the libraries' own public paths — slower, never broken.
`ACCEL=off` declines every module (the stock path, which CI runs as a
product in its own right). A module may also need another one (lean
sessions write through the uvicorn module's connections): if that one
declines, so does it.

Nothing outside this package imports a module of it except through
`load(...)` and the `Accel` it answers, so a declined module's code is never
run.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from dataclasses import dataclass
from typing import Literal

from huddle.logging import get_logger

log = get_logger("huddle.accel")

Mode = Literal["auto", "off"]
MODULES = ("pyjwt", "sqlalchemy", "uvicorn", "engineio", "socketio")
"""The accel modules, in dependency order (a module may need only earlier ones)."""


@dataclass(frozen=True, slots=True)
class Tested:
    """One library a module reaches into, and the exact versions it was tested on."""

    distribution: str
    """The PyPI name (for `importlib.metadata`)."""
    module: str
    """The import name; its `__version__`, when it has one, is what is compared."""
    versions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Gate:
    """What an accel module needs to be installed: exact library versions, other modules."""

    libraries: tuple[Tested, ...]
    needs: tuple[str, ...] = ()

    def mismatch(self) -> str | None:
        """Why the installed libraries are not the tested ones; None when they are."""
        for library in self.libraries:
            installed = installed_version(library)
            if installed not in library.versions:
                tested = ", ".join(library.versions)
                return f"{library.distribution} {installed} (tested: {tested})"
        return None


def installed_version(library: Tested) -> str:
    """The installed version: the module's `__version__` if it has one, else its metadata."""
    module = sys.modules.get(library.module) or importlib.import_module(library.module)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(library.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Accel:
    """Which accel modules this process runs with (each True only when installed)."""

    pyjwt: bool = False
    sqlalchemy: bool = False
    uvicorn: bool = False
    engineio: bool = False
    socketio: bool = False

    @property
    def any(self) -> bool:
        return any(getattr(self, name) for name in MODULES)


STOCK = Accel()
"""Every module declined: the libraries' own public paths."""


@functools.cache
def load(mode: Mode = "auto") -> Accel:
    """Decide, once per process and mode, which accel modules run (see the module docstring)."""
    if mode == "off":
        return STOCK
    chosen: dict[str, bool] = {}
    for name in MODULES:
        try:
            # Importing an accel module only defines its classes (nothing is patched),
            # but with other library versions even that can fail: that is a decline too.
            gate: Gate = importlib.import_module(f"huddle.accel.{name}").GATE
            reason = gate.mismatch()
        except Exception as exc:
            gate, reason = Gate(()), f"cannot be imported ({type(exc).__name__}: {exc})"
        missing = [need for need in gate.needs if not chosen.get(need)]
        if reason is None and missing:
            reason = f"needs accel module {', '.join(missing)}"
        if reason is not None:
            log.warning("accel_declined", module=name, reason=reason, path="stock")
        chosen[name] = reason is None
    return Accel(**chosen)
