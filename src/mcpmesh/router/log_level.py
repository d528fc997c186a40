"""The logging level of a shared handshake-era server: the most verbose any of its sessions asked
for, set by the gateway; each session's own level is then applied per message (routing.wants_log)."""

from __future__ import annotations

from collections.abc import Collection

from mcpmesh.backend.upstream import Upstream
from mcpmesh.protocol.log_levels import LOG_LEVELS
from mcpmesh.router.gateway_calls import GatewayCalls
from mcpmesh.router.session import ClientSession


class ServerLogLevel:
    """The level the gateway last set on the current process (None: never set on it)."""

    def __init__(self, *, shared: bool, calls: GatewayCalls):
        self.shared = shared
        self.calls = calls
        self.current: str | None = None

    def sync(self, upstream: Upstream | None, sessions: Collection[ClientSession]) -> None:
        """Set the shared server to the most verbose level any session asked for (in the background)."""
        change = self._change(upstream, sessions)
        if change is not None:
            self.calls.background(change[0], "logging/setLevel", {"level": change[1]})

    async def apply(self, upstream: Upstream | None, sessions: Collection[ClientSession]) -> None:
        """The same, answered before the client's own setLevel is: a notification the server sends
        while the gateway's request is in flight cannot be attributed, so none may be pending after."""
        change = self._change(upstream, sessions)
        if change is not None:
            await self.calls.call(change[0], "logging/setLevel", {"level": change[1]})

    def forget(self) -> None:
        """The process is gone: its successor has set no level yet."""
        self.current = None

    def _change(self, upstream: Upstream | None, sessions: Collection[ClientSession]) -> tuple[Upstream, str] | None:
        """The level the server should be set to now, if it differs from the last one set; levels are
        then filtered per session."""
        if not self.shared or upstream is None or upstream.era != "legacy" or "logging" not in upstream.capabilities:
            return None
        if not sessions or (self.current is None and not any(s.log_level for s in sessions)):
            return None  # nobody is here, or nobody ever asked: leave the server as it is
        target = min((s.log_level or "debug" for s in sessions), key=LOG_LEVELS.index)
        if target == self.current:
            return None
        self.current = target
        return upstream, target
