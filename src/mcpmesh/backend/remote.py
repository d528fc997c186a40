"""One connection to a remote MCP server over HTTP (Streamable HTTP in both eras, or the 2024-11-05
HTTP+SSE transport), with the surface of a child process (`backend.connection.Connection`), so
Upstream and the supervisor treat local and remote servers alike: a lost connection is an exit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Literal

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import orjson

from mcpmesh import __version__
from mcpmesh.backend.sse import read_capped, sse_messages
from mcpmesh.config import ServerConfig, expand_header
from mcpmesh.errors import BackendError, BackendUnavailable, HeaderError, MethodNotFound, SpawnError
from mcpmesh.jsonrpc import Message, RequestId, error, is_request, is_valid_id, meta_of, params_of
from mcpmesh.protocol.envelope import META_PROTOCOL_VERSION
from mcpmesh.protocol.requests import NAME_BEARING, ParamHeaders, param_headers

CONNECT_TIMEOUT = 10.0  # a reachable server accepts a connection (TCP and TLS) well within this
WRITE_TIMEOUT = 30.0  # sending one request body; a stalled upload means a broken connection
DELETE_TIMEOUT = 2.0  # ending the upstream session on stop is a courtesy, never a long wait
LISTEN_REOPEN_DELAY = 1.0  # a GET stream that ended is reopened after this; the reopen tells if the server is gone
IDLE_CONNECTIONS = 20  # keep-alive connections kept for the next POSTs
INBOX_SIZE = 256  # received messages waiting for the reader; beyond this, HTTP reads wait (backpressure)
EVENT_TAIL_LINES = 200

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
POST_ACCEPT = "application/json, text/event-stream"
_HEADER_SAFE = re.compile(r"^[\x20-\x7E]*$")
_SESSION_ID = re.compile(r"^[\x21-\x7E]+$")  # what a session id may hold (2025-11-25 transports, Session Management)
_SENTINEL = re.compile(r"^=\?base64\?.*\?=$")

log = logging.getLogger("mcpmesh.remote")

Transport = Literal["streamable-http", "sse"]


class RemoteConnection:
    """Each message written is one POST, run concurrently in the connection's task group; every
    message received (JSON replies, SSE events of POSTs, the GET or SSE stream) comes out of
    `lines()`. Sends only the configured headers, whose values are never logged."""

    pid: int | None = None  # no local process

    def __init__(self, name: str, url: str, transport: Transport, headers: dict[str, str], max_message_bytes: int):
        self.name = name
        self.url = url
        self.transport = transport
        self.max_message_bytes = max_message_bytes
        self.dropped: Counter[str] = Counter()
        self.stderr_tail: deque[str] = deque(maxlen=EVENT_TAIL_LINES)
        self._headers = headers  # may hold secrets: sent, never logged
        self._http = httpx.AsyncClient(
            headers={"User-Agent": f"mcpmesh/{__version__}"},
            timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=WRITE_TIMEOUT, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=IDLE_CONNECTIONS),
            follow_redirects=False,  # a redirect could carry the configured headers elsewhere
        )
        self._inbox_in, self._inbox_out = anyio.create_memory_object_stream[bytes](INBOX_SIZE)
        self._tg: anyio.abc.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ended = anyio.Event()
        self._stopped = anyio.Event()
        self._stop_started = False
        self._returncode: int | None = None
        self._reason = ""
        self._inflight: dict[RequestId, anyio.CancelScope] = {}  # requests whose POST is open, by id
        self._tool_params: dict[str, ParamHeaders] = {}  # x-mcp-header annotations seen in tools/list
        # Streamable HTTP, handshake era: what the initialize exchange established.
        self._session_id: str | None = None
        self._version: str | None = None
        self._listening = False
        # HTTP+SSE: where messages are POSTed (from the stream's `endpoint` event).
        self._endpoint: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    async def connect(cls, name: str, config: ServerConfig) -> RemoteConnection:
        """Open a connection to a `url` server; SpawnError when it cannot be reached."""
        assert config.url is not None, "not a remote server"
        try:
            headers = {key: expand_header(key, value) for key, value in config.headers.items()}
        except HeaderError as exc:
            raise SpawnError(f"cannot connect {name}: {exc}") from None
        conn = cls(name, config.url, config.transport, headers, config.max_line_bytes)
        conn._event(
            f"connecting to {safe_url(config.url)} ({config.transport}; headers: {', '.join(headers) or 'none'})"
        )
        try:
            await conn._start(config.startup_timeout)
        except BaseException:  # cancelled too (the mesh stopping mid-connect): release everything
            with anyio.CancelScope(shield=True):
                await conn.stop()
            raise
        return conn

    async def _start(self, endpoint_wait: float) -> None:
        ready = anyio.Event()
        self._runner = asyncio.get_running_loop().create_task(self._run(ready))
        with anyio.move_on_after(endpoint_wait):
            await ready.wait()
        if not ready.is_set():
            what = "sent no endpoint event" if self.transport == "sse" else "did not answer"
            self._lose(f"{safe_url(self.url)} {what} within {endpoint_wait:g}s")
        if self._returncode is not None:
            raise SpawnError(self._reason)
        self._event("connected")

    async def _run(self, ready: anyio.Event) -> None:
        """Hosts the connection's task group until the connection ends or is stopped."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.transport == "sse":
                    tg.start_soon(self._sse_stream, ready)
                else:
                    await self._check_reachable()
                    ready.set()
                await self._ended.wait()
                tg.cancel_scope.cancel()
        except Exception:  # a bug here must end this connection, not the mesh
            log.exception("%s: remote connection failed", self.name)
            self._lose("internal error (see the log)")
        finally:
            self._tg = None
            self._inbox_in.close()
            ready.set()

    async def _check_reachable(self) -> None:
        """Any HTTP answer will do: this only turns an unreachable server into a clear error
        at once (OPTIONS opens no stream and changes nothing)."""
        try:
            async with self._http.stream("OPTIONS", self.url):
                pass
        except httpx.TransportError as exc:
            self._lose(f"cannot reach {safe_url(self.url)}: {describe(exc)}")

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def wait(self) -> int:
        await self._ended.wait()
        assert self._returncode is not None
        return self._returncode

    def describe_exit(self, code: int) -> str:
        return "connection closed" if code == 0 else f"connection lost: {self._reason}"

    async def stop(self) -> int:
        """Close every stream, DELETE the upstream session (if any), release the HTTP client."""
        if self._stop_started:
            await self._stopped.wait()
            return self._returncode or 0
        self._stop_started = True
        try:
            if self._returncode is None:
                self._returncode, self._reason = 0, "closed"
                self._event("closed")
            self._ended.set()
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    await self._runner
            self._inbox_out.close()  # what nobody read by now is not wanted any more
            if self._session_id is not None:
                with anyio.move_on_after(DELETE_TIMEOUT), contextlib.suppress(httpx.HTTPError):
                    await self._http.delete(self.url, headers=self._session_headers({}))
            await self._http.aclose()
        finally:
            self._stopped.set()
        return self._returncode

    def _lose(self, reason: str) -> None:
        """The connection is gone for good: `wait()` returns, the supervisor reconnects."""
        if self._ended.is_set():
            return
        self._returncode, self._reason = 1, reason
        self._event(f"lost: {reason}")
        self._ended.set()

    def _event(self, text: str) -> None:
        self.stderr_tail.append(text)
        log.info("%s: %s", self.name, text)

    # -- the child-process surface -----------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Start sending one message (its own POST); never blocks."""
        tg = self._tg
        if tg is None or self._ended.is_set():
            raise BrokenPipeError(f"{self.name}: connection {self._reason or 'closed'}")
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            self._drop("unsendable")  # the gateway writes only JSON-RPC objects it made
            return
        if msg.get("method") == "notifications/cancelled" and self._cancel_post(msg):
            return
        if self.transport == "streamable-http" and self._version is None and not is_request(msg):
            # No handshake-era session: a 2026-07-28 server takes requests only (cancellation is
            # the closing of a request's stream, done above).
            self._drop("notification_without_session")
            return
        tg.start_soon(self._post, msg, data.rstrip(b"\n"))

    async def drain(self) -> None:
        if self._ended.is_set():
            raise BrokenPipeError(f"{self.name}: connection {self._reason or 'closed'}")
        await anyio.lowlevel.checkpoint()

    async def lines(self) -> AsyncIterator[bytes]:
        with contextlib.suppress(anyio.ClosedResourceError):  # stopped while reading
            async for data in self._inbox_out:
                yield data

    def note_dropped(self, reason: str) -> None:
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        log.warning("%s: dropped a message (%s)", self.name, reason)

    # -- sending -----------------------------------------------------------------------------
    def _cancel_post(self, msg: Message) -> bool:
        """Close the stream of a request the gateway gave up on; True when that is the whole
        cancellation (2026-07-28: closing the stream cancels), False when the server must also
        be told (handshake era)."""
        request_id = params_of(msg).get("requestId")
        if request_id is None or not is_valid_id(request_id):
            return False
        scope = self._inflight.get(request_id)
        if scope is None:
            return False
        scope.cancel()
        return self._version is None

    async def _post(self, msg: Message, body: bytes) -> None:
        awaits_answer = is_request(msg)
        version = meta_of(msg).get(META_PROTOCOL_VERSION) if awaits_answer else None
        modern = isinstance(version, str) and _HEADER_SAFE.match(version) is not None
        if self.transport == "sse" and modern:
            text = "Method not found: 2026-07-28 requests cannot travel over the 2024-11-05 HTTP+SSE transport"
            await self._answer(msg, MethodNotFound.code, text)
            return
        url = self._endpoint if self.transport == "sse" else self.url
        assert url is not None
        scope = anyio.CancelScope()
        if awaits_answer:
            self._inflight[msg["id"]] = scope
        answered = False
        try:
            with scope:
                async with self._http.stream(
                    "POST", url, content=body, headers=self._post_headers(msg, modern)
                ) as resp:
                    answered = await self._read_reply(msg, resp)
        except httpx.RequestError as exc:  # transport failures, and bodies that cannot be decoded
            if awaits_answer:
                await self._answer(
                    msg, BackendUnavailable.code, f"server {self.name!r} is unreachable: {describe(exc)}"
                )
            self._lose(f"{safe_url(url)}: {describe(exc)}")
            return
        finally:
            if awaits_answer and self._inflight.get(msg["id"]) is scope:
                del self._inflight[msg["id"]]
        if awaits_answer and not answered and not scope.cancel_called and self.transport == "streamable-http":
            await self._answer(msg, BackendError.code, f"server {self.name!r} ended the reply without a response")

    def _post_headers(self, msg: Message, modern: bool) -> dict[str, str]:
        if self.transport == "sse":
            return {**self._headers, "Content-Type": "application/json"}
        headers = {**self._headers, "Accept": POST_ACCEPT, "Content-Type": "application/json"}
        if not modern:
            return self._session_headers(headers)
        method = msg["method"]
        headers[VERSION_HEADER] = meta_of(msg)[META_PROTOCOL_VERSION]
        headers["Mcp-Method"] = encode_header_value(method)
        params = params_of(msg)
        name = params.get(NAME_BEARING.get(method, ""))
        if isinstance(name, str):
            headers["Mcp-Name"] = encode_header_value(name)
        if method == "tools/call" and isinstance(name, str):
            headers.update(mirrored_params(params.get("arguments"), self._tool_params.get(name)))
        return headers

    def _session_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """Configured headers, plus what the handshake-era session established."""
        headers = {**self._headers, **headers}
        if self._session_id is not None:
            headers[SESSION_HEADER] = self._session_id
        if self._version is not None:
            headers[VERSION_HEADER] = self._version
        return headers

    # -- receiving ---------------------------------------------------------------------------
    async def _read_reply(self, msg: Message, resp: httpx.Response) -> bool:
        """Deliver what one POST's reply carries; True when it answered the request."""
        status, method = resp.status_code, msg.get("method")
        if 200 <= status < 300:
            session_id = resp.headers.get(SESSION_HEADER)
            if method == "initialize" and is_request(msg) and session_id is not None:
                if _SESSION_ID.match(session_id):
                    self._session_id = session_id
                else:
                    self._event("ignored a session id that is not visible ASCII")
            if method == "notifications/initialized" and self._version is not None and not self._listening:
                self._listening = True
                assert self._tg is not None
                self._tg.start_soon(self._listen)
            media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if media == "text/event-stream":
                answered = False
                async with aclosing(sse_messages(resp, self.max_message_bytes, self._drop)) as events:
                    async for event, data in events:
                        if event == "message":
                            answered = await self._receive(data, msg) or answered
                return answered
            if media == "application/json":
                body = await read_capped(resp, self.max_message_bytes)
                if body is None:
                    self._drop("oversize")
                    if is_request(msg):
                        text = f"server {self.name!r} sent a reply over max_line_bytes ({self.max_message_bytes})"
                        await self._answer(msg, BackendError.code, text)
                    return True
                return await self._receive(body, msg)
            return False  # 202 Accepted (or an empty reply): nothing to deliver
        error_body = await read_capped(resp, self.max_message_bytes) or b""
        if status == 404 and self._session_id is not None:
            if is_request(msg):
                await self._answer(msg, BackendError.code, f"server {self.name!r} ended the session")
            self._lose(f"the server ended the session (HTTP 404 to {method or 'a response'})")
            return True
        if is_request(msg):
            reply = _loads(error_body)
            if isinstance(reply, dict) and reply.get("id") == msg["id"] and "error" in reply:
                await self._deliver(error_body)  # the server's own error for this request (a 2026 400, say)
            else:
                hint = " (check the configured headers)" if status in (401, 403) else ""
                await self._answer(msg, BackendError.code, f"server {self.name!r} answered HTTP {status}{hint}")
            return True
        log.warning("%s: HTTP %d to %s", self.name, status, method or "a response")
        return False

    async def _receive(self, data: bytes, sent: Message) -> bool:
        """Deliver one received message; True when it is the response to `sent`."""
        reply = _loads(data)
        is_answer = (
            isinstance(reply, dict)
            and is_request(sent)
            and "method" not in reply
            and reply.get("id") == sent["id"]
            and ("result" in reply or "error" in reply)
        )
        result = reply.get("result") if is_answer and isinstance(reply, dict) else None
        if isinstance(result, dict) and sent["method"] == "initialize":
            version = result.get("protocolVersion")
            if isinstance(version, str) and _HEADER_SAFE.match(version):
                self._version = version  # sent as MCP-Protocol-Version from now on
        elif isinstance(result, dict) and sent["method"] == "tools/list" and isinstance(result.get("tools"), list):
            for tool in result["tools"]:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    self._tool_params[tool["name"]] = param_headers(tool)
        await self._deliver(data)
        return is_answer

    async def _deliver(self, data: bytes) -> None:
        try:
            await self._inbox_in.send(data)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped["after_close"] += 1  # the connection ended while this was arriving

    async def _answer(self, msg: Message, code: int, text: str) -> None:
        """Answer a request ourselves, so its caller learns at once why it failed."""
        await self._deliver(orjson.dumps(error(msg["id"], code, text)))

    async def _listen(self) -> None:
        """The GET stream of a handshake-era session: what the server sends outside requests."""
        while True:
            try:
                headers = self._session_headers({"Accept": "text/event-stream"})
                async with self._http.stream("GET", self.url, headers=headers) as resp:
                    if resp.status_code == 405:
                        return  # the server offers no such stream
                    if resp.status_code == 404 and self._session_id is not None:
                        self._lose("the server ended the session (HTTP 404 to GET)")
                        return
                    if resp.status_code != 200:
                        self._event(f"no GET stream (HTTP {resp.status_code})")
                        return
                    async with aclosing(sse_messages(resp, self.max_message_bytes, self._drop)) as events:
                        async for event, data in events:
                            if event == "message":
                                await self._deliver(data)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self._lose(f"{safe_url(self.url)}: {describe(exc)}")
                return
            except httpx.RequestError as exc:
                self._event(f"GET stream broke ({describe(exc)}); reopening")
            else:
                self._event("GET stream ended by the server; reopening")
            await anyio.sleep(LISTEN_REOPEN_DELAY)

    async def _sse_stream(self, ready: anyio.Event) -> None:
        """The 2024-11-05 transport: one GET stream; its `endpoint` event says where to POST."""
        headers = {**self._headers, "Accept": "text/event-stream"}
        try:
            async with self._http.stream("GET", self.url, headers=headers) as resp:
                if resp.status_code != 200:
                    hint = " (check the configured headers)" if resp.status_code in (401, 403) else ""
                    self._lose(f"{safe_url(self.url)} answered HTTP {resp.status_code}{hint}")
                    return
                async with aclosing(sse_messages(resp, self.max_message_bytes, self._drop)) as events:
                    async for event, data in events:
                        if event == "endpoint" and self._endpoint is None:
                            self._endpoint = self._endpoint_url(data)
                            if self._endpoint is None:
                                self._lose("the endpoint event names another origin")
                                return
                            ready.set()
                        elif event == "message":
                            await self._deliver(data)
            self._lose("the server closed the SSE stream")
        except httpx.RequestError as exc:
            where = safe_url(self.url) if self._endpoint else f"cannot reach {safe_url(self.url)}"
            self._lose(f"{where}: {describe(exc)}")

    def _endpoint_url(self, data: bytes) -> str | None:
        """The POST URL, only on the stream's own origin (the configured headers go there)."""
        base = httpx.URL(self.url)
        try:
            target = base.join(data.decode("utf-8", "replace").strip())
        except httpx.InvalidURL:
            return None
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            return None
        return str(target)


def mirrored_params(arguments: object, declared: ParamHeaders | None) -> dict[str, str]:
    """The Mcp-Param-* headers a 2026-07-28 tools/call must carry: each argument the tool's
    schema marks with `x-mcp-header`, as text (2026-07-28 Streamable HTTP, custom headers)."""
    if not declared or not isinstance(arguments, dict):
        return {}
    headers: dict[str, str] = {}
    for header, (arg, _) in declared.items():
        value = arguments.get(arg)
        if isinstance(value, str):
            headers[header] = encode_header_value(value)
        elif isinstance(value, bool | int | float):
            headers[header] = orjson.dumps(value).decode()  # true / false / 42 / 2.5
    return headers


def encode_header_value(value: str) -> str:
    """A value as an Mcp-* header: verbatim when header-safe, else `=?base64?…?=` (2026-07-28
    Streamable HTTP, custom headers)."""
    if _HEADER_SAFE.match(value) and value == value.strip() and not _SENTINEL.match(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


def safe_url(url: str) -> str:
    """A URL fit for logs: no query string (it may hold a key) and no fragment."""
    return str(httpx.URL(url).copy_with(query=None, fragment=None))


def describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _loads(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
