"""Requests a server sends its clients (sampling, elicitation, roots ...): each goes to the one session
it can belong to, under an id of the gateway's on a shared server, and only that session's answer goes
back, under the server's id. A 2026-07-28 caller is asked through an input-required result (input_required.py)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Set
from typing import Any

from mcpmesh.backend.upstream import Upstream
from mcpmesh.errors import MethodNotFound
from mcpmesh.jsonrpc import Message, RequestId, as_key, error, params_of, result
from mcpmesh.router.attribution import may_receive
from mcpmesh.router.gateway_calls import send_quietly
from mcpmesh.router.input_required import InputBridge
from mcpmesh.router.session import Call, ClientSession

UNROUTABLE = MethodNotFound.code  # answered to a server request no single capable client can take


class ServerRequests:
    """The server's requests waiting for a client's answer, by the id that client was given."""

    def __init__(
        self,
        *,
        shared: bool,
        calls: Mapping[RequestId, Call],
        sessions: Set[ClientSession],
        inputs: InputBridge,
        dropped: Counter[str],
    ):
        self.shared = shared
        self.calls = calls  # the router's, only read: who is active, and on which stream to ask
        self.sessions = sessions  # the router's, only read
        self.inputs = inputs
        self.dropped = dropped  # the router's count of what it could not deliver, by cause
        self.pending: dict[RequestId, tuple[RequestId, ClientSession]] = {}  # -> server's id, session asked
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self.pending)

    def route(self, upstream: Upstream, msg: Message, current: Upstream | None) -> None:
        """A request from `upstream`, given the process now attached: to the one session it belongs
        to, or refused."""
        method, backend_id = msg["method"], msg["id"]
        if method == "ping":
            send_quietly(upstream, result(backend_id, {}))
            return
        target = self._originator(method, params_of(msg), current)
        if target is None:
            self.dropped["unroutable_server_request"] += 1
            text = f"mcpmesh: {method} cannot be routed to exactly one client that supports it"
            send_quietly(upstream, error(backend_id, UNROUTABLE, text))
            return
        if target.modern:
            self._ask_for_input(target, msg, upstream)
            return
        client_id: RequestId = f"mcpmesh-s{next(self._ids)}" if self.shared else backend_id
        self.pending[client_id] = (backend_id, target)
        msg["id"] = client_id
        own_calls = [c for c in self.calls.values() if c.session is target]
        if len(own_calls) == 1:
            own_calls[0].outbox.put(msg)  # on the stream of the request that caused it
        else:
            target.notify(msg)

    def answer(self, session: ClientSession, msg: Message) -> bool:
        """Give a client's answer the server's id back; False if it answers nothing `session` was asked."""
        entry = self.pending.get(as_key(msg["id"]))  # type: ignore[arg-type]  # None matches nothing
        if entry is None or entry[1] is not session:
            return False
        del self.pending[msg["id"]]
        msg["id"] = entry[0]
        return True

    def cancelled(self, params: dict[str, Any], msg: Message) -> None:
        """The server withdrew a request: tell the session asked, by the id that session knows."""
        for sid, (backend_id, session) in list(self.pending.items()):
            if backend_id == params.get("requestId"):
                del self.pending[sid]
                params["requestId"] = sid
                session.notify(msg)
                return

    def abandon(self, session: ClientSession, upstream: Upstream | None) -> None:
        """The session ended: what it was asked and did not answer is refused."""
        for sid, (backend_id, owner) in list(self.pending.items()):
            if owner is session:
                del self.pending[sid]
                if upstream is not None:
                    send_quietly(upstream, error(backend_id, UNROUTABLE, "client session ended"))

    def clear(self) -> None:
        """The process is gone: nothing it asked can be answered any more."""
        self.pending.clear()

    def _ask_for_input(self, session: ClientSession, msg: Message, upstream: Upstream) -> None:
        """Suspend the caller's call and answer it with an input-required result; the server's
        request waits for the client's retry."""
        call = next(c for c in self.calls.values() if c.session is session)
        asked = self.inputs.ask(call, msg)
        if asked is None:
            text = f"mcpmesh: {msg['method']} cannot be asked of this 2026-07-28 client now"
            send_quietly(upstream, error(msg["id"], UNROUTABLE, text))
            return
        call.outbox.finish(asked)

    def _originator(self, method: str, params: dict[str, Any], upstream: Upstream | None) -> ClientSession | None:
        """The one session a server request can belong to, if exactly one can and may take it."""
        if upstream is not None and upstream.own_calls_with_side_effects:
            return None  # the gateway's own request may be what asks
        active = {call.session for call in self.calls.values()}
        if len(active) == 1:
            session = active.pop()
        elif not active and not self.shared and len(self.sessions) == 1:
            session = next(iter(self.sessions))
        else:
            return None
        return session if may_receive(session, method, params) else None
