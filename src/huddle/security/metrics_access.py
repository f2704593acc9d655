"""Who may read `/metrics` (SPEC §3): the API's and the stand-alone gateway's.

In development and test anyone may, as before. In production:

- with `METRICS_TOKEN` set, only a request carrying `Authorization: Bearer
  <METRICS_TOKEN>` (compared in constant time), from wherever it comes;
- without it, only clients on this host: loopback TCP peers that are not
  passing on someone else's request (`client_address(...).localhost`: a
  forwarded header never makes a client local).

The metrics name routes, outcomes and counts, not secrets, but they map the
service for whoever reads them, and the shipped nginx configuration proxies
every path.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from huddle.config import Settings
from huddle.errors import Forbidden, TokenInvalid, TokenMissing
from huddle.security.client_ip import client_address


def authorize_metrics(scope: Mapping[str, Any], settings: Settings) -> None:
    """Return when the request may read the metrics; raise the error to answer otherwise."""
    if not settings.is_production:
        return
    token = settings.metrics_token
    if token:
        presented = _bearer(scope)
        if presented is None:
            raise TokenMissing("/metrics needs the METRICS_TOKEN as a bearer token.")
        if not hmac.compare_digest(presented.encode("latin-1"), token.encode()):
            raise TokenInvalid("The metrics token is not valid.")
        return
    if not client_address(scope, settings.trusted_networks).localhost:
        raise Forbidden("/metrics answers clients on this host only (or set METRICS_TOKEN).")


def _bearer(scope: Mapping[str, Any]) -> str | None:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            text: str = bytes(value).decode("latin-1")
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None
