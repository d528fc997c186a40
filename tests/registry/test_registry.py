"""The SQLite registry and the port pool: persistence, idempotence, foreign holders, grace, exhaustion."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpmesh.errors import PortPoolExhausted
from mcpmesh.registry.ports import PortPool, PortRange
from mcpmesh.registry.sqlite import SCHEMA_VERSION, SqliteRegistry

HOST = "127.0.0.1"
SPAN = PortRange(23100, 23119)  # below Linux's ephemeral range, so outgoing connections do not collide


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state" / "registry.sqlite3"


def pool(path: Path, grace: float = 600.0, span: PortRange = SPAN) -> PortPool:
    return PortPool(SqliteRegistry(path), span, HOST, grace)


def test_a_new_registry_is_migrated_and_reopening_keeps_its_data(db: Path) -> None:
    first = SqliteRegistry(db)
    first.append("spawned", "time", pid=1)
    first.hold(23100, "time")
    first.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again = SqliteRegistry(db)
    assert [(e.kind, e.server, e.detail) for e in again.events()] == [("spawned", "time", {"pid": 1})]
    assert [(lease.port, lease.holder, lease.state) for lease in again.leases()] == [(23100, "time", "held")]


def test_events_page_by_id_filter_by_server_and_trim_to_the_newest(db: Path) -> None:
    registry = SqliteRegistry(db)
    ids = [registry.append("tick", "a" if n % 2 else "b", n=n) for n in range(10)]
    first_page = registry.events(limit=4)
    assert [e.detail["n"] for e in first_page] == [0, 1, 2, 3]
    assert [e.detail["n"] for e in registry.events(after=first_page[-1].id, limit=4)] == [4, 5, 6, 7]
    assert [e.detail["n"] for e in registry.events(server="a")] == [1, 3, 5, 7, 9]
    assert registry.trim_events(keep=3) == 7
    assert [e.id for e in registry.events()] == ids[-3:]


def test_allocation_is_idempotent_and_survives_a_restart(db: Path) -> None:
    ports = pool(db)
    time_port = ports.allocate("time")
    assert ports.allocate("time") == time_port
    everything_port = ports.allocate("everything")
    assert everything_port != time_port
    reopened = pool(db)  # the gateway restarts (or the machine reboots): same file, fresh objects
    assert reopened.allocate("everything") == everything_port
    assert reopened.allocate("time") == time_port


def test_a_port_held_by_another_program_is_skipped_and_reported(db: Path) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((HOST, SPAN.first))
        squatter.listen()
        ports = pool(db)
        assert ports.allocate("time") == SPAN.first + 1
        assert ports.foreign[SPAN.first] == f"pid {os.getpid()} ({_own_cmdline()})"


def _own_cmdline() -> str:
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]


def test_a_server_whose_port_was_taken_while_it_was_down_moves_and_gets_it_back_later(db: Path) -> None:
    assert pool(db).allocate("time") == SPAN.first
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((HOST, SPAN.first))
        squatter.listen()
        assert pool(db).allocate("time") == SPAN.first + 1


def test_a_released_port_rests_for_the_grace_period_except_for_its_own_server(db: Path) -> None:
    ports = pool(db, grace=3600)
    port = ports.allocate("old")
    assert ports.release("old") == port
    assert ports.allocate("new") != port  # still resting
    assert ports.allocate("old") == port  # its own server may come back to it
    ports.release("old")
    assert pool(db, grace=0).allocate("newer") == port  # grace over


def test_a_full_range_is_an_error_naming_the_range_its_size_and_the_holders(db: Path) -> None:
    ports = pool(db, span=PortRange(23100, 23102))
    for name in ("a", "b", "c"):
        ports.allocate(name)
    with pytest.raises(PortPoolExhausted) as caught:
        ports.allocate("d")
    message = str(caught.value)
    assert "range 23100-23102 (3 ports)" in message
    assert "23100: a (held)" in message and "23102: c (held)" in message
    assert ports.usage() == (3, 3)


def test_servers_removed_from_the_config_release_their_ports(db: Path) -> None:
    ports = pool(db)
    for name in ("keep", "drop"):
        ports.allocate(name)
    assert ports.release_all_but({"keep"}) == [("drop", SPAN.first + 1)]
    assert {(lease.holder, lease.state) for lease in ports.registry.leases()} == {
        ("keep", "held"),
        ("drop", "released"),
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_ten_thousand_random_operations_leak_no_port_and_hold_none_twice(db: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"s{n}" for n in range(30)]  # more names than ports: exhaustion happens too
    ports = pool(db, grace=0)
    expected: dict[str, int] = {}  # what each name holds, as the operations say it should
    for _ in range(10_000):
        name, op = rng.choice(names), rng.random()
        if op < 0.55:
            try:
                port = ports.allocate(name)
            except PortPoolExhausted:
                assert len(expected) == SPAN.size and name not in expected
                continue
            assert expected.setdefault(name, port) == port  # idempotent
        elif op < 0.95:
            assert ports.release(name) == expected.pop(name, None)
        else:
            ports = pool(db, grace=0)  # restart
        held = [lease for lease in ports.registry.leases() if lease.state == "held"]
        assert {lease.holder: lease.port for lease in held} == expected
        assert len({lease.port for lease in held}) == len(held)
        assert all(lease.port in SPAN for lease in held)
