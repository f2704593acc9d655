"""Prometheus collectors (SPEC §6). Module-level, registered once per process."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class Labelled:
    """The children of a one-label collector, each looked up once (`.labels()` costs
    a lock and a tuple per call, too much for a per-handshake path). A child is made
    on first use, so the exposition is the same as with `.labels()` every time."""

    __slots__ = ("_children", "_collector")

    def __init__(self, collector: Any) -> None:
        self._collector = collector
        self._children: dict[str, Any] = {}

    def __getitem__(self, value: str) -> Any:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._collector.labels(value)
        return child


HTTP_REQUESTS = Counter(
    "huddle_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "huddle_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

SOCKETS_OPEN = Gauge("huddle_gateway_connections", "Open Socket.IO connections")
SOCKETS_AUTHENTICATED = Gauge(
    "huddle_gateway_authenticated_connections", "Authenticated Socket.IO connections"
)
CONNECTION_ATTEMPTS = Counter(
    "huddle_gateway_connection_attempts_total", "Connection attempts by outcome", ["outcome"]
)
AUTH_ERRORS = Counter(
    "huddle_gateway_auth_errors_total", "authentication_error emitted, by code", ["code"]
)
CONNECTION_OUTCOMES = Labelled(CONNECTION_ATTEMPTS)
"""`CONNECTION_OUTCOMES["authenticated"].inc()`: CONNECTION_ATTEMPTS by outcome."""
AUTH_ERROR_CODES = Labelled(AUTH_ERRORS)
"""`AUTH_ERROR_CODES[code].inc()`: AUTH_ERRORS by code."""
EVENTS_EMITTED = Counter(
    "huddle_gateway_events_emitted_total", "Team events emitted to rooms, by type", ["type"]
)
EVENTS_EMITTED_BY_TYPE = Labelled(EVENTS_EMITTED)
FANOUT_LATENCY = Histogram(
    "huddle_gateway_fanout_seconds",
    "Time from commit to the event handed to every local recipient",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BACKEND_LATENCY = Histogram(
    "huddle_gateway_backend_request_seconds",
    "Requests from the gateway to BACKEND_URL",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
BACKEND_FAILURES = Counter(
    "huddle_gateway_backend_failures_total", "Failed backend requests, by reason", ["reason"]
)
BACKEND_BATCH_SIZE = Histogram(
    "huddle_gateway_backend_batch_size",
    "Sockets per batched bootstrap request to BACKEND_URL",
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
BREAKER_STATE = Gauge(
    "huddle_gateway_circuit_breaker_state", "Backend circuit breaker: 0 closed, 1 half-open, 2 open"
)

BUS_ERRORS = Counter("huddle_bus_errors_total", "Event bus errors, by operation", ["op"])
EVENT_GAPS = Counter(
    "huddle_bus_event_gaps_total", "Times an event id gap outlived the gap timeout"
)
SQLITE_CHECKPOINT_SECONDS = Histogram(
    "huddle_sqlite_checkpoint_seconds",
    "WAL checkpoints of the embedded SQLite database, run off the event loop",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
EVENTS_WRITTEN = Counter("huddle_events_written_total", "Events written to the outbox", ["type"])
EVENTS_WRITTEN_BY_TYPE = Labelled(EVENTS_WRITTEN)
FANOUT_DELIVERIES = Counter(
    "huddle_gateway_fanout_deliveries_total",
    "Broadcast deliveries by path: one shared pre-built frame, or engine.io's queue",
    ["path"],
)
