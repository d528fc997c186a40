"""`mcpmesh up` as users run it, reloaded by SIGHUP and by `--watch` following its file: the mesh
keeps running, applies what changed, and refuses a broken file while keeping the old config."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_shutdown import free_port
from tests.conftest import PYTHON, conformance_server
from tests.supervision.test_reload import write_config

DEADLINE = 60.0  # seconds for the mesh (or a reload) to show what the test waits for
EXIT_BOUND = 30.0


class Up:
    """A real `mcpmesh up` subprocess on its own port, and its config file."""

    def __init__(self, tmp_path: Path, *extra: str):
        self.port = free_port()
        self.config = tmp_path / "mcpmesh.toml"
        self.state = tmp_path / "state"
        self.write({"first": conformance_server()})
        self.stderr = tmp_path / "stderr.txt"
        with open(tmp_path / "stdout.txt", "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "mcpmesh", "up", "--config", str(self.config), *extra],
                cwd=tmp_path,
                stdout=out,
                stderr=err,
            )

    def write(self, servers: dict[str, dict[str, Any]]) -> None:
        write_config(self.config, servers, host="127.0.0.1", port=self.port, state_dir=self.state)

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str) -> Any:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as http:
            return http.get(path, params={"limit": 1000}).json()

    def servers(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.get("/v1/servers")["servers"]}

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e["detail"] for e in self.get("/v1/events")["events"] if e["kind"] == kind]

    def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        """Until `check()` holds (the mesh running all along), within DEADLINE."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mcpmesh exited:\n{self.log()}"
            try:
                if check():
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {DEADLINE:g}s\n{self.log()}")

    def healthy(self, *names: str) -> dict[str, dict[str, Any]]:
        self.wait_for(
            f"{names} healthy",
            lambda: {n: s["state"] for n, s in self.servers().items()} == dict.fromkeys(names, "healthy"),
        )
        return self.servers()


@pytest.fixture
def up(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Up]:
    running = Up(tmp_path, *getattr(request, "param", ()))
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(timeout=10)


def test_sighup_reloads_the_file_and_does_not_stop_the_mesh(up: Up) -> None:
    first = up.healthy("first")["first"]["pid"]
    up.write({"first": conformance_server(), "second": conformance_server()})
    os.kill(up.proc.pid, signal.SIGHUP)
    servers = up.healthy("first", "second")
    assert servers["first"]["pid"] == first
    [reloaded] = up.events("config_reloaded")
    assert reloaded["added"] == ["second"] and reloaded["by"] == "SIGHUP"

    good = up.config.read_text()
    up.config.write_text(good + "[servers.broken\n")  # a syntax error
    os.kill(up.proc.pid, signal.SIGHUP)
    up.wait_for("the refusal recorded", lambda: len(up.events("config_reload_refused")) == 1)
    [refused] = up.events("config_reload_refused")
    assert refused["error"].startswith(f"{up.config}: invalid TOML"), refused
    assert {n: s["pid"] for n, s in up.servers().items()} == {n: s["pid"] for n, s in servers.items()}
    assert "reload refused, the running config is kept" in up.log()

    up.proc.send_signal(signal.SIGTERM)  # and a stop signal still stops it
    assert up.proc.wait(timeout=EXIT_BOUND) == 0, up.log()


@pytest.mark.parametrize("up", [("--watch",)], indirect=True)
def test_watch_reloads_on_an_edit_and_retries_after_a_half_written_file(up: Up) -> None:
    first = up.healthy("first")["first"]["pid"]
    good = up.config.read_text()
    up.config.write_text(good[: good.index("[servers.first]") + len("[servers.fi")])  # cut mid-write
    up.wait_for("the half-written file refused", lambda: len(up.events("config_reload_refused")) == 1)
    assert up.servers()["first"]["pid"] == first  # the old config runs on

    up.write({"first": conformance_server(), "second": conformance_server()})  # the write completed
    servers = up.healthy("first", "second")
    assert servers["first"]["pid"] == first
    [reloaded] = up.events("config_reloaded")
    assert reloaded["added"] == ["second"] and reloaded["by"].startswith("watch")
