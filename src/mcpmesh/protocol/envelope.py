"""The 2026-07-28 per-request `_meta` envelope: the keys it carries, how the gateway builds one for a
handshake-era client's request, and how it is taken off before a handshake-era server sees it
(https://modelcontextprotocol.io/specification/2026-07-28/basic: every request is self-describing)."""

from __future__ import annotations

from typing import Any

from mcpmesh import __version__
from mcpmesh.jsonrpc import Message, params_of
from mcpmesh.protocol.versions import MODERN_VERSION

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
RESERVED_PREFIX = "io.modelcontextprotocol/"

GATEWAY_INFO = {"name": "mcpmesh", "version": __version__}
"""Who the gateway says it is when it speaks to a server on its own account."""


def modern_meta(capabilities: dict[str, Any], client_info: dict[str, Any] | None) -> dict[str, Any]:
    """The per-request `_meta` envelope a 2026-07-28 server expects."""
    meta: dict[str, Any] = {META_PROTOCOL_VERSION: MODERN_VERSION, META_CLIENT_CAPABILITIES: capabilities}
    if client_info:
        meta[META_CLIENT_INFO] = client_info
    return meta


def add_envelope(
    msg: Message, capabilities: dict[str, Any], client_info: dict[str, Any], log_level: str | None
) -> None:
    """Wrap a handshake-era client's request for a 2026-07-28 server (per-request `_meta`): the
    client's own capabilities, so the server asks it only for input it can give."""
    params = msg.setdefault("params", {})
    if not isinstance(params, dict):
        return
    meta = params.setdefault("_meta", {})
    if not isinstance(meta, dict):
        return
    meta.update(modern_meta(capabilities, client_info))
    if log_level:
        meta[META_LOG_LEVEL] = log_level


def strip_envelope(msg: Message) -> None:
    """Remove the 2026 `_meta` envelope before a request goes to a handshake-era server."""
    meta = params_of(msg).get("_meta")
    if isinstance(meta, dict):
        for key in [k for k in meta if k.startswith(RESERVED_PREFIX)]:
            del meta[key]
        if not meta:
            del msg["params"]["_meta"]
