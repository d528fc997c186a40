"""What a server offers (tools, prompts, resources), read page by page over MCP and fingerprinted,
so that a change is noticed even when the server does not announce it."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from mcpmesh.backend.upstream import Upstream
from mcpmesh.errors import ListRefused, MeshError
from mcpmesh.jsonrpc import Message
from mcpmesh.protocol.envelope import GATEWAY_INFO, modern_meta
from mcpmesh.protocol.notifications import list_changed
from mcpmesh.protocol.requests import ParamHeaders, tool_params_of
from mcpmesh.registry.base import Listing

KINDS = ("tools", "prompts", "resources")
NAME_KEY = {"tools": "name", "prompts": "name", "resources": "uri"}
MAX_PAGES = 100  # a server whose list pages on forever is read this far

log = logging.getLogger("mcpmesh.router")  # read for the router: its log lines keep its name


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


class Catalog(Mapping[str, Listing]):
    """One server's lists as last read, by kind (shared servers, and each session-mode process)."""

    def __init__(
        self,
        server: str,
        request_timeout: float,
        *,
        current: Callable[[], Upstream | None],
        tool_params: dict[str, ParamHeaders],
        announce: Callable[[Message], None],
        on_change: Callable[[Listing], None] | None = None,
    ):
        self.server = server
        self.request_timeout = request_timeout
        self.current = current  # the process attached now: what a gone one listed is not kept
        self.tool_params = tool_params  # the router's; refilled, never replaced, from each tool list read
        self.announce = announce  # a list_changed, to every client that may want it
        self.on_change = on_change  # a list's content changed
        self._listings: dict[str, Listing] = {}

    def __getitem__(self, kind: str) -> Listing:
        return self._listings[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._listings)

    def __len__(self) -> int:
        return len(self._listings)

    async def refresh(self, upstream: Upstream, *, announce: bool, kinds: list[str] | None = None) -> None:
        """Read the server's lists again; a list whose content changed is reported (`on_change`) and,
        with `announce`, its list_changed sent to every client that may want it (the server did not
        say so itself). Tool annotations are learned from the tool list for 2026 request checks."""
        for kind in kinds if kinds is not None else offered(upstream.capabilities):
            try:
                items = await read_items(upstream, kind, self.request_timeout)
            except MeshError as exc:
                log.info("%s: %s/list failed: %s", self.server, kind, exc)
                continue
            if upstream is not self.current():
                return  # the process it came from is gone
            if kind == "tools":
                self.tool_params.clear()
                self.tool_params.update(tool_params_of({"tools": items}))
            new, old = listing_of(kind, items), self._listings.get(kind)
            if old is not None and old.hash == new.hash:
                continue
            self._listings[kind] = new
            if announce and old is not None:
                self.announce(list_changed(kind))
            if self.on_change is not None:
                self.on_change(new)
