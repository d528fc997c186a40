"""`mcpmesh up` starts its servers sooner when it loads only what it serves with: the client
commands' libraries (httpx, rich, the MCP SDK) and a WebSocket stack are not imported on the way.
bench/README.md measures the cold start; this keeps the imports from creeping back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import uvicorn

from mcpmesh.front.http1.connection import Http1Protocol
from mcpmesh.front.uvicorn_options import SERVE_WITH

CLIENT_ONLY = ("httpx", "rich", "mcp", "pygments")


def test_the_up_command_imports_no_client_libraries() -> None:
    code = "import sys, mcpmesh.cli.main; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(out.stdout.split())
    assert "uvicorn" in loaded and "mcpmesh" in loaded  # the probe itself works
    assert loaded.isdisjoint(CLIENT_ONLY), sorted(loaded & set(CLIENT_ONLY))


def test_listeners_load_no_websocket_protocol() -> None:
    config = uvicorn.Config(lambda scope, receive, send: None, **SERVE_WITH)
    config.load()
    assert config.ws_protocol_class is None
    assert config.http_protocol_class is Http1Protocol


def up_with_marked_server(tmp_path: Path, port: int, state_dir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run `mcpmesh up` with one server that leaves a mark when spawned (nothing may spawn it when
    `up` fails at start); the config is tmp_path/mcpmesh.toml."""
    marker = tmp_path / "spawned"
    config = tmp_path / "mcpmesh.toml"
    config.write_text(
        f'[mesh]\nport = {port}\nstate_dir = "{state_dir}"\n\n'
        f'[servers.s]\ncommand = "sh"\nargs = ["-c", "touch {marker}; exec sleep 30"]\n',
        encoding="utf-8",
    )
    argv = [sys.executable, "-m", "mcpmesh", "up", "--config", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60), marker


def test_a_busy_main_port_fails_at_once_naming_its_holder_before_any_server_is_spawned(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done, marker = up_with_marked_server(tmp_path, port, tmp_path / "state")
    config = tmp_path / "mcpmesh.toml"
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert f"held by pid {os.getpid()} " in done.stderr  # this test holds it
    assert f"set [mesh] port in {config} or pass --port" in done.stderr
    assert not marker.exists(), "a server was spawned before the port was known to be busy"
