"""Deployment files rendered from templates kept in the package.

`render_nginx` fills `nginx.conf.template` with the addresses of the `huddle
api` and `huddle gateway` instances (`huddle deploy nginx --api … --gateway …`),
so an operator never edits upstream lists by hand. The template is nginx
syntax with `@@{name}` placeholders: nginx's own `$variables` stay as written
(`string.Template` with its default `$` would claim them).
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Sequence
from importlib.resources import files

NGINX_TEMPLATE = "nginx.conf.template"
API_SERVER_PARAMETERS = " max_fails=1 fail_timeout=2s"
GATEWAY_SERVER_PARAMETERS = " max_fails=0"
"""Each upstream server's: see the template's comment above its upstreams."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class DeployError(ValueError):
    """An address or option the renderer refuses; the message says which and why."""


class _Template(string.Template):
    delimiter = "@@"


def parse_address(text: str, *, what: str) -> str:
    """`host:port` (IPv4, `[IPv6]`, or a hostname) or `unix:/path`, normalised; else DeployError."""
    text = text.strip()
    if text.startswith("unix:/"):
        if any(c.isspace() or c in ";{}'\"" for c in text):
            raise DeployError(f"{what}: {text!r} is not a usable unix socket path")
        return text
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise DeployError(f"{what}: {text!r} is not host:port")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise DeployError(f"{what}: {text!r} has no valid port (1-65535)")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise DeployError(f"{what}: {text!r} is not a valid IPv6 address") from None
    elif ":" in host:
        raise DeployError(f"{what}: {text!r}: write an IPv6 address in brackets, [::1]:8001")
    elif not _HOSTNAME.match(host):
        raise DeployError(f"{what}: {text!r} is not a valid host name or address")
    return f"{host}:{int(port_text)}"


def parse_addresses(value: str | Sequence[str], *, what: str) -> list[str]:
    """A comma-separated list (or several) of addresses: at least one, no repeats."""
    items = [value] if isinstance(value, str) else list(value)
    addresses = [
        parse_address(part, what=what) for item in items for part in item.split(",") if part.strip()
    ]
    if not addresses:
        raise DeployError(f"{what}: give at least one address")
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise DeployError(f"{what}: {', '.join(repeated)} given more than once")
    return addresses


def parse_listen(text: str) -> str:
    """`8080`, `127.0.0.1:8080` or `[::]:8080` for nginx's `listen`."""
    text = text.strip()
    if text.isdigit():
        if not 1 <= int(text) <= 65535:
            raise DeployError(f"--listen: {text!r} is not a port (1-65535)")
        return str(int(text))
    return parse_address(text, what="--listen")


def render_nginx(
    api: str | Sequence[str],
    gateway: str | Sequence[str],
    *,
    listen: str = "8080",
    command: str | None = None,
) -> str:
    """The nginx configuration for these `huddle api` and `huddle gateway` instances.

    `command` is recorded in the header (how to render it again); by default the
    `huddle deploy nginx` line that gives this output.
    """
    apis = parse_addresses(api, what="--api")
    gateways = parse_addresses(gateway, what="--gateway")
    port = parse_listen(listen)
    if command is None:
        command = (
            f"huddle deploy nginx --api {','.join(apis)} --gateway {','.join(gateways)}"
            f" --listen {port}"
        )
    template = _Template(files(__package__).joinpath(NGINX_TEMPLATE).read_text(encoding="utf-8"))
    return template.substitute(
        command=command,
        listen=port,
        api_servers="\n".join(f"        server {a}{API_SERVER_PARAMETERS};" for a in apis),
        gateway_servers="\n".join(
            f"        server {g}{GATEWAY_SERVER_PARAMETERS};" for g in gateways
        ),
    )
