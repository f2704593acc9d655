"""Who is on the other end: the client IP of a connection, and whether it is local.

The client IP is the TCP peer of the ASGI scope (`scope["client"]`). Only when
that peer is a trusted proxy (`TRUSTED_PROXIES`) is `X-Forwarded-For` read, and
then from the right: each trusted proxy appends the address it saw, so the
right-most address that is not itself a trusted proxy is the first one nobody
we trust could have forged. Everything left of it is the client's own claim.

python-socketio's `environ["REMOTE_ADDR"]` is always `127.0.0.1` under ASGI, so
the gateway passes `environ["asgi.scope"]` here instead.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from huddle.config import Settings
from huddle.logging import get_logger

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A peer the ASGI server could not name (a Unix socket, some test transports).
UNKNOWN = "unknown"

_XFF = b"x-forwarded-for"

log = get_logger("huddle.client_ip")


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress | None:
    """An address from `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80` or `"[::1]"`; else None.

    IPv4-mapped IPv6 (`::ffff:1.2.3.4`) comes back as the IPv4 address, so a
    dual-stack listener does not give one client two identities. Answers are
    remembered (bounded): every socket handshake and rate-limit check parses
    its peer two or three times, mostly the same few addresses.
    """
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x.x.x; False for anything else or garbage."""
    address = parse_ip(ip)
    return address is not None and address.is_loopback


def is_trusted(ip: str, trusted: Iterable[IPNetwork]) -> bool:
    """Whether `ip` lies in one of the trusted proxy networks."""
    address = parse_ip(ip)
    return address is not None and _within(address, trusted)


def peer_ip(scope: Mapping[str, Any]) -> str:
    """The TCP peer of an ASGI scope, normalised; `UNKNOWN` when the server gives none."""
    client = scope.get("client")
    if not client:
        return UNKNOWN
    return _normalised(str(client[0]))


@functools.lru_cache(maxsize=4096)
def _normalised(host: str) -> str:
    """`host` as `peer_ip` gives it; remembered with `parse_ip` (formatting an address is slow)."""
    address = parse_ip(host)
    # A non-IP peer name (Starlette's TestClient says "testclient") is kept as
    # given: it is still a stable key, it is just never trusted nor loopback.
    return str(address) if address is not None else host


def forwarded_for(scope: Mapping[str, Any]) -> list[str]:
    """Every `X-Forwarded-For` entry, left to right, across all occurrences of the header."""
    entries: list[str] = []
    for name, value in scope.get("headers") or ():
        if name.lower() == _XFF:
            entries.extend(part.strip() for part in value.decode("latin-1").split(","))
    return entries


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """Who a connection is from: the client IP, and whether the client is this host."""

    ip: str
    localhost: bool
    """True only when the TCP peer itself is loopback and no forwarded header named the
    client: a `Host` or `X-Forwarded-For` header never makes a client localhost (SPEC §5)."""


def client_address(scope: Mapping[str, Any], trusted: Iterable[IPNetwork] = ()) -> ClientAddress:
    """The client of an ASGI connection (see the module docstring for the rules).

    A malformed `X-Forwarded-For` entry stops the walk: the answer is then the
    last address a trusted hop vouched for (the proxy that passed it on), never
    text a client could have made up.
    """
    networks = tuple(trusted)
    peer = peer_ip(scope)
    if not networks or not is_trusted(peer, networks):
        return ClientAddress(peer, is_loopback(peer))
    candidate = peer
    forwarded = False
    for entry in reversed(forwarded_for(scope)):
        address = parse_ip(entry)
        if address is None:
            break
        candidate = str(address)
        forwarded = True
        if not _within(address, networks):
            break
    # (Every hop a trusted proxy, say an internal health check: the left-most.)
    return ClientAddress(candidate, not forwarded and is_loopback(candidate))


def client_ip(scope: Mapping[str, Any], trusted: Iterable[IPNetwork] = ()) -> str:
    """The client IP of an ASGI connection (`client_address(...).ip`)."""
    return client_address(scope, trusted).ip


class LoopbackProxyWarning:
    """Warns once, in production, that loopback peers arrive while TRUSTED_PROXIES is empty.

    That is the signature of a reverse proxy on the same host: every client
    would look like localhost and get the generous local limits. Keep one
    instance per process and call `observe` with each connection's peer.
    """

    def __init__(self, settings: Settings) -> None:
        self._armed = settings.is_production and not settings.trusted_proxies

    def observe(self, peer: str) -> bool:
        """Log the warning if this peer is the first loopback one; True when it logged."""
        if not self._armed or not is_loopback(peer):
            return False
        self._armed = False
        log.warning(
            "loopback_peer_without_trusted_proxies",
            peer=peer,
            hint=(
                "connections arrive from loopback in production but TRUSTED_PROXIES is empty; "
                "if a reverse proxy runs on this host, set TRUSTED_PROXIES=127.0.0.1/32 so "
                "clients are told apart and get production rate limits"
            ),
        )
        return True


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    # `in` is False across IP versions rather than an error.
    return any(address in network for network in networks)
