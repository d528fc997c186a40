"""HTTP/1.1 for every listener of the mesh: uvicorn's server (sockets, signals, lifespan, graceful
stop, proxy headers) with this protocol in place of uvicorn's own httptools protocol.

Why our own: under load the per-request work of uvicorn's protocol was about a third of the
gateway's CPU per call (bench/README.md). This one parses with the same httptools (llhttp) parser
and differs in what it does per request:
  - one task per connection serving its requests in turn, not one task, Event and done-callback
    per request (HTTP/1.1 answers a connection's requests in order anyway);
  - a response that is one body is one write: status line, headers and body together;
  - the keep-alive timer is armed once per idle period of a connection, not once per request;
  - a body sent at once without a Content-Length gets one, not chunked framing.
Also bounded here: a request head (request line and headers) of more than MAX_HEAD_BYTES is
refused with 431, and a connection whose head does not complete within the keep-alive time-out
is closed (uvicorn bounds neither with httptools). With `ConnectionLimits` (limits.py): a request
whose head and body do not arrive within its `body_timeout` is answered 408 and the connection
closed, and connections past the caps are marked or refused at accept. This module is the connection: parsing,
queueing, flow control, time-outs, failures; one request's receive, send and response framing are
in exchange.py.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import httptools

from mcpmesh.front.http1.exchange import Request, status_line
from mcpmesh.front.http1.limits import OVER_CAP, ConnectionLimits

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

MAX_HEAD_BYTES = 64 * 1024  # request line and headers of one request
BODY_HIGH_WATER = 64 * 1024  # request body bytes buffered, unread by the app, before reading pauses
PIPELINE_DEPTH = 4  # requests parsed ahead of the one being answered before reading pauses

log = logging.getLogger("mcpmesh.http")


def _plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        status_line(status)
        + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body
    )


def _address(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None


class Http1Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection, as uvicorn's server expects of its protocol classes:
    `Http1Protocol(config, server_state, app_state)`, registered in `server_state.connections`
    while open, its task in `server_state.tasks`, and `shutdown()` for the graceful stop."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        if config.limit_concurrency is not None:
            raise ValueError("Http1Protocol does not implement limit_concurrency")
        self.app = config.loaded_app
        self.root_path = config.root_path
        self.keep_alive_timeout = float(config.timeout_keep_alive)
        self.app_state = app_state
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections  # typed for uvicorn's own protocols only
        self.loop = _loop or asyncio.get_event_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.scope_base: dict[str, Any] = {}
        self.closed = False  # the connection is gone (or going): nothing more is read or answered
        self.stopping = False  # the server is stopping: close after the response in progress
        self.ready: deque[Request] = deque()  # requests whose head is in, not yet served
        self.parsing: Request | None = None  # the request the parser is filling
        self.serving: Request | None = None  # the request the app has
        self.in_head = False
        self.head_bytes = 0  # bytes read while the head is unfinished
        self.head_size = 0  # the head's header lines as parsed (its URL is self.url)
        self.url = b""
        self.reading_paused = False
        self.writing_paused = False
        self.waiters: list[asyncio.Future[None]] = []  # the connection's task and receive() calls waiting
        self.drain_waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.limits = limits
        self.counted_as: str | None = None  # the client address `limits` counts this connection under
        # Armed only when a request is still unfinished at the end of a read: a request that comes
        # whole in one read (nearly all of them) costs no timer.
        self.body_timeout = limits.body_timeout if limits is not None else 0.0
        self.body_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        client = _address(transport.get_extra_info("peername"))
        admission = "admitted"
        if self.limits is not None:
            host = client[0] if client is not None else ""
            admission = self.limits.admit(host)
            if admission == "refused":  # past cap + reserve: no task, no parser work, no descriptor kept
                self.closed = True
                self.transport.write(_plain_response(503, "Too many connections"))
                self.transport.close()
                return
            self.counted_as = host
        self.connections.add(self)
        ssl = transport.get_extra_info("sslcontext") is not None
        self.scope_base = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "server": _address(transport.get_extra_info("sockname")),
            "client": client,
            "scheme": "https" if ssl else "http",
            "root_path": self.root_path,
        }
        if admission != "admitted":  # past a cap, within the reserve: the app serves operator requests only
            self.scope_base["extensions"] = {OVER_CAP: {"cap": admission}}
        task = self.loop.create_task(self._serve())
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self.counted_as is not None and self.limits is not None:
            self.limits.release(self.counted_as)
            self.counted_as = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.body_timer is not None:
            self.body_timer.cancel()
        self.wake()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol to upgrade to: the request is answered as plain HTTP, then the connection closes
        except httptools.HttpParserError as exc:
            self._refuse(400, f"Invalid HTTP request: {exc}")
            return
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, "Request header fields too large")
                return
        if self.parsing is not None and self.body_timer is None and self.body_timeout and not self.closed:
            self.body_timer = self.loop.call_later(self.body_timeout, self._check_arrival)

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the response in progress."""
        self.stopping = True
        if self.serving is None and self.transport is not None:
            self.transport.close()

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self.head_size = 0
        self.url = b""
        self.parsing = Request(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            request.expect_continue = True
        request.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        self.in_head = False
        if len(self.url) + self.head_size > MAX_HEAD_BYTES:  # whole in the read that took it over
            self._refuse(431, "Request header fields too large")
            return
        parser = self.parser
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope = self.scope_base.copy()
        scope["http_version"] = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        scope["headers"] = request.headers
        scope["state"] = self.app_state.copy()
        request.scope = scope
        request.keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        self.ready.append(request)
        if len(self.ready) > PIPELINE_DEPTH:
            self._pause_reading()
        self.wake()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        assert request is not None
        if request.done:
            return  # answered already: the rest of its body is read and dropped
        request.body.append(body)
        request.buffered += len(body)
        if request.buffered > BODY_HIGH_WATER:
            self._pause_reading()
        self.wake()

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.complete = True
        self.parsing = None
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        self.wake()

    # -- serving ------------------------------------------------------------------------------
    async def _serve(self) -> None:
        while not self.closed:
            if not self.ready:
                self._went_idle()
                await self.wait()
                continue
            request = self.serving = self.ready.popleft()
            if self.reading_paused and len(self.ready) <= PIPELINE_DEPTH and request.buffered <= BODY_HIGH_WATER:
                self._resume_reading()
            await self._run(request)
            self.serving = None
            self.server_state.total_requests += 1
            if self.closed:
                return
            if not (request.keep_alive and request.response_keep_alive) or self.stopping:
                self.close()
                return
            request.body.clear()  # what the app left unread (the rest is dropped as it comes: on_body)
            if len(self.ready) <= PIPELINE_DEPTH:
                self._resume_reading()

    async def _run(self, request: Request) -> None:
        try:
            await self.app(request.scope, request.receive, request.send)
        except asyncio.CancelledError:  # the server's graceful stop ran out of time
            self.close()
            raise
        except Exception as exc:
            log.error("Exception in ASGI application", exc_info=exc)
            self.fail(request)
            return
        if self.closed and not request.done:
            request.done = True  # the client left (mid-stream, as SSE streams end, or mid-body): nothing to say
        elif not request.started:
            log.error("ASGI application returned without starting a response")
            self.fail(request)
        elif not request.done:
            log.error("ASGI application returned without completing its response")
            self.fail(request)

    def fail(self, request: Request) -> None:
        request.done = True
        if not request.head_sent:
            self.write(_plain_response(500, "Internal Server Error"))
        self.close()

    def _went_idle(self) -> None:
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(self.keep_alive_timeout, self._check_idle)

    def _check_idle(self) -> None:
        """Close a connection that sat idle (or in an unfinished request head) for the time-out."""
        self.idle_timer = None
        if self.closed or self.serving is not None or self.ready:
            return  # busy: the timer is armed again when it next goes idle
        left = self.idle_since + self.keep_alive_timeout - self.loop.time()
        if left > 0.001:
            self.idle_timer = self.loop.call_later(left, self._check_idle)
        else:
            self.close()

    def _check_arrival(self) -> None:
        """A request was unfinished for `body_timeout`: 408, unless it is this side that stopped
        reading (the app has not taken the body so far, or requests are queued ahead of it)."""
        self.body_timer = None
        if self.closed or self.parsing is None or self.limits is None:
            return
        if self.reading_paused:
            self.body_timer = self.loop.call_later(self.body_timeout, self._check_arrival)
            return
        self.limits.refused["body_timeout"] += 1
        self._refuse(408, f"Request not received within {self.body_timeout:g} s")

    # -- plumbing ----------------------------------------------------------------------------
    async def wait(self) -> None:
        """Until something changes on the connection (a request, body, the response's end, the
        client gone): the caller looks again."""
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled: the others still wait
                self.waiters.remove(waiter)

    def wake(self) -> None:
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def drain(self) -> None:
        while self.writing_paused and not self.closed:
            waiter = self.drain_waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.drain_waiter = None

    def _wake_writer(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def body_taken(self) -> None:
        """The app took the body buffered so far: reading goes on unless requests are piling up."""
        if self.reading_paused and len(self.ready) <= PIPELINE_DEPTH:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _refuse(self, status: int, text: str) -> None:
        log.warning("%s from %s", text, self.scope_base.get("client"))
        broken = self.parsing  # if its head came whole, its body never will: it is refused, not served
        if self.ready and self.ready[-1] is broken:
            self.ready.pop()
        serving = self.serving
        if not self.ready and (serving is None or serving is broken):
            if serving is None or not serving.head_sent:
                self.write(_plain_response(status, text))
            self.close()  # an app reading the broken body gets http.disconnect
        else:  # answers already owed go out first; nothing more is read
            self._pause_reading()
            self.stopping = True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.wake()
        self._wake_writer()
