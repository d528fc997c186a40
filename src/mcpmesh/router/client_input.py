"""Input-required results of 2026-07-28 servers, for handshake-era callers: each of the result's
input requests (elicitation, sampling, roots) goes to the caller as a request on that call's own
response stream, so it reaches exactly the client that made the call, never another; once every
one is answered, the call is sent again with a fresh id, the answers and the server's exact
requestState, for as many rounds as the server asks
(https://modelcontextprotocol.io/specification/2026-07-28/basic/patterns/mrtr)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from mcpmesh.jsonrpc import Message, RequestId, as_key
from mcpmesh.router.session import Call, ClientSession


@dataclass(eq=False)
class Round:
    """One input_required result of a call, while the caller answers its input requests."""

    call: Call
    state: Any  # the server's requestState, returned exactly as it came (None: it sent none)
    waiting: set[str]  # input request keys not answered yet
    answers: dict[str, Any] = field(default_factory=dict)
    refusal: dict[str, Any] | None = None  # the client's error, if it answered one with an error


class InputRelay:
    """The input requests asked of handshake-era callers, by the id each caller was given."""

    def __init__(self) -> None:
        self.asked: dict[RequestId, tuple[Round, str]] = {}  # our id -> its round, input request key
        self.rounds: dict[Call, Round] = {}
        self._ids = itertools.count(1)

    def ask(self, call: Call, result: dict[str, Any]) -> bool:
        """Send each input request of an input_required result to the caller; False when the
        result holds none that can be sent (the caller then gets an error)."""
        requests = result.get("inputRequests")
        if not isinstance(requests, dict) or not requests:
            return False
        if not all(isinstance(r, dict) and isinstance(r.get("method"), str) for r in requests.values()):
            return False
        turn = Round(call, result.get("requestState"), set(requests))
        self.rounds[call] = turn
        for key, request in requests.items():
            ask_id = f"mcpmesh-input-{next(self._ids)}"
            self.asked[ask_id] = (turn, key)
            params = request.get("params")
            call.outbox.put({"jsonrpc": "2.0", "id": ask_id, "method": request["method"], "params": params or {}})
        return True

    def answer(self, session: ClientSession, msg: Message) -> Round | bool:
        """A client's response: the round it ends (all answered, or one refused with an error);
        True when it answers one of them and others still wait; False when it answers nothing
        this session was asked here."""
        entry = self.asked.get(as_key(msg["id"]))  # type: ignore[arg-type]  # None matches nothing
        if entry is None or entry[0].call.session is not session:
            return False
        turn, key = entry
        del self.asked[msg["id"]]
        error = msg.get("error")
        if isinstance(error, dict):
            turn.refusal = error
        else:
            turn.answers[key] = msg.get("result")
            turn.waiting.discard(key)
            if turn.waiting:
                return True
        self.forget(turn.call)
        return turn

    def retry_of(self, turn: Round, request_id: RequestId) -> Message:
        """The call's request again, under a fresh id, with the answers and the requestState."""
        request = turn.call.request
        assert request is not None, "only a call whose request is kept is asked for input"
        params = {**(request.get("params") or {}), "inputResponses": turn.answers}
        if turn.state is not None:
            params["requestState"] = turn.state
        return {**request, "id": request_id, "params": params}

    def fresh_id(self) -> str:
        """An id for a retry: a string of the gateway's, so it meets no id a client chose."""
        return f"mcpmesh-retry-{next(self._ids)}"

    def forget(self, call: Call) -> None:
        """The call ended (answered, cancelled, timed out, its session or process gone)."""
        turn = self.rounds.pop(call, None)
        if turn is not None:
            for ask_id in [i for i, (t, _) in self.asked.items() if t is turn]:
                del self.asked[ask_id]
