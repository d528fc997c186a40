"""The client commands find the running mesh without --config: `up` writes where it listens into
state_dir, and `status`, `ports`, `validate`... find it from the working directory or a parent, as
after `scripts/demo` (which runs `up --config examples/mcpmesh.toml` from the repository's root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcpmesh.cli.locate import MESH_FILE, announce, locate, withdraw
from mcpmesh.config import load_config
from mcpmesh.errors import MeshNotFound
from tests.cli.test_shutdown import free_port, toml_value
from tests.conftest import time_server

MCPMESH = str(Path(sys.executable).parent / "mcpmesh")
STARTUP_BOUND = 60.0


def write_demo_like_config(project: Path, port: int) -> Path:
    """A config in a subfolder (like examples/mcpmesh.toml) whose state_dir is relative to cwd."""
    config = project / "examples" / "mesh.toml"
    config.parent.mkdir(parents=True)
    server = time_server()
    lines = ["[mesh]", 'host = "127.0.0.1"', f"port = {port}", 'state_dir = ".mcpmesh"', 'ports = "11960-11969"', ""]
    lines += ["[servers.time]", *(f"{key} = {inline(value)}" for key, value in server.items())]
    config.write_text("\n".join(lines) + "\n")
    return config


def inline(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return toml_value(value)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MCPMESH_URL"} | (env or {})
    return subprocess.run([MCPMESH, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60)


@pytest.fixture
def demo_mesh(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    port = free_port()
    config = write_demo_like_config(tmp_path, port)
    proc = subprocess.Popen([MCPMESH, "up", "--config", str(config)], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_BOUND
        while time.monotonic() < deadline:
            try:
                servers = httpx.get(f"http://127.0.0.1:{port}/v1/servers", timeout=2).json()["servers"]
                if servers and all(s["state"] == "healthy" for s in servers):
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "mcpmesh up exited"
            time.sleep(0.2)
        else:
            pytest.fail("the mesh did not become healthy")
        yield tmp_path, port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_commands_find_the_running_mesh_from_its_directory_and_below_without_a_config(
    demo_mesh: tuple[Path, int, subprocess.Popen[bytes]],
) -> None:
    project, port, proc = demo_mesh
    record = json.loads((project / ".mcpmesh" / MESH_FILE).read_text())
    assert record["url"] == f"http://127.0.0.1:{port}" and record["pid"] == proc.pid
    below = project / "src" / "deep"
    below.mkdir(parents=True)
    for cwd in (project, below):
        status = run("status", "--json", cwd=cwd)
        assert status.returncode == 0, status.stderr
        assert [s["name"] for s in json.loads(status.stdout)] == ["time"]
        ports = run("ports", "--json", cwd=cwd)
        assert ports.returncode == 0, ports.stderr
        assert json.loads(ports.stdout)["range"] == "11960-11969"
        validate = run("validate", cwd=cwd)
        assert validate.returncode == 0, validate.stdout + validate.stderr


def test_a_stopped_mesh_takes_its_address_away_and_the_commands_say_none_runs(
    demo_mesh: tuple[Path, int, subprocess.Popen[bytes]],
) -> None:
    project, _, proc = demo_mesh
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not (project / ".mcpmesh" / MESH_FILE).exists()
    status = run("status", cwd=project)
    assert status.returncode == 2
    assert "no running mesh found from" in status.stderr and "MCPMESH_URL" in status.stderr


def test_mcpmesh_url_names_the_mesh_from_anywhere(
    demo_mesh: tuple[Path, int, subprocess.Popen[bytes]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, port, _ = demo_mesh
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    status = run("status", "--json", cwd=elsewhere, env={"MCPMESH_URL": f"http://127.0.0.1:{port}/"})
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)[0]["name"] == "time"


def test_an_address_left_by_a_killed_mesh_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_demo_like_config(tmp_path, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = tmp_path / ".mcpmesh"
    state.mkdir()
    url = "http://127.0.0.1:9"
    record = {"url": url, "pid": dead.pid, "state_dir": str(state), "ports": "1-2"}
    (state / MESH_FILE).write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MeshNotFound):
        locate(None, None, tmp_path)
    # With the config named, its own host and port are what is left.
    assert locate(None, str(config), tmp_path).url == "http://127.0.0.1:1"


def test_withdraw_leaves_the_address_of_a_newer_mesh_on_the_same_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = write_demo_like_config(tmp_path, 4242)
    monkeypatch.chdir(tmp_path)
    path = announce(load_config(str(config_path)), str(config_path))
    assert locate(None, None, tmp_path / "examples").url == "http://127.0.0.1:4242"
    newer = json.loads(path.read_text()) | {"pid": os.getppid()}
    path.write_text(json.dumps(newer))
    withdraw(path)
    assert path.exists()
    newer["pid"] = os.getpid()
    path.write_text(json.dumps(newer))
    withdraw(path)
    assert not path.exists()
