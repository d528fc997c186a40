"""One HTTP request as the front reads it: method, headers and body straight from the ASGI scope.

The /mcp POST is the hot path, and starlette's `Request` costs more than the request is worth
there (a `Headers` object re-scanning the raw list on every lookup, the body through an async
generator); this view decodes the headers once. starlette's `Request` has the same shape
(`method`, `headers`, `scope`, `receive`), so the checks in security.py accept either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from starlette.types import Receive, Scope


class HttpRequest(Protocol):
    """What the front's checks need of a request: starlette's `Request` or a `RawRequest`."""

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def scope(self) -> Scope: ...

    @property
    def receive(self) -> Receive: ...


class RawRequest:
    """A request's method and headers (lower-case names; the first of repeated ones, as starlette's
    `Headers.get` gives) read from the ASGI scope once."""

    __slots__ = ("headers", "method", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive):
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")
        self.headers = headers
