"""HTTP/1.1 on the wire (front/http1/): small ASGI apps, written here as the harness, served by
uvicorn's Server with our protocol (SERVE_WITH, as the mesh serves), and spoken to over raw
sockets, so what is asserted is the bytes a client gets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcpmesh.front.http1.connection import MAX_HEAD_BYTES, PIPELINE_DEPTH
from mcpmesh.front.uvicorn_options import SERVE_WITH
from tests.conftest import conformance_server, running_mesh

pytestmark = pytest.mark.anyio

WAIT = 10  # seconds any one test's exchange may take before it fails instead of hanging
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) ([^\r\n]*)")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


# -- the server --------------------------------------------------------------------------------
@dataclass
class Served:
    server: uvicorn.Server
    port: int
    task: asyncio.Task[None]  # uvicorn's serve: done once the server has stopped


@asynccontextmanager
async def serving(app: ASGIApp, *, keep_alive: int = 5) -> AsyncIterator[Served]:
    """`app` served as the mesh serves (uvicorn's Server, SERVE_WITH) on a free loopback port,
    in this test's event loop; stopped uvicorn's own way on the way out."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=keep_alive,
            timeout_graceful_shutdown=5,
            **SERVE_WITH,
        )
    )
    # A plain task, not a task group: a failing test's own exception reaches pytest unwrapped.
    task = asyncio.ensure_future(server._serve())  # serve() minus its signal capture: pytest owns the signals
    try:
        with anyio.fail_after(WAIT):
            while not server.started and not task.done():  # noqa: ASYNC110  # uvicorn offers no startup event
                await anyio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield Served(server, server.servers[0].sockets[0].getsockname()[1], task)
    finally:
        server.should_exit = True
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(WAIT):
                await asyncio.wait({task})
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if not task.cancelled():
            task.result()  # uvicorn's own failure, if any


# -- the client: raw bytes ---------------------------------------------------------------------
@asynccontextmanager
async def connect(
    port: int, *, limit: int = 64 * 1024
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=limit)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def request(
    method: str = "GET",
    target: str = "/",
    *,
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
    version: str = "1.1",
    host: str | None = "test",
) -> bytes:
    """One request's bytes; a Content-Length when there is a body."""
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order
    head: bytes  # the status line and headers exactly as received, blank line included
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = [value for n, value in self.headers if n == name]
        assert len(values) <= 1, f"{name!r} sent {len(values)} times: {self.head!r}"
        return values[0] if values else None


async def read_head(reader: asyncio.StreamReader) -> Response:
    """A response's status line and headers, checked for well-formedness: every line ends in
    CRLF with no other CR or LF, every header name is a token."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    matched = _STATUS_LINE.fullmatch(status_line)
    assert matched, f"not a status line: {head!r}"
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        assert b"\n" not in line and b"\r" not in line, f"bare CR or LF in {head!r}"
        name, colon, value = line.partition(b":")
        assert colon and _TOKEN.fullmatch(name), f"not a header line {line!r} in {head!r}"
        headers.append((name.lower(), value.strip(b" \t")))
    return Response(int(matched[1]), matched[2], headers, head)


async def read_chunked(reader: asyncio.StreamReader, *, pace: float = 0) -> bytes:
    """A chunked body, its framing checked; `pace` seconds of sleep per chunk: a slow reader."""
    parts: list[bytes] = []
    for _ in range(1_000_000):
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0]
        assert _CHUNK_SIZE.fullmatch(size_text), f"not a chunk size line: {line!r}"
        size = int(size_text, 16)
        if size == 0:
            for _ in range(100):  # trailers, up to the blank line
                if await reader.readuntil(b"\r\n") == b"\r\n":
                    return b"".join(parts)
            raise AssertionError("trailers never ended")
        parts.append(await reader.readexactly(size))
        assert await reader.readexactly(2) == b"\r\n", "chunk data not followed by CRLF"
        if pace:
            await asyncio.sleep(pace)
    raise AssertionError("too many chunks")


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False, pace: float = 0) -> Response:
    """One response: its head, then its body as its framing says (none for HEAD, 1xx, 204 and
    304; chunked; by Content-Length; else to the connection's close)."""
    response = await read_head(reader)
    if head_request or response.status < 200 or response.status in (204, 304):
        return response
    encoding = response.header(b"transfer-encoding")
    length = response.header(b"content-length")
    if encoding is not None:
        assert encoding == b"chunked" and length is None, response.head
        response.body = await read_chunked(reader, pace=pace)
    elif length is not None:
        assert length.isdigit(), response.head
        response.body = await reader.readexactly(int(length))
    else:
        response.body = await read_to_eof(reader)
    return response


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Whatever the server still sends, up to its close (a reset counts as the close)."""
    data = bytearray()
    for _ in range(1_000_000):
        try:
            chunk = await reader.read(64 * 1024)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError("the connection never closed")
    return bytes(data)


# -- app helpers (the harness) -------------------------------------------------------------------
def start(status: int = 200, headers: Sequence[tuple[bytes, bytes]] = ()) -> Message:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes, *, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def reply(send: Send, data: bytes, status: int = 200) -> None:
    """A whole response with its Content-Length, as most apps (Starlette's Response) send one."""
    await send(start(status, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(data))]))
    await send(body(data))


