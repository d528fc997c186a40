"""mcpmesh's own CPU per call, with no sockets and no HTTP server: the ASGI app driven in-process by
N sessions doing `tools/call echo` back to back against a real server-everything over stdio.

  python -m bench.inproc [--sessions 32] [--seconds 2] [--profile FILE]

What it prints is the CPU time of this process per call: the app (front, router, observers, the
child's pipes) plus this driver's own small share (scope dicts, receive/send). uvicorn, the
kernel's sockets and the load generator are out of the picture, so it answers "what does our
Python cost" more steadily than a full run, and `--profile` writes a cProfile of just that.
To compare two trees, run it with PYTHONPATH=<other>/src alternately (it imports mcpmesh from
the path first).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.contenders import backend_argv
from mcpmesh.app import create_app
from mcpmesh.config import MeshConfig

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
PATH = "/servers/everything/mcp"
HEADERS = [
    (b"host", b"127.0.0.1:11090"),
    (b"accept", b"application/json, text/event-stream"),
    (b"content-type", b"application/json"),
    (b"mcp-protocol-version", b"2025-06-18"),
]
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "inproc", "version": "1"}}


async def post(app: ASGIApp, body: bytes, session: bytes | None) -> tuple[dict[bytes, bytes], bytes]:
    """One POST through the app; the response's headers and body."""
    headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
    if session is not None:
        headers.append((b"mcp-session-id", session))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 11090),
        "state": {},
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the app reads one message
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def run(sessions: int, seconds: float, profile: str | None) -> dict[str, float]:
    config = MeshConfig.model_validate(
        {
            "mesh": {"state_dir": tempfile.mkdtemp(prefix="mcpmesh-inproc-")},
            "servers": {"everything": {"command": backend_argv()[0], "args": backend_argv()[1:]}},
        }
    )
    app: Any = create_app(config)
    lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_in.get, lifespan_send)
    )
    await started.wait()
    servers = app.state.mesh.supervisor.servers
    while any(s.state.value != "healthy" for s in servers.values()):  # noqa: ASYNC110  # no event to wait on
        await asyncio.sleep(0.05)
    ids: list[bytes] = []
    for _ in range(sessions):
        headers, _ = await post(
            app, orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}), None
        )
        ids.append(headers[b"mcp-session-id"])
        await post(app, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', ids[-1])
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)  # as `mcpmesh up` runs
    calls = 0
    deadline = time.monotonic() + seconds

    async def worker(session: bytes) -> None:
        nonlocal calls
        n = 0
        while time.monotonic() < deadline:
            n += 1
            call = {
                "jsonrpc": "2.0",
                "id": n,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "hi"}},
            }
            _, body = await post(app, orjson.dumps(call), session)
            if b'"Echo: hi"' not in body:
                raise AssertionError(body[:200])
            calls += 1

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker(s) for s in ids))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan
    return {"calls": calls, "calls_per_s": calls / wall, "cpu_us_per_call": cpu * 1e6 / calls}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.inproc", description=__doc__)
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the timed window here")
    args = ap.parse_args()
    try:
        import uvloop

        out = uvloop.run(run(args.sessions, args.seconds, args.profile))
    except ImportError:
        out = asyncio.run(run(args.sessions, args.seconds, args.profile))
    print(f"{out['calls']:.0f} calls, {out['calls_per_s']:,.0f}/s, {out['cpu_us_per_call']:.1f} us CPU per call")


if __name__ == "__main__":
    main()
