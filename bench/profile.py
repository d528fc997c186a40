"""`python -m bench --profile`: mcpmesh (shared) under the latency workload and the 32-session
throughput workload, sampled by py-spy (with native frames); writes the raw stacks and flame graphs
to bench/profiles/<stamp>/ (gitignored) and a summary of the top frames to bench/results/<stamp>-profile.md."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procs, workloads
from bench.contenders import Mcpmesh, Running
from bench.install import py_spy

BENCH = Path(__file__).resolve().parent
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame(raw: str) -> tuple[str, str]:
    m = FRAME.match(raw.strip())
    if not m:
        return raw.strip(), ""
    return m["func"], m["file"]


def _where(file: str) -> str:
    """A short home for a frame: the package it belongs to, or `native` for C frames."""
    if not file:
        return "native"
    for key in ("mcpmesh", "uvicorn", "starlette", "anyio", "httptools", "uvloop", "orjson", "pydantic", "h11"):
        if f"/{key}/" in file or file.startswith(key):
            return key
    if "/asyncio/" in file:
        return "asyncio"
    if ".so" in file:
        return "native"
    return Path(file).name


def analyse(raw_path: Path, top: int = 25) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    by_pkg_self: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        # py-spy puts the thread name first ("process 123:\"python\"" / "thread (0x...)"): skip those
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        func, file = _frame(frames[-1])
        self_time[f"{func} ({_short(file)})"] += n
        by_pkg_self[_where(file)] += n
        seen = set()
        for f in frames:
            func, file = _frame(f)
            key = f"{func} ({_short(file)})"
            if key not in seen:
                seen.add(key)
                incl[key] += n
    return {
        "samples": total,
        "self": self_time.most_common(top),
        "inclusive": [(k, v) for k, v in incl.most_common(top * 2) if "mcpmesh" in k or "starlette" in k][:top],
        "by_package": by_pkg_self.most_common(),
    }


def _short(file: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _record(pid: int, seconds: float, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    argv = [str(py_spy()), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
    argv += ["--native", "--format", fmt, "-o", str(out)]  # --native needs the blocking sampler
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _latency_load(url: str, seconds: float, run_id: str) -> None:
    """The latency workload (SDK client, sequential echo) over and over for `seconds`."""

    async def go() -> None:
        mesh, running = Mcpmesh("shared"), Running("mcpmesh-shared", [], [url])
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await workloads.latency(mesh, running, {"small": 300}, run_id)

    asyncio.run(go())


def main(quick: bool = False) -> int:
    run_id = secrets.token_hex(6)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    out_dir = BENCH / "profiles" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = 6.0 if quick else 12.0
    mesh = Mcpmesh("shared")
    running = mesh.start(run_id, out_dir)
    phases: dict[str, Any] = {}
    try:
        asyncio.run(workloads.wait_ready(running))
        pid = running.procs[0].pid
        for phase in ("latency", "throughput-32"):
            for fmt in ("raw", "flamegraph"):
                path = out_dir / f"{phase}.{'txt' if fmt == 'raw' else 'svg'}"
                cpu0, t0 = procs.cpu_seconds([pid]), time.perf_counter()
                rec = _record(pid, seconds, path, fmt)
                time.sleep(0.5)
                if phase == "latency":
                    _latency_load(running.url, seconds, run_id)
                    load: dict[str, Any] = {}
                else:
                    spec = {"mode": "throughput", "sessions": 32, "url": running.url, "warmup": 0.2}
                    spec.update({"duration": seconds, "max_calls": 10_000_000})
                    load = workloads.run_loadgen(spec, run_id)
                _, err = rec.communicate(timeout=60)
                if fmt == "raw":
                    cpu = procs.cpu_seconds([pid]) - cpu0
                    phases[phase] = {
                        "gateway_cpu_share": cpu / (time.perf_counter() - t0),
                        "load": {k: load.get(k) for k in ("calls_per_s", "p50_ms", "p99_ms")},
                        **(analyse(path) if path.exists() else {"error": err.decode()[-500:]}),
                    }
    finally:
        running.stop()
        procs.sweep(run_id)
    md = _markdown(phases, out_dir)
    result = BENCH / "results" / f"{stamp}-profile.md"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(md)
    print(md)
    print(f"wrote {result} and {out_dir}/*.svg, *.txt")
    return 0


def _markdown(phases: dict[str, Any], out_dir: Path) -> str:
    lines = [
        "# mcpmesh profile (py-spy, shared mode, server-everything echo)",
        "",
        f"Raw stacks and flame graphs: `{out_dir.relative_to(BENCH.parent)}/` (gitignored).",
    ]
    for phase, p in phases.items():
        lines += ["", f"## {phase}", ""]
        if "error" in p:
            lines.append(f"py-spy failed: {p['error']}")
            continue
        lines.append(
            f"Gateway CPU: {p['gateway_cpu_share']:.2f} cores; load: {p['load']}; {p['samples']} samples (active only)."
        )
        total = p["samples"] or 1
        lines += ["", "Self time by package:", "", "| package | share |", "|---|---:|"]
        lines += [f"| {k} | {100 * v / total:.1f}% |" for k, v in p["by_package"][:12]]
        lines += ["", "Top frames by self time:", "", "| frame | share |", "|---|---:|"]
        lines += [f"| `{k}` | {100 * v / total:.1f}% |" for k, v in p["self"]]
        lines += ["", "mcpmesh/starlette frames by inclusive time:", "", "| frame | share |", "|---|---:|"]
        lines += [f"| `{k}` | {100 * v / total:.1f}% |" for k, v in p["inclusive"]]
    return "\n".join(lines) + "\n"
