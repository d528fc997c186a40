"""The embedded registry: SQLite under state_dir. The only module that speaks SQL.

One connection, one writer: every statement runs under one lock, each write in its own
`BEGIN IMMEDIATE` transaction, so two mesh processes on one state_dir serialize instead of
corrupting each other. Reads and writes are short (a row or a page); callers on the event loop
may call them directly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

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
BUSY_TIMEOUT = 5.0  # seconds a writer waits for another process holding the database


class SqliteRegistry:
    """Port leases and the event log in one SQLite file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema {version}, newer than this mcpmesh ({SCHEMA_VERSION})")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {step}")

    # -- ports -------------------------------------------------------------------------------
    def leases(self) -> list[PortLease]:
        with self._lock:
            rows = self._db.execute("SELECT port, holder, state, since FROM ports ORDER BY port").fetchall()
        return [PortLease(*row) for row in rows]

    def hold(self, port: int, holder: str) -> None:
        """Record that `holder` holds `port` (replacing whatever the row said)."""
        with self._write() as db:
            db.execute("DELETE FROM ports WHERE holder = ? AND state = 'held' AND port != ?", (holder, port))
            db.execute(
                "INSERT INTO ports (port, holder, state, since) VALUES (?, ?, 'held', ?) "
                "ON CONFLICT (port) DO UPDATE SET holder = excluded.holder, state = 'held', since = excluded.since "
                "WHERE ports.holder != excluded.holder OR ports.state != 'held'",
                (port, holder, time.time()),
            )

    def release(self, holder: str) -> int | None:
        """Mark the holder's port released (its grace period starts now); the port, if it had one."""
        with self._write() as db:
            row = db.execute("SELECT port FROM ports WHERE holder = ? AND state = 'held'", (holder,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE ports SET state = 'released', since = ? WHERE port = ?", (time.time(), row[0]))
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
        with self._lock:
            query = "SELECT kind, hash, names, at FROM listings WHERE server = ?"
            rows = self._db.execute(query, (server,)).fetchall()
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
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [Event(id, at, srv, kind, orjson.loads(detail)) for id, at, srv, kind, detail in rows]

    def trim_events(self, keep: int) -> int:
        """Keep only the newest `keep` events (retention); how many were removed."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,))
            return cursor.rowcount
