"""Results across eras: the shape every 2026-07-28 result has (`resultType`, `ttlMs`, `cacheScope`,
`serverInfo`), the gateway's `server/discover` answer, and what becomes of a 2026 result a
handshake-era client cannot act on (https://modelcontextprotocol.io/specification/2026-07-28/server/discover,
https://modelcontextprotocol.io/specification/2026-07-28/server/utilities/caching)."""

from __future__ import annotations

from typing import Any, TypeGuard

from mcpmesh.errors import InternalError, InvalidParams, ResourceNotFound
from mcpmesh.jsonrpc import Message
from mcpmesh.protocol.envelope import META_SERVER_INFO
from mcpmesh.protocol.versions import MODERN_VERSIONS

CACHEABLE = frozenset(
    {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)
"""Results that must carry `ttlMs` and `cacheScope` (SEP-2549)."""


def modernize_reply(msg: Message, method: str, server_info: dict[str, Any]) -> None:
    """Give a handshake-era server's reply the shape a 2026-07-28 client relies on."""
    result = msg.get("result")
    if isinstance(result, dict):
        result.setdefault("resultType", "complete")
        if method in CACHEABLE:
            result.setdefault("ttlMs", 0)
            result.setdefault("cacheScope", "private")  # per-user data is never labelled public
        meta = result.get("_meta")
        if not isinstance(meta, dict):
            meta = result["_meta"] = {}
        meta.setdefault(META_SERVER_INFO, server_info)
    error = msg.get("error")
    if isinstance(error, dict) and error.get("code") == ResourceNotFound.code:
        error["code"] = InvalidParams.code  # resource not found is invalid params from 2026-07-28 on


def discover_result(capabilities: dict[str, Any], server_info: dict[str, Any], instructions: Any) -> dict[str, Any]:
    """The gateway's answer to `server/discover` for one server."""
    result: dict[str, Any] = {
        "resultType": "complete",
        "supportedVersions": list(MODERN_VERSIONS),
        "capabilities": capabilities,
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {META_SERVER_INFO: server_info},
    }
    if isinstance(instructions, str):
        result["instructions"] = instructions
    return result


MODERN_ONLY_FIELDS = ("resultType", "ttlMs", "cacheScope")
"""Result fields of 2026-07-28 that no handshake-era revision defines."""


def is_input_required(result: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(result, dict) and result.get("resultType") == "input_required"


def to_handshake_era(msg: Message) -> None:
    """A 2026-07-28 server's reply in the shape of the handshake era: no 2026-only fields, and a
    result a handshake-era client cannot act on (input_required the gateway could not relay)
    becomes an error."""
    res = msg.get("result")
    if not isinstance(res, dict):
        return
    if is_input_required(res):
        del msg["result"]
        msg["error"] = {
            "code": InternalError.code,
            "message": "the server asked for client input the gateway could not relay",
        }
        return
    for key in MODERN_ONLY_FIELDS:
        res.pop(key, None)
    meta = res.get("_meta")
    if isinstance(meta, dict):
        meta.pop(META_SERVER_INFO, None)
        if not meta:
            del res["_meta"]
