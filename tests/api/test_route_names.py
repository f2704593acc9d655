"""Every request is logged and measured under the route it matched, static files too."""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from huddle.app import build_app
from huddle.config import Settings


async def test_static_files_log_and_count_under_their_routes(settings: Settings) -> None:
    app = build_app(settings, "serve")  # the web client is served by `huddle serve`
    async with LifespanManager(app, startup_timeout=30):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            with capture_logs() as logs:
                expected = {
                    "/": ("/", 200),
                    "/web/js/main.js": ("/web/{path}", 200),
                    "/web/app.css": ("/web/{path}", 200),
                    "/web/no-such-file.js": ("/web/{path}", 404),
                    "/docs/assets/no-such-file.js": ("/docs/assets/{path}", 404),
                    "/healthz": ("/healthz", 200),
                    "/no/such/route": ("unmatched", 404),
                }
                for path, (_, status) in expected.items():
                    assert (await client.get(path)).status_code == status, path
            metrics = (await client.get("/metrics")).text
    logged = [(line["route"], line["status"]) for line in logs if line["event"] == "http_request"]
    assert logged == list(expected.values())
    assert 'route="/web/{path}",status="200"' in metrics
