"""The one error tree: every exception mcpmesh raises sits under MeshError, and each knows how it
goes on the wire (JSON-RPC code, HTTP status). Codes are named here (and in jsonrpc.py) only.

MeshError
├── ConfigError              a config file is wrong (file, key, line, what)
├── HeaderError              a remote server's configured header cannot be built (never shows its value)
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
│   ├── TooManySessions      503  session cap reached
│   └── TooManyConnections   503  connection cap reached (in all or from this address): operator paths only
├── JsonRpcError             answered as a JSON-RPC error object
│   ├── ParseError           -32700
│   ├── InvalidRequest       -32600
│   ├── MethodNotFound       -32601
│   ├── InvalidParams        -32602
│   ├── InternalError        -32603
│   ├── ResourceNotFound     -32002  (handshake era; -32602 from 2026-07-28 on)
│   ├── HeaderMismatch       -32020  a 2026-07-28 Mcp-* header disagrees with the body
│   ├── MissingCapability    -32021  the client did not declare a capability the request needs
│   ├── UnsupportedVersion   -32022  a 2026-07-28 request names a revision not served here
│   ├── RequestCancelled     -32800  the request was cancelled
│   └── BackendError         -3205x: the backend process failed this request
│       ├── BackendExited    the process died with the request in flight
│       ├── BackendTimeout   no answer within the request timeout
│       │   └── ServerNotReading  its input backs up: the server stopped reading it
│       ├── BackendUnavailable  not running (starting, restarting, failed)
│       ├── CircuitOpen      refused at once while the process's circuit is open
│       ├── TooManyProcesses -32054, HTTP 503: each process it may have (`max_processes`) is in use
│       └── ListRefused      the server answered a list request with an error
├── StateRejected            a requestState is forged, tampered with, expired or someone else's
├── PortPoolExhausted        no port of the dedicated-port range can be handed out
├── RegistryError            the registry (state_dir's SQLite file) cannot be used
│   ├── RegistryUnusable     at start: corrupt, unreadable or unwritable (`up` says so in one line, exit 2)
│   └── RegistryUnavailable  a write failed now (locked, disk full, I/O error): the mesh degrades and retries
├── ServerBlocked            an operator asked to start a server that cannot run
├── SpawnError               a server process could not be started
│   └── CommandNotFound      its command does not exist or may not be run: not retried
├── MeshUnreachable          the CLI could not get an answer from the running mesh
├── MeshNotFound             the CLI found no mesh to talk to from where it runs
└── ValidationGap            `mcpmesh validate`: what answered differs from what the registry claims
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


class HeaderError(MeshError):
    """A configured header cannot be built; `problem` never contains its value."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"header {name}: {problem}")
        self.name, self.problem = name, problem


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


class TooManyConnections(HttpError):
    status = 503
    code = -32603


class JsonRpcError(MeshError):
    """An error answered as a JSON-RPC error object (HTTP 200 for requests in a session)."""

    code = -32603
    status = 200

    def __init__(self, message: str, data: Any = None, *, request_id: Any = None):
        super().__init__(message)
        self.message, self.data = message, data
        self.request_id = request_id  # the refused request's id, when known before its message was checked


class ParseError(JsonRpcError):
    code, status = -32700, 400


class InvalidRequest(JsonRpcError):
    code, status = -32600, 400


class MethodNotFound(JsonRpcError):
    code = -32601


class InvalidParams(JsonRpcError):
    code = -32602


class InternalError(JsonRpcError):
    code = -32603


class ResourceNotFound(JsonRpcError):
    code = -32002


class HeaderMismatch(JsonRpcError):
    code = -32020


class MissingCapability(JsonRpcError):
    code = -32021


class UnsupportedVersion(JsonRpcError):
    code = -32022


class RequestCancelled(JsonRpcError):
    code = -32800


class BackendError(JsonRpcError):
    code = -32050


class BackendExited(BackendError):
    code = -32050


class BackendTimeout(BackendError):
    code = -32051


class ServerNotReading(BackendTimeout):
    """The server's input is backed up past the cap: it stopped reading (a hang, not an exit)."""


class BackendUnavailable(BackendError):
    code = -32052


class CircuitOpen(BackendError):
    """The server's process kept failing requests: they are refused at once until a trial succeeds."""

    code = -32053


class TooManyProcesses(BackendError):
    """Every process the server may have (`max_processes`) serves a session or a request already."""

    code, status = -32054, 503


class ListRefused(BackendError):
    """The server answered a list request with an error."""


class StateRejected(MeshError):
    """The requestState is forged, tampered with, expired, or someone else's."""


class PortPoolExhausted(MeshError):
    """No port of the range can be handed out."""


class RegistryError(MeshError):
    """The registry file cannot be used; `path` names it."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


class RegistryUnusable(RegistryError):
    """At start the registry file cannot be opened, read or written: the message is the one line
    `mcpmesh up` prints, naming the file, what is wrong and what to do."""

    def __init__(self, path: str, problem: str, remedy: str):
        super().__init__(path, problem)
        self.remedy = remedy
        self.args = (f"{path} {problem}: {remedy}",)


class RegistryUnavailable(RegistryError):
    """A read or write failed for now (locked past the busy timeout, disk full, I/O error, read-only);
    `problem` is SQLite's or the OS's own words."""


class ServerBlocked(MeshError):
    """An operator asked to start a server that cannot run (e.g. its dedicated port is not to be had)."""


class SpawnError(MeshError):
    """The server's command could not be started (not found, not executable)."""


class CommandNotFound(SpawnError):
    """The command does not exist (or may not be executed): retrying cannot help until someone
    installs it."""


class MeshUnreachable(MeshError):
    """The mesh did not answer (or answered with an error), with what to tell the user."""


class MeshNotFound(MeshError):
    """Nothing says where a mesh runs: no --url, $MCPMESH_URL, config or running mesh's address."""


class ValidationGap(MeshError):
    """What answered differs from what the registry claims."""
