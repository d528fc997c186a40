"""`mcpmesh up` run as users run it, stopped by each signal a terminal or service manager sends:
every process it started (wrappers, their children, a child that left the process group) ends with it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backend.test_process import FAULTY, Proc, descendants, kill_survivors, survivors, wait_gone_sync
from tests.conftest import NODE_MODULES, PYTHON, everything_server, node_module

STARTUP_BOUND = 60.0  # seconds for every server to be healthy (npx starts in about one)
EXIT_BOUND = 30.0  # seconds for mcpmesh to exit after the signal
PROTOCOL = "2025-06-18"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def npx_everything() -> dict[str, Any]:
    """server-everything behind a real wrapper (npx -> npm exec -> sh -> node), offline."""
    node_module("@modelcontextprotocol", "server-everything", "dist", "index.js")  # fails when not installed
    if shutil.which("npx") is None:
        return everything_server()
    return {"command": "npx", "args": ["--offline", "mcp-server-everything", "stdio"], "cwd": str(NODE_MODULES.parent)}


def toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    return str(value)


def write_config(path: Path, port: int) -> None:
    servers = {
        # A wrapper like npx/uvx: `sh` is the server mcpmesh starts; the MCP server is its child
        # (`; exit $?` keeps sh from exec'ing it) and starts a child of its own.
        "wrapped": {"command": "sh", "args": ["-c", f"{shlex.join([PYTHON, FAULTY, '--spawn-grandchild'])}; exit $?"]},
        "npx": npx_everything(),
        "daemonizing": {"command": PYTHON, "args": [FAULTY, "--setsid-grandchild"]},
    }
    lines = ["[mesh]", 'host = "127.0.0.1"', f"port = {port}", f"state_dir = {toml_value(str(path.parent / 'state'))}"]
    for name, table in servers.items():
        lines += ["", f"[servers.{name}]", *(f"{key} = {toml_value(value)}" for key, value in table.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class Mesh:
    proc: subprocess.Popen[bytes]
    port: int
    stderr: Path
    tree: dict[int, Proc] = field(default_factory=dict)  # what the test recorded, for cleanup

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    port = free_port()
    config = tmp_path / "mcpmesh.toml"
    write_config(config, port)
    stderr = tmp_path / "stderr.txt"
    with open(tmp_path / "stdout.txt", "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [PYTHON, "-m", "mcpmesh", "up", "--config", str(config)], cwd=tmp_path, stdout=out, stderr=err
        )
    running = Mesh(proc, port, stderr)
    try:
        yield running
    finally:  # a failed test must not leave the mesh or its servers behind
        tree = dict(running.tree)
        if proc.poll() is None:
            tree |= descendants(proc.pid)
            proc.kill()
            proc.wait(timeout=10)
        kill_survivors(tree.values())


def wait_healthy(mesh: Mesh) -> dict[str, str]:
    deadline = time.monotonic() + STARTUP_BOUND
    servers: dict[str, str] = {}
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            assert mesh.proc.poll() is None, f"mcpmesh exited early:\n{mesh.log()}"
            try:
                servers = http.get(f"{mesh.base_url}/healthz").json()["servers"]
            except httpx.TransportError:
                servers = {}  # not listening yet
            if servers and set(servers.values()) == {"healthy"}:
                return servers
            time.sleep(0.1)
    raise AssertionError(f"not all healthy within {STARTUP_BOUND:g}s: {servers}\n{mesh.log()}")


def depth(proc: Proc, root: int, tree: dict[int, Proc]) -> int:
    level, parent = 1, proc.ppid
    while parent != root:
        level, parent = level + 1, tree[parent].ppid
    return level


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)  # SIGHUP reloads
def test_a_signal_stops_mcpmesh_cleanly_and_every_process_it_started(mesh: Mesh, sig: signal.Signals) -> None:
    assert wait_healthy(mesh) == {"wrapped": "healthy", "npx": "healthy", "daemonizing": "healthy"}
    tree = mesh.tree = descendants(mesh.proc.pid)

    # The tree is what this test is about: wrappers' children, grandchildren, one out of the group.
    direct = [p for p in tree.values() if p.ppid == mesh.proc.pid]
    assert len(direct) == 3, tree
    sleepers = [p for p in tree.values() if p.comm == "sleep"]
    assert len(sleepers) == 2, tree
    assert any(p.sid == p.pid for p in sleepers), "the daemonizing server's child must have left its session"
    assert any(depth(p, mesh.proc.pid, tree) >= 3 for p in sleepers), "the wrapped server's child must be nested"
    assert max(depth(p, mesh.proc.pid, tree) for p in tree.values()) >= 3

    os.kill(mesh.proc.pid, sig)
    code = mesh.proc.wait(timeout=EXIT_BOUND)

    log = mesh.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    assert wait_gone_sync(tree.values()) == [], f"outlived mcpmesh: {survivors(tree.values())}"


def stop_with_clients_connected(mesh: Mesh) -> int:
    """SIGTERM while one client has a call in flight and is listening on its GET stream."""
    wait_healthy(mesh)
    mesh.tree = descendants(mesh.proc.pid)
    url = f"{mesh.base_url}/servers/wrapped/mcp"
    init = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    with httpx.Client(timeout=EXIT_BOUND) as http:
        reply = http.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}, headers=HEADERS
        )
        headers = {**HEADERS, "Mcp-Session-Id": reply.headers["mcp-session-id"], "MCP-Protocol-Version": PROTOCOL}
        initialized = http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        assert initialized.status_code == 202
    hang = {"name": "hang", "arguments": {}, "_meta": {"progressToken": "t"}}
    in_flight = StreamHolder(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": hang}, headers)
    listening = StreamHolder(url, None, headers)  # the standalone GET stream every SDK client opens
    assert in_flight.reached.wait(EXIT_BOUND) and listening.reached.wait(EXIT_BOUND)
    assert in_flight.events[0]["method"] == "notifications/progress"  # the call is on the server

    os.kill(mesh.proc.pid, signal.SIGTERM)
    code = mesh.proc.wait(timeout=EXIT_BOUND)
    for holder in (in_flight, listening):
        holder.thread.join(EXIT_BOUND)
        assert not holder.thread.is_alive(), "the mesh exited with a client stream still open"
    return code


def test_clients_mid_call_and_listening_do_not_keep_any_process_alive(mesh: Mesh) -> None:
    code = stop_with_clients_connected(mesh)
    assert code == 0, mesh.log()
    assert wait_gone_sync(mesh.tree.values()) == [], f"outlived mcpmesh: {survivors(mesh.tree.values())}"


def test_clients_mid_call_and_listening_are_ended_without_errors(mesh: Mesh) -> None:
    stop_with_clients_connected(mesh)
    log = mesh.log()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


class StreamHolder:
    """Holds one streaming request (POST, or GET when msg is None) open in a thread until it ends."""

    def __init__(self, url: str, msg: dict[str, Any] | None, headers: dict[str, str]) -> None:
        self.url, self.msg, self.headers = url, msg, headers
        self.reached = threading.Event()  # the response has started (and, for a POST, sent an event)
        self.events: list[dict[str, Any]] = []
        self.error: httpx.HTTPError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        method = "GET" if self.msg is None else "POST"
        try:
            with httpx.Client(timeout=httpx.Timeout(EXIT_BOUND)) as http:
                with http.stream(method, self.url, json=self.msg, headers=self.headers) as response:
                    assert response.status_code == 200
                    if self.msg is None:
                        self.reached.set()
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            self.events.append(json.loads(line.removeprefix("data:")))
                            self.reached.set()
        except httpx.HTTPError as exc:  # the server going away mid-stream is fine here
            self.error = exc
        finally:
            self.reached.set()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_one_signal_stops_mcpmesh_with_a_session_mode_session_open(tmp_path: Path, sig: signal.Signals) -> None:
    """A session of a `sharing = "session"` server that its client never DELETEs (Claude Code
    never does): the first signal ends it, its process and the mesh."""
    port = free_port()
    config = tmp_path / "mcpmesh.toml"
    state = toml_value(str(tmp_path / "state"))
    config.write_text(
        f"[mesh]\nport = {port}\nstate_dir = {state}\n\n[servers.own]\ncommand = {toml_value(PYTHON)}\n"
        f'args = {toml_value([FAULTY])}\nsharing = "session"\n',
        encoding="utf-8",
    )
    stderr = tmp_path / "stderr.txt"
    with open(tmp_path / "stdout.txt", "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen([PYTHON, "-m", "mcpmesh", "up", "--config", str(config)], stdout=out, stderr=err)
    mesh = Mesh(proc, port, stderr)
    try:
        wait_healthy(mesh)
        init = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        with httpx.Client(timeout=EXIT_BOUND) as http:
            reply = http.post(
                f"{mesh.base_url}/servers/own/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init},
                headers=HEADERS,
            )
        assert reply.status_code == 200 and "mcp-session-id" in reply.headers, reply.text
        mesh.tree = descendants(proc.pid)
        assert len([p for p in mesh.tree.values() if p.ppid == proc.pid]) == 2  # the session's and a spare

        os.kill(proc.pid, sig)
        code = proc.wait(timeout=EXIT_BOUND)
        log = mesh.log()
        assert code == 0, log
        assert "Traceback" not in log and "ERROR" not in log, log
        assert wait_gone_sync(mesh.tree.values()) == [], f"outlived mcpmesh: {survivors(mesh.tree.values())}"
    finally:
        if proc.poll() is None:
            mesh.tree |= descendants(proc.pid)
            proc.kill()
            proc.wait(timeout=10)
        kill_survivors(mesh.tree.values())
