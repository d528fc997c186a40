"""`python -m bench`: install, then run every workload on every contender in interleaved rounds,
stop everything started, and write bench/results/<date>.{json,md,png}."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import install, procs, report, workloads
from bench.contenders import ROOT, Contender, Mcpmesh, all_contenders

BENCH = Path(__file__).resolve().parent


@dataclass
class Plan:
    rounds: int
    latency_calls: dict[str, int]
    levels: list[int]
    warmup: float
    duration: float
    per_process_max_sessions: int  # throughput cap for contenders that start a backend per session
    idle_sessions: int
    idle_sessions_per_process: int
    scale_servers: int
    scale_rounds: int
    tools_list_calls: int
    scale_contenders: tuple[str, ...] | None = None  # None: all
    floor_levels: list[int] | None = None  # session counts for the two floors (None: `levels`)


QUICK = Plan(
    rounds=1,
    latency_calls={"small": 200, "100KB": 20, "5MB": 2},
    levels=[1, 8, 32, 128],
    warmup=0.3,
    duration=1.2,
    per_process_max_sessions=8,
    idle_sessions=200,
    idle_sessions_per_process=4,
    scale_servers=15,
    scale_rounds=1,
    tools_list_calls=50,
    scale_contenders=("direct", "mcpmesh-shared", "mcp-proxy"),
    floor_levels=[1, 32],  # the figures the targets read; keeps the quick run under 2 minutes
)
FULL = Plan(
    rounds=3,
    latency_calls={"small": 500, "100KB": 100, "5MB": 8},
    levels=[1, 8, 32, 128],
    warmup=1.0,
    duration=5.0,
    per_process_max_sessions=32,
    idle_sessions=1000,
    idle_sessions_per_process=10,
    scale_servers=15,
    scale_rounds=3,
    tools_list_calls=200,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def contender_round(c: Contender, plan: Plan, run_id: str, log_dir: Path) -> dict[str, Any]:
    """One contender, one round: start, idle memory, idle sessions, latency, throughput, stop."""
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    watch = procs.CpuWatch()
    running = c.start(run_id, log_dir)
    try:
        if c.name != "direct":
            out["ready_s"] = asyncio.run(workloads.wait_ready(running))
            time.sleep(0.5)
            out["idle_rss_mib"], out["idle_procs"] = workloads.rss_mib(running)
            if not c.no_sessions:
                n = plan.idle_sessions_per_process if c.per_session_process else plan.idle_sessions
                out["sessions"] = workloads.idle_sessions(running, n, run_id)
                per = out["sessions"]["per_session_kib"]
                log(
                    f"  {c.name}: idle {out['idle_rss_mib']:.1f} MiB; {out['sessions']['opened']} sessions "
                    + (f"+{per:.1f} KiB each" if per is not None else "(no session ids issued)")
                )
        out["latency"] = asyncio.run(workloads.latency(c, running, plan.latency_calls, run_id))
        log(f"  {c.name}: latency " + report.brief_latency(out["latency"]))
        levels = [n for n in plan.levels if not c.per_session_process or n <= plan.per_process_max_sessions]
        if c.name in ("null-http", "thin") and plan.floor_levels is not None:
            levels = plan.floor_levels
        out["throughput"] = workloads.throughput(c, running, levels, plan.warmup, plan.duration, run_id)
        log(f"  {c.name}: throughput " + report.brief_throughput(out["throughput"]))
        if c.name != "direct":
            out["rss_after_mib"], out["procs_after"] = workloads.rss_mib(running)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        log(f"  {c.name}: FAILED {out['error']}")
    finally:
        running.stop()
        if running.killed:
            out["needed_sigkill"] = running.killed
    out["wall_s"] = time.perf_counter() - t0
    out["cpu"] = watch.result()
    if out["cpu"]["foreign_cores"] > 0.2:
        log(f"  {c.name}: other processes used {out['cpu']['foreign_cores']:.2f} cores during this round")
    return out


def scale_round(c: Contender, plan: Plan, run_id: str, log_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (1, plan.scale_servers):
        try:
            r, running = asyncio.run(workloads.scale(c, n, run_id, log_dir, plan.tools_list_calls if n > 1 else 0))
            if running is not None:
                running.stop()
            out[str(n)] = r
        except Exception as exc:
            out[str(n)] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        time.sleep(0.3)
    log(f"  {c.name}: scale " + report.brief_scale(out, plan.scale_servers))
    return out


def machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = version(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"])
    return {
        "python": platform.python_version(),
        "node": version(["node", "--version"]),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "mcpmesh_commit": commit + ("+dirty" if dirty else ""),
    }


README = BENCH / "README.md"
LATEST_START, LATEST_END = "<!-- LATEST -->", "<!-- /LATEST -->"


def update_readme(md: str, stem: str) -> None:
    """Put a run's table into bench/README.md between the LATEST markers."""
    text = README.read_text()
    if LATEST_START not in text:
        return
    head, _, rest = text.partition(LATEST_START)
    _, _, tail = rest.partition(LATEST_END)
    body = md.split("\n", 1)[1].lstrip("\n")  # without the file's own title
    chart = f"![chart](results/{stem}.png)\n\n"
    section = f"{LATEST_START}\nFrom `results/{stem}.md` ({stem}):\n\n{chart}{body}{LATEST_END}"
    README.write_text(head + section + tail)


