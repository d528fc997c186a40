"""How a forwarded call ends, and who is told: the observers (metrics, stats, the audit trail, the
circuit breaker) a multiplexer reports every call to."""

from __future__ import annotations

from typing import Protocol

from mcpmesh.jsonrpc import Message
from mcpmesh.router.session import Call


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
