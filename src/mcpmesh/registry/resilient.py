"""A registry that degrades instead of failing: a write SQLite cannot make now (locked past its
busy timeout, disk full, I/O error, read-only) waits in a bounded queue, retried with backoff from
a thread of its own, and reads see it meanwhile; the mesh serves from memory until it catches up."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcpmesh.errors import RegistryUnavailable
from mcpmesh.registry.base import Event, Listing, NewEvent, PortLease
from mcpmesh.registry.sqlite import BUSY_TIMEOUT, SqliteRegistry

MAX_PENDING = 10_000  # writes kept while the registry is out; past it, events are dropped oldest first
RETRY_FIRST = 0.25  # seconds before the first retry; doubled after each failed one
RETRY_MAX = 5.0  # the longest wait between retries (how soon a freed disk or lock is noticed)
BATCH = 500  # queued events written in one transaction when catching up
CLOSE_GRACE = BUSY_TIMEOUT + 1.0  # seconds a stop waits for a retry under way (one attempt, bounded)
# Events that say what a server or a port went through: dropped only when the queue holds nothing else.
KEPT_KINDS = frozenset(
    {"state_changed", "catalog_changed", "port_allocated", "port_released", "port_exhausted"}
    | {"restart_requested", "stop_requested", "start_requested"}
)

log = logging.getLogger("mcpmesh.registry")


@dataclass
class _Write:
    """One queued write: `op` names the SqliteRegistry method (events are queued as append_many)."""

    op: str  # "hold", "release", "put_listing", "append_many", "trim_events"
    args: tuple[Any, ...]
    droppable: int = 0  # 0: never dropped (ports, lists); 1: a kept event; 2: dropped first

    @property
    def size(self) -> int:
        """How many writes it stands for (each event counts)."""
        return len(self.args[0]) if self.op == "append_many" else 1


@dataclass(frozen=True)
class RegistryHealth:
    """What /readyz, /v1/servers and the metrics say of the registry."""

    path: str
    problem: str | None  # SQLite's words for the last failed write, while writes are pending
    pending: int
    write_failures: int  # failed attempts since start
    dropped: int  # queued writes given up to keep the queue bounded

    @property
    def degraded(self) -> bool:
        return self.problem is not None

    @property
    def reason(self) -> str | None:
        if self.problem is None:
            return None
        return f"registry: {self.problem} ({self.path}), {self.pending} writes pending"


class ResilientRegistry:
    """The Registry the mesh uses: SqliteRegistry's, with failed writes queued, retried and seen."""

    def __init__(self, store: SqliteRegistry, limit: int = MAX_PENDING):
        self.store = store
        self.limit = limit
        self._queue: deque[_Write] = deque()
        self._state = threading.Lock()  # guards the queue and counters; never held over SQLite
        self._writing = threading.Lock()  # one write at a time, in queue order
        self._size = 0  # what the queue holds, each event counted
        self._in_flight = 0  # writes at the queue's head the retrier is applying now
        self._problem: str | None = None
        self._failures = 0
        self._dropped = 0
        self._wake = threading.Event()  # set by close: stop waiting to retry
        self._retrier: threading.Thread | None = None

    # -- writes --------------------------------------------------------------------------------
    def hold(self, port: int, holder: str) -> None:
        self._write(_Write("hold", (port, holder, time.time())))

    def release(self, holder: str) -> int | None:
        held = [lease.port for lease in self.leases() if lease.holder == holder and lease.state == "held"]
        self._write(_Write("release", (holder, time.time())))
        return held[0] if held else None

    def put_listing(self, server: str, listing: Listing) -> None:
        self._write(_Write("put_listing", (server, listing)))

    def append(self, kind: str, server: str | None, **detail: Any) -> int:
        self.append_many([(kind, server, time.time(), detail)])
        return 0  # no caller reads the id; a queued event has none yet

    def append_many(self, events: Sequence[NewEvent]) -> None:
        if events:
            kept = all(kind in KEPT_KINDS for kind, *_ in events)
            self._write(_Write("append_many", (list(events),), 1 if kept else 2))

    def trim_events(self, keep: int) -> int:
        removed = self._write(_Write("trim_events", (keep,), 2))
        return removed if isinstance(removed, int) else 0

    def _write(self, write: _Write) -> Any:
        with self._state:
            if self._queue:  # behind others: in order, and never on the event loop while degraded
                self._enqueue(write)
                return None
            self._writing.acquire()
        try:
            return getattr(self.store, write.op)(*write.args)
        except RegistryUnavailable as exc:
            with self._state:
                self._enqueue(write)
                self._failed(exc)
            return None
        finally:
            self._writing.release()

    def _enqueue(self, write: _Write) -> None:
        if write.op == "trim_events" and any(w.op == "trim_events" for w in list(self._queue)[self._in_flight :]):
            return  # one pending trim does what two would
        self._queue.append(write)
        self._size += write.size
        if self._size > self.limit:
            self._shed()

    def _shed(self) -> None:
        """Drop queued events down to 90% of the limit: low-value ones first, oldest first; a
        server's or a port's events only when nothing else is left (ports and lists never)."""
        excess = self._size - self.limit * 9 // 10
        for level in (2, 1):
            head = [self._queue.popleft() for _ in range(self._in_flight)]  # being written: kept
            kept: deque[_Write] = deque(head)
            for write in self._queue:
                if excess > 0 and write.droppable == level:
                    excess -= write.size
                    self._size -= write.size
                    self._dropped += write.size
                else:
                    kept.append(write)
            self._queue = kept
            if excess <= 0:
                break
        log.warning("registry: over %d writes pending, oldest events dropped (%d so far)", self.limit, self._dropped)

    def _failed(self, exc: RegistryUnavailable) -> None:
        self._failures += 1
        if self._problem is None:
            log.warning("registry: %s (%s): serving from memory, writes kept and retried", exc.problem, exc.path)
        self._problem = exc.problem
        if self._retrier is None and not self._wake.is_set():
            self._retrier = threading.Thread(target=self._retry, name="mcpmesh-registry-retry", daemon=True)
            self._retrier.start()

    # -- catching up ---------------------------------------------------------------------------
    def _retry(self) -> None:
        delay = RETRY_FIRST
        while not self._wake.wait(delay):
            if self._catch_up():
                return
            delay = min(delay * 2, RETRY_MAX)

    def _catch_up(self) -> bool:
        """Write what is queued, in order; True once nothing is (the retrier then ends)."""
        while True:
            with self._state:
                if not self._queue:
                    log.warning("registry: writable again (%s), caught up", self.store.path)
                    self._problem, self._retrier = None, None
                    return True
                batch = self._head()
                self._in_flight = len(batch)
            try:
                with self._writing:
                    self._apply(batch)
            except RegistryUnavailable as exc:
                with self._state:
                    self._in_flight = 0
                    self._failures += 1
                    self._problem = exc.problem
                return False
            with self._state:
                for _ in batch:
                    self._size -= self._queue.popleft().size
                self._in_flight = 0

    def _head(self) -> list[_Write]:
        """The next writes to make: the first one, or the run of queued events it starts."""
        batch, events = [self._queue[0]], 0
        for write in list(self._queue)[1:]:
            if batch[0].op != "append_many" or write.op != "append_many" or events >= BATCH:
                break
            batch.append(write)
            events += len(write.args[0])
        return batch

    def _apply(self, batch: list[_Write]) -> None:
        if batch[0].op == "append_many":
            self.store.append_many([event for write in batch for event in write.args[0]])
        else:
            getattr(self.store, batch[0].op)(*batch[0].args)

    # -- reads: what is stored, with what is queued on top -------------------------------------
    # What waits is taken before the file is read: a write the retrier makes in between is then
    # seen twice (each is a "set", so replaying it changes nothing), never missed.
    def leases(self) -> list[PortLease]:
        pending = self._pending("hold", "release")
        rows = {lease.port: lease for lease in self.store.leases()}
        for write in pending:
            if write.op == "hold":
                port, holder, at = write.args
                for other in [p for p, x in rows.items() if x.holder == holder and x.state == "held" and p != port]:
                    del rows[other]
                now = rows.get(port)
                if now is None or now.holder != holder or now.state != "held":
                    rows[port] = PortLease(port, holder, "held", at)
            else:
                holder, at = write.args
                for port, lease in list(rows.items()):
                    if lease.holder == holder and lease.state == "held":
                        rows[port] = PortLease(port, holder, "released", at)
        return [rows[port] for port in sorted(rows)]

    def listings(self, server: str) -> dict[str, Listing]:
        pending = self._pending("put_listing")
        stored = self.store.listings(server)
        for write in pending:
            if write.args[0] == server:
                stored[write.args[1].kind] = write.args[1]
        return stored

    def events(self, after: int = 0, limit: int = 100, server: str | None = None) -> list[Event]:
        """The stored events: queued ones have no id yet and appear once written."""
        return self.store.events(after, limit, server)

    def _pending(self, *ops: str) -> list[_Write]:
        with self._state:
            return [write for write in self._queue if write.op in ops]

    # -- health and stop -----------------------------------------------------------------------
    def health(self) -> RegistryHealth:
        with self._state:
            return RegistryHealth(str(self.store.path), self._problem, self._size, self._failures, self._dropped)

    def close(self) -> None:
        """Stop retrying, make one last bounded attempt at what is queued, and close."""
        self._wake.set()
        retrier = self._retrier
        if retrier is not None:
            retrier.join(CLOSE_GRACE)
            if retrier.is_alive():  # still in SQLite: leave the connection to it (a daemon thread)
                log.warning("registry: stopped with %d writes unwritten", self.health().pending)
                return
        if self._queue and not self._catch_up():
            log.warning("registry: stopped with %d writes unwritten (%s)", self.health().pending, self._problem)
        self.store.close()
