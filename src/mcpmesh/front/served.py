"""What the HTTP front needs of a server it serves; supervision's servers are these. Declared here,
where it is used, so that the front imports nothing of supervision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mcpmesh.jsonrpc import Message
from mcpmesh.router.multiplexer import Multiplexer
from mcpmesh.router.outbox import Outbox
from mcpmesh.router.session import Call, ClientSession


class ServedServer(Protocol):
    @property
    def name(self) -> str: ...

    async def open_session(self, msg: Message, relay_to: Outbox | None = None) -> tuple[ClientSession, Call | Message]:
        """A new session for this `initialize`, and the reply (or the call that will carry it).
        With `relay_to`, every reply of the session goes to that one stream (legacy HTTP+SSE)."""

    async def router_for_request(
        self, capabilities: dict[str, Any], client_info: dict[str, Any], request_state: str | None = None
    ) -> Multiplexer:
        """The router that serves one 2026-07-28 request (which has no session): for a retry that
        carries a requestState, the one holding the call it resumes; its `on_idle`, if set, must be
        called once the request leaves nothing in flight."""


Servers = Mapping[str, ServedServer]
"""The servers the front serves, by the name in their URLs."""
