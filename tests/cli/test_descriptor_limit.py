"""`mcpmesh up` raises its soft descriptor limit (RLIMIT_NOFILE) to the hard one at start, so the
connection caps and the servers' pipes are not held to the common soft 1,024."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

LOWERED = 512  # the soft limit `up` is started with


def soft_open_files(pid: int) -> int:
    """The soft "Max open files" of a running process, as the kernel reports it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no Max open files line")


def test_up_raises_its_soft_descriptor_limit_to_the_hard_one(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= LOWERED:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise to")
    config = tmp_path / "mcpmesh.toml"
    config.write_text(f'[mesh]\nport = 0\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    up = subprocess.Popen(
        [sys.executable, "-m", "mcpmesh", "up", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (LOWERED, hard)),  # one syscall, no locks
    )
    try:
        # The limit is raised before the registry is opened: once its file exists, it was.
        registry = tmp_path / "state" / "registry.sqlite3"
        deadline = time.monotonic() + 60  # a deadline for the wait, not a timed assertion
        while not registry.exists() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert registry.exists() and up.poll() is None
        assert soft_open_files(up.pid) == hard
    finally:
        up.terminate()
        up.wait(timeout=30)
