"""Log levels in the order of RFC 5424 severities, least severe first, and whether a message at one
level passes a client's chosen level (https://modelcontextprotocol.io/specification/2025-11-25/server/utilities/logging)."""

from __future__ import annotations

from typing import Any

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def level_passes(level: Any, wanted: str | None) -> bool:
    """Whether a message at `level` reaches a client that asked for `wanted` (None: everything);
    a level MCP does not name is never filtered out."""
    if wanted is None or level not in LOG_LEVELS:
        return True
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(wanted)
