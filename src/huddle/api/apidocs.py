"""`/docs`: Swagger UI over `/openapi.json`, with its assets served by Huddle itself.

FastAPI's default page loads Swagger UI from a CDN, so with no internet access
it is blank (issue 14). `make install` copies the bundle, stylesheet and favicon
of npm's `swagger-ui-dist` (pinned by `docs/package-lock.json`, like the web
client's socket.io-client) into `docs/vendor/`; they are served at
`/docs/assets/`. Without them (no Node.js at install time) `/docs` answers 503
and says how to install them; `/openapi.json` works either way.

ReDoc (`/redoc`) is not offered: it too would come from a CDN.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

VENDOR_DIR = Path(__file__).resolve().parent / "docs" / "vendor"
ASSETS_URL = "/docs/assets"
BUNDLE = "swagger-ui-bundle.js"
ASSETS = (BUNDLE, "swagger-ui.css", "favicon-32x32.png")

_MISSING = """<!doctype html><html><head><title>Huddle API docs</title></head><body>
<h1>Swagger UI is not installed</h1>
<p>Run <code>make install</code> (it needs Node.js and npm) to install the assets of
<code>/docs</code>. The OpenAPI document itself is at <a href="/openapi.json">/openapi.json</a>.</p>
</body></html>"""


class _Assets(StaticFiles):
    """The vendor folder, which may not exist (no npm at install time): 404s then."""

    def __init__(self) -> None:
        super().__init__(directory=VENDOR_DIR, check_dir=False)

    async def check_config(self) -> None:
        return None  # Starlette would answer 500 for a missing folder

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def installed() -> bool:
    return all((VENDOR_DIR / name).is_file() for name in ASSETS)


def mount_docs(app: FastAPI) -> None:
    """`/docs`, its OAuth2 redirect page and `/docs/assets/` on `app`."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if not installed():
            return HTMLResponse(_MISSING, status_code=503)
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title="Huddle API",
            swagger_js_url=f"{ASSETS_URL}/{BUNDLE}",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.mount(ASSETS_URL, _Assets(), name="docs-assets")
