"""`mcpmesh stdio URL`: a stdio client (Claude Desktop) talks to one Streamable HTTP endpoint.

Built on httpx rather than the SDK's streamable HTTP client transport: a bridge should pass each
message through as it came, and the SDK's transport parses every message into its own models and
settles the era and the session its own way; here the bytes from the server reach stdout untouched."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx
import orjson
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcpmesh import jsonrpc
from mcpmesh.errors import InternalError, JsonRpcError, ParseError

log = logging.getLogger("mcpmesh.stdio")

MAX_LINE = 16 * 1024 * 1024  # one JSON-RPC message per line; a longer line is refused, never buffered whole
READ_SIZE = 65536
MAX_EVENT = MAX_LINE  # the same cap for one SSE event from the server
EOF_GRACE = (
    1.0  # after stdin closes, requests in flight get this long to be answered (the SDK's stdio client waits 2 s)
)
DELETE_TIMEOUT = 0.8  # ending the session must not outlast the client's wait before it sends SIGTERM
LISTEN_RETRIES = 3  # the GET stream is opened again when it ends, unless it failed this many times in a row
LISTEN_RETRY_DELAY = 1.0
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None)  # a tool call may stream for long
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
MODERN_META = "io.modelcontextprotocol/protocolVersion"  # a 2026-07-28 client names its revision here
NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def stdio(url: str) -> int:
    """Bridge stdin/stdout to `url` until stdin ends or SIGTERM/SIGINT arrives; 0 when it ended so."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="mcpmesh stdio: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would drown what matters
    if not url.startswith(("http://", "https://")):
        log.error("%s is not an http(s) URL", url)
        return 2
    anyio.run(_bridge, url)
    return 0


async def _bridge(url: str) -> None:
    send, lines = anyio.create_memory_object_stream[bytes | None](16)
    token = anyio.lowlevel.current_token()
    threading.Thread(target=_read_stdin, args=(sys.stdin.fileno(), send, token), daemon=True).start()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http, anyio.create_task_group() as tg:
        bridge = Bridge(url, http, sys.stdout.buffer, tg)
        tg.start_soon(_stop_on_signal, tg.cancel_scope)
        log.info("bridging stdio to %s", url)
        try:
            await bridge.relay(lines)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(DELETE_TIMEOUT):
                await bridge.end_session()
            tg.cancel_scope.cancel()


