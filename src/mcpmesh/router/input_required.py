"""Input-required results (MRTR) for 2026-07-28 callers of handshake-era servers: a server's
sampling, elicitation or roots request suspends the caller's call and becomes an input_required
result with a sealed requestState; the client's retry brings the answer and resumes the call."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable

from mcpmesh.backend.upstream import Upstream
from mcpmesh.errors import InvalidParams, StateRejected
from mcpmesh.jsonrpc import Message, RequestId, error, params_of, result
from mcpmesh.protocol.request_state import RequestStateSealer, Sealed
from mcpmesh.protocol.requests import INPUT_REQUIRED_METHODS, name_of
from mcpmesh.router.session import Call, ClientSession


class InputBridge:
    """The calls waiting for a 2026 client's input, by the handle their requestState carries."""

    def __init__(self, give_up: Callable[[Call, RequestId], None]):
        self.sealer = RequestStateSealer()
        self.waiting: dict[str, tuple[Call, RequestId, str]] = {}  # handle -> call, server request id, key
        self._give_up = give_up  # what the router does when a client never comes back
        self._keys = itertools.count(1)

    def ask(self, call: Call, server_request: Message) -> Message | None:
        """Suspend `call` for this server request; the input_required reply for the client, or
        None if the call cannot be suspended (already waiting, or not a call MRTR allows)."""
        if call.suspended is not None or call.method not in INPUT_REQUIRED_METHODS:
            return None
        handle, key = secrets.token_urlsafe(16), f"input-{next(self._keys)}"
        call.suspended = handle
        self.waiting[handle] = (call, server_request["id"], key)
        asyncio.get_running_loop().call_later(self.sealer.ttl, self._expire, handle)
        state = self.sealer.seal(Sealed(handle, call.session.principal, call.method, call.name))
        request = {"method": server_request["method"], "params": params_of(server_request)}
        asked = {"resultType": "input_required", "inputRequests": {key: request}, "requestState": state}
        return result(call.client_id, asked)

    def take(self, session: ClientSession, retry: Message) -> tuple[Call, RequestId, Message] | Message:
        """For a retry carrying inputResponses: the suspended call, the server request it answers
        and the answer; or the error the retry gets (forged, expired, foreign, incomplete)."""
        params = params_of(retry)
        try:
            sealed = self.sealer.open(str(params["requestState"]), session.principal, retry["method"], name_of(retry))
        except StateRejected as exc:
            return error(retry["id"], InvalidParams.code, f"Invalid params: {exc}")
        entry = self.waiting.get(sealed.handle)
        if entry is None:
            return error(retry["id"], InvalidParams.code, "Invalid params: requestState names no waiting request")
        call, server_request_id, key = entry
        responses = params.get("inputResponses")
        answer = responses.get(key) if isinstance(responses, dict) else None
        if not isinstance(answer, dict):
            return error(retry["id"], InvalidParams.code, f"Invalid params: inputResponses lacks {key!r}")
        del self.waiting[sealed.handle]
        call.suspended = None
        return call, server_request_id, answer

    async def resume(self, session: ClientSession, retry: Message, upstream: Upstream) -> Call | Message:
        """A retry carrying inputResponses: answer the waiting server request, and the suspended
        call goes on, now the retry's (its id, its stream); or the error the retry gets."""
        taken = self.take(session, retry)
        if isinstance(taken, dict):
            return taken
        call, server_request_id, answer = taken
        if call.session.inflight.get(call.client_id) is call:
            del call.session.inflight[call.client_id]
        call.session, call.client_id, call.outbox = session, retry["id"], session.call_outbox()
        session.inflight[call.client_id] = call
        upstream.send(result(server_request_id, answer))
        await upstream.drain(self.sealer.ttl)  # the client waits no longer than its state lives
        return call

    def forget(self, call: Call) -> None:
        if call.suspended is not None:
            self.waiting.pop(call.suspended, None)

    def _expire(self, handle: str) -> None:
        entry = self.waiting.pop(handle, None)
        if entry is not None:
            self._give_up(entry[0], entry[1])