async def read_body(receive: Receive, seen: list[Message] | None = None) -> bytes:
    parts: list[bytes] = []
    for _ in range(1_000_000):
        message = await receive()
        if seen is not None:
            seen.append(message)
        if message["type"] != "http.request":
            raise AssertionError(f"the body was cut short: {message}")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)
    raise AssertionError("too many body messages")


# -- connections ---------------------------------------------------------------------------------
async def test_keep_alive_answers_two_requests_on_one_connection() -> None:
    clients: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clients.append(scope["client"])
        await reply(send, scope["path"].encode())

    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            for path in ("/first", "/second"):
                writer.write(request("GET", path))
                response = await read_response(reader)
                assert response.status == 200 and response.body == path.encode()
                assert response.header(b"connection") is None
    assert len(clients) == 2 and clients[0] == clients[1]


async def test_pipelined_requests_in_one_write_are_answered_in_order() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)  # would finish last if requests were answered as they complete
        data = await read_body(receive)
        await reply(send, scope["path"].encode() + b":" + data)

    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("GET", "/slow") + request("POST", "/echo", body=b"two") + request("GET", "/third"))
            bodies = [(await read_response(reader)).body for _ in range(3)]
    assert bodies == [b"/slow:", b"/echo:two", b"/third:"]


async def test_a_pipeline_deeper_than_the_read_ahead_is_answered_in_full_and_in_order() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        data = await read_body(receive)
        await asyncio.sleep(0.005)  # the pipeline piles up behind each answer
        await reply(send, data)

    count = 4 * PIPELINE_DEPTH + 3
    payloads = [b"request %d " % i + b"x" * (i * 1000) for i in range(count)]
    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(b"".join(request("POST", f"/{i}", body=p) for i, p in enumerate(payloads)))
            bodies = [(await read_response(reader)).body for _ in range(count)]
            writer.write(request("POST", "/after", body=b"still open"))
            assert (await read_response(reader)).body == b"still open"
    assert bodies == payloads


# -- request bodies --------------------------------------------------------------------------------
async def test_a_chunked_request_body_reaches_the_app_whole() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await reply(send, await read_body(receive, seen))

    pieces = [
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"4\r\nWiki\r\n",
        b"5;name=value\r\npedia\r\n",
        b"E\r\n in\r\n\r\nchunks.\r\n",
        b"0\r\nX-Trailer: t\r\n\r\n",
    ]
    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            for piece in pieces:  # apart, as a chunked upload arrives
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            response = await read_response(reader)
            assert response.status == 200 and response.body == b"Wikipedia in\r\n\r\nchunks."
            writer.write(request("POST", "/echo", body=b"next"))  # the trailer was consumed, not taken as a request
            assert (await read_response(reader)).body == b"next"
    assert all(m["type"] == "http.request" for m in seen)
    assert [m["more_body"] for m in seen].count(False) == 2  # one last message per request
    assert seen[-2]["more_body"] is False and seen[-1]["more_body"] is False  # "next" came in one message


