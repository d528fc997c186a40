"""Soak: sessions churned and calls made against a real `mcpmesh up` for minutes, its RSS sampled
(issue 14: memory stays flat under churn). Prints the curve's start (after warm-up), end, max and
the end/start ratio; a ratio above 1.05 is reported as growth.

    .venv/bin/python -m bench.soak [--minutes 10] [--workers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 30.0  # seconds before the first sample counts: imports, caches and pools settle
SAMPLE_EVERY = 5.0
PROTOCOL = "2025-11-25"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def write_config(directory: Path, port: int) -> Path:
    time_server = Path(sys.executable).parent / "mcp-server-time"
    config = directory / "soak.toml"
    config.write_text(
        f'[mesh]\nport = {port}\nstate_dir = "{directory / "state"}"\n\n'
        f'[servers.time]\ncommand = "{time_server}"\nargs = ["--local-timezone", "UTC"]\n'
    )
    return config


async def churn(url: str, stop_at: float, counts: list[int]) -> None:
    """Open a session, make three calls, close it; again until stop_at."""
    init = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}
    call = {"name": "get_current_time", "arguments": {"timezone": "UTC"}}
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < stop_at:
            message = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
            opened = (await http.post(url, json=message, headers=HEADERS)).raise_for_status()
            session = {**HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": PROTOCOL}
            await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
            for request_id in range(2, 5):
                message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": call}
                reply = await http.post(url, json=message, headers=session)
                reply.raise_for_status()
            await http.delete(url, headers=session)
            counts[0] += 1


async def soak(pid: int, url: str, minutes: float, workers: int) -> list[tuple[float, float]]:
    started = time.monotonic()
    stop_at = started + WARM_UP + minutes * 60
    counts = [0]
    tasks = [asyncio.create_task(churn(url, stop_at, counts)) for _ in range(workers)]
    samples: list[tuple[float, float]] = []
    while time.monotonic() < stop_at:
        await asyncio.sleep(SAMPLE_EVERY)
        for task in tasks:
            if task.done():
                task.result()  # a worker that failed says why, rather than leaving the load lower
        elapsed = time.monotonic() - started
        samples.append((elapsed, rss_mib(pid)))
        print(f"{elapsed:7.0f}s  {samples[-1][1]:7.1f} MiB  {counts[0]} sessions", flush=True)
    await asyncio.gather(*tasks)
    return [s for s in samples if s[0] >= WARM_UP]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        config = write_config(Path(scratch), port)
        argv = [sys.executable, "-m", "mcpmesh", "up", "--config", str(config)]
        mesh = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            samples = asyncio.run(soak(mesh.pid, f"{base}/servers/time/mcp", args.minutes, args.workers))
        finally:
            mesh.send_signal(signal.SIGTERM)
            mesh.wait(timeout=30)
    start, end, peak = samples[0][1], samples[-1][1], max(rss for _, rss in samples)
    ratio = end / start
    verdict = "flat" if ratio <= 1.05 else "GROWTH"
    curve = f"start {start:.1f} MiB, end {end:.1f} MiB, max {peak:.1f} MiB"
    print(f"RSS after warm-up: {curve}; end/start {ratio:.3f} ({verdict})")
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
