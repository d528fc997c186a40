"""Client sessions: one ClientSession per client and server, the calls it has in flight, and the
store that caps and expires sessions. A session names its router through `SessionRouter`, the
interface the multiplexer (router/multiplexer.py) offers it, so this module imports no router."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from mcpmesh.errors import SessionNotFound, StreamConflict, TooManySessions
from mcpmesh.jsonrpc import Message, RequestId
from mcpmesh.protocol.requests import ParamHeaders
from mcpmesh.router.outbox import Outbox, Relay

ACTIVE_WINDOW = 60.0  # seconds since its last request that a session still counts as active
IDLE_TIMEOUT = "idle timeout"  # the reason a session expired (metrics count these apart)

log = logging.getLogger("mcpmesh.session")


class SessionRouter(Protocol):
    """What routes a session's messages to its server and back (the Multiplexer)."""

    @property
    def tool_params(self) -> Mapping[str, ParamHeaders]:
        """The server's tools by name, as last listed (with their x-mcp-header annotations)."""

    async def handle_request(self, session: ClientSession, msg: Message) -> Call | Message:
        """A Call whose outbox will carry the reply, or an immediate reply message."""

    async def handle_notification(self, session: ClientSession, msg: Message) -> None: ...

    async def handle_response(self, session: ClientSession, msg: Message) -> None:
        """A client's answer to a server-initiated request."""

    def detach(self, session: ClientSession, reason: str) -> None:
        """The session ended: what it had in flight ends with it."""


class Call:
    """One client request in flight on the server."""

    __slots__ = (
        "session",
        "client_id",
        "backend_id",
        "method",
        "name",
        "outbox",
        "client_token",
        "backend_token",
        "suspended",
        "request",
        "started",
    )

    def __init__(self, session: ClientSession, client_id: RequestId, method: str, name: Any = None):
        self.session = session
        self.client_id = client_id
        self.method = method
        self.name = name  # the tool or prompt name, or resource uri, a requestState is bound to
        self.suspended: str | None = None  # handle while waiting for a 2026 client's input
        self.request: Message | None = None  # as sent, while a 2026 server may ask its handshake-era caller for input
        self.outbox = session.call_outbox()
        self.backend_id: RequestId = client_id
        self.client_token: Any = None
        self.backend_token: Any = None
        self.started = time.monotonic()


@dataclass(eq=False)
class ClientSession:
    """One client's session on one server (legacy Streamable HTTP)."""

    id: str
    server: str
    protocol_version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]
    mux: SessionRouter
    inflight: dict[RequestId, Call] = field(default_factory=dict)
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    stream: Outbox | None = None  # the standalone GET stream, when the client has one open
    last_active: float = field(default_factory=time.monotonic)
    closed: bool = False
    dropped: int = 0  # messages for the GET stream that found none open
    modern: bool = False  # a 2026-07-28 request: no session, everything in its `_meta`
    relay_to: Outbox | None = None  # legacy HTTP+SSE: the connection's one stream carries every reply
    principal: str = ""  # who is calling, for binding state handed to the client (requestState)

    @functools.cached_property
    def client(self) -> str:
        """Who the client says it is, `name/version` (logs, events, the audit trail, the API)."""
        return f"{self.client_info.get('name', '?')}/{self.client_info.get('version', '?')}"

    def call_outbox(self) -> Outbox:
        return Outbox() if self.relay_to is None else Relay(self.relay_to)

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def notify(self, msg: Message) -> None:
        """Deliver a message that belongs to no request (on the GET stream)."""
        if self.stream is None or not self.stream.put(msg):
            self.dropped += 1

    def open_stream(self) -> Outbox:
        if self.stream is not None and not self.stream.closed:
            raise StreamConflict("Conflict: only one GET stream per session is allowed")
        self.stream = Outbox()
        return self.stream

    def close_stream(self, outbox: Outbox) -> None:
        if self.stream is outbox:
            self.stream = None
        outbox.finish()

    def has_capability(self, name: str, sub: str | None = None) -> bool:
        cap = self.capabilities.get(name)
        if not isinstance(cap, dict):
            return False
        return sub is None or sub in cap

    def is_idle(self) -> bool:
        return not self.inflight and (self.stream is None or self.stream.closed)

    def is_active(self, now: float) -> bool:
        """In use: a call in flight, a GET stream open, or a request within ACTIVE_WINDOW. The
        others are idle: clients that never DELETE (Claude Code's `mcp list`, the inspector,
        mcp-remote) leave such sessions behind until they expire."""
        return not self.is_idle() or now - self.last_active < ACTIVE_WINDOW


class SessionStore:
    """All sessions of the gateway process: CSPRNG ids, a cap, idle expiry."""

    def __init__(
        self,
        max_sessions: int,
        idle_timeout: float,
        on_event: Callable[[str, ClientSession, str], None] | None = None,  # (kind, session, reason)
        idle_timeout_of: Callable[[str], float] | None = None,  # per server, when some end sooner
        shortest_idle_timeout: float | None = None,  # the least idle_timeout_of may say
    ):
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.idle_timeout_of = idle_timeout_of or (lambda server: idle_timeout)
        shortest = min(shortest_idle_timeout or idle_timeout, idle_timeout)
        self._expiry_interval = max(0.05, min(shortest / 4, 30.0))
        self._sessions: dict[str, ClientSession] = {}
        self.on_event = on_event

    def __len__(self) -> int:
        return len(self._sessions)

    def new_id(self) -> str:
        if len(self._sessions) >= self.max_sessions:
            raise TooManySessions(f"Too many open sessions (limit {self.max_sessions})")
        return secrets.token_urlsafe(24)  # 192 bits, characters in 0x21-0x7E

    def add(self, session: ClientSession) -> None:
        if len(self._sessions) >= self.max_sessions:
            raise TooManySessions(f"Too many open sessions (limit {self.max_sessions})")
        self._sessions[session.id] = session
        log.info("session opened %s on %s by %s", session.id[:8], session.server, session.client)
        if self.on_event is not None:
            self.on_event("session_opened", session, "")

    def get(self, session_id: str, server: str) -> ClientSession:
        session = self._sessions.get(session_id)
        # A session of another server is answered exactly like an unknown one.
        if session is None or session.server != server or session.closed:
            raise SessionNotFound("Session not found")
        return session

    def close(self, session: ClientSession, reason: str) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        session.closed = True
        session.mux.detach(session, reason)
        if session.stream is not None:
            session.stream.finish()
        log.info("session closed %s on %s (%s)", session.id[:8], session.server, reason)
        if self.on_event is not None:
            self.on_event("session_closed", session, reason)

    def close_all(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            self.close(session, reason)

    def sessions(self) -> list[ClientSession]:
        return list(self._sessions.values())

    def sessions_of(self, server: str) -> list[ClientSession]:
        return [s for s in self._sessions.values() if s.server == server]

    async def expire_idle(self) -> None:
        """Forever: end sessions idle for longer than the timeout."""
        while True:
            await anyio.sleep(self._expiry_interval)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.is_idle() and session.last_active < now - self.idle_timeout_of(session.server):
                    self.close(session, IDLE_TIMEOUT)
