"""Notifications the gateway writes itself (https://modelcontextprotocol.io/specification/2025-11-25/basic/utilities/cancellation)."""

from __future__ import annotations

from typing import Any

from mcpmesh.jsonrpc import Message, RequestId


def cancelled(request_id: RequestId, reason: Any) -> Message:
    """`notifications/cancelled` for a request, with the reason when it is text."""
    params: dict[str, Any] = {"requestId": request_id}
    if isinstance(reason, str):
        params["reason"] = reason
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}


def list_changed(kind: str) -> Message:
    """`notifications/<kind>/list_changed` (tools, prompts, resources)."""
    return {"jsonrpc": "2.0", "method": f"notifications/{kind}/list_changed"}
