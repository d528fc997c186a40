"""The embedded registry: SQLite under state_dir. The only module that speaks SQL.

One writer: every write runs under one lock in its own `BEGIN IMMEDIATE` transaction, so two mesh
processes on one state_dir serialize instead of corrupting each other. Reads go through a second
connection, so under WAL they never wait for a write (another process's lock included). Reads and
writes are short (a row or a page); callers on the event loop may call them directly. SQLite's and
the OS's errors leave here as RegistryUnusable (at open) or RegistryUnavailable (later).
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from mcpmesh.errors import RegistryUnavailable, RegistryUnusable
from mcpmesh.registry.base import Event, Listing, NewEvent, PortLease

SCHEMA_VERSION = 2
MIGRATIONS = {
    1: """
    CREATE TABLE ports (
        port   INTEGER PRIMARY KEY,
        holder TEXT    NOT NULL,   -- the server name it belongs (or last belonged) to
        state  TEXT    NOT NULL CHECK (state IN ('held', 'released')),
        since  REAL    NOT NULL    -- when it entered that state (unix time)
    );
    CREATE UNIQUE INDEX ports_one_per_holder ON ports (holder) WHERE state = 'held';
    CREATE TABLE events (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at     REAL    NOT NULL,
        server TEXT,
        kind   TEXT    NOT NULL,
        detail BLOB    NOT NULL    -- JSON object
    );
    CREATE INDEX events_by_server ON events (server, id);
    """,
    2: """
    CREATE TABLE listings (
        server TEXT NOT NULL,
        kind   TEXT NOT NULL CHECK (kind IN ('tools', 'prompts', 'resources')),
        hash   TEXT NOT NULL,      -- fingerprint of the whole list as the server returned it
        names  BLOB NOT NULL,      -- JSON array of tool/prompt names or resource uris
        at     REAL NOT NULL,      -- when this content was first seen
        PRIMARY KEY (server, kind)
    );
    """,
}
# Seconds a write waits for another process holding the database. Another mesh's writes take
# milliseconds; a lock held longer makes the write wait in ResilientRegistry's queue (retried off the
# event loop) rather than stall the loop, so this bounds the one stall that tells us.
BUSY_TIMEOUT = 1.0
MOVE_ASIDE = "move it aside (or delete it) to start afresh"
MAKE_WRITABLE = "make it and its directory writable, or set [mesh] state_dir to a directory mcpmesh may write"


class SqliteRegistry:
    """Port leases and the event log in one SQLite file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()  # the writer's
        self._read_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            self._reader = self._connect()
            self._migrate()
        except (sqlite3.Error, OSError, RegistryUnavailable) as exc:
            raise unusable(self.path, exc) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # setting it takes a write lock: only once
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                finally:
                    if self._db.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                        self._db.execute("ROLLBACK")
            except (sqlite3.Error, OSError) as exc:
                raise RegistryUnavailable(str(self.path), str(exc)) from exc

    def _read(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._read_lock:
            try:
                return self._reader.execute(query, args).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise RegistryUnavailable(str(self.path), str(exc)) from exc

    def _migrate(self) -> None:
        """Bring the schema up to date; a current one is only read (so a held lock does not stop a start)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            newer = f"has schema {version}, newer than this mcpmesh's ({SCHEMA_VERSION})"
            raise RegistryUnusable(str(self.path), newer, "upgrade mcpmesh, or set [mesh] state_dir elsewhere")
        if version == SCHEMA_VERSION:
            return
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {step}")

    # -- ports -------------------------------------------------------------------------------
    def leases(self) -> list[PortLease]:
        rows = self._read("SELECT port, holder, state, since FROM ports ORDER BY port")
        return [PortLease(*row) for row in rows]

    def hold(self, port: int, holder: str, at: float | None = None) -> None:
        """Record that `holder` holds `port` (replacing whatever the row said), since `at` (now)."""
        with self._write() as db:
            db.execute("DELETE FROM ports WHERE holder = ? AND state = 'held' AND port != ?", (holder, port))
            db.execute(
                "INSERT INTO ports (port, holder, state, since) VALUES (?, ?, 'held', ?) "
                "ON CONFLICT (port) DO UPDATE SET holder = excluded.holder, state = 'held', since = excluded.since "
                "WHERE ports.holder != excluded.holder OR ports.state != 'held'",
                (port, holder, time.time() if at is None else at),
            )

    def release(self, holder: str, at: float | None = None) -> int | None:
        """Mark the holder's port released (its grace period starts at `at`, now); the port, if it had one."""
        with self._write() as db:
            row = db.execute("SELECT port FROM ports WHERE holder = ? AND state = 'held'", (holder,)).fetchone()
            if row is None:
                return None
            since = time.time() if at is None else at
            db.execute("UPDATE ports SET state = 'released', since = ? WHERE port = ?", (since, row[0]))
            return int(row[0])

    # -- catalogs ----------------------------------------------------------------------------
    def put_listing(self, server: str, listing: Listing) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO listings (server, kind, hash, names, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (server, kind) DO UPDATE "
                "SET hash = excluded.hash, names = excluded.names, at = excluded.at",
                (server, listing.kind, listing.hash, orjson.dumps(listing.names), listing.at),
            )

    def listings(self, server: str) -> dict[str, Listing]:
        rows = self._read("SELECT kind, hash, names, at FROM listings WHERE server = ?", (server,))
        return {kind: Listing(kind, digest, tuple(orjson.loads(names)), at) for kind, digest, names, at in rows}

    # -- events ------------------------------------------------------------------------------
    def append(self, kind: str, server: str | None, **detail: Any) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO events (at, server, kind, detail) VALUES (?, ?, ?, ?)",
                (time.time(), server, kind, orjson.dumps(detail)),
            )
            return int(cursor.lastrowid or 0)

    def append_many(self, events: Sequence[NewEvent]) -> None:
        """Several events in one transaction (the audit trail's batches)."""
        rows = [(at, server, kind, orjson.dumps(detail)) for kind, server, at, detail in events]
        with self._write() as db:
            db.executemany("INSERT INTO events (at, server, kind, detail) VALUES (?, ?, ?, ?)", rows)

    def events(self, after: int = 0, limit: int = 100, server: str | None = None) -> list[Event]:
        """Events with id > after, oldest first (page with the last id seen)."""
        query = "SELECT id, at, server, kind, detail FROM events WHERE id > ?"
        args: list[Any] = [after]
        if server is not None:
            query += " AND server = ?"
            args.append(server)
        query += " ORDER BY id LIMIT ?"
        args.append(limit)
        rows = self._read(query, args)
        return [Event(id, at, srv, kind, orjson.loads(detail)) for id, at, srv, kind, detail in rows]

    def trim_events(self, keep: int) -> int:
        """Keep only the newest `keep` events (retention); how many were removed."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,))
            return cursor.rowcount


def unusable(path: Path, exc: BaseException) -> RegistryUnusable:
    """What opening the registry failed on, said as the one line `mcpmesh up` prints."""
    cause = exc.__cause__ if isinstance(exc, RegistryUnavailable) and exc.__cause__ is not None else exc
    if isinstance(cause, RegistryUnusable):
        return cause
    name = getattr(cause, "sqlite_errorname", "")
    text = (cause.strerror if isinstance(cause, OSError) else None) or str(cause)
    where = str(path)
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return RegistryUnusable(where, f"is not a SQLite database ({text})", MOVE_ASIDE)
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        remedy = "stop the program holding it (another mcpmesh on this state_dir?) and start again"
        return RegistryUnusable(where, f"is locked by another program ({text})", remedy)
    if name == "SQLITE_FULL" or getattr(cause, "errno", None) == errno.ENOSPC:
        return RegistryUnusable(where, f"cannot be written ({text})", f"free space on the disk of {path.parent}")
    return RegistryUnusable(where, f"cannot be opened for writing ({text})", MAKE_WRITABLE)
