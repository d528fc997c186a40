"""MCP-aware routing between client sessions and one server process: id, progress-token and
cancellation rewriting, delivery of every message to the one client it belongs to, fan-out of
list changes, reference-counted subscriptions, per-client log levels, era translation.

Nothing is guessed across clients: a message that cannot be attributed to exactly one client is
dropped (and counted), and a server-initiated request that cannot be is answered with an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from mcpmesh.backend.upstream import PROBE_TIMEOUT, Upstream, frame
from mcpmesh.errors import (
    BackendExited,
    BackendTimeout,
    BackendUnavailable,
    CircuitOpen,
    InternalError,
    InvalidParams,
    InvalidRequest,
    RequestCancelled,
    ServerNotReading,
)
from mcpmesh.jsonrpc import Message, RequestId, as_key, error, params_of, result
from mcpmesh.protocol.envelope import add_envelope, strip_envelope
from mcpmesh.protocol.log_levels import LOG_LEVELS, level_passes
from mcpmesh.protocol.notifications import cancelled
from mcpmesh.protocol.requests import INPUT_REQUIRED_METHODS, NAME_BEARING, ParamHeaders, tool_params_of
from mcpmesh.protocol.results import is_input_required, modernize_reply, to_handshake_era
from mcpmesh.protocol.versions import negotiate_version
from mcpmesh.registry.base import Listing
from mcpmesh.router.attribution import wants_log
from mcpmesh.router.breaker import CircuitBreaker
from mcpmesh.router.catalog import KINDS, Catalog, offered
from mcpmesh.router.client_input import InputRelay, Round
from mcpmesh.router.expiry import OldestFirstExpiry
from mcpmesh.router.gateway_calls import GatewayCalls, Spawner, send_quietly
from mcpmesh.router.input_required import InputBridge
from mcpmesh.router.log_level import ServerLogLevel
from mcpmesh.router.outcomes import CallObserver, Outcome, outcome_of
from mcpmesh.router.server_requests import UNROUTABLE, ServerRequests
from mcpmesh.router.session import Call, ClientSession
from mcpmesh.router.subscriptions import Listener, Subscriber, Subscriptions

REQUEST_CANCELLED = RequestCancelled.code  # what a cancelled request's still-open stream is closed with
SESSION_ENDED = InternalError.code  # a request still in flight when its session ends is answered with this
READY_WAIT = 10.0  # how long a request waits for a (re)starting server before failing


class Multiplexer:
    """Routes between the sessions of one server and its current process (an Upstream).

    `shared=True`: many sessions on one process; ids and progress tokens are rewritten, the
    handshake, ping, logging levels and resource subscriptions are handled here.
    `shared=False`: one session, one process; messages pass through untouched, unless the process
    speaks 2026-07-28, in which case the handshake is answered here and requests are enveloped.
    """

    def __init__(
        self,
        server: str,
        *,
        shared: bool,
        request_timeout: float,
        spawn: Spawner,
        observers: Sequence[CallObserver] = (),
        new_breaker: Callable[[], CircuitBreaker] | None = None,
        on_catalog_change: Callable[[Listing], None] | None = None,
        on_initialized: Callable[[Upstream], None] | None = None,
        tool_params: dict[str, ParamHeaders] | None = None,
    ):
        self.server = server
        self.observers = observers
        self.new_breaker = new_breaker  # one circuit breaker per process, made when it attaches
        self.breaker: CircuitBreaker | None = None
        self.shared = shared
        self.request_timeout = request_timeout
        self.spawn = spawn
        self.upstream: Upstream | None = None
        self.failed_reason: str | None = None
        self.on_detach: Callable[[ClientSession], None] | None = None
        self.on_idle: Callable[[], None] | None = None  # nothing in flight any more (per-request processes)
        self.sessions: set[ClientSession] = set()
        self.calls: dict[RequestId, Call] = {}
        self.tokens: dict[Any, Call] = {}
        self.gateway_calls = GatewayCalls(server, request_timeout, spawn)
        self.log_level = ServerLogLevel(shared=shared, calls=self.gateway_calls)
        self.subscriptions = Subscriptions(request_timeout, self.gateway_calls.background)
        # x-mcp-header annotations, by tool name (shared by the processes of a session-mode server)
        self.tool_params: dict[str, ParamHeaders] = {} if tool_params is None else tool_params
        self.catalog = Catalog(
            server,
            request_timeout,
            current=lambda: self.upstream,
            tool_params=self.tool_params,
            announce=self._fan_out_list_changed,
            on_change=on_catalog_change,
        )
        self.on_initialized = on_initialized  # a session's own process, now initialized by its client
        self.inputs = InputBridge(self._give_up_waiting)  # handshake-era servers asking 2026 callers
        self.input_relay = InputRelay()  # 2026 servers asking handshake-era callers
        self.dropped: Counter[str] = Counter()
        self.server_requests = ServerRequests(
            shared=shared, calls=self.calls, sessions=self.sessions, inputs=self.inputs, dropped=self.dropped
        )
        self._attached = anyio.Event()
        # Calls enter self.calls as they start and share request_timeout: the oldest expires first.
        self._expiry = OldestFirstExpiry(
            request_timeout, lambda: ((c, c.started) for c in self.calls.values()), self._time_out
        )

    # -- upstream lifecycle ------------------------------------------------------------------
    def attach(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.failed_reason = None
        if self.new_breaker is not None:
            self.breaker = self.new_breaker()
        self._attached.set()
        if self.shared:  # a session-mode spare is not initialized yet: only its client may speak first
            self.spawn(lambda: self.catalog.refresh(upstream, announce=True))
        if self.shared and upstream.era == "legacy":
            self.subscriptions.renew(upstream)
            self.log_level.sync(self.upstream, self.sessions)

    def upstream_closed(self, upstream: Upstream, reason: str) -> None:
        """The process is gone: every request in flight on it gets an error now."""
        if upstream is not self.upstream:
            return
        self.upstream = None
        self._attached = anyio.Event()
        self.log_level.forget()
        if self.breaker is not None:
            self.breaker.close()
        for call in list(self.calls.values()):
            self._finish(call, Outcome.EXITED)
            text = f"server {self.server!r} exited with this request in flight ({reason})"
            call.outbox.finish(error(call.client_id, BackendExited.code, text))
        self.server_requests.clear()

    @property
    def answers_protocol(self) -> bool:
        """Whether the gateway answers initialize, ping and logging/setLevel itself."""
        return self.shared or (self.upstream is not None and self.upstream.era == "modern")

    async def ready_upstream(self) -> Upstream:
        if self.upstream is None and self.failed_reason is None:
            with anyio.move_on_after(READY_WAIT):
                await self._attached.wait()
        if self.upstream is None:
            why = self.failed_reason or "not ready"
            raise BackendUnavailable(f"server {self.server!r} is unavailable: {why}")
        return self.upstream

    # -- sessions ----------------------------------------------------------------------------
    def advertised_capabilities(self) -> dict[str, Any]:
        """What the server declared, less what the gateway cannot serve through it."""
        upstream = self.upstream
        assert upstream is not None
        caps = {k: (dict(v) if isinstance(v, dict) else v) for k, v in upstream.capabilities.items()}
        if self.shared:
            caps.pop("tasks", None)  # task ids are not yet bound to the client that created them
            for kind in offered(caps):  # the gateway announces changes it reads, announced or not
                if isinstance(caps[kind], dict):
                    caps[kind]["listChanged"] = True
        if upstream.era == "modern" and isinstance(caps.get("resources"), dict):
            caps["resources"].pop("subscribe", None)  # subscriptions/listen is not bridged yet
        return caps

    def initialize_result(self, params: dict[str, Any]) -> dict[str, Any]:
        """The InitializeResult the gateway gives a client, from what the server declared."""
        upstream = self.upstream
        assert upstream is not None
        reply: dict[str, Any] = {
            "protocolVersion": negotiate_version(params.get("protocolVersion")),
            "capabilities": self.advertised_capabilities(),
            "serverInfo": upstream.server_info,
        }
        if isinstance(upstream.server_result.get("instructions"), str):
            reply["instructions"] = upstream.server_result["instructions"]
        return reply

    def join(self, session: ClientSession) -> None:
        self.sessions.add(session)
        # a newcomer without a level must not be limited by others' levels
        self.log_level.sync(self.upstream, self.sessions)

    def detach(self, session: ClientSession, reason: str) -> None:
        """The session ended: cancel its requests, refuse its pending server requests, unsubscribe."""
        self.sessions.discard(session)
        upstream = self.upstream
        for call in list(session.inflight.values()):
            self._finish(call, Outcome.SESSION_ENDED)
            call.outbox.finish(error(call.client_id, SESSION_ENDED, f"session ended: {reason}"))
            if upstream is not None and self.shared:
                send_quietly(upstream, cancelled(call.backend_id, "client session ended"))
        self.server_requests.abandon(session, upstream)
        self.subscriptions.drop(session, upstream)
        self.log_level.sync(self.upstream, self.sessions)
        if self.on_detach is not None:
            self.on_detach(session)

    # -- client -> server --------------------------------------------------------------------
    async def handle_request(self, session: ClientSession, msg: Message) -> Call | Message:
        """A Call whose outbox will carry the reply, or an immediate reply message."""
        request_id = msg["id"]
        if request_id in session.inflight:
            text = "Invalid Request: this id is already used by a request in flight"
            return error(request_id, InvalidRequest.code, text)
        if self.answers_protocol:
            reply = await self._answer_locally(session, msg)
            if reply is not None:
                return reply
        upstream = await self.ready_upstream()
        if session.modern and upstream.era == "legacy" and "requestState" in params_of(msg):
            return await self.inputs.resume(session, msg, upstream)
        refusal = self.breaker.refusal() if self.breaker is not None else None
        if refusal is not None:
            return error(request_id, CircuitOpen.code, f"server {self.server!r} is not sent requests now: {refusal}")
        return await self._forward(session, msg, upstream)

    async def handle_notification(self, session: ClientSession, msg: Message) -> None:
        method = msg["method"]
        upstream = self.upstream
        if method == "notifications/cancelled":
            self._cancel_from_client(session, msg)
            return
        if self.answers_protocol and method == "notifications/initialized":
            return  # the server was initialized once, by the gateway
        if self.shared and method in ("notifications/roots/list_changed", "notifications/progress"):
            self.dropped["client_notification"] += 1  # per-client facts a shared process cannot hold
            return
        if upstream is None:
            self.dropped["no_upstream"] += 1
            return
        upstream.send(msg)
        await upstream.drain(self.request_timeout)
        if method == "notifications/initialized" and self.on_initialized is not None:
            self.on_initialized(upstream)  # a session's own process, now initialized by its client

    async def handle_response(self, session: ClientSession, msg: Message) -> None:
        """A client's answer to a server-initiated request: back to the server with its own id."""
        asked = self.input_relay.answer(session, msg)
        if asked is True:
            return  # more of that round still to come
        if isinstance(asked, Round):
            await self._send_again(asked)
            return
        upstream = self.upstream
        if upstream is None or not self.server_requests.answer(session, msg):
            self.dropped["unmatched_client_response"] += 1
            return
        upstream.send(msg)
        await upstream.drain(self.request_timeout)

    async def _answer_locally(self, session: ClientSession, msg: Message) -> Message | None:
        method, request_id = msg["method"], msg["id"]
        if method == "ping":
            return result(request_id, {})
        if method == "initialize":
            return error(request_id, InvalidRequest.code, "Invalid Request: session is already initialized")
        if method == "logging/setLevel":
            level = params_of(msg).get("level")
            if level not in LOG_LEVELS:
                return error(request_id, InvalidParams.code, f"Invalid params: unknown log level {level!r}")
            session.log_level = level
            await self.log_level.apply(self.upstream, self.sessions)
            return result(request_id, {})
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return await self.subscriptions.request(session, msg, await self.ready_upstream())
        return None

    # -- 2026-07-28 subscriptions/listen ------------------------------------------------------
    async def listen(self, listener: Listener, wanted: dict[str, Any]) -> dict[str, Any]:
        """Register a listen stream; return the subset of `wanted` that will be honoured."""
        return await self.subscriptions.listen(listener, wanted, await self.ready_upstream())

    def unlisten(self, listener: Listener) -> None:
        self.subscriptions.unlisten(listener, self.upstream)

    def end_listeners(self) -> None:
        self.subscriptions.end_listeners(self.upstream)

    def _fan_out_list_changed(self, msg: Message) -> None:
        for session in self.sessions:
            session.notify(msg)
        self.subscriptions.notify_listeners(msg)

    async def _forward(self, session: ClientSession, msg: Message, upstream: Upstream) -> Call | Message:
        name_key = NAME_BEARING.get(msg["method"])
        call = Call(session, msg["id"], msg["method"], params_of(msg).get(name_key) if name_key else None)
        if self.shared:
            call.backend_id = msg["id"] = upstream.mint_id()
        params = msg.get("params")
        if isinstance(params, dict):
            meta = params.get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                if as_key(meta["progressToken"]) is None:
                    return error(
                        call.client_id,
                        InvalidParams.code,
                        "Invalid params: progressToken must be a string or an integer",
                    )
                call.client_token = call.backend_token = meta["progressToken"]
                if self.shared:  # the backend id is unique among in-flight requests, so is this token
                    call.backend_token = meta["progressToken"] = call.backend_id
        if upstream.era == "modern" and not session.modern:
            add_envelope(msg, session.capabilities, session.client_info, session.log_level)
            if msg["method"] in INPUT_REQUIRED_METHODS:  # it may come back input_required: asked of the caller
                call.request = msg
        elif upstream.era == "legacy" and session.modern:
            strip_envelope(msg)
        try:
            data = frame(msg)  # before anything is recorded: a message that cannot be written leaves nothing behind
        except InvalidRequest:
            msg["id"] = call.client_id  # its error goes back under the client's own id
            raise
        if call.backend_token is not None:
            self.tokens[call.backend_token] = call
        self.calls[call.backend_id] = call
        session.inflight[call.client_id] = call
        self._expiry.arm()
        for observer in self.observers:
            observer.call_started(self.server, call)
        try:
            upstream.send_framed(data)
            await upstream.drain(self.request_timeout)  # a server that stops reading: the call times out
        except BackendExited:
            self._finish(call, Outcome.EXITED)
            msg["id"] = call.client_id  # its error goes back under the client's own id
            raise
        except ServerNotReading:
            self._finish(call, Outcome.TIMEOUT)
            msg["id"] = call.client_id
            raise
        return call

    def _cancel_from_client(self, session: ClientSession, msg: Message) -> None:
        params = params_of(msg)
        call = session.inflight.get(as_key(params.get("requestId")))  # type: ignore[arg-type]  # None matches nothing
        if call is None or call.method == "initialize":
            self.dropped["unknown_cancel"] += 1  # finished, unknown, or never cancellable
            return
        self.cancel(call, params.get("reason"))

    def cancel(self, call: Call, reason: Any) -> None:
        """End a call the client gave up on: the server is told, and nothing more is sent for it."""
        if self.calls.get(call.backend_id) is not call:
            return  # already answered, timed out or failed
        self._finish(call, Outcome.CANCELLED)
        call.outbox.finish(error(call.client_id, REQUEST_CANCELLED, "Request cancelled"))
        if self.upstream is not None:
            send_quietly(self.upstream, cancelled(call.backend_id, reason))

    def _time_out(self, call: Call) -> None:
        if self.calls.get(call.backend_id) is not call:
            return
        self._finish(call, Outcome.TIMEOUT)
        text = f"server {self.server!r} did not answer {call.method} within {self.request_timeout:g}s"
        call.outbox.finish(error(call.client_id, BackendTimeout.code, text))
        if self.upstream is not None:
            send_quietly(self.upstream, cancelled(call.backend_id, "timed out at the gateway"))

    def _finish(self, call: Call, outcome: str) -> None:
        if self.calls.get(call.backend_id) is call:
            del self.calls[call.backend_id]
            for observer in self.observers:
                observer.call_done(self.server, call, outcome)
            if self.breaker is not None:
                self.breaker.record(outcome)
        if call.backend_token is not None and self.tokens.get(call.backend_token) is call:
            del self.tokens[call.backend_token]
        if call.session.inflight.get(call.client_id) is call:
            del call.session.inflight[call.client_id]
        self.inputs.forget(call)
        self.input_relay.forget(call)
        if not self.calls and self.on_idle is not None:
            self.on_idle()

    # -- server -> client (called from the Upstream's read loop) -----------------------------
    def on_backend_response(self, upstream: Upstream, msg: Message) -> None:
        call = self.calls.get(as_key(msg["id"])) if upstream is self.upstream else None  # type: ignore[arg-type]
        if call is None:
            self.dropped["unmatched_response"] += 1  # late answer to a cancelled or timed-out call
            return
        if call.method == "initialize" and upstream.era is None and "error" in msg:
            self.spawn(lambda: self._handshake_refused(upstream, call, msg))  # the call stays in flight
            return
        result_ = msg.get("result")
        if call.request is not None and is_input_required(result_) and self.input_relay.ask(call, result_):
            return  # the call waits for its caller's answers, then goes again
        self._finish(call, outcome_of(call, msg))
        msg["id"] = call.client_id
        if call.method == "tools/list" and isinstance(msg.get("result"), dict):
            self.tool_params.update(tool_params_of(msg["result"]))
        elif call.method == "initialize" and isinstance(msg.get("result"), dict):
            upstream.server_result = msg["result"]  # a session's own handshake: what its process offers
            upstream.era = "legacy"
        if upstream.era == "modern" and not call.session.modern:
            to_handshake_era(msg)
        elif upstream.era == "legacy" and call.session.modern:
            modernize_reply(msg, call.method, upstream.server_info)
        call.outbox.finish(msg)

    async def _send_again(self, turn: Round) -> None:
        """A caller answered a 2026 server's input requests (or refused one): the call goes again."""
        call, upstream = turn.call, self.upstream
        if self.calls.get(call.backend_id) is not call or upstream is None:
            return  # it ended meanwhile (timed out, cancelled, its process gone)
        if turn.refusal is not None:
            self._finish(call, Outcome.ERROR)
            text = f"the client refused the server's input request: {turn.refusal.get('message')}"
            call.outbox.finish(error(call.client_id, turn.refusal.get("code", InternalError.code), text))
            return
        retry_id = self.input_relay.fresh_id()
        # Re-keyed in place, so the calls stay in the order they started (time-outs expect it).
        entries = [(retry_id if c is call else k, c) for k, c in self.calls.items()]
        self.calls.clear()
        self.calls.update(entries)
        upstream.send(self.input_relay.retry_of(turn, retry_id))
        call.backend_id = retry_id
        await upstream.drain(self.request_timeout)

    async def _handshake_refused(self, upstream: Upstream, call: Call, refusal: Message) -> None:
        """A session's own initialize was refused by a process of unsettled era: if it speaks
        2026-07-28 only, the gateway answers the handshake and envelopes the session's requests."""
        modern = await upstream.probe_modern(min(PROBE_TIMEOUT, self.request_timeout))
        if self.calls.get(call.backend_id) is not call:
            return  # timed out, cancelled or gone meanwhile
        if not modern:
            self._finish(call, Outcome.ERROR)
            call.outbox.finish({**refusal, "id": call.client_id})
            return
        self._finish(call, Outcome.OK)
        call.outbox.finish(
            result(call.client_id, self.initialize_result({"protocolVersion": call.session.protocol_version}))
        )
        if self.on_initialized is not None:
            self.on_initialized(upstream)  # no notifications/initialized reaches it: its lists can be read now

    def on_backend_notification(self, upstream: Upstream, msg: Message) -> None:
        method, params = msg["method"], params_of(msg)
        if method == "notifications/progress":
            call = self.tokens.get(as_key(params.get("progressToken")))
            if call is None:
                self.dropped["unmatched_progress"] += 1
                return
            params["progressToken"] = call.client_token
            call.outbox.put(msg)
        elif method.endswith("/list_changed"):
            self._fan_out_list_changed(msg)
            kind = method.split("/")[1]
            if self.shared and kind in KINDS:  # already announced: only learn the new content
                self.spawn(lambda: self.catalog.refresh(upstream, announce=False, kinds=[kind]))
        elif method == "notifications/resources/updated":
            uri = params.get("uri")
            targets: set[Subscriber] | set[ClientSession]
            targets = self.subscriptions.holders(uri) if self.shared and isinstance(uri, str) else self.sessions
            for subscriber in targets:
                subscriber.notify(msg)
        elif method == "notifications/cancelled":
            self.server_requests.cancelled(params, msg)
        else:  # logs and anything else: only where it can be attributed
            self._deliver_attributed(msg, params.get("level") if method == "notifications/message" else None)

    def _sole_call(self) -> Call | None:
        """The one request in flight on the server, if exactly one is (the gateway's own included)."""
        upstream = self.upstream
        if len(self.calls) != 1 or (upstream is not None and upstream.own_calls_with_side_effects):
            return None
        return next(iter(self.calls.values()))

    def _deliver_attributed(self, msg: Message, level: Any) -> None:
        call = self._sole_call()
        if call is not None:
            if level is None or wants_log(call.session, level):
                call.outbox.put(msg)
        elif not self.shared:  # one session: what no single call owns goes to its GET stream
            for session in self.sessions:
                if level_passes(level, session.log_level):
                    session.notify(msg)
        else:
            self.dropped["unattributable_notification"] += 1

    def on_backend_request(self, upstream: Upstream, msg: Message) -> None:
        self.server_requests.route(upstream, msg, self.upstream)

    # -- 2026-07-28 clients: server requests become input-required results (MRTR) --------------
    def _give_up_waiting(self, call: Call, server_request_id: RequestId) -> None:
        """The client never came back within the requestState's lifetime: release the server."""
        if self.upstream is not None:
            send_quietly(self.upstream, error(server_request_id, UNROUTABLE, "the client did not answer in time"))
        self.cancel(call, "the client did not provide the requested input in time")
