"""The live dashboard served at `/`: one static page (index.html, dashboard.js, dashboard.css) that
polls the /v1 API; no build step, nothing loaded from elsewhere."""

from __future__ import annotations

import hashlib
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The page may load and call only this origin: no inline script or style, no frames, no forms.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# Revalidate on every load (a 304 costs nothing), so a page never outlives an upgrade of the mesh.
CACHE = "no-cache"


class Dashboard:
    """The page's files, read once from the package; each served with its ETag."""

    def __init__(self) -> None:
        here = files(__package__ or "mcpmesh.dashboard")
        self.files = {name: here.joinpath(name).read_bytes() for name in TYPES}
        self.etags = {name: f'"{hashlib.sha256(body).hexdigest()[:16]}"' for name, body in self.files.items()}

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/dashboard/{file}", self.asset, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        return self._serve(request, "index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name not in TYPES or name == "index.html":
            return Response("not found\n", 404, media_type="text/plain")
        return self._serve(request, name)

    def _serve(self, request: Request, name: str) -> Response:
        headers = {
            "Cache-Control": CACHE,
            "ETag": self.etags[name],
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if name == "index.html":
            headers["Content-Security-Policy"] = CSP
            headers["X-Frame-Options"] = "DENY"
        if request.headers.get("if-none-match") == self.etags[name]:
            return Response(status_code=304, headers=headers)
        return Response(self.files[name], headers={**headers, "Content-Type": TYPES[name]})
