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
is closed (uvicorn bounds neither with httptools).
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import httptools

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

MAX_HEAD_BYTES = 64 * 1024  # request line and headers of one request
BODY_HIGH_WATER = 64 * 1024  # request body bytes buffered, unread by the app, before reading pauses
PIPELINE_DEPTH = 4  # requests parsed ahead of the one being answered before reading pauses

log = logging.getLogger("mcpmesh.http")

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB: no header injection
_NO_BODY_STATUS = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_valid_names: set[bytes] = set()  # response header names already checked (the app uses a few)


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def _plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        _status_line(status)
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
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self.connections.add(self)
        ssl = transport.get_extra_info("sslcontext") is not None
        self.scope_base = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "server": _address(transport.get_extra_info("sockname")),
            "client": _address(transport.get_extra_info("peername")),
            "scheme": "https" if ssl else "http",
            "root_path": self.root_path,
        }
        self.task = self.loop.create_task(self._serve())
        self.server_state.tasks.add(self.task)
        self.task.add_done_callback(self.server_state.tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self._wake()
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
        self._wake()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        assert request is not None
        if request.done:
            return  # answered already: the rest of its body is read and dropped
        request.body.append(body)
        request.buffered += len(body)
        if request.buffered > BODY_HIGH_WATER:
            self._pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.complete = True
        self.parsing = None
        self._wake()

    # -- serving ------------------------------------------------------------------------------
    async def _serve(self) -> None:
        while not self.closed:
            if not self.ready:
                self._went_idle()
                await self._wait()
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
                self._close()
                return
            request.body.clear()  # what the app left unread (the rest is dropped as it comes: on_body)
            if len(self.ready) <= PIPELINE_DEPTH:
                self._resume_reading()

    async def _run(self, request: Request) -> None:
        try:
            await self.app(request.scope, request.receive, request.send)
        except asyncio.CancelledError:  # the server's graceful stop ran out of time
            self._close()
            raise
        except Exception as exc:
            log.error("Exception in ASGI application", exc_info=exc)
            self._fail(request)
            return
        if not request.started:
            log.error("ASGI application returned without starting a response")
            self._fail(request)
        elif not request.done:
            log.error("ASGI application returned without completing its response")
            self._fail(request)

    def _fail(self, request: Request) -> None:
        request.done = True
        if not request.head_sent and not self.closed and self.transport is not None:
            self.transport.write(_plain_response(500, "Internal Server Error"))
        self._close()

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
            self._close()

    # -- plumbing ----------------------------------------------------------------------------
    async def _wait(self) -> None:
        """Until something changes on the connection (a request, body, the response's end, the
        client gone): the caller looks again."""
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled: the others still wait
                self.waiters.remove(waiter)

    def _wake(self) -> None:
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
            self._close()  # an app reading the broken body gets http.disconnect
        else:  # answers already owed go out first; nothing more is read
            self._pause_reading()
            self.stopping = True

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()
        self._wake_writer()


class Request:
    """One request on a connection: its scope and body as they arrive, and its response's state.
    `receive` and `send` are the ASGI callables the app gets for it."""

    __slots__ = (
        "body",
        "buffered",
        "chunked",
        "complete",
        "conn",
        "done",
        "expect_continue",
        "headers",
        "keep_alive",
        "left",
        "response_keep_alive",
        "scope",
        "sent_body",
        "started",
        "status",
        "response_headers",
        "head_only",
        "head_sent",
    )

    def __init__(self, conn: Http1Protocol):
        self.conn = conn
        self.headers: list[tuple[bytes, bytes]] = []
        self.scope: dict[str, Any] = {}
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False  # the whole body is in
        self.sent_body = False  # the app has been given the last of the body
        self.expect_continue = False
        self.keep_alive = True
        self.response_keep_alive = True
        self.started = False  # http.response.start came
        self.done = False  # the response is complete
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.chunked = False
        self.head_only = False
        self.head_sent = False
        self.left: int | None = None  # body bytes still due under the response's Content-Length

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        while True:
            if conn.closed or self.done:
                return {"type": "http.disconnect"}
            if self.body:
                chunk = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body.clear()
                self.buffered = 0
                if conn.reading_paused and len(conn.ready) <= PIPELINE_DEPTH:
                    conn._resume_reading()
                self.sent_body = self.complete
                return {"type": "http.request", "body": chunk, "more_body": not self.complete}
            if self.complete and not self.sent_body:
                self.sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.expect_continue and not self.started:
                self.expect_continue = False
                conn.write(_CONTINUE)
            await conn._wait()  # body to come, or (after all of it) the client going away

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.writing_paused:
            await conn.drain()
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self.started = True
            self.status = message["status"]
            headers = self.response_headers = list(message.get("headers", ()))
            # The head waits to go out with the body. Without a Content-Length, if no body came by
            # the loop's next turn, it is a stream, whose head goes then (an SSE stream may be
            # quiet for a long while).
            if not any(name.lower() == b"content-length" for name, _ in headers):
                conn.loop.call_soon(self._stream_head)
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected http.response.body, got {kind!r}")
        if self.done:
            raise RuntimeError("the response is already complete")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        data = b"" if self.head_sent else self._head(body, more)
        if not self.head_only:
            data += self._frame(body, more)
        self.head_sent = True  # only now: a body the framing refuses leaves the 500 to be sent
        if not more:
            self.done = True
            if self.left:  # shorter than its Content-Length: the client cannot frame what follows
                log.error("response body shorter than its Content-Length (%d bytes missing)", self.left)
                self.response_keep_alive = False
            conn._wake()  # a receive() waiting for the client to go away returns http.disconnect
        if data:
            conn.write(data)
        if self.done and self.left:
            conn._close()

    def _head(self, body: bytes, more: bool) -> bytes:
        status = self.status
        self.head_only = self.scope["method"] == "HEAD" or status in _NO_BODY_STATUS
        parts = [_status_line(status)]
        length: int | None = None
        values: list[bytes] = []
        for name, value in (*self.conn.server_state.default_headers, *self.response_headers):
            if name not in _valid_names:
                if not _TOKEN.fullmatch(name):
                    raise RuntimeError(f"invalid response header name {name!r}")
                name = name.lower()
                if len(_valid_names) < 256:
                    _valid_names.add(name)
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                self.response_keep_alive = False
            elif name == b"transfer-encoding":
                continue  # framing is this protocol's to choose
            values.append(value)
            parts += (name, b": ", value, b"\r\n")
        if _BAD_VALUE.search(b"\t".join(values)):
            raise RuntimeError("invalid response header value (control character)")
        if length is None and not self.head_only:
            if more and self.scope["http_version"] == "1.0":  # no chunked framing in HTTP/1.0:
                self.response_keep_alive = False  # the body ends where the connection does
            elif more:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                length = len(body)
                parts.append(b"content-length: %d\r\n" % length)
        if not (self.keep_alive and self.response_keep_alive) or self.conn.stopping:
            if self.response_keep_alive:
                parts.append(b"connection: close\r\n")
            self.response_keep_alive = False
        if length is not None and not self.head_only:
            self.left = length
        parts.append(b"\r\n")
        return b"".join(parts)

    def _stream_head(self) -> None:
        """No body came with a head without Content-Length: a stream, whose head goes now."""
        if self.head_sent or self.done or self.conn.closed:
            return
        try:
            head = self._head(b"", True)
        except Exception as exc:  # a bad header from the app: answered as its failure would be
            log.error("Invalid response head from the ASGI application", exc_info=exc)
            self.conn._fail(self)
            return
        self.head_sent = True
        self.conn.write(head)

    def _frame(self, body: bytes, more: bool) -> bytes:
        if self.chunked:
            framed = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            return framed if more else framed + b"0\r\n\r\n"
        if self.left is not None:
            self.left -= len(body)
            if self.left < 0:
                raise RuntimeError("response body longer than its Content-Length")
        return body
