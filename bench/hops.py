"""Where one call's latency goes: the SDK client's sequential `tools/call echo` through mcpmesh
(shared) to server-everything, cut at the points mcpmesh can see.

  python -m bench.hops [--calls 1000]

mcpmesh runs in this process (garbage collection tuned as `mcpmesh up` does), with its HTTP
protocol, child pipe and reader wrapped to note the time (time.perf_counter: CLOCK_MONOTONIC, the
same clock in every process) when a request is in, the request goes to the server's stdin, the
server's answer is read and the answer is written back; the SDK client runs in a child process
and notes when each call began and ended. Per call:

  client -> mesh     call begun .. request fully read (the SDK client, the socket, HTTP parsing)
  mesh, way in       .. written to the server's stdin (checks, session, routing, id rewrite)
  server             .. its answer read from stdout (the pipe, Node, server-everything)
  mesh, way out      .. the answer written to the client (observers, outbox, JSON, HTTP)
  mesh -> client     .. call ended in the client (the socket, the SDK's parsing and dispatch)

The wrappers add a little to the mesh's own segments; the point is the shares, not the sum.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from bench.contenders import backend_argv
from bench.procs import free_port
from mcpmesh.app import create_app
from mcpmesh.backend.process import ChildProcess
from mcpmesh.backend.upstream import Upstream
from mcpmesh.cli.up import GC_THRESHOLDS
from mcpmesh.config import MeshConfig
from mcpmesh.front.http1.connection import Http1Protocol
from mcpmesh.front.uvicorn_options import SERVE_WITH

SEGMENTS = ("client -> mesh", "mesh, way in", "server", "mesh, way out", "mesh -> client")

CLIENT = """
import asyncio, json, sys, time
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url: str, n: int) -> None:
    out = []
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for i in range(n + 20):
            a = time.perf_counter()
            await session.call_tool("echo", {"message": "hello"})
            b = time.perf_counter()
            if i >= 20:
                out.append((a, b))
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _note(events: list[tuple[str, float]], tag: str, wrapped: Callable[..., Any]) -> Callable[..., Any]:
    def noting(*args: Any, **kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        events.append((tag, time.perf_counter()))
        return result

    return noting


def _watch(events: list[tuple[str, float]]) -> None:
    Http1Protocol.on_message_complete = _note(events, "in", Http1Protocol.on_message_complete)  # type: ignore[method-assign]
    Http1Protocol.write = _note(events, "out", Http1Protocol.write)  # type: ignore[method-assign]
    ChildProcess.write = _note(events, "to server", ChildProcess.write)  # type: ignore[method-assign]
    Upstream._dispatch = _note(events, "from server", Upstream._dispatch)  # type: ignore[method-assign]


def _segments(calls: list[tuple[float, float]], events: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Each call's five segments, from the first in/to-server/from-server and last out in its window."""
    out: dict[str, list[float]] = {name: [] for name in (*SEGMENTS, "total")}
    events.sort(key=lambda e: e[1])
    for began, ended in calls:
        inside = [(tag, at) for tag, at in events if began <= at <= ended]
        first: dict[str, float] = {}
        for tag, at in inside:
            first.setdefault(tag, at)
        outs = [at for tag, at in inside if tag == "out"]
        if not {"in", "to server", "from server"} <= first.keys() or not outs:
            continue
        points = [began, first["in"], first["to server"], first["from server"], outs[-1], ended]
        if points != sorted(points):
            continue  # a probe's message interleaved: not this call's order
        for name, (a, b) in zip(SEGMENTS, zip(points, points[1:], strict=False), strict=True):
            out[name].append((b - a) * 1e3)
        out["total"].append((ended - began) * 1e3)
    return out


async def _run(calls: int) -> dict[str, list[float]]:
    events: list[tuple[str, float]] = []
    _watch(events)
    argv = backend_argv()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mcpmesh-hops-") as tmp:
        config = MeshConfig.model_validate(
            {
                "mesh": {"port": port, "state_dir": f"{tmp}/state"},
                "servers": {"everything": {"command": argv[0], "args": argv[1:]}},
            }
        )
        app = create_app(config)
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on", **SERVE_WITH))
        serving = asyncio.create_task(server._serve())
        while not server.started:  # noqa: ASYNC110  # uvicorn offers no startup event
            await asyncio.sleep(0.01)
        await app.state.mesh.supervisor.wait_settled()
        gc.set_threshold(*GC_THRESHOLDS)  # as `mcpmesh up` runs
        gc.collect()
        gc.freeze()
        url = f"http://127.0.0.1:{port}/servers/everything/mcp"
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, url, str(calls), stdout=subprocess.PIPE
        )
        stdout, _ = await client.communicate()
        server.should_exit = True
        await serving
    return _segments(json.loads(stdout), events)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__)
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    import uvloop

    got = uvloop.run(_run(args.calls))
    n = len(got["total"])
    print(f"{n} of {args.calls} calls cut; milliseconds, median (p25-p75), share of the median total\n")
    print("| segment | ms | share |\n|---|---:|---:|")
    total = statistics.median(got["total"])
    for name in (*SEGMENTS, "total"):
        values = got[name]
        median, q = statistics.median(values), statistics.quantiles(values, n=4)
        print(f"| {name} | {median:.3f} ({q[0]:.3f}-{q[2]:.3f}) | {median / total:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
