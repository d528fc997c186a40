"""One MCP connection to one server (a process or a remote URL): framing, era detection, handshake, own calls."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from typing import Any, Literal, Protocol

import orjson

from mcpmesh.backend.connection import Connection
from mcpmesh.errors import BackendExited, BackendTimeout, InvalidRequest, JsonRpcError
from mcpmesh.jsonrpc import Message, is_valid_id
from mcpmesh.protocol.envelope import (
    GATEWAY_INFO,
    META_SERVER_INFO,
    modern_meta,
)
from mcpmesh.protocol.versions import LEGACY_VERSIONS, MODERN_VERSION

Era = Literal["legacy", "modern"]

# The gateway's own requests that cannot make a server emit logs or requests on someone's behalf.
_INERT_METHODS = frozenset({"ping", "server/discover", "tools/list", "prompts/list", "resources/list"})
PROBE_TIMEOUT = 10.0  # a handshake-era server answers an unknown method at once; silence means legacy
# What the gateway declares to a handshake-era backend it initializes itself (a shared process): it
# routes these requests to the one client that caused them, and answers the backend with an error
# when it cannot. Not roots: a shared process keeps the roots it was given and would show one
# client's to every other, so roots reach only a process of the client's own (sharing = "session").
GATEWAY_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}}

log = logging.getLogger("mcpmesh.upstream")


class MessageHandler(Protocol):
    """Receives what the backend sends that is not an answer to the gateway's own calls."""

    def on_backend_response(self, upstream: Upstream, msg: Message) -> None: ...
    def on_backend_request(self, upstream: Upstream, msg: Message) -> None: ...
    def on_backend_notification(self, upstream: Upstream, msg: Message) -> None: ...


