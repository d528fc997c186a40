"""2026-07-28 requests: the validation ladder (headers against body and `_meta`) and the rules
every result follows (`resultType`, `ttlMs`, `cacheScope`, `serverInfo`). No HTTP, no routing."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mcpmesh.jsonrpc import (
    META_CLIENT_CAPABILITIES,
    META_PROTOCOL_VERSION,
    META_SERVER_INFO,
    MODERN_VERSION,
    Message,
    params_of,
)

MODERN_VERSIONS = (MODERN_VERSION,)
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601

VERSION_HEADER = "mcp-protocol-version"
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
ROUTING_HEADERS = frozenset({VERSION_HEADER, METHOD_HEADER, NAME_HEADER})
NAME_BEARING = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose Mcp-Name header must equal a body parameter, and which one."""

REMOVED_IN_2026 = frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
"""Handshake-era methods a 2026-07-28 request may not use (404 / -32601)."""

CACHEABLE = frozenset(
    {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)
"""Results that must carry `ttlMs` and `cacheScope` (SEP-2549)."""

_ENCODED = re.compile(r"^=\?base64\?(.*)\?=$")
_STATUS_BY_CODE = {-32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400, -32022: 400, -32601: 404}


class Rejection(Exception):
    """A 2026 request refused before routing: HTTP status plus JSON-RPC error fields."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    @property
    def status(self) -> int:
        return status_for(self.code)


def status_for(code: int) -> int:
    """The HTTP status a 2026 error carries (unmapped codes ride on 200)."""
    return _STATUS_BY_CODE.get(code, 200)


def decode_header(value: str | None) -> str | None:
    """An Mcp-* header value, with the `=?base64?…?=` form decoded (None when absent or broken)."""
    if value is None:
        return None
    match = _ENCODED.match(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def validate_request(msg: Message, headers: Mapping[str, str], raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise Rejection at the first failed rung: envelope, headers vs body, version, method."""
    _no_duplicates(raw_headers)
    meta = params_of(msg).get("_meta")
    if not isinstance(meta, dict):
        raise Rejection(INVALID_PARAMS, "params._meta must be an object carrying the request envelope")
    missing = [key for key in (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES) if key not in meta]
    if missing:
        raise Rejection(INVALID_PARAMS, f"params._meta is missing the required key(s): {', '.join(missing)}")
    version = meta[META_PROTOCOL_VERSION]
    if headers.get(VERSION_HEADER) != version:
        raise Rejection(HEADER_MISMATCH, "MCP-Protocol-Version header does not match params._meta protocolVersion")
    method = msg["method"]
    if decode_header(headers.get(METHOD_HEADER)) != method:
        raise Rejection(HEADER_MISMATCH, "Mcp-Method header does not match the request's method")
    name_key = NAME_BEARING.get(method)
    if name_key is not None:
        body_value = params_of(msg).get(name_key)
        if decode_header(headers.get(NAME_HEADER)) != body_value:
            raise Rejection(HEADER_MISMATCH, f"Mcp-Name header does not match params.{name_key}")
    if not isinstance(meta[META_CLIENT_CAPABILITIES], dict):
        raise Rejection(INVALID_PARAMS, "params._meta clientCapabilities must be an object")
    if version not in MODERN_VERSIONS:
        raise Rejection(
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            {"supported": list(MODERN_VERSIONS), "requested": version},
        )
    if method in REMOVED_IN_2026:
        raise Rejection(METHOD_NOT_FOUND, f"Method not found: {method} is not part of {MODERN_VERSION}")


def _no_duplicates(raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
    seen: set[str] = set()
    for name, _ in raw_headers:
        key = name.decode("latin-1").lower()
        if key in ROUTING_HEADERS:
            if key in seen:
                raise Rejection(HEADER_MISMATCH, f"{key} header was sent more than once")
            seen.add(key)


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
    if isinstance(error, dict) and error.get("code") == -32002:
        error["code"] = INVALID_PARAMS  # resource not found is -32602 from 2026-07-28 on


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


def strip_envelope(msg: Message) -> None:
    """Remove the 2026 `_meta` envelope before a request goes to a handshake-era server."""
    meta = params_of(msg).get("_meta")
    if isinstance(meta, dict):
        for key in [k for k in meta if k.startswith("io.modelcontextprotocol/")]:
            del meta[key]
        if not meta:
            del msg["params"]["_meta"]


ParamHeaders = dict[str, tuple[str, Any]]
"""For one tool: lower-cased `Mcp-Param-<Name>` header -> (argument name, declared JSON type)."""


def param_headers(tool: Any) -> ParamHeaders:
    """The `x-mcp-header` annotations of a tool's primitive input properties."""
    schema = tool.get("inputSchema") if isinstance(tool, dict) else None
    props = schema.get("properties") if isinstance(schema, dict) else None
    found: ParamHeaders = {}
    if isinstance(props, dict):
        for arg, prop in props.items():
            name = prop.get("x-mcp-header") if isinstance(prop, dict) else None
            if isinstance(name, str) and name:
                found[f"mcp-param-{name.lower()}"] = (arg, prop.get("type"))
    return found


def validate_param_headers(msg: Message, headers: Mapping[str, str], declared: ParamHeaders | None) -> None:
    """Each recognized Mcp-Param-* header must agree with the argument it mirrors (and be sent
    when the argument is); unrecognized ones are left alone."""
    if not declared:
        return
    args = params_of(msg).get("arguments")
    args = args if isinstance(args, dict) else {}
    for header, (arg, json_type) in declared.items():
        sent, value = decode_header(headers.get(header)), args.get(arg)
        if value is None and headers.get(header) is None:
            continue
        if value is None or sent is None or not _same(json_type, value, sent):
            raise Rejection(HEADER_MISMATCH, f"{header} header does not match arguments.{arg}")


def _same(json_type: Any, value: Any, sent: str) -> bool:
    if isinstance(value, bool):
        return sent == ("true" if value else "false")
    if isinstance(value, int | float) and json_type in ("integer", "number"):
        try:
            return float(sent) == float(value) if json_type == "number" else int(sent) == value
        except ValueError:
            return False
    return sent == (value if isinstance(value, str) else json.dumps(value))
