"""What the router applies to one message or one call: the records it keeps per request and
listen stream, the attribution rules (who may receive what), and the era envelope and translation."""

from __future__ import annotations

import time
from typing import Any, Protocol

from mcpmesh.backend.upstream import modern_meta
from mcpmesh.front.modern import NAME_BEARING, ParamHeaders, param_headers
from mcpmesh.front.session import FrontSession, Outbox
from mcpmesh.jsonrpc import META_LOG_LEVEL, Message, RequestId, params_of

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
# Client capabilities a 2026-07-28 server could only use through MRTR, which is not bridged here.
MRTR_CAPABILITIES = ("sampling", "elicitation", "roots")


class Call:
    """One client request in flight on the server."""

    __slots__ = (
        "session",
        "client_id",
        "backend_id",
        "method",
        "name",
        "outbox",
        "client_token",
        "backend_token",
        "suspended",
        "started",
    )

    def __init__(self, session: FrontSession, client_id: RequestId, method: str, name: Any = None):
        self.session = session
        self.client_id = client_id
        self.method = method
        self.name = name  # the tool or prompt name, or resource uri, a requestState is bound to
        self.suspended: str | None = None  # handle while waiting for a 2026 client's input
        self.outbox = session.call_outbox()
        self.backend_id: RequestId = client_id
        self.client_token: Any = None
        self.backend_token: Any = None
        self.started = time.monotonic()


class Outcome:
    """How a forwarded call ended, as call observers (metrics, the circuit breaker) are told."""

    OK = "ok"
    ERROR = "error"  # the server answered with a JSON-RPC error
    TOOL_ERROR = "tool_error"  # a tools/call result with isError: the tool failed, the server did not
    TIMEOUT = "timeout"  # the gateway gave up waiting (request_timeout)
    CANCELLED = "cancelled"  # the client cancelled it, or closed its stream
    EXITED = "exited"  # the server process ended with the call in flight
    SESSION_ENDED = "session_ended"


class CallObserver(Protocol):
    """Told of every call a multiplexer forwards: when it is sent and how it ended."""

    def call_started(self, server: str, call: Call) -> None: ...

    def call_done(self, server: str, call: Call, outcome: str) -> None: ...


def outcome_of(call: Call, reply: Message) -> str:
    if "error" in reply:
        return Outcome.ERROR
    body = reply.get("result")
    if call.method == "tools/call" and isinstance(body, dict) and body.get("isError") is True:
        return Outcome.TOOL_ERROR
    return Outcome.OK


class Subscriber(Protocol):
    """Who can hold resource subscriptions: a session, or a 2026 listen stream."""

    subscriptions: set[str]

    def notify(self, msg: Message) -> None: ...


class Listener:
    """One 2026-07-28 `subscriptions/listen` stream: what it asked for, and its outbox."""

    def __init__(self, subscription_id: RequestId):
        self.subscription_id = subscription_id
        self.methods: set[str] = set()  # the list_changed notifications it opted in to
        self.subscriptions: set[str] = set()
        self.outbox = Outbox()

    def notify(self, msg: Message) -> None:
        """Deliver a copy tagged with this stream's subscription id (the message is shared)."""
        params = dict(params_of(msg))
        params["_meta"] = {**(params.get("_meta") or {}), META_SUBSCRIPTION_ID: self.subscription_id}
        self.outbox.put({**msg, "params": params})


def cancelled(request_id: RequestId, reason: Any) -> Message:
    params: dict[str, Any] = {"requestId": request_id}
    if isinstance(reason, str):
        params["reason"] = reason
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}


def wants_log(session: FrontSession, level: Any) -> bool:
    """Logs reach a 2026 client only on a request that asked for them (`_meta` logLevel)."""
    if session.modern and session.log_level is None:
        return False
    return level_passes(level, session.log_level)


def level_passes(level: Any, wanted: str | None) -> bool:
    if wanted is None or level not in LOG_LEVELS:
        return True
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(wanted)


def tool_params_of(page: dict[str, Any]) -> dict[str, ParamHeaders]:
    tools = page.get("tools")
    if not isinstance(tools, list):
        return {}
    return {t["name"]: param_headers(t) for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)}


def name_of(msg: Message) -> Any:
    key = NAME_BEARING.get(msg["method"])
    return params_of(msg).get(key) if key else None


def may_receive(session: FrontSession, method: str, params: dict[str, Any]) -> bool:
    if method == "sampling/createMessage":
        return session.has_capability("sampling")
    if method == "elicitation/create":
        if params.get("mode") == "url":
            return session.has_capability("elicitation", "url")
        return session.has_capability("elicitation")
    if method == "roots/list":
        return session.has_capability("roots")
    return True


def envelope(msg: Message, session: FrontSession) -> None:
    """Wrap a handshake-era client's request for a 2026-07-28 server (per-request `_meta`)."""
    params = msg.setdefault("params", {})
    if not isinstance(params, dict):
        return
    meta = params.setdefault("_meta", {})
    if not isinstance(meta, dict):
        return
    caps = {k: v for k, v in session.capabilities.items() if k not in MRTR_CAPABILITIES}
    meta.update(modern_meta(caps, session.client_info))
    if session.log_level:
        meta[META_LOG_LEVEL] = session.log_level


def to_handshake_era(msg: Message) -> None:
    """A 2026 result a handshake-era client cannot act on becomes an error."""
    res = msg.get("result")
    if isinstance(res, dict) and res.get("resultType") == "input_required":
        del msg["result"]
        msg["error"] = {"code": -32603, "message": "server asked for client input (MRTR); not bridged yet"}
