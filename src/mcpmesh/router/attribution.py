"""Who may receive what the server sends without a request id of the client's: server-initiated
requests only go to a session that declared the capability, logs only to a session that wants
them at that level."""

from __future__ import annotations

from typing import Any

from mcpmesh.protocol.log_levels import level_passes
from mcpmesh.router.session import ClientSession


def wants_log(session: ClientSession, level: Any) -> bool:
    """Logs reach a 2026 client only on a request that asked for them (`_meta` logLevel)."""
    if session.modern and session.log_level is None:
        return False
    return level_passes(level, session.log_level)


def may_receive(session: ClientSession, method: str, params: dict[str, Any]) -> bool:
    if method == "sampling/createMessage":
        return session.has_capability("sampling")
    if method == "elicitation/create":
        if params.get("mode") == "url":
            return session.has_capability("elicitation", "url")
        return session.has_capability("elicitation")
    if method == "roots/list":
        return session.has_capability("roots")
    return True
