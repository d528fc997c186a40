"""The one error tree: every error knows its JSON-RPC code and HTTP status.

MeshError
├── ConfigError              a config file is wrong (file, key, line, what)
├── HttpError                refused at the HTTP layer, before any MCP processing
│   ├── ForbiddenOrigin      403  foreign Origin
│   ├── MisdirectedHost      421  foreign Host (DNS rebinding)
│   ├── NotAcceptable        406  Accept lacks a required type
│   ├── UnsupportedMedia     415  body is not application/json
│   ├── BodyTooLarge         413  body over the cap
│   ├── MethodNotAllowed     405
│   ├── SessionRequired      400  no Mcp-Session-Id on a non-initialize request
│   ├── SessionNotFound      404  unknown, expired or deleted session
│   ├── StreamConflict       409  a second GET stream on one session
│   └── TooManySessions      503  session cap reached
├── JsonRpcError             answered as a JSON-RPC error object
│   ├── ParseError           -32700
│   ├── InvalidRequest       -32600
│   ├── MethodNotFound       -32601
│   ├── InvalidParams        -32602
│   └── BackendError         -3205x: the backend process failed this request
│       ├── BackendExited    the process died with the request in flight
│       ├── BackendTimeout   no answer within the request timeout
│       └── BackendUnavailable  not running (starting, restarting, failed)
└── SpawnError               a server process could not be started
"""

from __future__ import annotations

from typing import Any


class MeshError(Exception):
    """Base of every mcpmesh error."""


class ConfigError(MeshError):
    """A config file is wrong; the message names the file, the key, the line and the problem."""

    def __init__(self, path: str, problem: str, *, key: str | None = None, line: int | None = None):
        self.path, self.problem, self.key, self.line = path, problem, key, line
        where = path + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


class HttpError(MeshError):
    """Refused before MCP processing; the body is an id-less JSON-RPC error."""

    status = 400
    code = -32600

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class ForbiddenOrigin(HttpError):
    status = 403


class MisdirectedHost(HttpError):
    status = 421


class NotAcceptable(HttpError):
    status = 406


class UnsupportedMedia(HttpError):
    status = 415


class BodyTooLarge(HttpError):
    status = 413


class MethodNotAllowed(HttpError):
    status = 405


class SessionRequired(HttpError):
    status = 400


class SessionNotFound(HttpError):
    status = 404


class StreamConflict(HttpError):
    status = 409


class TooManySessions(HttpError):
    status = 503
    code = -32603


class JsonRpcError(MeshError):
    """An error answered as a JSON-RPC error object (HTTP 200 for requests in a session)."""

    code = -32603
    status = 200

    def __init__(self, message: str, data: Any = None):
        super().__init__(message)
        self.message, self.data = message, data


class ParseError(JsonRpcError):
    code, status = -32700, 400


class InvalidRequest(JsonRpcError):
    code, status = -32600, 400


class MethodNotFound(JsonRpcError):
    code = -32601


class InvalidParams(JsonRpcError):
    code = -32602


class BackendError(JsonRpcError):
    code = -32050


class BackendExited(BackendError):
    code = -32050


class BackendTimeout(BackendError):
    code = -32051


class BackendUnavailable(BackendError):
    code = -32052


class CircuitOpen(BackendError):
    """The server's process kept failing requests: they are refused at once until a trial succeeds."""

    code = -32053


class ServerBlocked(MeshError):
    """An operator asked to start a server that cannot run (e.g. its dedicated port is not to be had)."""


class SpawnError(MeshError):
    """The server's command could not be started (not found, not executable)."""
