"""Does a server flooding its stderr slow its neighbours? Two meshes run side by side, each with
mcp-server-time; one also runs a server writing stderr as fast as it can. Sequential tools/call
requests alternate between them, so the machine's load (the flooder's own CPU included) hits both
alike and the ratio of their p50s is what the flood costs the mesh's event loop.

    .venv/bin/python -m bench.stderr_flood [--seconds 10] [--src OTHER_TREE/src]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
FLOODER = ROOT / "tests" / "fixtures" / "faulty_server.py"
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"
VERSION = "2025-11-25"
HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": VERSION}


def config(port: int, state: Path, flood: bool) -> str:
    lines = ["[mesh]", f"port = {port}", f'state_dir = "{state}"', ""]
    lines += ["[servers.time]", f'command = "{TIME_SERVER}"', 'args = ["--local-timezone", "UTC"]', ""]
    if flood:
        lines += ["[servers.flood]", f'command = "{sys.executable}"', f'args = ["{FLOODER}", "--flood-stderr"]']
    return "\n".join(lines) + "\n"


def start(work: Path, flood: bool, src: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    name = "flood" if flood else "quiet"
    path = work / f"{name}.toml"
    path.write_text(config(port, work / name, flood))
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    argv = [sys.executable, "-m", "mcpmesh", "up", "--config", str(path), "--log-level", "warning"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(http: httpx.Client, base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if http.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{base} not ready within 60 s")


def open_session(http: httpx.Client, base: str) -> dict[str, str]:
    info = {"name": "bench", "version": "1"}
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": VERSION, "clientInfo": info},
    }
    reply = http.post(f"{base}/servers/time/mcp", json=body, headers=HEADERS)
    reply.raise_for_status()
    return {**HEADERS, "Mcp-Session-Id": reply.headers["mcp-session-id"]}


def call(http: httpx.Client, base: str, headers: dict[str, str], n: int) -> float:
    params: dict[str, Any] = {"name": "get_current_time", "arguments": {"timezone": "UTC"}}
    began = time.perf_counter()
    reply = http.post(
        f"{base}/servers/time/mcp",
        json={"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params},
        headers=headers,
    )
    elapsed = time.perf_counter() - began
    assert reply.status_code == 200 and "result" in reply.text, reply.text[:200]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long calls alternate")
    parser.add_argument("--src", help="run mcpmesh from this src directory (another tree) instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcpmesh-flood-") as tmp, httpx.Client(timeout=30) as http:
        meshes = [start(Path(tmp), flood, args.src) for flood in (False, True)]
        try:
            for _, base in meshes:
                wait_ready(http, base)
            sessions = [open_session(http, base) for _, base in meshes]
            times: list[list[float]] = [[], []]
            ids = itertools.count(1)
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                for i, (_, base) in enumerate(meshes):
                    times[i].append(call(http, base, sessions[i], next(ids)))
        finally:
            for proc, _ in meshes:
                proc.terminate()
            for proc, _ in meshes:
                proc.wait(timeout=30)
    quiet, flood = (statistics.median(t) * 1000 for t in times)
    print(f"calls per mesh: {len(times[0])}")
    print(f"p50 without a flooding neighbour: {quiet:.2f} ms")
    print(f"p50 beside a flooding neighbour:  {flood:.2f} ms")
    print(f"ratio: {flood / quiet:.2f}x")


if __name__ == "__main__":
    main()