async def test_expect_100_continue_gets_the_interim_answer_before_the_body_is_sent() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await reply(send, b"got " + await read_body(receive))

    expecting = request("POST", "/", headers=[("Content-Length", "5"), ("Expect", "100-continue")])
    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(expecting)  # the head only
            interim = await read_response(reader)
            assert interim.status == 100 and interim.head == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            final = await read_response(reader)
            assert final.status == 200 and final.body == b"got hello"
            writer.write(request("POST", "/", body=b"plain"))  # no Expect: no interim answer
            again = await read_response(reader)
            assert again.status == 200 and again.body == b"got plain"


async def test_a_client_gone_mid_request_makes_receive_return_http_disconnect() -> None:
    seen: dict[str, list[str]] = {"/upload": [], "/wait": []}
    reading = asyncio.Event()
    disconnected = {path: asyncio.Event() for path in seen}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        for _ in range(1000):
            message = await receive()
            seen[path].append(message["type"])
            if message["type"] == "http.disconnect":
                disconnected[path].set()
                return
            reading.set()

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (_, writer):  # gone in the middle of the body
                writer.write(request("POST", "/upload", headers=[("Content-Length", "1000")]) + b"x" * 10)
                await reading.wait()
            await disconnected["/upload"].wait()
            reading.clear()
            async with connect(served.port) as (_, writer):  # gone while the app waits after the body
                writer.write(request("POST", "/wait", body=b""))
                await reading.wait()
            await disconnected["/wait"].wait()
    assert seen["/upload"][-1] == "http.disconnect" and set(seen["/upload"][:-1]) == {"http.request"}
    assert seen["/wait"] == ["http.request", "http.disconnect"]


async def test_a_5_mb_request_body_sent_in_pieces_to_a_slow_app_arrives_intact() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        digest, size = hashlib.sha256(), 0
        for _ in range(1_000_000):
            message = await receive()
            assert message["type"] == "http.request"
            digest.update(message["body"])
            size += len(message["body"])
            await asyncio.sleep(0.002)  # slower than the client writes: reading has to pause
            if not message["more_body"]:
                break
        await reply(send, b"%d %s" % (size, digest.hexdigest().encode()))

    data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(5 * 1024 * 1024 // 32))
    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("POST", "/", headers=[("Content-Length", str(len(data)))]))
            for offset in range(0, len(data), 64 * 1024):
                writer.write(data[offset : offset + 64 * 1024])
                await writer.drain()
            response = await read_response(reader)
    assert response.body == b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())


async def test_a_20_mb_streamed_response_read_slowly_arrives_intact() -> None:
    block_count, digest = 320, hashlib.sha256()  # 320 blocks of 64 KiB, each different

    def block(i: int) -> bytes:
        return hashlib.sha256(b"%d" % i).digest() * 2048

    for i in range(block_count):
        digest.update(block(i))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start())
        for i in range(block_count):
            await send(body(block(i), more=True))
        await send(body(b""))

    async with serving(app) as served, connect(served.port, limit=16 * 1024) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("GET", "/"))
            await asyncio.sleep(0.3)  # not reading: the server's buffers fill and it has to wait
            response = await read_response(reader, pace=0.001)
            writer.write(request("GET", "/"))  # the framing ended where it should: the connection goes on
            again = await read_response(reader)
    assert response.header(b"transfer-encoding") == b"chunked"
    assert len(response.body) == block_count * 64 * 1024 and hashlib.sha256(response.body).digest() == digest.digest()
    assert hashlib.sha256(again.body).digest() == digest.digest()


# -- response framing ------------------------------------------------------------------------------
async def test_head_gets_the_head_with_the_apps_content_length_and_no_body_bytes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":
            await send(start())
            for part in (b"some ", b"streamed ", b"body"):
                await send(body(part, more=True))
            await send(body(b""))
        else:
            await reply(send, b"hello world")  # the whole body even for HEAD, as Starlette sends it

    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("HEAD", "/"))
            head = await read_response(reader, head_request=True)
            assert head.status == 200 and head.header(b"content-length") == b"11"
            writer.write(request("HEAD", "/stream"))
            streamed = await read_response(reader, head_request=True)
            assert streamed.status == 200 and streamed.header(b"content-length") is None
            # Any body bytes sent for either HEAD would now stand where this status line must.
            writer.write(request("GET", "/"))
            after = await read_response(reader)
            assert after.status == 200 and after.body == b"hello world"


