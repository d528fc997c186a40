"""What the gateway sends a server on its own account (log levels, subscriptions, cancellations,
refusals): nothing waits on these, so a failure is only logged and a gone process is left to its
supervisor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from mcpmesh.backend.upstream import Upstream
from mcpmesh.errors import BackendExited
from mcpmesh.jsonrpc import Message

log = logging.getLogger("mcpmesh.router")  # the router's requests: its log lines keep its name

Spawner = Callable[[Callable[[], Coroutine[Any, Any, Any]]], None]


def send_quietly(upstream: Upstream, msg: Message) -> None:
    try:
        upstream.send(msg)
    except BackendExited:
        pass  # the process is gone; its exit is handled by its supervisor


class GatewayCalls:
    """Requests of the gateway's own to one server, whose failure is only logged."""

    def __init__(self, server: str, request_timeout: float, spawn: Spawner):
        self.server = server
        self.request_timeout = request_timeout
        self.spawn = spawn

    def background(self, upstream: Upstream, method: str, params: dict[str, Any]) -> None:
        self.spawn(lambda: self.call(upstream, method, params))

    async def call(self, upstream: Upstream, method: str, params: dict[str, Any]) -> None:
        try:
            reply = await upstream.call(method, params, self.request_timeout)
        except Exception as exc:  # the server may be gone; nothing depends on this answer
            log.info("%s: %s failed: %s", self.server, method, exc)
            return
        if "error" in reply:
            log.info("%s: %s refused: %s", self.server, method, reply["error"])
