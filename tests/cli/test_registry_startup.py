"""`mcpmesh up` with a registry it cannot use says so in one line naming the file and what to do,
exits 2, spawns no server and prints no traceback: a corrupt file, a read-only state_dir."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpmesh.registry.sqlite import SqliteRegistry
from tests.cli.test_shutdown import free_port
from tests.cli.test_startup import up_with_marked_server


def up(tmp_path: Path, state_dir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run `mcpmesh up` on state_dir with one server that leaves a mark when spawned."""
    return up_with_marked_server(tmp_path, free_port(), state_dir)


def assert_one_line_error(done: subprocess.CompletedProcess[str], marker: Path, line: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [line]
    assert not marker.exists(), "a server was spawned with no usable registry"


def test_a_corrupt_registry_file_is_one_line_naming_it_and_what_to_do(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    registry = state / "registry.sqlite3"
    registry.write_bytes(b"\x13\x37 not a database " * 300)
    done, marker = up(tmp_path, state)
    expected = f"error: {registry} is not a SQLite database (file is not a database): move it aside (or delete it)"
    assert_one_line_error(done, marker, expected + " to start afresh")
    assert registry.read_bytes().startswith(b"\x13\x37 not a database ")  # left as it was, for the operator
    ports = subprocess.run(
        [sys.executable, "-m", "mcpmesh", "ports", "--config", str(tmp_path / "mcpmesh.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},  # the line unfolded
    )
    assert ports.returncode == 2 and "Traceback" not in ports.stderr, ports.stderr
    assert ports.stdout.strip().splitlines() == [expected + " to start afresh"]


@contextlib.contextmanager
def read_only_mount(where: Path) -> Iterator[None]:
    """`where` as a read-only tmpfs: root ignores file modes, so only a read-only mount is honest here."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)


WRITABLE = "make it and its directory writable, or set [mesh] state_dir to a directory mcpmesh may write"


def test_a_read_only_state_dir_with_a_registry_is_one_line_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with read_only_mount(state):
        SqliteRegistry(state / "registry.sqlite3").close()  # a registry from an earlier run
        remount_read_only(state)
        done, marker = up(tmp_path, state)
        line = f"error: {state / 'registry.sqlite3'} cannot be opened for writing (unable to open database file): "
        assert_one_line_error(done, marker, line + WRITABLE)


def test_a_state_dir_that_cannot_be_created_is_one_line_naming_the_registry(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    with read_only_mount(mount):
        remount_read_only(mount)
        state = mount / "state"
        done, marker = up(tmp_path, state)
        line = f"error: {state / 'registry.sqlite3'} cannot be opened for writing (Read-only file system): "
        assert_one_line_error(done, marker, line + WRITABLE)