async def test_http_1_0_is_answered_then_closed_and_a_stream_to_it_is_unframed_up_to_the_close() -> None:
    versions: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        versions.append(scope["http_version"])
        if scope["path"] == "/stream":
            await send(start())
            for part in (b"one ", b"two ", b"three"):
                await send(body(part, more=True))
            await send(body(b""))
        else:
            await reply(send, b"plain")

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/", version="1.0", host=None))
                plain = await read_response(reader)
                assert plain.status == 200 and plain.body == b"plain"
                assert await read_to_eof(reader) == b""
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/stream", version="1.0"))
                streamed = await read_response(reader)  # no length, not chunked: read to the close
    assert streamed.status == 200 and streamed.body == b"one two three"
    assert streamed.header(b"transfer-encoding") is None and streamed.header(b"content-length") is None
    assert versions == ["1.0", "1.0"]


async def test_a_streamed_response_is_chunked_and_its_head_arrives_before_its_first_chunk() -> None:
    go = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(headers=[(b"content-type", b"text/event-stream")]))
        await go.wait()  # set by the test once it has the head
        for part in (b"a", b"", b"bb", b"0123456789abcdef"):  # an empty part frames nothing (no early end)
            await send(body(part, more=True))
        await send(body(b"end"))

    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("GET", "/"))
            head = await read_head(reader)
            assert head.status == 200 and head.header(b"content-type") == b"text/event-stream"
            assert head.header(b"transfer-encoding") == b"chunked" and head.header(b"content-length") is None
            go.set()
            framed = b"1\r\na\r\n2\r\nbb\r\n10\r\n0123456789abcdef\r\n3\r\nend\r\n0\r\n\r\n"
            assert await reader.readexactly(len(framed)) == framed
            writer.write(request("GET", "/"))  # the connection goes on after the terminator
            again = await read_response(reader)
            assert again.body == b"abb0123456789abcdefend"


async def test_a_single_body_without_content_length_gets_one_not_chunked_framing() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(headers=[(b"content-type", b"text/plain")]))
        await send(body(b"" if scope["path"] == "/empty" else b"all at once"))

    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("GET", "/") + request("GET", "/empty") + request("GET", "/"))
            responses = [await read_response(reader) for _ in range(3)]
    for response, expected in zip(responses, [b"all at once", b"", b"all at once"], strict=True):
        assert response.header(b"transfer-encoding") is None, response.head
        assert response.header(b"content-length") == b"%d" % len(expected) and response.body == expected


async def test_a_body_longer_than_its_content_length_is_cut_there_and_a_shorter_one_closes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/longer":
            await send(start(headers=[(b"content-length", b"5")]))
            await send(body(b"abc", more=True))
            await send(body(b"defgh"))  # 3 + 5 > 5
        elif path == "/longer-at-once":
            await send(start(headers=[(b"content-length", b"3")]))
            await send(body(b"abcdef"))
        elif path == "/shorter":
            await send(start(headers=[(b"content-length", b"10")]))
            await send(body(b"1234"))
        else:
            await reply(send, b"next")

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/longer") + request("GET", "/"))
                head = await read_head(reader)
                assert head.status == 200 and head.header(b"content-length") == b"5"
                assert await read_to_eof(reader) == b"abc"  # never past the length; the next request unanswered
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/longer-at-once") + request("GET", "/"))
                failed = await read_response(reader)  # nothing went out yet: a plain 500
                assert failed.status == 500 and failed.header(b"connection") == b"close"
                assert await read_to_eof(reader) == b""
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/shorter") + request("GET", "/"))
                head = await read_head(reader)
                assert head.status == 200 and head.header(b"content-length") == b"10"
                assert await read_to_eof(reader) == b"1234"


# -- refusals and limits ------------------------------------------------------------------------------
async def test_a_malformed_request_gets_400_and_the_connection_closes() -> None:
    called: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope["path"])
        await reply(send, b"should not be")

    malformed = [
        b"GET / HTTP/1.1\r\nHost: test\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n",  # TLS to a plain HTTP port
        b"GET / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /a b HTTP/1.1\r\nHost: test\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad body, all at once
    ]
    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            for bad in malformed:
                async with connect(served.port) as (reader, writer):
                    writer.write(bad)
                    response = await read_response(reader)
                    assert response.status == 400, bad
                    assert response.header(b"connection") == b"close"
                    assert response.body.startswith(b"Invalid HTTP request")
                    assert await read_to_eof(reader) == b""
    assert called == []