def _read_stdin(fd: int, send: MemoryObjectSendStream[bytes | None], token: Any) -> None:
    """Lines of stdin, in a daemon thread (a blocked read never keeps the process alive); None
    stands for a line over MAX_LINE, skipped to its end. os.read, not sys.stdin: a daemon thread
    blocked in a buffered reader holds its lock, which aborts the interpreter's shutdown."""
    pending, skipping = bytearray(), False
    try:
        while chunk := os.read(fd, READ_SIZE):
            scanned = len(pending)  # only the new bytes can hold the next newline
            pending += chunk
            while (end := pending.find(b"\n", scanned)) >= 0:
                line, pending, scanned = bytes(pending[: end + 1]), pending[end + 1 :], 0
                if not skipping:
                    anyio.from_thread.run(send.send, line if len(line) <= MAX_LINE + 1 else None, token=token)
                skipping = False
            if len(pending) > MAX_LINE:
                if not skipping:
                    anyio.from_thread.run(send.send, None, token=token)
                pending, skipping = bytearray(), True
        if pending and not skipping:
            anyio.from_thread.run(send.send, bytes(pending), token=token)
        anyio.from_thread.run_sync(send.close, token=token)
    except (RuntimeError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the bridge already ended


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: ending", signal.Signals(signum).name)
            scope.cancel()
            return


class Bridge:
    """One client on stdin/stdout, one endpoint: the session id and revision it negotiated, its
    GET stream, and the requests in flight."""

    def __init__(self, url: str, http: httpx.AsyncClient, out: BinaryIO, tg: TaskGroup):
        self.url, self.http, self.out, self.tg = url, http, out, tg
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._initialize_id: Any = None
        self._listening = False
        self._in_flight = 0
        self._answered = anyio.Event()

    async def relay(self, lines: MemoryObjectReceiveStream[bytes | None]) -> None:
        """Send every stdin message on; requests run side by side, while `initialize` (which makes
        the session), a notification or an answer is sent before the next line is read, so nothing
        overtakes what the client sent before it."""
        async with anyio.create_task_group() as requests:
            async for line in lines:
                message = self._decode(line)
                if message is None:
                    continue
                if _requests_in(message) and not _is_initialize(message):
                    requests.start_soon(self._request, message)
                else:
                    await self._post(message)
            with anyio.move_on_after(EOF_GRACE):
                while self._in_flight:
                    self._answered = anyio.Event()
                    await self._answered.wait()
            requests.cancel_scope.cancel()

    async def _request(self, message: Any) -> None:
        self._in_flight += 1
        try:
            await self._post(message)
        finally:
            self._in_flight -= 1
            self._answered.set()

    def _decode(self, line: bytes | None) -> Any:
        """The message on a line, or None after answering a line that is none with a JSON-RPC error."""
        if line is not None and not line.strip():
            return None
        try:
            if line is None:
                raise ParseError(f"Parse error: line longer than {MAX_LINE} bytes")
            message = jsonrpc.parse(line)
            for one in message if isinstance(message, list) and message else [message]:
                jsonrpc.check_message(one)
        except JsonRpcError as exc:
            log.warning("stdin: %s", exc.message)
            self._emit(orjson.dumps(jsonrpc.error(None, exc.code, exc.message)))
            return None
        return message

    async def _post(self, message: Any) -> None:
        first = message[0] if isinstance(message, list) else message
        if first.get("method") == "initialize":
            self._initialize_id = first.get("id")
        try:
            async with self.http.stream(
                "POST", self.url, content=orjson.dumps(message), headers=self._headers(first)
            ) as response:
                if first.get("method") == "initialize" and (session := response.headers.get(SESSION_HEADER)):
                    self.session_id = session
                await self._relay_response(message, response)
                if first.get("method") == "notifications/initialized" and response.is_success:
                    self._listen_once()
        except httpx.HTTPError as exc:
            self._fail(message, f"{self.url}: {exc!r}")

    async def _relay_response(self, message: Any, response: httpx.Response) -> None:
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if response.status_code >= 400:
            body = await response.aread()
            self._fail(message, f"HTTP {response.status_code}: {_error_text(body)}")
        elif kind == "text/event-stream":
            async for data in _sse_messages(response):
                self._emit(data)
        elif kind == "application/json":
            self._emit(await response.aread())

    def _listen_once(self) -> None:
        if not self._listening:
            self._listening = True
            self.tg.start_soon(self._listen)

    async def _listen(self) -> None:
        """The GET stream, for messages the server sends outside any request: opened when the
        server offers one (405 says it does not), again when it ends."""
        failures = 0
        while failures < LISTEN_RETRIES:
            headers = {**self._headers(None), "accept": "text/event-stream"}
            try:
                async with self.http.stream("GET", self.url, headers=headers) as response:
                    if response.status_code == 405:
                        log.info("%s offers no GET stream", self.url)
                        return
                    if response.status_code != 200:
                        log.warning("GET stream refused: HTTP %s", response.status_code)
                        failures += 1
                    else:
                        failures = 0
                        async for data in _sse_messages(response):
                            self._emit(data)
            except httpx.HTTPError as exc:
                log.warning("GET stream: %r", exc)
                failures += 1
            await anyio.sleep(LISTEN_RETRY_DELAY)

    async def end_session(self) -> None:
        """DELETE the session, as a client that is done should (405: the server keeps none)."""
        if self.session_id is None:
            return
        try:
            response = await self.http.delete(self.url, headers=self._headers(None))
            log.info("session ended (HTTP %s)", response.status_code)
        except httpx.HTTPError as exc:
            log.warning("DELETE of the session failed: %r", exc)

    def _headers(self, message: dict[str, Any] | None) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        if self.session_id:
            headers[SESSION_HEADER] = self.session_id
        if self.protocol_version:
            headers[VERSION_HEADER] = self.protocol_version
        modern = jsonrpc.meta_of(message).get(MODERN_META) if message else None
        if isinstance(modern, str) and message:  # 2026-07-28: the request names its revision and itself
            headers[VERSION_HEADER] = modern
            headers["mcp-method"] = str(message["method"])
            name = jsonrpc.params_of(message).get(NAME_PARAM.get(message["method"], ""))
            if isinstance(name, str) and name.isascii() and name.isprintable():
                headers["mcp-name"] = name
        return headers

    def _emit(self, data: bytes) -> None:
        """One message to stdout, on one line; written whole between two awaits, so never interleaved."""
        if self._initialize_id is not None:
            self._note_version(data)
        self.out.write(data.replace(b"\n", b" ").strip() + b"\n")
        self.out.flush()

    def _note_version(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(message, dict) and message.get("id") == self._initialize_id and "result" in message:
            version = message["result"].get("protocolVersion") if isinstance(message["result"], dict) else None
            self.protocol_version = version if isinstance(version, str) else None
            self._initialize_id = None

    def _fail(self, message: Any, problem: str) -> None:
        """The server could not answer: each request gets a JSON-RPC error, so no client waits forever."""
        log.warning("%s", problem)
        for one in message if isinstance(message, list) else [message]:
            if jsonrpc.is_request(one):
                self._emit(orjson.dumps(jsonrpc.error(one["id"], InternalError.code, f"mcpmesh stdio: {problem}")))


def _is_initialize(message: Any) -> bool:
    return isinstance(message, dict) and message.get("method") == "initialize"


def _requests_in(message: Any) -> bool:
    return any(jsonrpc.is_request(one) for one in (message if isinstance(message, list) else [message]))


def _error_text(body: bytes) -> str:
    try:
        error = orjson.loads(body).get("error", {})
        return str(error.get("message") or body[:200].decode(errors="replace"))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace")


async def _sse_messages(response: httpx.Response) -> AsyncIterator[bytes]:
    """The data of each `message` event of an SSE body (comments, ids and retries are no messages)."""
    data: list[str] = []
    event = "message"
    size = 0
    async for line in response.aiter_lines():
        if not line:
            if data and event == "message" and size <= MAX_EVENT:
                yield "\n".join(data).encode()
            elif size > MAX_EVENT:
                log.warning("dropped an SSE event over %s bytes", MAX_EVENT)
            data, event, size = [], "message", 0
        elif line.startswith("data:"):
            size += len(line)
            if size <= MAX_EVENT:
                data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