def render(path: Path, readme: bool = False) -> int:
    data = json.loads(path.read_text())
    data["summary"] = report.summarize(data)
    path.write_text(json.dumps(data, indent=1, default=str))
    md = report.markdown(data)
    path.with_suffix(".md").write_text(md)
    report.chart(data, path.with_suffix(".png"))
    if readme:
        update_readme(md, path.stem)
    print(md)
    return 0


def export_src(ref: str) -> Path:
    """src/ as of a git ref, in a temp dir that lives as long as this run."""
    where = Path(tempfile.mkdtemp(prefix="mcpmesh-baseline-"))
    atexit.register(shutil.rmtree, where, True)
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where / "src"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short round of everything (under 2 minutes)")
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--only", help="comma-separated contenders (direct, mcpmesh-shared, mcpmesh-session, ...)")
    ap.add_argument("--skip", default="", help="comma-separated workloads to skip: main, scale")
    ap.add_argument("--no-install", action="store_true", help="do not install missing peers and tools")
    ap.add_argument("--out", default=str(BENCH / "results"), help="where to write the results")
    ap.add_argument("--profile", action="store_true", help="profile mcpmesh under latency and throughput instead")
    ap.add_argument(
        "--variants",
        nargs="*",
        default=[],
        metavar="TUNINGS",
        help="also run mcpmesh shared with these tunings from bench/variants.py (each: a,b,...; 'all')",
    )
    ap.add_argument(
        "--baseline",
        metavar="REF[,REF...]",
        help="also run mcpmesh shared as of these git refs (e.g. main), interleaved with the rest: an A/B "
        "(--only none --baseline A,B compares two commits without the working tree)",
    )
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md and .png of an earlier run's JSON")
    ap.add_argument("--readme", action="store_true", help="with --render: put that table into bench/README.md")
    args = ap.parse_args(argv)
    if args.render:
        return render(Path(args.render), args.readme)

    problems = {} if args.no_install else install.ensure()
    for what, why in problems.items():
        log(f"install problem: {what}: {why}")
    if args.profile:
        from bench import profile

        return profile.main(quick=args.quick)

    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan.rounds = plan.scale_rounds = args.rounds
    contenders = all_contenders()
    if args.only:
        wanted = set(args.only.split(","))
        contenders = [c for c in contenders if c.name in wanted]
    for tunings in args.variants:
        from bench.variants import TUNINGS

        contenders.append(Mcpmesh("shared", ",".join(TUNINGS) if tunings == "all" else tunings))
    for ref in filter(None, (args.baseline or "").split(",")):
        contenders.append(Mcpmesh("shared", baseline=(ref, export_src(ref))))
    skipped: dict[str, str] = {}
    for c in list(contenders):
        why = c.available()
        if why:
            skipped[c.name] = why
            contenders.remove(c)
            log(f"skip {c.name}: {why}")
    skip = set(filter(None, args.skip.split(",")))

    # SIGTERM unwinds like Ctrl-C, so every contender is stopped and the leftover sweep runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_id = secrets.token_hex(6)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    log_dir = BENCH / ".peers" / "logs" / stamp
    started = time.perf_counter()
    data: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "plan": asdict(plan),
        "machine": machine(),
        "contenders": {c.name: {"label": c.label, "peer": c.peer, "note": c.note} for c in contenders},
        "skipped": skipped,
        "install_problems": problems,
        "rounds": [],
        "scale_rounds": [],
        "ceiling": [],
    }
    try:
        if "main" not in skip:
            for r in range(plan.rounds):
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                log(f"round {r + 1}/{plan.rounds}: " + ", ".join(c.name for c in order))
                data["ceiling"].append(workloads.ceiling([1, 32], plan.duration, run_id))
                data["rounds"].append({c.name: contender_round(c, plan, run_id, log_dir) for c in order})
        if "scale" not in skip:
            scaled = [
                c
                for c in contenders
                if c.name not in ("null-http", "thin")
                and (plan.scale_contenders is None or c.name in plan.scale_contenders)
            ]
            for r in range(plan.scale_rounds):
                order = scaled[r % len(scaled) :] + scaled[: r % len(scaled)]
                log(f"scale round {r + 1}/{plan.scale_rounds}")
                data["scale_rounds"].append({c.name: scale_round(c, plan, run_id, log_dir) for c in order})
    finally:
        leftovers = procs.sweep(run_id)
        data["leftovers"] = leftovers
        data["elapsed_s"] = time.perf_counter() - started
        if leftovers:
            log(f"LEFTOVER processes killed: {leftovers}")
        else:
            log("no leftover processes")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / stamp
    summary = report.summarize(data)
    data["summary"] = summary
    base.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    md = report.markdown(data)
    base.with_suffix(".md").write_text(md)
    chart = report.chart(data, base.with_suffix(".png"))
    if data["mode"] == "full" and not args.only and not args.variants and not skip:
        update_readme(md, base.name)  # the README keeps the latest full run
    print(md)
    log(f"wrote {base}.json, {base}.md" + (f", {chart}" if chart else " (no chart)") + f" in {data['elapsed_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
