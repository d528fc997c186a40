"""Hot reload: the config file read again and validated whole, then only its difference applied
(added servers start, removed ones stop, changed ones restart, unchanged ones keep their process
and sessions); one reload at a time, each recorded as an event. Also follows the file (`--watch`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from mcpmesh.config import MeshConfig
from mcpmesh.errors import ConfigError, ServerBlocked
from mcpmesh.supervision.server import EventLog
from mcpmesh.supervision.supervisor import Supervisor

LIVE_MESH_SETTINGS = frozenset({"dedicated_ports"})
"""`[mesh]` settings a reload applies; every other one differing is reported as needing a restart."""

WATCH_INTERVAL = 1.0  # seconds between looks at the watched file: an edit shows within about this

log = logging.getLogger("mcpmesh.reload")

FollowPorts = Callable[[str, bool], Awaitable[str | None]]
"""Gives a server its own port (True) or takes it back (False); why it cannot have one, if so."""


async def _no_ports(name: str, wanted: bool) -> str | None:
    return None


@dataclass
class ReloadResult:
    """What one reload did, or why it was refused (then nothing changed)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # `[mesh]` settings that differ and wait for a restart
    failed: dict[str, str] = field(default_factory=dict)  # servers that could not be started, and why
    refused: str | None = None  # the config error; nothing was applied

    def as_dict(self) -> dict[str, Any]:
        return {
            "reloaded": self.refused is None,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "needs_restart": self.needs_restart,
            "failed": self.failed,
            "refused": self.refused,
        }


def difference(old: MeshConfig, new: MeshConfig) -> ReloadResult:
    """Which servers a move from `old` to `new` adds, removes, changes (any setting of the table
    differs) or leaves alone, and which `[mesh]` settings cannot follow without a restart."""
    diff = ReloadResult()
    for name in new.servers:
        if name not in old.servers:
            diff.added.append(name)
        elif new.servers[name] != old.servers[name]:
            diff.changed.append(name)
        else:
            diff.unchanged.append(name)
    diff.removed = [name for name in old.servers if name not in new.servers]
    fields = type(new.mesh).model_fields
    diff.needs_restart = [
        key for key in fields if key not in LIVE_MESH_SETTINGS and getattr(new.mesh, key) != getattr(old.mesh, key)
    ]
    return diff


def applicable(old: MeshConfig, new: MeshConfig) -> MeshConfig:
    """`new` as far as it can run now: its servers and live settings, the rest of `[mesh]` as running."""
    live = {key: getattr(new.mesh, key) for key in LIVE_MESH_SETTINGS}
    return new.model_copy(update={"mesh": old.mesh.model_copy(update=live)})


class Reloader:
    """Reloads the running mesh from its config file; one reload at a time, none once it stops."""

    def __init__(
        self, supervisor: Supervisor, load: Callable[[], MeshConfig], events: EventLog, ports: FollowPorts = _no_ports
    ):
        self.supervisor = supervisor
        self.load = load  # reads and validates the file the mesh was started with (and its overrides)
        self.events = events
        self.ports = ports
        self.closed = False
        self._lock = anyio.Lock()

    def close(self) -> None:
        """The mesh is stopping: later reloads are refused, one under way starts nothing more."""
        self.closed = True

    async def reload(self, why: str) -> ReloadResult:
        async with self._lock:
            try:
                if self.closed:
                    raise ServerBlocked("the mesh is stopping")
                new = await anyio.to_thread.run_sync(self.load)  # file I/O off the event loop
            except (ConfigError, ServerBlocked) as exc:
                result = ReloadResult(refused=str(exc))
                log.warning("%s", summary(result))
                self.events("config_reload_refused", None, by=why, error=str(exc))
                return result
            result = await self._apply(new)
            detail = {k: v for k, v in result.as_dict().items() if k not in ("reloaded", "refused")}
            self.events("config_reloaded", None, by=why, **detail)
            log.info("%s", summary(result))
            return result

    async def _apply(self, new: MeshConfig) -> ReloadResult:
        old = self.supervisor.config
        diff = difference(old, new)
        target = applicable(old, new)
        for name in [*diff.removed, *diff.changed]:
            await self.supervisor.retire(name, "reload")
            if name in diff.removed or not target.wants_dedicated_port(name):
                await self.ports(name, False)
        self.supervisor.config = target  # before anything starts: the API's URLs follow at once
        for name in diff.unchanged:
            if old.wants_dedicated_port(name) != target.wants_dedicated_port(name):  # `dedicated_ports` moved
                await self._follow_port(name, target, diff)
        for name in [*diff.changed, *diff.added]:
            if self.closed:  # a stop signal came in mid-reload: what is left stays down
                diff.failed[name] = "the mesh is stopping"
                continue
            blocked = await self._follow_port(name, target, diff) if target.wants_dedicated_port(name) else None
            try:
                await self.supervisor.enlist(name, target.servers[name], blocked)
            except ServerBlocked as exc:
                diff.failed[name] = str(exc)
        return diff

    async def _follow_port(self, name: str, target: MeshConfig, diff: ReloadResult) -> str | None:
        blocked = await self.ports(name, target.wants_dedicated_port(name))
        if blocked is not None:
            diff.failed[name] = blocked
        return blocked


def summary(result: ReloadResult) -> str:
    """One line for a person: what a reload did, or why it was refused."""
    if result.refused is not None:
        return f"reload refused, the running config is kept: {result.refused}"
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("added", result.added),
            ("removed", result.removed),
            ("changed", result.changed),
        )
        if names
    ]
    line = "reloaded: " + ("; ".join(parts) if parts else "no server changed")
    line += f"; {len(result.unchanged)} unchanged"
    if result.needs_restart:
        line += f"; needs a restart to apply: {', '.join(f'[mesh] {key}' for key in result.needs_restart)}"
    for name, why in result.failed.items():
        line += f"; {name} cannot run: {why}"
    return line


async def watch(path: Path, reloader: Reloader, interval: float = WATCH_INTERVAL) -> None:
    """Reload whenever the file's content changes (its mtime and size looked at every `interval`,
    its content read when they moved). A half-written file is a refused reload; the write that
    completes it is another change, and reloads again."""
    stamp, content = _stamp(path), _content(path)
    while not reloader.closed:
        await anyio.sleep(interval)
        now = _stamp(path)
        if now == stamp:
            continue
        stamp, read = now, _content(path)
        if read is None or read == content:  # gone for a moment (an editor's rename), or only touched
            continue
        content = read
        await reloader.reload(f"watch ({path})")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
