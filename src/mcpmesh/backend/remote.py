"""One connection to a remote MCP server over HTTP, with the surface of a child process
(`backend.connection.Connection`), so Upstream and the supervisor treat local and remote servers
alike: a lost connection is an exit. What both HTTP transports share is here: every message
written is one POST, every message received comes out of `lines()`. The transports are
streamable_http.py (Streamable HTTP, both eras) and legacy_sse.py (2024-11-05 HTTP+SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import orjson

from mcpmesh import __version__
from mcpmesh.backend.response_reader import read_capped, sse_messages
from mcpmesh.config import ServerConfig, expand_header
from mcpmesh.errors import BackendError, BackendUnavailable, HeaderError, MethodNotFound, SpawnError
from mcpmesh.jsonrpc import Message, RequestId, error, is_request, is_valid_id, meta_of, params_of
from mcpmesh.protocol.envelope import META_PROTOCOL_VERSION
from mcpmesh.protocol.requests import header_safe

CONNECT_TIMEOUT = 10.0  # a reachable server accepts a connection (TCP and TLS) well within this
WRITE_TIMEOUT = 30.0  # sending one request body; a stalled upload means a broken connection
IDLE_CONNECTIONS = 20  # keep-alive connections kept for the next POSTs
INBOX_SIZE = 256  # received messages waiting for the reader; beyond this, HTTP reads wait (backpressure)
EVENT_TAIL_LINES = 200

log = logging.getLogger("mcpmesh.remote")

R = TypeVar("R", bound="RemoteConnection")


class RemoteConnection:
    """Each message written is one POST, run concurrently in the connection's task group; every
    message received (JSON replies, SSE events of POSTs, a transport's own stream) comes out of
    `lines()`. Sends only the configured headers, whose values are never logged. A transport
    says how the connection opens (`_open`), where and with which headers a message is POSTed,
    and what it learns from the replies."""

    pid: int | None = None  # no local process
    NOT_READY: ClassVar[str] = "did not answer"  # how a connection that never opened is described
    ANSWERS_ON_POST: ClassVar[bool] = True  # a request's POST carries its answer (else: the stream does)

    def __init__(self, name: str, url: str, headers: dict[str, str], max_message_bytes: int):
        self.name = name
        self.url = url
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

    # -- what a transport decides ------------------------------------------------------------
    async def _open(self, ready: anyio.Event) -> None:
        """Open the connection (in its task group) and set `ready` once messages may be sent."""
        raise NotImplementedError

    def _unsendable(self, msg: Message) -> str | None:
        """Why this message cannot travel on the connection now (a drop reason), or None."""
        return None

    def _refusal(self, msg: Message, modern: bool) -> str | None:
        """Why this request is answered with MethodNotFound instead of being sent, or None."""
        return None

    def _post_url(self) -> str:
        return self.url

    def _post_headers(self, msg: Message, modern: bool) -> dict[str, str]:
        raise NotImplementedError

    def _closing_cancels(self) -> bool:
        """Whether closing a request's open POST is the whole of cancelling it."""
        return True

    def _replied(self, msg: Message, resp: httpx.Response) -> None:
        """A POST was answered with a 2xx status (before its body is read)."""

    def _session_lost(self, msg: Message, status: int) -> bool:
        """Whether this error status to a POST means the server ended the session."""
        return False

    def _learn(self, sent: Message, result: dict[str, Any]) -> None:
        """The server answered `sent` with this result, on a POST."""

    async def _end_session(self) -> None:
        """On stop, after every stream closed: end what the server keeps for this connection."""

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    async def connect(cls: type[R], name: str, config: ServerConfig) -> R:
        """Open a connection to a `url` server; SpawnError when it cannot be reached."""
        assert config.url is not None, "not a remote server"
        try:
            headers = {key: expand_header(key, value) for key, value in config.headers.items()}
        except HeaderError as exc:
            raise SpawnError(f"cannot connect {name}: {exc}") from None
        conn = cls(name, config.url, headers, config.max_line_bytes)
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
            self._lose(f"{safe_url(self.url)} {self.NOT_READY} within {endpoint_wait:g}s")
        if self._returncode is not None:
            raise SpawnError(self._reason)
        self._event("connected")

    async def _run(self, ready: anyio.Event) -> None:
        """Hosts the connection's task group until the connection ends or is stopped."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._open, ready)
                await self._ended.wait()
                tg.cancel_scope.cancel()
        except Exception:  # a bug here must end this connection, not the mesh
            log.exception("%s: remote connection failed", self.name)
            self._lose("internal error (see the log)")
        finally:
            self._tg = None
            self._inbox_in.close()
            ready.set()

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
        """Close every stream, end the upstream session (if any), release the HTTP client."""
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
            await self._end_session()
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
    @property
    def backlog(self) -> int:
        return 0  # each message is a POST of its own, under way at once: nothing waits in a queue here

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
        unsendable = self._unsendable(msg)
        if unsendable is not None:
            self._drop(unsendable)
            return
        tg.start_soon(self._post, msg, data.rstrip(b"\n"))

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # never waits: each message is its own POST
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
        return self._closing_cancels()

    async def _post(self, msg: Message, body: bytes) -> None:
        awaits_answer = is_request(msg)
        version = meta_of(msg).get(META_PROTOCOL_VERSION) if awaits_answer else None
        modern = isinstance(version, str) and header_safe(version)
        refusal = self._refusal(msg, modern) if awaits_answer else None
        if refusal is not None:
            await self._answer(msg, MethodNotFound.code, refusal)
            return
        url = self._post_url()
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
        if awaits_answer and not answered and not scope.cancel_called and self.ANSWERS_ON_POST:
            await self._answer(msg, BackendError.code, f"server {self.name!r} ended the reply without a response")

    # -- receiving ---------------------------------------------------------------------------
    async def _read_reply(self, msg: Message, resp: httpx.Response) -> bool:
        """Deliver what one POST's reply carries; True when it answered the request."""
        status, method = resp.status_code, msg.get("method")
        if 200 <= status < 300:
            self._replied(msg, resp)
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
        if self._session_lost(msg, status):
            if is_request(msg):
                await self._answer(msg, BackendError.code, f"server {self.name!r} ended the session")
            self._lose(f"the server ended the session (HTTP {status} to {method or 'a response'})")
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
        if isinstance(result, dict):
            self._learn(sent, result)
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

    async def _stream_messages(self, resp: httpx.Response) -> None:
        """Deliver every `message` event of a server's own SSE stream until it ends."""
        async with aclosing(sse_messages(resp, self.max_message_bytes, self._drop)) as events:
            async for event, data in events:
                if event == "message":
                    await self._deliver(data)


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
