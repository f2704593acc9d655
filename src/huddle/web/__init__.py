"""The web client of `huddle serve`: `index.html` at `/`, its assets under `/web/`.

The client is plain HTML, CSS and ES modules in `static/`, with no build step.
The official socket.io-client browser bundle is not committed: `make install`
runs `npm ci` in this folder (package-lock.json pins the version) and copies
`socket.io.min.js` into `vendor/` (git-ignored), served at `/web/vendor/`.
Without it the page says so and still works over REST, without live updates.

Everything is mounted below `/web` except the page itself at exactly `/`, so
`/api`, `/docs`, `/openapi.json`, `/healthz`, `/readyz`, `/metrics` and
`/socket.io` stay where they are.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from huddle.logging import get_logger

log = get_logger("huddle.web")

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
VENDOR_DIR = WEB_DIR / "vendor"
BUNDLE = VENDOR_DIR / "socket.io.min.js"

# Revalidate on every load (cheap: ETag / Last-Modified answer 304), so that an
# upgraded server never runs a page with a mix of old and new modules.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page loads only its own scripts and styles and talks only to its own
# origin (REST and the Socket.IO WebSocket): injected markup could run nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class _Assets(StaticFiles):
    """StaticFiles with the headers above. An `optional` folder may be missing: 404s then."""

    def __init__(self, *, directory: Path, optional: bool = False) -> None:
        super().__init__(directory=directory, check_dir=not optional)
        self.optional = optional

    async def check_config(self) -> None:
        # `vendor/` exists only after `make install`: Starlette would answer 500
        # for every request without it, instead of 404 (and serve it once made).
        if not self.optional:
            await super().check_config()

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response


def mount_web_client(app: FastAPI) -> None:
    """Serve the web client from `app` (the API app of `huddle serve`)."""
    if not BUNDLE.is_file():
        log.warning(
            "web_client_bundle_missing",
            path=str(BUNDLE),
            hint="run `make install` (needs Node.js and npm); the page works without live updates",
        )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        headers = {**_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
        return FileResponse(STATIC_DIR / "index.html", headers=headers)

    # The more specific mount first: Starlette matches mounts by prefix, in order.
    app.mount("/web/vendor", _Assets(directory=VENDOR_DIR, optional=True), name="web-vendor")
    app.mount("/web", _Assets(directory=STATIC_DIR), name="web")
