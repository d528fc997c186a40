"""JSON-RPC 2.0 framing: parse once, classify, encode; not MCP-aware."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from mcpmesh.errors import InvalidRequest, ParseError

Message = dict[str, Any]
RequestId = int | str

# orjson reads an integer past 64 bits as a float, silently changing it (an id, a count, a seed).
# Every 64-bit integer has at most 20 digits, so only a body with a longer run of digits (rare,
# and most often inside a string) is read again, exactly, to tell.
LONG_DIGIT_RUN = re.compile(rb"\d{20}")
INTEGER_RANGE = (-(2**63), 2**64 - 1)


def parse(data: bytes) -> Any:
    """Parse one JSON document or raise ParseError; InvalidRequest for an integer that no 64-bit
    type holds, which would otherwise reach the server as a different number."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"Parse error: {exc}") from exc
    if LONG_DIGIT_RUN.search(data) is not None:
        _refuse_wide_integers(data, value)
    return value


def _refuse_wide_integers(data: bytes, parsed: Any) -> None:
    request_id = parsed.get("id") if isinstance(parsed, dict) and is_valid_id(parsed.get("id")) else None

    def exact(text: str) -> int:
        number = int(text)
        if not INTEGER_RANGE[0] <= number <= INTEGER_RANGE[1]:
            shown = text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
            message = f"Invalid Request: integer {shown} does not fit in 64 bits"
            raise InvalidRequest(message, request_id=request_id)
        return number

    try:
        json.loads(data, parse_int=exact)
    except RecursionError:  # deeper than Python reads: refused later for its depth
        return


def check_message(obj: Any) -> Message:
    """Return obj if it is a well-formed JSON-RPC 2.0 message, else raise InvalidRequest."""
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        raise InvalidRequest("Invalid Request: not a JSON-RPC 2.0 object")
    if "method" in obj:
        if not isinstance(obj["method"], str):
            raise InvalidRequest("Invalid Request: method must be a string")
        if "id" in obj and not is_valid_id(obj["id"]):
            raise InvalidRequest("Invalid Request: id must be a string or an integer")
        if "params" in obj and not isinstance(obj["params"], dict):
            # JSON-RPC allows an array; MCP does not, and a server may never answer one.
            raise InvalidRequest("Invalid Request: params must be an object", request_id=obj.get("id"))
        return obj
    if "id" in obj and ("result" in obj or "error" in obj):
        if obj["id"] is not None and not is_valid_id(obj["id"]):
            raise InvalidRequest("Invalid Request: id must be a string or an integer")
        return obj
    raise InvalidRequest("Invalid Request: neither a request, a notification nor a response")


def is_valid_id(value: Any) -> bool:
    # bool is an int subclass in Python but never a valid JSON-RPC id; MCP forbids null.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def as_key(value: Any) -> RequestId | None:
    """value as a lookup key when it can be an id or a token (str or int), else None.

    Ids and tokens arrive from clients and servers alike; an object or array there must never
    reach a dict lookup (unhashable) nor match anything.
    """
    return value if is_valid_id(value) else None


def is_request(msg: Message) -> bool:
    return "method" in msg and "id" in msg


def result(request_id: Any, value: Any) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: Any, code: int, message: str, data: Any = None) -> Message:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": err}


def params_of(msg: Message) -> dict[str, Any]:
    params = msg.get("params")
    return params if isinstance(params, dict) else {}


def meta_of(msg: Message) -> dict[str, Any]:
    meta = params_of(msg).get("_meta")
    return meta if isinstance(meta, dict) else {}
