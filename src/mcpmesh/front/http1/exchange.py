"""One request on an HTTP/1.1 connection (connection.py) and its response: the ASGI `receive`
and `send` the app gets for it, and how the response is framed (a Content-Length added to a body
sent at once, chunked framing for a stream, one write for a head and its body)."""

from __future__ import annotations

import asyncio
import logging
import re
from http import HTTPStatus
from typing import Any, Protocol

from uvicorn.server import ServerState

log = logging.getLogger("mcpmesh.http")

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB: no header injection
_NO_BODY_STATUS = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_valid_names: set[bytes] = set()  # response header names already checked (the app uses a few)


class Connection(Protocol):
    """What an exchange uses of the connection it runs on (connection.py's Http1Protocol)."""

    loop: asyncio.AbstractEventLoop
    server_state: ServerState
    closed: bool  # the connection is gone (or going): nothing more is read or answered
    stopping: bool  # the server is stopping: close after the response in progress
    writing_paused: bool

    async def wait(self) -> None:
        """Until something changes on the connection; the caller looks again."""

    def wake(self) -> None:
        """End every wait() in progress."""

    async def drain(self) -> None:
        """Until the transport takes writes again (or the connection is gone)."""

    def body_taken(self) -> None:
        """The app took the body buffered so far."""

    def write(self, data: bytes) -> None: ...

    def fail(self, request: Request) -> None:
        """Answer 500 if the head is not sent yet, and close the connection."""

    def close(self) -> None: ...


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


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

    def __init__(self, conn: Connection):
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
                conn.body_taken()
                self.sent_body = self.complete
                return {"type": "http.request", "body": chunk, "more_body": not self.complete}
            if self.complete and not self.sent_body:
                self.sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.expect_continue and not self.started:
                self.expect_continue = False
                conn.write(_CONTINUE)
            await conn.wait()  # body to come, or (after all of it) the client going away

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
            conn.wake()  # a receive() waiting for the client to go away returns http.disconnect
        if data:
            conn.write(data)
        if self.done and self.left:
            conn.close()

    def _head(self, body: bytes, more: bool) -> bytes:
        status = self.status
        self.head_only = self.scope["method"] == "HEAD" or status in _NO_BODY_STATUS
        parts = [status_line(status)]
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
            self.conn.fail(self)
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