async def test_a_malformed_body_the_app_is_reading_gets_400_and_the_app_http_disconnect() -> None:
    seen: list[str] = []
    reading = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(1000):
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
            reading.set()
        await reply(send, b"whole")

    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n")
            await reading.wait()
            writer.write(b"zz\r\n")  # not a chunk size
            response = await read_response(reader)
            assert response.status == 400 and response.header(b"connection") == b"close"
            assert await read_to_eof(reader) == b""
    assert seen == ["http.request", "http.disconnect"]


def padded_head(size: int, target: str = "/") -> bytes:
    """A GET request head of exactly `size` bytes, padded with X-Fill headers."""
    head = b"GET %s HTTP/1.1\r\nHost: test\r\n" % target.encode()
    left = size - len(head) - 2  # the blank line ends it
    assert left >= 15
    for i in range(size):  # bounded: every line takes at least 15 bytes
        if left == 0:
            break
        value = 1000 if left >= 2 * 1015 else left - 15  # the last line takes the rest
        head += b"X-Fill-%04d: %s\r\n" % (i, b"f" * value)
        left -= 15 + value
    head += b"\r\n"
    assert len(head) == size
    return head


async def test_a_request_head_over_max_head_bytes_gets_431_and_one_just_under_is_served() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await reply(send, b"served " + scope["path"].encode())

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (reader, writer):
                writer.write(padded_head(MAX_HEAD_BYTES - 1024, "/under"))
                assert (await read_response(reader)).body == b"served /under"
            over = padded_head(MAX_HEAD_BYTES + 1024, "/over")
            for pieces in (
                [over],  # in one write: whole in one or two reads
                [over[i : i + 4096] for i in range(0, len(over), 4096)],  # in many reads, the last completing it
                [over[:MAX_HEAD_BYTES], b"X"],  # never completing, one byte over
            ):
                async with connect(served.port) as (reader, writer):
                    for piece in pieces:
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(0.005)
                    response = await read_response(reader)
                    assert response.status == 431, len(pieces)
                    assert response.header(b"connection") == b"close"
                    assert await read_to_eof(reader) == b""


async def test_a_request_head_that_never_completes_is_closed_after_the_keep_alive_time_out() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await reply(send, b"never")

    async with serving(app, keep_alive=1) as served:
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (reader, writer):
                writer.write(b"GET / HTTP/1.1\r\nHost: te")
                assert await read_to_eof(reader) == b""
            async with connect(served.port) as (reader, writer):  # the head trickles in, never ending
                writer.write(b"GET / HTTP/1.1\r\n")
                for i in range(40):  # 8 s at most; the time-out is 1 s
                    with anyio.move_on_after(0.2):
                        assert await read_to_eof(reader) == b""
                        break
                    writer.write(b"X-Slow-%d: 1\r\n" % i)
                else:
                    pytest.fail("a head still trickling in after 8 s was not closed")


async def test_an_idle_keep_alive_connection_is_closed_but_not_while_a_request_is_served() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(1.3)  # longer than the keep-alive time-out
        await reply(send, b"answered")

    async with serving(app, keep_alive=1) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("GET", "/slow"))
            assert (await read_response(reader)).body == b"answered"
            writer.write(request("GET", "/"))
            assert (await read_response(reader)).body == b"answered"
            assert await read_to_eof(reader) == b""  # then idle: closed


# -- app failures --------------------------------------------------------------------------------------
async def test_an_app_raising_before_its_response_gets_a_500_and_the_server_serves_on() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom before the head")
        await reply(send, b"fine")

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/boom") + request("GET", "/"))
                response = await read_response(reader)
                assert response.status == 500 and response.body == b"Internal Server Error"
                assert response.header(b"connection") == b"close"
                assert await read_to_eof(reader) == b""  # the pipelined request is not answered
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/"))
                assert (await read_response(reader)).body == b"fine"


