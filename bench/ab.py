"""A/B of mcpmesh (shared) between git refs: both started once, then short latency and throughput
runs alternated many times, so that load from elsewhere on the machine hits both alike.

  python -m bench.ab REF [REF...] [--reps 8] [--sessions 32] [--duration 2] [--calls 300]

A ref of `.` is the working tree as it is; any other is exported with `git archive` first. Prints
the median (and min-max) of each figure per ref, and the other processes' CPU use meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from pathlib import Path

from bench import procs, workloads
from bench.contenders import Mcpmesh, Running
from bench.runner import export_src, log

BENCH = Path(__file__).resolve().parent


def _contender(ref: str) -> Mcpmesh:
    return Mcpmesh("shared") if ref == "." else Mcpmesh("shared", baseline=(ref, export_src(ref)))


def _once(c: Mcpmesh, running: Running, sessions: int, duration: float, calls: int, run_id: str) -> dict[str, float]:
    lat = asyncio.run(workloads.latency(c, running, {"small": calls}, run_id))["small"]
    tp = workloads.throughput(c, running, [sessions], 0.5, duration, run_id)[str(sessions)]
    return {
        "p50 ms": lat["p50_ms"],
        "p99 ms": lat["p99_ms"],
        f"{sessions} sessions calls/s": tp["calls_per_s"],
        "gateway us/call": tp["gateway_us_per_call"],
    }


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.3g} ({min(values):,.3g}-{max(values):,.3g})"


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    ap.add_argument("refs", nargs="+", help="git refs; '.' is the working tree")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--calls", type=int, default=300, help="sequential SDK calls per latency run")
    args = ap.parse_args()
    run_id = secrets.token_hex(6)
    log_dir = BENCH / ".peers" / "logs" / f"ab-{time.strftime('%Y-%m-%d-%H%M')}"
    contenders = [_contender(ref) for ref in args.refs]
    runs: list[Running] = []
    figures: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    watch = procs.CpuWatch()
    try:
        for c in contenders:
            runs.append(c.start(run_id, log_dir))
            asyncio.run(workloads.wait_ready(runs[-1]))
        for rep in range(args.reps):
            order = list(zip(contenders, runs, strict=True))
            for c, running in order[rep % len(order) :] + order[: rep % len(order)]:
                got = _once(c, running, args.sessions, args.duration, args.calls, run_id)
                for k, v in got.items():
                    figures[c.name].setdefault(k, []).append(v)
                log(f"{rep + 1}/{args.reps} {c.name}: " + ", ".join(f"{k} {v:,.3g}" for k, v in got.items()))
    finally:
        for running in runs:
            running.stop()
        procs.sweep(run_id)
    print(f"\nA/B, {args.reps} alternations; other processes used {watch.result()['foreign_cores']:.2f} cores")
    keys = list(next(iter(figures.values())))
    print("| figure | " + " | ".join(figures) + " |")
    print("|---|" + "---:|" * len(figures))
    for k in keys:
        print(f"| {k} | " + " | ".join(_spread(f[k]) for f in figures.values()) + " |")
    if len(figures) >= 2:
        _paired(figures, keys)
    return 0


def _paired(figures: dict[str, dict[str, list[float]]], keys: list[str]) -> None:
    """The first ref against the second, alternation by alternation: the machine's speed drifts
    between alternations, so the ratio within one, and how many favour each ref, is steadier
    than two medians taken apart."""
    (a, fa), (b, fb) = list(figures.items())[:2]
    print(f"\nPaired, {a} ÷ {b} within each alternation:")
    print("| figure | median ratio (min-max) | alternations where it is lower |")
    print("|---|---:|---:|")
    for k in keys:
        ratios = [x / y for x, y in zip(fa[k], fb[k], strict=True) if y]
        lower = sum(x < y for x, y in zip(fa[k], fb[k], strict=True))
        print(f"| {k} | {_spread(ratios)} | {lower} of {len(fa[k])} |")


if __name__ == "__main__":
    raise SystemExit(main())
