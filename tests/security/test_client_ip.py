"""Client IP from the ASGI scope, trusted proxies, loopback detection (SPEC §5)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from structlog.testing import capture_logs

from huddle.config import Settings
from huddle.security.client_ip import (
    UNKNOWN,
    LoopbackProxyWarning,
    client_address,
    client_ip,
    forwarded_for,
    is_loopback,
    parse_ip,
    peer_ip,
)

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def scope(peer: str | None, *forwarded: str, **headers: str) -> dict[str, Any]:
    """An ASGI scope from `peer`, with one X-Forwarded-For header per `forwarded` value."""
    raw = [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded]
    raw += [(name.encode(), value.encode()) for name, value in headers.items()]
    return {
        "type": "websocket",
        "client": None if peer is None else (peer, 51234),
        "headers": raw,
    }


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.7", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:127.3.2.1", True),
        ("[::1]:443", True),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("::ffff:10.0.0.1", False),
        ("localhost", False),
        ("", False),
        ("testclient", False),
    ],
)
def test_is_loopback_covers_the_loopback_ranges_only(ip: str, expected: bool) -> None:
    assert is_loopback(ip) is expected


def test_the_tcp_peer_is_the_client_without_trusted_proxies() -> None:
    assert client_ip(scope("203.0.113.9")) == "203.0.113.9"


def test_a_spoofed_forwarded_header_from_an_untrusted_peer_changes_nothing() -> None:
    spoofed = scope("203.0.113.9", "127.0.0.1", host="localhost")
    assert client_ip(spoofed, PROXIES) == "203.0.113.9"
    assert not is_loopback(client_ip(spoofed, PROXIES))


def test_a_forwarded_loopback_address_is_never_localhost() -> None:
    """TRUSTED_PROXIES=127.0.0.1/32 with `X-Forwarded-For: 127.0.0.2` got localhost limits."""
    local_proxy = (ipaddress.ip_network("127.0.0.1/32"),)
    for forwarded in ("127.0.0.2", "::1", "127.0.0.1"):
        address = client_address(scope("127.0.0.1", forwarded), local_proxy)
        assert address.localhost is False, forwarded
    assert client_address(scope("127.0.0.1"), local_proxy).localhost is True  # the proxy itself
    assert client_address(scope("127.0.0.5")).localhost is True  # a direct loopback peer
    assert client_address(scope("203.0.113.9", "127.0.0.1")).localhost is False


def test_behind_a_trusted_proxy_the_forwarded_client_is_used() -> None:
    assert client_ip(scope("10.1.2.3", "198.51.100.7"), PROXIES) == "198.51.100.7"


def test_the_right_most_untrusted_hop_wins_over_what_the_client_claimed() -> None:
    # The client claims to be 127.0.0.1; our proxies saw 198.51.100.7 and 10.0.0.2.
    forwarded = scope("10.1.2.3", "127.0.0.1, 198.51.100.7, 10.0.0.2")
    assert client_ip(forwarded, PROXIES) == "198.51.100.7"


def test_every_occurrence_of_the_header_is_read_in_order() -> None:
    forwarded = scope("10.1.2.3", "1.1.1.1, 198.51.100.7", "10.0.0.2")
    assert forwarded_for(forwarded) == ["1.1.1.1", "198.51.100.7", "10.0.0.2"]
    assert client_ip(forwarded, PROXIES) == "198.51.100.7"


def test_a_loopback_proxy_that_is_trusted_reveals_the_remote_client() -> None:
    local_proxy = (ipaddress.ip_network("127.0.0.1/32"),)
    assert client_ip(scope("127.0.0.1", "198.51.100.7"), local_proxy) == "198.51.100.7"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_ip(scope("10.1.2.3"), PROXIES) == "10.1.2.3"


def test_a_malformed_entry_falls_back_to_the_last_trusted_hop() -> None:
    assert client_ip(scope("10.1.2.3", "198.51.100.7, garbage"), PROXIES) == "10.1.2.3"
    assert client_ip(scope("10.1.2.3", "198.51.100.7, 10.0.0.9, unknown"), PROXIES) == "10.1.2.3"
    assert client_ip(scope("10.1.2.3", "198.51.100.7, 10.0.0.9, "), PROXIES) == "10.1.2.3"
    assert client_ip(scope("10.1.2.3", "not-an-ip, 10.0.0.9"), PROXIES) == "10.0.0.9"


def test_only_trusted_hops_means_the_left_most_one() -> None:
    assert client_ip(scope("10.1.2.3", "10.9.9.9, 10.0.0.2"), PROXIES) == "10.9.9.9"


def test_ports_brackets_and_quotes_in_entries_are_understood() -> None:
    assert client_ip(scope("10.1.2.3", "198.51.100.7:4711"), PROXIES) == "198.51.100.7"
    assert client_ip(scope("10.1.2.3", '"[2001:db8::5]:4711"'), PROXIES) == "2001:db8::5"
    assert client_ip(scope("fd00::1", "2001:db8::5"), PROXIES) == "2001:db8::5"


def test_ipv4_mapped_addresses_are_one_client_with_their_ipv4_form() -> None:
    assert peer_ip(scope("::ffff:203.0.113.9")) == "203.0.113.9"
    assert client_ip(scope("::ffff:10.1.2.3", "198.51.100.7"), PROXIES) == "198.51.100.7"


def test_a_peer_that_is_not_an_address_is_kept_but_never_trusted() -> None:
    assert peer_ip(scope(None)) == UNKNOWN
    assert peer_ip({"type": "http"}) == UNKNOWN
    assert client_ip(scope("testclient", "10.0.0.1"), PROXIES) == "testclient"


def test_parse_ip_refuses_garbage() -> None:
    for text in ("", "   ", "[::1", "1.2.3", "1.2.3.4.5", "example.com", "[zz]:1"):
        assert parse_ip(text) is None


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, jwt_secret="unit-test-secret-0123456789-abcdefghij", **values)


def test_production_warns_once_about_loopback_peers_without_trusted_proxies() -> None:
    warning = LoopbackProxyWarning(_settings(app_env="production"))
    with capture_logs() as logs:
        assert warning.observe("203.0.113.9") is False
        assert warning.observe("127.0.0.1") is True
        assert warning.observe("127.0.0.1") is False
    assert [entry["event"] for entry in logs] == ["loopback_peer_without_trusted_proxies"]
    assert logs[0]["log_level"] == "warning"


def test_no_loopback_warning_in_development_or_with_trusted_proxies() -> None:
    configured = _settings(app_env="production", trusted_proxies="127.0.0.1/32")
    with capture_logs() as logs:
        assert LoopbackProxyWarning(_settings(app_env="development")).observe("::1") is False
        assert LoopbackProxyWarning(configured).observe("127.0.0.1") is False
    assert logs == []