async def test_an_app_raising_after_its_head_closes_without_a_second_status_line() -> None:
    go = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":
            await send(start())
            await go.wait()  # the client has the head
            raise RuntimeError("boom after the head")
        await send(start(headers=[(b"content-length", b"10")]))
        await send(body(b"12345", more=True))
        raise RuntimeError("boom in the body")

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/stream"))
                head = await read_head(reader)
                assert head.status == 200 and head.header(b"transfer-encoding") == b"chunked"
                go.set()
                assert await read_to_eof(reader) == b""  # no status line, and no terminator claiming a whole body
            async with connect(served.port) as (reader, writer):
                writer.write(request("GET", "/length"))
                head = await read_head(reader)
                assert head.status == 200 and head.header(b"content-length") == b"10"
                assert await read_to_eof(reader) == b"12345"


async def test_an_app_returning_without_a_response_gets_a_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/start-only":  # a head that waits for its body, which never comes
            await send(start(headers=[(b"content-length", b"5")]))

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            for path in ("/nothing", "/start-only"):
                async with connect(served.port) as (reader, writer):
                    writer.write(request("GET", path))
                    response = await read_response(reader)
                    assert response.status == 500 and response.body == b"Internal Server Error", path
                    assert await read_to_eof(reader) == b""


async def test_a_stream_its_client_leaves_ends_without_an_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A client closing an SSE stream is how streams end (every GET stream, every abandoned call):
    the app stops without completing the response, and that is no error. The same app with its
    client still there is one (the test above)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(headers=[(b"content-type", b"text/event-stream")]))
        await send(body(b"data: 1\n\n", more=True))
        while (await receive())["type"] != "http.disconnect":
            pass

    with caplog.at_level("DEBUG", logger="mcpmesh.http"):
        async with serving(app) as served:
            with anyio.fail_after(WAIT):
                async with connect(served.port) as (reader, writer):
                    writer.write(request("GET", "/events"))
                    assert (await read_head(reader)).status == 200
                state = served.server.server_state
                while state.total_requests == 0:  # noqa: ASYNC110  # counted once the app has returned; no event tells
                    await anyio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "WARNING")] == []


async def test_a_response_header_with_cr_or_lf_never_reaches_the_client() -> None:
    injected = b"ok\r\nx-injected: yes"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/length":
            await send(start(headers=[(b"content-length", b"2"), (b"x-note", injected)]))
            await send(body(b"hi"))
        elif path == "/at-once":
            await send(start(headers=[(b"x-note", injected)]))
            await send(body(b"hi"))
        elif path == "/stream":
            await send(start(headers=[(b"x-note", injected)]))
            await asyncio.sleep(0.05)  # a stream's head goes out before its body
            await send(body(b"hi"))
        elif path == "/lf":
            await send(start(headers=[(b"x-note", b"ok\nx-injected: yes"), (b"content-length", b"2")]))
            await send(body(b"hi"))
        else:
            await send(start(headers=[(b"x-injected: yes\r\nx-note", b"ok")]))
            await send(body(b"hi"))

    async with serving(app) as served:
        with anyio.fail_after(WAIT):
            for path in ("/length", "/at-once", "/stream", "/lf", "/name"):
                async with connect(served.port) as (reader, writer):
                    writer.write(request("GET", path))
                    response = await read_response(reader)
                    rest = await read_to_eof(reader)
                assert response.status == 500, (path, response.head)
                assert b"x-injected" not in response.head + response.body + rest, path
                assert rest == b"", path


# -- stopping and upgrades ----------------------------------------------------------------------------------
async def test_graceful_stop_closes_idle_connections_and_lets_the_one_in_flight_finish_with_close() -> None:
    entered, go = asyncio.Event(), asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/held":
            entered.set()
            await go.wait()
        await reply(send, b"done " + scope["path"].encode())

    async with serving(app, keep_alive=60) as served:  # no idle close but the stop's
        with anyio.fail_after(WAIT):
            async with connect(served.port) as (idle_reader, idle_writer), connect(served.port) as (reader, writer):
                idle_writer.write(request("GET", "/first"))
                first = await read_response(idle_reader)
                assert first.body == b"done /first" and first.header(b"connection") is None
                writer.write(request("GET", "/held"))
                await entered.wait()
                served.server.should_exit = True
                assert await read_to_eof(idle_reader) == b""  # the idle one: closed by the stop
                go.set()
                held = await read_response(reader)
                assert held.status == 200 and held.body == b"done /held"
                assert held.header(b"connection") == b"close"
                assert await read_to_eof(reader) == b""
            await served.task


