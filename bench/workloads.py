"""The four workloads. Latency uses the official SDK client (ClientSession) for every contender;
throughput and idle sessions use the raw load generator (bench/loadgen.py) in a child process."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from bench import procs
from bench.contenders import ROOT, Contender, Running, backend_argv
from bench.loadgen import HttpError, Session, StdioPeer

READY_TIMEOUT = 120.0
SSE_MAX = 64 << 20  # the SDK client caps SSE events at 1 MiB by default; the 5 MB result needs more
SIZES = {"small": 5, "100KB": 100_000, "5MB": 5_000_000}  # echo message length in characters


def pct(values: list[float], p: float) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = min(len(vals) - 1, max(0, round(p / 100 * (len(vals) - 1))))
    return vals[k]


def _message(size: int) -> str:
    return "hello" if size <= 5 else ("x" * size)


# -- readiness ---------------------------------------------------------------------------------
async def _probe(url: str, deadline: float) -> None:
    """Until it answers: initialize, tools/list, DELETE (over the raw client)."""
    last: Exception | None = None
    while time.perf_counter() < deadline:
        s = Session(url)
        try:
            await s.initialize()
            tools = await s.call("tools/list", {})
            if not any(t.get("name") == "echo" for t in tools.get("tools", [])):
                raise HttpError("echo not listed")
            await s.delete()
            return
        except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
            last = exc
            s.conn.close()
            await asyncio.sleep(0.02)
    raise TimeoutError(f"{url} not ready: {last}")


async def wait_ready(running: Running, limit: float = READY_TIMEOUT) -> float:
    """Seconds until every URL answers; raises when a process died or time ran out."""
    t0 = time.perf_counter()
    deadline = t0 + limit
    tasks = [asyncio.ensure_future(_probe(u, deadline)) for u in running.urls]
    try:
        while not all(t.done() for t in tasks):
            if not running.alive():
                raise RuntimeError(f"{running.contender} exited during start:\n{running.tails()}")
            await asyncio.sleep(0.01)
        for t in tasks:
            t.result()
    finally:
        for t in tasks:
            t.cancel()
    return time.perf_counter() - t0


async def wait_healthz(url: str, n: int, limit: float = READY_TIMEOUT) -> float:
    """mcpmesh's own view: seconds until /healthz says every server is healthy."""
    t0 = time.perf_counter()
    s = Session(url)
    while time.perf_counter() - t0 < limit:
        try:
            status, _, body = await s.conn.request(b"GET", b"/healthz")
            if status == 200:
                servers = json.loads(body)["servers"]
                if len(servers) == n and all(v == "healthy" for v in servers.values()):
                    s.conn.close()
                    return time.perf_counter() - t0
        except (OSError, asyncio.IncompleteReadError, ValueError):
            s.conn.close()
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{url}: not all healthy after {limit}s")


# -- 1. latency (SDK client) -------------------------------------------------------------------
async def _sdk_calls(
    session: ClientSession, counts: dict[str, int], warmup: int, url: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, n in counts.items():
        msg = _message(SIZES[label])
        lat: list[float] = []
        try:
            with anyio.fail_after(max(30.0, n * 2.0)):
                for i in range(warmup + n):
                    a = time.perf_counter()
                    r = await session.call_tool("echo", {"message": msg})
                    b = time.perf_counter()
                    if r.is_error:
                        raise RuntimeError(f"tool error: {str(r.content)[:200]}")
                    text = r.content[0].text  # type: ignore[union-attr]
                    if len(text) != len(msg) + 6:
                        raise RuntimeError(f"echo came back with {len(text)} characters, not {len(msg) + 6}")
                    if i >= warmup:
                        lat.append(b - a)
            out[label] = {"n": n, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3}
        except Exception as exc:  # one size failing (a body cap, a timeout) must not sink the others
            out[label] = {"n": len(lat), "error": f"{type(exc).__name__}: {exc}"[:300]}
            if url:
                out[label]["raw_http"] = await _raw_once(url, msg)
    return out


async def _raw_once(url: str, msg: str) -> str:
    """What the HTTP layer says to the same call (the SDK's error text hides the status)."""
    s = Session(url)
    try:
        await s.initialize()
        await s.call("tools/call", {"name": "echo", "arguments": {"message": msg}})
        return "ok over the raw client"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    finally:
        await s.delete()


async def latency(contender: Contender, running: Running, counts: dict[str, int], run_id: str) -> dict[str, Any]:
    warmup = 5
    if contender.name == "direct":
        argv = backend_argv()
        params = StdioServerParameters(command=argv[0], args=argv[1:], env={**os.environ, procs.MARKER: run_id})
        with open(os.devnull, "w") as quiet:  # noqa: ASYNC230  # server-everything narrates on stderr
            async with stdio_client(params, errlog=quiet) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await _sdk_calls(session, counts, warmup)
    async with streamable_http_client(running.url, max_sse_event_size=SSE_MAX) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await _sdk_calls(session, counts, warmup, running.url)


# -- 2. throughput (raw load generator) --------------------------------------------------------
def run_loadgen(spec: dict[str, Any], run_id: str, timeout: float = 300) -> dict[str, Any]:
    env = {**os.environ, procs.MARKER: run_id}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-800:]}")


