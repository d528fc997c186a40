"""The configs in examples/ run as they are, from the repository's root (as scripts/demo runs
them), with the packages scripts/install put there: every server up, and validate finds no gap."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.test_shutdown import free_port
from tests.conftest import PYTHON, ROOT

STARTUP_BOUND = 90.0  # eight servers, three of them Python processes importing the SDK


def runnable_copy(example: Path, scratch: Path) -> Path:
    """The example with its state (registry, the SQLite server's database) moved to `scratch`."""
    text = example.read_text()
    text = text.replace('state_dir = ".mcpmesh"', f'state_dir = "{scratch / "state"}"')
    text = text.replace('".mcpmesh/demo.sqlite3"', f'"{scratch / "demo.sqlite3"}"')
    copy = scratch / example.name
    copy.write_text(text)
    return copy


@pytest.mark.node
@pytest.mark.parametrize("example", ["mcpmesh.toml", "everyday.toml"])
def test_each_example_serves_every_server_and_validates(example: str, tmp_path: Path) -> None:
    source = ROOT / "examples" / example
    names = re.findall(r"^\[servers\.([\w.-]+)\]", source.read_text(), re.MULTILINE)
    config, port = runnable_copy(source, tmp_path), free_port()
    env = {"PATH": f"{Path(PYTHON).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    argv = [PYTHON, "-m", "mcpmesh", "up", "--config", str(config), "--port", str(port)]
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, states = time.monotonic() + STARTUP_BOUND, {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                states = {s["name"]: s["state"] for s in httpx.get(f"{base}/v1/servers", timeout=5).json()["servers"]}
            except httpx.HTTPError:
                states = {}
            if states and all(state == "healthy" for state in states.values()):
                break
            time.sleep(0.2)
        assert sorted(states) == sorted(names) and set(states.values()) == {"healthy"}, (states, log.read_text())
        done = subprocess.run(
            [PYTHON, "-m", "mcpmesh", "validate", "--url", base], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
