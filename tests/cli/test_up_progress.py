"""`mcpmesh up` reports progress as servers start: each one up or failed (with why), then where
every server is served."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.cli.test_shutdown import free_port
from tests.conftest import FIXTURES, PYTHON

WAIT = 60.0  # seconds the mesh may take to start both servers


def test_up_says_which_servers_came_up_which_failed_and_why(tmp_path: Path) -> None:
    port = free_port()
    toml = tmp_path / "mcpmesh.toml"
    toml.write_text(
        f'[mesh]\nport = {port}\nstate_dir = "{tmp_path / "state"}"\n'
        f'[servers.fixture]\ncommand = "{PYTHON}"\nargs = ["{FIXTURES / "conformance_server.py"}"]\n'
        '[servers.broken]\ncommand = "/nonexistent/server"\nrestart = { max_restarts = 0 }\n'
    )
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        argv = [PYTHON, "-m", "mcpmesh", "up", "--config", str(toml)]
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=tmp_path)
    try:
        deadline = time.monotonic() + WAIT
        while "server(s) up" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.1)
        lines = out.read_text().splitlines()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    # At the default level nothing routine comes between the progress lines: no uvicorn start-up
    # lines, no spawns or handshakes; the failure is said (a warning), and so is nothing else.
    logged = err.read_text().splitlines()
    assert all(" INFO " not in line for line in logged), logged
    assert [line for line in logged if "broken" in line and "WARNING" in line], logged
    assert lines[0].endswith(": starting 2 server(s): fixture, broken")
    assert any(line.startswith("  up         fixture after ") for line in lines), lines
    failed = next(line for line in lines if line.startswith("  FAILED     broken after "))
    assert "command not found or not executable: /nonexistent/server" in failed
    summary = lines[lines.index("") + 1 :]
    assert summary[0].endswith(": 1 of 2 server(s) up")
    assert summary[1].startswith(f"  up         fixture          http://127.0.0.1:{port}/servers/fixture/mcp")
    assert summary[2].startswith("  FAILED     broken ")
    base = f"http://127.0.0.1:{port}"
    assert summary[3] == f"  dashboard: {base}/   health: {base}/healthz   metrics: {base}/metrics   stop: Ctrl-C"