async def test_an_upgrade_request_is_answered_as_plain_http_and_the_connection_closes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await reply(send, b"plain " + scope["path"].encode())

    upgrade = request(
        "GET",
        "/ws",
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(upgrade + request("GET", "/after"))
            response = await read_response(reader)
            assert response.status == 200 and response.body == b"plain /ws"
            assert response.header(b"upgrade") is None and response.header(b"connection") == b"close"
            assert await read_to_eof(reader) == b""


# -- the scope -----------------------------------------------------------------------------------------
async def test_the_scope_has_the_decoded_path_the_raw_path_query_version_and_addresses() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await reply(send, b"ok")

    async with serving(app) as served, connect(served.port) as (reader, writer):
        with anyio.fail_after(WAIT):
            writer.write(request("GET", "/a%20b/c%2Fd/%C3%A9?x=1&y=%20z", headers=[("X-Mixed-Case", "Value")]))
            assert (await read_response(reader)).status == 200
            client = writer.get_extra_info("sockname")
    (scope,) = scopes
    assert scope["type"] == "http" and scope["method"] == "GET" and scope["scheme"] == "http"
    assert scope["path"] == "/a b/c/d/é" and scope["raw_path"] == b"/a%20b/c%2Fd/%C3%A9"
    assert scope["query_string"] == b"x=1&y=%20z" and scope["root_path"] == ""
    assert scope["http_version"] == "1.1"
    assert scope["client"] == ("127.0.0.1", client[1]) and scope["server"] == ("127.0.0.1", served.port)
    assert scope["headers"] == [(b"host", b"test"), (b"x-mixed-case", b"Value")]


# -- through the mesh ------------------------------------------------------------------------------------
async def test_pipelined_mcp_posts_through_the_mesh_are_answered_in_order_with_their_ids() -> None:
    def post(port: int, message: dict[str, Any], session: str | None = None) -> bytes:
        headers = [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json")]
        if session is not None:
            headers += [("Mcp-Session-Id", session), ("MCP-Protocol-Version", "2025-11-25")]
        return request(
            "POST", "/servers/conf/mcp", body=orjson.dumps(message), headers=headers, host=f"127.0.0.1:{port}"
        )

    def answer(response: Response) -> dict[str, Any]:
        assert response.status == 200, response.head + response.body
        kind = response.header(b"content-type") or b""
        if kind.startswith(b"text/event-stream"):
            data = [line[5:] for line in response.body.splitlines() if line.startswith(b"data:")]
            return orjson.loads(data[-1])  # type: ignore[no-any-return]
        assert kind.startswith(b"application/json"), response.head
        return orjson.loads(response.body)  # type: ignore[no-any-return]

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    async with running_mesh({"conf": conformance_server()}) as mesh, connect(mesh.port) as (reader, writer):
        with anyio.fail_after(WAIT * 2):
            writer.write(post(mesh.port, init))
            opened = await read_response(reader)
            assert answer(opened)["id"] == 1
            session = (opened.header(b"mcp-session-id") or b"").decode()
            assert session
            writer.write(post(mesh.port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session))
            assert (await read_response(reader)).status == 202
            writer.write(
                post(mesh.port, {**init, "id": "init-2"})
                + post(mesh.port, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, session)
                + post(mesh.port, {"jsonrpc": "2.0", "id": "eight", "method": "ping"}, session)
            )
            replies = [await read_response(reader) for _ in range(3)]
    second_init, ping_7, ping_8 = (answer(r) for r in replies)
    assert second_init["id"] == "init-2" and second_init["result"]["protocolVersion"] == "2025-11-25"
    assert replies[0].header(b"mcp-session-id") not in (None, session.encode())
    assert ping_7 == {"jsonrpc": "2.0", "id": 7, "result": {}}
    assert ping_8 == {"jsonrpc": "2.0", "id": "eight", "result": {}}
