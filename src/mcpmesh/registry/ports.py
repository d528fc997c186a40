"""The port pool: a bounded range, one port per server name, kept across restarts.

Allocation is idempotent per name and persistent (the registry remembers it); a port is
bind-tested before it is handed out, and one another program holds is skipped and reported;
a released port waits out a grace period before anyone else gets it; a full range is an error
that names the range, its size and who holds what.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass

from mcpmesh.errors import PortPoolExhausted
from mcpmesh.registry.base import PortLease, Registry

DEFAULT_RELEASE_GRACE = 600.0  # seconds a released port rests before another server may take it


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """`"11100-11199"` (inclusive); raises ValueError with what is wrong."""
        first, sep, last = text.partition("-")
        if not sep or not first.strip().isdigit() or not last.strip().isdigit():
            raise ValueError(f"expected FIRST-LAST, such as 11100-11199, got {text!r}")
        span = cls(int(first), int(last))
        if not 1 <= span.first <= span.last <= 65535:
            raise ValueError(f"expected 1 <= FIRST <= LAST <= 65535, got {text!r}")
        return span

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


class PortPool:
    def __init__(self, registry: Registry, span: PortRange, host: str, grace: float = DEFAULT_RELEASE_GRACE):
        self.registry = registry
        self.span = span
        self.host = host
        self.grace = grace
        self.serving: dict[str, int] = {}  # ports this process listens on now, by holder
        self.foreign: dict[int, str] = {}  # ports found taken by another program, and by whom

    def allocate(self, name: str) -> int:
        """The port for `name`: its own again if it has one, else the first usable one."""
        if name in self.serving:
            return self.serving[name]
        leases = self.registry.leases()
        for lease in _own_first(leases, name):
            if lease.port in self.span and self._usable(lease.port):
                self.registry.hold(lease.port, name)
                return lease.port
        taken = {lease.port: lease for lease in leases if lease.holder != name and self._resting(lease)}
        for port in range(self.span.first, self.span.last + 1):
            if port not in taken and self._usable(port):
                self.registry.hold(port, name)
                return port
        raise PortPoolExhausted(self._exhausted(name))

    def serve(self, name: str, port: int) -> None:
        """Note that this process now listens on `port` for `name` (so asking again is free)."""
        self.serving[name] = port

    def release(self, name: str) -> int | None:
        self.serving.pop(name, None)
        return self.registry.release(name)

    def release_all_but(self, names: set[str]) -> list[tuple[str, int]]:
        """Release the ports of servers no longer configured; what was released."""
        gone = [(lease.holder, lease.port) for lease in self.registry.leases() if lease.state == "held"]
        released = []
        for holder, port in gone:
            if holder not in names:
                self.release(holder)
                released.append((holder, port))
        return released

    def usage(self) -> tuple[int, int]:
        """(size of the range, ports held in it)."""
        held = sum(1 for lease in self.registry.leases() if lease.state == "held" and lease.port in self.span)
        return self.span.size, held

    def _resting(self, lease: PortLease) -> bool:
        return lease.state == "held" or time.time() - lease.since < self.grace

    def _usable(self, port: int) -> bool:
        holder = _listener_of(self.host, port)
        if holder is None:
            self.foreign.pop(port, None)
            return True
        self.foreign[port] = holder
        return False

    def _exhausted(self, name: str) -> str:
        holders = {lease.port: lease for lease in self.registry.leases()}
        parts = []
        for port in range(self.span.first, self.span.last + 1):
            if port in self.foreign:
                parts.append(f"{port}: {self.foreign[port]}")
            elif port in holders:
                lease = holders[port]
                parts.append(f"{port}: {lease.holder} ({lease.state})")
        shown = "; ".join(parts[:10]) + (f"; and {len(parts) - 10} more" if len(parts) > 10 else "")
        return f"no free port for {name!r} in range {self.span} ({self.span.size} ports): {shown}"


def _own_first(leases: list[PortLease], name: str) -> list[PortLease]:
    """The name's own leases, the held one first, then released ones, most recent first."""
    own = [lease for lease in leases if lease.holder == name]
    return sorted(own, key=lambda lease: (lease.state != "held", -lease.since))


def _listener_of(host: str, port: int) -> str | None:
    """None if `port` can be bound on `host` now; else who holds it, as far as the OS tells."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "held"
        try:
            probe.bind((host, port))
        except OSError:
            return describe_holder(port)
    return None


def describe_holder(port: int) -> str:
    """'pid 123 (nginx -g ...)' for the process listening on port, from /proc (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")) if inodes else ():
        if any(link[8:-1] in inodes for link in _socket_links(pid)):
            return f"pid {pid} ({_cmdline(pid)})"
    return "another program" if inodes else "unknown (bind refused)"


def _socket_links(pid: str) -> list[str]:
    """The `socket:[inode]` targets of a process's fds (those we may read; fds come and go)."""
    links = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    links.append(target)
    return links


def _cmdline(pid: str) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80] or "?"
    return "?"
