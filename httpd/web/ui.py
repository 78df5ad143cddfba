"""The web page at `/`: the agent's own ES modules (`static/`) and the two libraries it uses.

The page is plain ES modules: no build step. It talks only to this host (`/jsonrpc`, `/console`,
`/rrd_updates`, `/export`, `/import`); the Content-Security-Policy says so to the browser too.
noVNC (the console) and Chart.js (the graphs) come from Debian (`novnc`, `libjs-chart.js`, which
`make run` installs) and are served from where the packages put them, under `/ui/vendor/`; a
missing one answers 404 and the page says which package to install.

`/ui/errors.json` is `xe`'s table of error texts, so the page shows the same words as `xe`.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from ..xe.errors import catalogue

__all__ = ["STATIC", "VENDOR", "setup"]

STATIC = Path(__file__).with_name("static")
VENDOR: dict[str, Path] = {
    "novnc": Path("/usr/share/novnc"),                   # Debian's novnc (noVNC 1.3)
    "chart.js": Path("/usr/share/javascript/chart.js"),  # Debian's libjs-chart.js (3.9)
}
# everything the page loads comes from this host; WebSockets to it (the console) included
CSP = ("default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
       "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers=_HEADERS)


_ERRORS_JSON = json.dumps(catalogue()).encode()     # made once: the table does not change


async def errors_json(request: web.Request) -> web.Response:
    return web.Response(body=_ERRORS_JSON, content_type="application/json", headers=_HEADERS)


async def _page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the page's own files and the libraries carry the same headers."""
    if request.path.startswith("/ui/"):
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)


def setup(app: web.Application, vendor: dict[str, Path] = VENDOR) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/ui/errors.json", errors_json)
    for name, path in vendor.items():
        if path.is_dir():
            app.router.add_static(f"/ui/vendor/{name}/", path)
    app.router.add_static("/ui/", STATIC)
    app.on_response_prepare.append(_page_headers)