class Traffic:
    """Bytes exchanged with one server, over all its connections (a metric)."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = 0  # written to the server (its stdin, or request bodies)
        self.received = 0  # read from it (its stdout lines, or messages received)


class Upstream:
    """Speaks JSON-RPC messages over one connection (`child`: a process or a remote URL);
    forwards everything else to its handler."""

    def __init__(self, child: Connection, handler: MessageHandler, traffic: Traffic | None = None):
        self.child = child
        self.traffic = traffic if traffic is not None else Traffic()
        self.handler = handler
        # The loop its requests run on, looked up once: asyncio.get_running_loop() costs a getpid()
        # syscall on 3.11, and the router sets a timer on it for every request.
        self.loop = asyncio.get_running_loop()
        self.name = child.name
        self.era: Era | None = None
        self.server_result: Message = {}  # InitializeResult (legacy) or DiscoverResult (modern)
        self.closed = False
        self._ids = itertools.count(1)
        self._own_prefix = f"mcpmesh-{secrets.token_hex(4)}-"
        self._own_calls: dict[str, asyncio.Future[Message]] = {}
        # While one of these is in flight, what the server emits may be caused by the gateway.
        self.own_calls_with_side_effects = 0

    # -- ids ---------------------------------------------------------------------------------
    def mint_id(self) -> int:
        return next(self._ids)

    # -- writing -----------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        self.send_framed(frame(msg))

    def send_framed(self, data: bytes) -> None:
        """Write one message already framed by `frame`."""
        if self.closed:
            raise BackendExited(f"server {self.name!r} is not running")
        try:
            self.child.write(data)
            self.traffic.sent += len(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise BackendExited(f"server {self.name!r} closed its input") from exc

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # a bound, not a cancellation
        """Flow control; with `timeout`, it gives up waiting after that (the caller's own deadline
        then tells: a call's time-out, a probe's miss)."""
        try:
            await self.child.drain(timeout)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise BackendExited(f"server {self.name!r} closed its input") from exc

    # -- reading -----------------------------------------------------------------------------
    async def read_loop(self) -> None:
        """Dispatch every stdout line until EOF; each message is parsed exactly once."""
        try:
            traffic = self.traffic
            async for line in self.child.lines():
                traffic.received += len(line) + 1  # with its newline, as it came
                self._dispatch(line)
        finally:
            self.closed = True
            for future in self._own_calls.values():
                if not future.done():
                    future.set_exception(BackendExited(f"server {self.name!r} exited"))
            self._own_calls.clear()

    def _dispatch(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.child.note_dropped("not_json")
            return
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            self.child.note_dropped("not_jsonrpc")
            return
        try:
            self._route(msg)
        except Exception:  # a routing bug must not stop this server's read loop
            self.child.note_dropped("routing_error")
            log.exception("%s: could not route a message", self.name)

    def _route(self, msg: Message) -> None:
        has_id = "id" in msg
        if has_id and not is_valid_id(msg["id"]):
            self.child.note_dropped("bad_id")
        elif isinstance(msg.get("method"), str):
            if has_id:
                self.handler.on_backend_request(self, msg)
            else:
                self.handler.on_backend_notification(self, msg)
        elif has_id and ("result" in msg or "error" in msg):
            own = self._own_calls.pop(msg["id"], None) if isinstance(msg["id"], str) else None
            if own is not None:
                if not own.done():
                    own.set_result(msg)
            else:
                self.handler.on_backend_response(self, msg)
        else:
            self.child.note_dropped("not_jsonrpc")

    # -- the gateway's own requests ----------------------------------------------------------
    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Message:  # noqa: ASYNC109  # bounds one backend exchange; expiry becomes a BackendTimeout naming it
        """Send a request of the gateway's own and return the whole response message."""
        request_id = f"{self._own_prefix}{next(self._ids)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._own_calls[request_id] = future
        side_effects = method not in _INERT_METHODS
        self.own_calls_with_side_effects += side_effects
        try:
            self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            async with asyncio.timeout(timeout):  # a server that stops reading must not hold this forever
                await self.drain()
                return await future
        except TimeoutError as exc:
            raise BackendTimeout(f"server {self.name!r} did not answer {method} in {timeout:g}s") from exc
        finally:
            self._own_calls.pop(request_id, None)
            self.own_calls_with_side_effects -= side_effects

    async def probe(self, timeout: float) -> Era:  # noqa: ASYNC109  # bounds one backend exchange; expiry becomes a BackendTimeout naming it
        """Detect the era with a server/discover probe (2026-07-28 stdio transport, backward
        compatibility); remembered for the process."""
        self.era = "modern" if await self.probe_modern(min(PROBE_TIMEOUT, timeout)) else "legacy"
        return self.era

    async def handshake(self, timeout: float, prefer_modern: bool = False) -> None:  # noqa: ASYNC109  # bounds one backend exchange; expiry becomes a BackendTimeout naming it
        """Settle the era, once per process. By default the initialize handshake: a server that
        speaks both eras then keeps the handshake era for this connection, so its tools may send
        the client requests mid-call (elicitation, sampling, roots), which a 2026-07-28 connection
        has no channel for; a server that refuses the handshake is spoken to in 2026-07-28.
        `prefer_modern` asks server/discover first instead."""
        if prefer_modern and await self.probe(timeout) == "modern":
            return
        await self.initialize(timeout)

    async def check_alive(self, timeout: float) -> None:  # noqa: ASYNC109  # bounds one backend exchange; expiry becomes a BackendTimeout naming it
        """Before the era is settled (a spare waiting for its client's own handshake): any answer
        to `ping`, even an error, or silence for PROBE_TIMEOUT (a server may ignore requests before
        initialize) shows the process runs. `ping` is the one request allowed before initialize; a
        server that settles its era on the first request (the SDK 2.x) settles on the handshake
        era, which the client's initialize then opens, and a 2026-07-28-only one refuses it."""
        with contextlib.suppress(BackendTimeout):
            await self.call("ping", {}, min(PROBE_TIMEOUT, timeout))

    async def initialize(
        self,
        timeout: float,  # noqa: ASYNC109  # bounds one backend exchange; expiry becomes a BackendTimeout naming it
        capabilities: dict[str, Any] = GATEWAY_CAPABILITIES,
        client_info: dict[str, Any] = GATEWAY_INFO,
    ) -> None:
        """The handshake, once per process: as the gateway, or on one client's behalf."""
        params = {"protocolVersion": LEGACY_VERSIONS[0], "capabilities": capabilities, "clientInfo": client_info}
        reply = await self.call("initialize", params, timeout)
        if "error" in reply:
            if await self.probe_modern(min(PROBE_TIMEOUT, timeout)):
                return  # it speaks 2026-07-28 only (it refused as UnsupportedProtocolVersion, or unknown)
            raise JsonRpcError(f"server {self.name!r} refused initialize: {reply['error'].get('message')}")
        self.era = "legacy"
        self.server_result = reply["result"]
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await self.drain()
        log.info("%s: handshake-era server, protocol %s", self.name, self.server_result.get("protocolVersion"))

    async def probe_modern(self, timeout: float) -> bool:  # noqa: ASYNC109  # bounds one backend exchange; expiry becomes a BackendTimeout naming it
        """Whether the server answers server/discover as a 2026-07-28 server (the era is then modern)."""
        try:
            reply = await self.call("server/discover", {"_meta": modern_meta({}, GATEWAY_INFO)}, timeout)
        except BackendTimeout:
            return False
        result = reply.get("result")
        if isinstance(result, dict) and MODERN_VERSION in result.get("supportedVersions", ()):
            self.era = "modern"
            self.server_result = result
            log.info("%s: 2026-07-28 server", self.name)
            return True
        return False

    # -- facts about the server for the front ------------------------------------------------
    @property
    def capabilities(self) -> dict[str, Any]:
        caps = self.server_result.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    @property
    def server_info(self) -> dict[str, Any]:
        if self.era == "modern":
            meta = self.server_result.get("_meta") or {}
            info = meta.get(META_SERVER_INFO)
        else:
            info = self.server_result.get("serverInfo")
        return info if isinstance(info, dict) else {"name": self.name, "version": "unknown"}


def frame(msg: Message) -> bytes:
    """One message as a line of JSON; InvalidRequest when it cannot be written (JSON parses deeper
    than it encodes: a message nested past orjson's 255 levels), so the caller refuses it before
    anything is recorded for it."""
    try:
        return orjson.dumps(msg, option=orjson.OPT_APPEND_NEWLINE)  # framed without a copy
    except orjson.JSONEncodeError as exc:
        raise InvalidRequest(f"Invalid Request: the message cannot be forwarded ({exc})") from exc
