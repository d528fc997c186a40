"""The registry's interface: what any backend (SQLite embedded, etcd for clusters) provides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class PortLease:
    port: int
    holder: str
    state: Literal["held", "released"]
    since: float


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    server: str | None
    kind: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Listing:
    """One of a server's lists (tools, prompts or resources) as last read: names and a fingerprint."""

    kind: str
    hash: str
    names: tuple[str, ...]
    at: float  # when this content was first seen


NewEvent = tuple[str, str | None, float, dict[str, Any]]
"""An event to append: (kind, server, at, detail)."""


class Registry(Protocol):
    """Storage for port leases, server catalogs and events. Implementations make each call atomic."""

    def leases(self) -> list[PortLease]: ...
    def hold(self, port: int, holder: str) -> None: ...
    def release(self, holder: str) -> int | None: ...
    def append(self, kind: str, server: str | None, **detail: Any) -> int: ...
    def append_many(self, events: Sequence[NewEvent]) -> None: ...
    def events(self, after: int = 0, limit: int = 100, server: str | None = None) -> list[Event]: ...
    def trim_events(self, keep: int) -> int: ...
    def put_listing(self, server: str, listing: Listing) -> None: ...
    def listings(self, server: str) -> dict[str, Listing]: ...
    def close(self) -> None: ...
