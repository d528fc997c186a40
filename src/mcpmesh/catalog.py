"""What a server offers (tools, prompts, resources), read page by page over MCP and fingerprinted,
so that a change is noticed even when the server does not announce it."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from mcpmesh.backend.upstream import GATEWAY_INFO, Upstream, modern_meta
from mcpmesh.errors import BackendError
from mcpmesh.registry.base import Listing

KINDS = ("tools", "prompts", "resources")
NAME_KEY = {"tools": "name", "prompts": "name", "resources": "uri"}
MAX_PAGES = 100  # a server whose list pages on forever is read this far


class ListRefused(BackendError):
    """The server answered a list request with an error."""


def offered(capabilities: dict[str, Any]) -> list[str]:
    """The kinds of list the server declared it has."""
    return [kind for kind in KINDS if kind in capabilities]


async def read_items(upstream: Upstream, kind: str, timeout: float) -> list[dict[str, Any]]:  # noqa: ASYNC109  # bounds each page's backend exchange
    """Every item of one list, all pages."""
    items: list[dict[str, Any]] = []
    cursor: Any = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {} if cursor is None else {"cursor": cursor}
        if upstream.era == "modern":
            params["_meta"] = modern_meta({}, GATEWAY_INFO)
        reply = await upstream.call(f"{kind}/list", params, timeout)
        page = reply.get("result")
        if not isinstance(page, dict):
            raise ListRefused(f"{kind}/list was refused: {reply.get('error')}")
        found = page.get(kind)
        items.extend(item for item in (found if isinstance(found, list) else []) if isinstance(item, dict))
        cursor = page.get("nextCursor")
        if not cursor:
            break
    return items


def listing_of(kind: str, items: list[dict[str, Any]]) -> Listing:
    """Names and a fingerprint of the whole list (schemas and descriptions included): any change shows."""
    names = tuple(str(item.get(NAME_KEY[kind])) for item in items)
    digest = hashlib.sha256(orjson.dumps(items, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return Listing(kind=kind, hash=digest, names=names, at=time.time())


def difference(old: Listing | None, new: Listing, limit: int = 20) -> dict[str, Any]:
    """What an event says of a change: counts, and (up to `limit` of) the names added and removed."""
    before = set(old.names) if old is not None else set()
    added, removed = sorted(set(new.names) - before), sorted(before - set(new.names))
    return {
        "list": new.kind,
        "count": len(new.names),
        "hash": new.hash,
        "added": added[:limit],
        "removed": removed[:limit],
    }
