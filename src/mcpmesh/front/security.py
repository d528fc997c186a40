"""What every request must pass before MCP processing: Host and Origin (DNS rebinding), the
media types a POST must name, and the body cap."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect
from starlette.types import Scope

from mcpmesh.config import MeshSettings
from mcpmesh.errors import BodyTooLarge, ForbiddenOrigin, HttpError, MisdirectedHost, NotAcceptable, UnsupportedMedia
from mcpmesh.front.request import HttpRequest

MEMO_SIZE = 256  # distinct header values remembered per check (Host/Origin pairs, Accept, Content-Type)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def _hostname(value: str) -> str:
    """The host part of a Host header or authority, lower-cased, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostOriginPolicy:
    """Which requests are refused: a foreign Host with 421 and a foreign Origin with 403, before
    any MCP processing.

    Loopback names are always allowed; so is the address we are bound to when it is a specific
    one. `allowed_hosts` / `allowed_origins` add names; `"*"` in either turns that check off. An
    Origin naming exactly the allowed Host the request came to is the mesh's own page (the
    dashboard's buttons) and passes too.
    """

    def __init__(self, bind_host: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]):
        hosts = {_hostname(h) for h in allowed_hosts} | LOOPBACK_NAMES
        if bind_host not in WILDCARD_BINDS:
            hosts.add(_hostname(bind_host))
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts)
        origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        self._refusal = functools.lru_cache(maxsize=MEMO_SIZE)(self._judge)  # bounded: the values are the client's

    @classmethod
    def of(cls, settings: MeshSettings) -> HostOriginPolicy:
        return cls(settings.host, settings.allowed_hosts, settings.allowed_origins)

    def refusal(self, scope: Scope) -> HttpError | None:
        """Why this HTTP request is refused (400, 421 or 403), or None when it may pass."""
        host, origin, repeated = _host_and_origin(scope)
        if repeated:  # which one is meant? (RFC 9112 3.2: answered with 400)
            return HttpError("Bad Request: more than one Host header")
        verdict = self._refusal(host, origin)
        return None if verdict is None else verdict[0](verdict[1])

    def control_refusal(self, scope: Scope) -> HttpError | None:
        """Why a request that changes the mesh (the /v1 control plane) is refused, on top of
        `refusal`: any page on a loopback origin may call the MCP endpoints (a browser client on
        localhost), but only the mesh's own page, or an origin on `allowed_origins`, may stop and
        start servers; a request with no Origin is no browser's (the CLI, curl)."""
        raw_host, raw_origin, _ = _host_and_origin(scope)
        if raw_origin is None:
            return None
        origin = raw_origin.decode("latin-1").rstrip("/").lower()
        if self.any_origin or origin in self.origins:
            return None
        if self._own_page(urlsplit(origin).netloc, raw_host.decode("latin-1") if raw_host is not None else None):
            return None
        return ForbiddenOrigin(f"Forbidden: Origin {origin!r} may not change the mesh")

    def _own_page(self, origin_netloc: str, host: str | None) -> bool:
        """An Origin naming exactly the allowed Host the request came to: a page this mesh served
        (the dashboard). Not when any Host passes: a DNS-rebinding page would be "same origin" too."""
        return not self.any_host and host is not None and origin_netloc == host.strip().lower()

    def _judge(self, raw_host: bytes | None, raw_origin: bytes | None) -> tuple[type[HttpError], str] | None:
        """Why a request with this Host and Origin is refused, or None. Memoized per instance
        (`_refusal`): clients send the same two values on every request."""
        host = raw_host.decode("latin-1") if raw_host is not None else None
        origin = raw_origin.decode("latin-1") if raw_origin is not None else None
        if not self.any_host and (host is None or _hostname(host) not in self.hosts):
            return MisdirectedHost, f"Misdirected Request: Host {host!r} is not served here"
        if origin is not None and not self.any_origin and not self._origin_allowed(origin, host):
            return ForbiddenOrigin, f"Forbidden: Origin {origin!r} is not allowed"
        return None

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https"):
            return False
        if self._own_page(parts.netloc, host):
            return True
        return (parts.hostname or "") in LOOPBACK_NAMES


def _host_and_origin(scope: Scope) -> tuple[bytes | None, bytes | None, bool]:
    """A request's Host and Origin headers as sent, and whether Host came more than once."""
    host = origin = None
    repeated = False
    for name, value in scope["headers"]:
        if name == b"host":
            repeated = repeated or host is not None
            host = value
        elif name == b"origin":
            origin = value
    return host, origin, repeated


def path_refusal(scope: Scope) -> HttpError | None:
    """A path with an encoded slash is refused (400): routing reads the decoded path, so
    `/v1/servers/echo%2Fstop` would reach /v1/servers/echo/stop past any proxy rule on paths, and
    no path of the mesh holds one."""
    raw = scope.get("raw_path") or b""
    if b"%" in raw and b"%2f" in raw.lower():
        return HttpError("Bad Request: an encoded slash (%2F) in the path is not accepted")
    return None


def check_post_headers(request: HttpRequest) -> None:
    """A POST must accept both JSON and SSE replies and carry a JSON body (406 / 415)."""
    if not _POST_ACCEPTS <= _media_types(request.headers.get("accept", "")):
        raise NotAcceptable("Not Acceptable: Accept must list application/json and text/event-stream")
    if _media_type(request.headers.get("content-type", "")) != "application/json":
        raise UnsupportedMedia("Unsupported Media Type: Content-Type must be application/json")


def accepts(request: HttpRequest, media_type: str) -> bool:
    return media_type in _media_types(request.headers.get("accept", ""))


_POST_ACCEPTS = frozenset({"application/json", "text/event-stream"})


# Memoized (bounded): a client sends the same Accept and Content-Type on every request.
@functools.lru_cache(maxsize=MEMO_SIZE)
def _media_types(accept: str) -> frozenset[str]:
    """The media types an Accept header lists, lower-case, without parameters."""
    return frozenset(_media_type(part) for part in accept.split(","))


@functools.lru_cache(maxsize=MEMO_SIZE)
def _media_type(value: str) -> str:
    """A media type without its parameters, lower-case."""
    return value.split(";", 1)[0].strip().lower()


async def read_capped_body(request: HttpRequest, cap: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed the cap (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(cap)
    # Straight from receive(): a small body is one message, taken as it is (no generator, no copy).
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _too_large(cap)
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _too_large(cap: int) -> BodyTooLarge:
    return BodyTooLarge(f"Payload Too Large: request bodies are limited to {cap} bytes")
