"""Client sessions: one FrontSession per client, its streams, and the store that caps and expires them."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from mcpmesh.errors import SessionNotFound, StreamConflict, TooManySessions
from mcpmesh.expiry import OldestFirstExpiry
from mcpmesh.jsonrpc import Message, RequestId

if TYPE_CHECKING:
    from mcpmesh.router import Multiplexer
    from mcpmesh.routing import Call

OUTBOX_NOTIFICATION_CAP = 4096  # notifications queued for a slow client beyond this are dropped
IDLE_TIMEOUT = "idle timeout"  # the reason a session expired (metrics count these apart)

log = logging.getLogger("mcpmesh.session")


class Outbox:
    """Messages waiting for one client stream. Notifications past the cap are dropped; a final
    response never is, and ends the stream. One reader at a time (the stream that sends them)."""

    __slots__ = ("_items", "_waiter", "closed", "dropped")

    def __init__(self) -> None:
        self._items: deque[Message] = deque()
        # A bare future, not an anyio or asyncio Event: there is one outbox per request, and
        # anyio.Event() and asyncio's Event.wait() and timeout() each ask for the running loop (a
        # getpid() syscall on 3.11), several times per request; the gateway runs on asyncio only.
        self._waiter: asyncio.Future[bool] | None = None
        self.closed = False
        self.dropped = 0

    def put(self, msg: Message) -> bool:
        if self.closed or len(self._items) >= OUTBOX_NOTIFICATION_CAP:
            self.dropped += 1
            return False
        self._items.append(msg)
        self._wake(True)
        return True

    def push(self, msg: Message) -> None:
        """Queue a message that must not be dropped (a response), cap or not."""
        if not self.closed:
            self._items.append(msg)
            self._wake(True)

    def finish(self, msg: Message | None = None) -> None:
        """Queue the last message (if any) and close; later puts are dropped."""
        if self.closed:
            return
        if msg is not None:
            self._items.append(msg)
        self.closed = True
        self._wake(True)

    def empty(self) -> bool:
        return not self._items

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109  # a timer wakes the wait: nothing is cancelled, so no message can be lost to a timeout
        """The next message, or None once closed and drained; TimeoutError when `timeout` seconds
        pass with nothing (messages that come later stay queued)."""
        while not self._items:
            if self.closed:
                return None
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _settle, waiter, False)
            try:
                woken = await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not woken:
                raise TimeoutError
        return self._items.popleft()

    def give_up(self) -> None:
        """End a wait in progress with TimeoutError (its messages stay queued)."""
        self._wake(False)

    def _wake(self, woken: bool) -> None:
        if self._waiter is not None:
            _settle(self._waiter, woken)


class FirstReplyWait:
    """Gives up on waits for a call's first message after `interval`, with one timer for them all.

    Each POST waits for its call's first message to choose a JSON or an SSE answer; a wait that
    lasts `interval` gives up (TimeoutError from `Outbox.get`) and the answer becomes a stream with
    keep-alives."""

    __slots__ = ("_since", "_expiry")

    def __init__(self, interval: float):
        self._since: dict[Outbox, float] = {}  # waiting outboxes, oldest first
        self._expiry = OldestFirstExpiry(interval, lambda: self._since.items(), self._give_up)

    async def first(self, outbox: Outbox) -> Message | None:
        """The outbox's first message (None if it closed empty); TimeoutError after `interval`."""
        if not outbox.empty() or outbox.closed:
            return await outbox.get()
        self._since[outbox] = time.monotonic()
        self._expiry.arm()
        try:
            return await outbox.get()
        finally:
            self._since.pop(outbox, None)

    def _give_up(self, outbox: Outbox) -> None:
        del self._since[outbox]
        outbox.give_up()


def _settle(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class Relay(Outbox):
    """A call's outbox on a connection with one stream for everything (legacy HTTP+SSE): each
    message goes straight to that stream, and the call's end does not end the stream."""

    __slots__ = ("target",)

    def __init__(self, target: Outbox):
        super().__init__()
        self.target = target

    def put(self, msg: Message) -> bool:
        return not self.closed and self.target.put(msg)

    def finish(self, msg: Message | None = None) -> None:
        if not self.closed and msg is not None:
            self.target.push(msg)
        self.closed = True


@dataclass(eq=False)
class FrontSession:
    """One client's session on one server (legacy Streamable HTTP)."""

    id: str
    server: str
    protocol_version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]
    mux: Multiplexer
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


class SessionStore:
    """All sessions of the gateway process: CSPRNG ids, a cap, idle expiry."""

    def __init__(self, max_sessions: int, idle_timeout: float):
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._sessions: dict[str, FrontSession] = {}
        self.on_event: Callable[[str, FrontSession, str], None] | None = None  # (kind, session, reason)

    def __len__(self) -> int:
        return len(self._sessions)

    def new_id(self) -> str:
        if len(self._sessions) >= self.max_sessions:
            raise TooManySessions(f"Too many open sessions (limit {self.max_sessions})")
        return secrets.token_urlsafe(24)  # 192 bits, characters in 0x21-0x7E

    def add(self, session: FrontSession) -> None:
        if len(self._sessions) >= self.max_sessions:
            raise TooManySessions(f"Too many open sessions (limit {self.max_sessions})")
        self._sessions[session.id] = session
        log.info("session opened %s on %s by %s", session.id[:8], session.server, session.client)
        if self.on_event is not None:
            self.on_event("session_opened", session, "")

    def get(self, session_id: str, server: str) -> FrontSession:
        session = self._sessions.get(session_id)
        # A session of another server is answered exactly like an unknown one.
        if session is None or session.server != server or session.closed:
            raise SessionNotFound("Session not found")
        return session

    def close(self, session: FrontSession, reason: str) -> None:
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

    def sessions(self) -> list[FrontSession]:
        return list(self._sessions.values())

    def sessions_of(self, server: str) -> list[FrontSession]:
        return [s for s in self._sessions.values() if s.server == server]

    async def expire_idle(self) -> None:
        """Forever: end sessions idle for longer than the timeout."""
        interval = max(0.05, min(self.idle_timeout / 4, 30.0))
        while True:
            await anyio.sleep(interval)
            deadline = time.monotonic() - self.idle_timeout
            for session in list(self._sessions.values()):
                if session.is_idle() and session.last_active < deadline:
                    self.close(session, IDLE_TIMEOUT)