def throughput(
    contender: Contender, running: Running, levels: list[int], warmup: float, duration: float, run_id: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in levels:
        spec: dict[str, Any] = {
            "mode": "throughput",
            "sessions": n,
            "warmup": warmup,
            "duration": duration,
            "max_calls": 2_000_000,
        }
        if contender.name == "direct":
            spec["stdio"] = backend_argv()
        else:
            spec["url"] = running.url
        roots = [p.pid for p in running.procs]
        cpu0, root0 = procs.cpu_seconds(running.pids()), procs.cpu_seconds(roots)
        try:
            r = run_loadgen(spec, run_id, timeout=warmup + duration + 240)
        except Exception as exc:
            out[str(n)] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            continue
        # with children: the backend too (and, for per-session servers, the sessions' own start)
        r["gateway_tree_cpu_s"] = procs.cpu_seconds(running.pids()) - cpu0
        r["gateway_cpu_s"] = procs.cpu_seconds(roots) - root0  # the gateway process(es) alone
        if r.get("calls"):
            r["gateway_us_per_call"] = r["gateway_cpu_s"] / (r["calls_per_s"] * (warmup + duration)) * 1e6
        out[str(n)] = r
    return out


def ceiling(levels: list[int], duration: float, run_id: str) -> dict[str, Any]:
    """The load generator against a null server: the most it can drive on this machine."""
    return {
        str(n): run_loadgen(
            {"mode": "ceiling", "sessions": n, "warmup": 0.3, "duration": duration, "max_calls": 5_000_000}, run_id
        )
        for n in levels
    }


# -- 3. memory ---------------------------------------------------------------------------------
def rss_mib(running: Running) -> tuple[float, int]:
    pids = running.pids()
    return procs.rss_bytes(pids) / 2**20, len(pids)


def idle_sessions(running: Running, n: int, run_id: str, settle: float = 1.0) -> dict[str, Any]:
    """Open n sessions and hold them idle (no connection open); RSS before and after."""
    before, nprocs = rss_mib(running)
    spec = {"mode": "idle", "sessions": n, "url": running.url}
    env = {**os.environ, procs.MARKER: run_id}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready: dict[str, Any] = {}
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"idle loadgen: {line!r} {proc.stderr.read()[-500:] if proc.stderr else ''}")
        ready = json.loads(line[6:])
        time.sleep(settle)
        after, nprocs_after = rss_mib(running)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    opened = int(ready.get("opened", 0))
    return {
        "sessions": n,
        "opened": opened,
        "with_session_id": ready.get("with_session_id"),
        "errors": ready.get("errors", 0),
        "first_errors": ready.get("first_errors", []),
        "open_s": ready.get("open_s"),
        "rss_before_mib": before,
        "rss_after_mib": after,
        "procs_before": nprocs,
        "procs_after": nprocs_after,
        # a gateway that issues no session id holds no session state: nothing to divide
        "per_session_kib": (after - before) * 1024 / opened if opened and ready.get("with_session_id") else None,
    }


# -- 4. scale of servers -----------------------------------------------------------------------
async def _direct_start(n: int, run_id: str) -> float:
    """n server-everything processes at once, each to initialize + tools/list answered."""
    os.environ[procs.MARKER] = run_id
    t0 = time.perf_counter()
    peers = [StdioPeer(backend_argv()) for _ in range(n)]

    async def one(p: StdioPeer) -> None:
        await p.start()
        await p.request("tools/list", {})

    try:
        await asyncio.gather(*(one(p) for p in peers))
        return time.perf_counter() - t0
    finally:
        await asyncio.gather(*(p.stop() for p in peers if hasattr(p, "proc")))


async def tools_list_latency(url: str, n: int) -> dict[str, Any]:
    async with streamable_http_client(url, max_sse_event_size=SSE_MAX) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            lat = []
            for i in range(n + 5):
                a = time.perf_counter()
                await session.list_tools()
                if i >= 5:
                    lat.append(time.perf_counter() - a)
    return {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3}


async def scale(
    contender: Contender, servers: int, run_id: str, log_dir: Path, list_calls: int
) -> tuple[dict[str, Any], Running | None]:
    """Cold start of `servers` servers to all answering; returns the still-running contender."""
    if contender.name == "direct":
        return {"all_ready_s": await _direct_start(servers, run_id)}, None
    t0 = time.perf_counter()
    running = contender.start(run_id, log_dir, servers)
    out: dict[str, Any] = {}
    try:
        if running.health_url is not None:
            out["healthz_s"] = await wait_healthz(running.health_url.removesuffix("/healthz"), servers)
        await wait_ready(running)
        out["all_ready_s"] = time.perf_counter() - t0
        out["rss_mib"], out["procs"] = rss_mib(running)
        if list_calls:
            out["tools_list"] = await tools_list_latency(running.urls[-1], list_calls)
    except Exception:
        running.stop()
        raise
    return out, running


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
