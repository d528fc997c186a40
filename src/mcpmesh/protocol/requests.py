"""What a 2026-07-28 request must satisfy before it is routed: its `_meta` envelope, and the Mcp-*
headers that mirror its body, checked on the way in and written on the way out to a remote server
(https://modelcontextprotocol.io/specification/2026-07-28/basic/transports/streamable-http, standard
and custom headers). No HTTP, no routing: headers come in as a mapping."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from mcpmesh.errors import (
    HeaderMismatch,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    MissingCapability,
    ParseError,
    TooManyProcesses,
    UnsupportedVersion,
)
from mcpmesh.jsonrpc import Message, params_of
from mcpmesh.protocol.envelope import META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION
from mcpmesh.protocol.versions import MODERN_VERSION, MODERN_VERSIONS

VERSION_HEADER = "mcp-protocol-version"
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
ROUTING_HEADERS = frozenset({VERSION_HEADER, METHOD_HEADER, NAME_HEADER})
NAME_BEARING = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "tasks/get": "taskId",  # the tasks extension (SEP-2663): Mcp-Name routes a task's requests
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
"""Methods whose Mcp-Name header must equal a body parameter, and which one."""
INPUT_REQUIRED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
"""The requests a server may answer with an input-required result (2026-07-28 MRTR)."""
OWS = " \t"  # optional whitespace around an HTTP field value, which is not part of it (RFC 9110 5.5)

REMOVED_IN_2026 = frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
"""Handshake-era methods a 2026-07-28 request may not use (404, MethodNotFound)."""


_ENCODED = re.compile(r"^=\?base64\?(.*)\?=$")
_HEADER_SAFE = re.compile(r"^[\x20-\x7E]*$")  # what a header value may hold verbatim
_STATUS_BY_CODE = {
    ParseError.code: 400,
    InvalidRequest.code: 400,
    InvalidParams.code: 400,
    HeaderMismatch.code: 400,
    MissingCapability.code: 400,
    UnsupportedVersion.code: 400,
    MethodNotFound.code: 404,
    TooManyProcesses.code: 503,  # as the handshake era's refusals at a cap are
}


def status_for(code: int) -> int:
    """The HTTP status a 2026 error carries (unmapped codes ride on 200)."""
    return _STATUS_BY_CODE.get(code, 200)


def decode_header(value: str | None) -> str | None:
    """An Mcp-* header value without surrounding whitespace, with the `=?base64?…?=` form decoded
    (None when absent or broken): a value whose own ends are spaces travels base64-encoded."""
    if value is None:
        return None
    value = value.strip(OWS)
    match = _ENCODED.match(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def validate_request(msg: Message, headers: Mapping[str, str], raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise the error of the first failed rung (a JsonRpcError; its HTTP status is `status_for` its
    code): envelope, headers vs body, version, method."""
    _no_duplicates(raw_headers)
    meta = params_of(msg).get("_meta")
    if not isinstance(meta, dict):
        raise InvalidParams("params._meta must be an object carrying the request envelope")
    missing = [key for key in (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES) if key not in meta]
    if missing:
        raise InvalidParams(f"params._meta is missing the required key(s): {', '.join(missing)}")
    version = meta[META_PROTOCOL_VERSION]
    sent_version = headers.get(VERSION_HEADER)
    if sent_version is None or sent_version.strip(OWS) != version:
        raise HeaderMismatch("MCP-Protocol-Version header does not match params._meta protocolVersion")
    method = msg["method"]
    if decode_header(headers.get(METHOD_HEADER)) != method:
        raise HeaderMismatch("Mcp-Method header does not match the request's method")
    name_key = NAME_BEARING.get(method)
    if name_key is not None:
        body_value = params_of(msg).get(name_key)
        if decode_header(headers.get(NAME_HEADER)) != body_value:
            raise HeaderMismatch(f"Mcp-Name header does not match params.{name_key}")
    if not isinstance(meta[META_CLIENT_CAPABILITIES], dict):
        raise InvalidParams("params._meta clientCapabilities must be an object")
    if version not in MODERN_VERSIONS:
        raise UnsupportedVersion(
            "Unsupported protocol version",
            {"supported": list(MODERN_VERSIONS), "requested": version},
        )
    if method in REMOVED_IN_2026:
        raise MethodNotFound(f"Method not found: {method} is not part of {MODERN_VERSION}")


def _no_duplicates(raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
    seen: set[str] = set()
    for name, _ in raw_headers:
        key = name.decode("latin-1").lower()
        if key in ROUTING_HEADERS:
            if key in seen:
                raise HeaderMismatch(f"{key} header was sent more than once")
            seen.add(key)


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
            raise HeaderMismatch(f"{header} header does not match arguments.{arg}")


def _same(json_type: Any, value: Any, sent: str) -> bool:
    if isinstance(value, bool):
        return sent == ("true" if value else "false")
    if isinstance(value, int | float) and json_type in ("integer", "number"):
        try:
            return float(sent) == float(value) if json_type == "number" else int(sent) == value
        except ValueError:
            return False
    return sent == (value if isinstance(value, str) else json.dumps(value))


def tool_params_of(page: dict[str, Any]) -> dict[str, ParamHeaders]:
    """The `x-mcp-header` annotations of every tool in a tools/list page, by tool name."""
    tools = page.get("tools")
    if not isinstance(tools, list):
        return {}
    return {t["name"]: param_headers(t) for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)}


def name_of(msg: Message) -> Any:
    """The tool or prompt name, or resource uri, a request's Mcp-Name header mirrors (None if none)."""
    key = NAME_BEARING.get(msg["method"])
    return params_of(msg).get(key) if key else None


def mirrored_params(arguments: object, declared: ParamHeaders | None) -> dict[str, str]:
    """The Mcp-Param-* headers a 2026-07-28 tools/call must carry: each argument the tool's
    schema marks with `x-mcp-header`, as text (2026-07-28 Streamable HTTP, custom headers)."""
    if not declared or not isinstance(arguments, dict):
        return {}
    headers: dict[str, str] = {}
    for header, (arg, _) in declared.items():
        value = arguments.get(arg)
        if isinstance(value, str):
            headers[header] = encode_header_value(value)
        elif isinstance(value, bool | int | float):
            headers[header] = orjson.dumps(value).decode()  # true / false / 42 / 2.5
    return headers


def header_safe(value: str) -> bool:
    """Whether a value may be sent as an HTTP header as it is (printable ASCII)."""
    return _HEADER_SAFE.match(value) is not None


def encode_header_value(value: str) -> str:
    """A value as an Mcp-* header: verbatim when header-safe, else `=?base64?…?=` (2026-07-28
    Streamable HTTP, custom headers)."""
    if _HEADER_SAFE.match(value) and value == value.strip() and not _ENCODED.match(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="
