"""structlog set-up: console lines in development, JSON in production.

Context (request id, socket id, user id, client IP) travels in contextvars, so
every line logged while handling a request carries it. A last processor drops
any key that names a credential, as a net under the rule that code never logs
one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are never written, whatever a caller passes.
_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "access_token",
        "refresh_token",
        "accesstoken",
        "refreshtoken",
        "secret",
        "jwt_secret",
        "authorization",
        "cookie",
    }
)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


def _pid(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("pid", os.getpid())
    return event


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog and route the standard library's logging through it."""
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _pid,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # Local variables in a traceback could hold a token or password.
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(_OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn's access log repeats what our middleware logs with more context.
    logging.getLogger("uvicorn.access").disabled = True
    # alembic.runtime.plugins announces each of its plugins as it is imported.
    for noisy in ("engineio", "socketio", "aiosqlite", "asyncio", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


class _OneLine(logging.Filter):
    """python-engineio and python-socketio log a client's unreadable packet with a
    traceback ("Unknown receive error"): what a client sent is not a server fault, and
    a flood of them would fill the log. The line keeps the exception's type, no stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.exc_info
            and record.exc_info[0] is not None
            and record.name.startswith(("engineio", "socketio"))
        ):
            record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; `name` becomes the `logger` key."""
    return structlog.get_logger(name) if name else structlog.get_logger()


def log_enabled(level: int) -> bool:
    """Whether structlog's configured level lets a line at `level` through.

    A call on a module's lazy logger costs a fresh bound logger each time, even
    for a line that is then filtered out; on per-socket paths, ask first. Any
    wrapper that does not tell its level counts as letting everything through.
    """
    try:
        wrapper = structlog.get_config()["wrapper_class"]
        return bool(level >= wrapper.get_effective_level(None))
    except Exception:
        return True
