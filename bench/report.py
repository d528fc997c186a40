"""Turns the rounds into figures: min/median/max per contender, the best peer, ratios, the targets;
a Markdown table and a PNG chart."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

MESH = ("mcpmesh-shared", "mcpmesh-session")
ORDER = (
    "direct",
    "null-http",
    "thin",
    "mcpmesh-shared",
    "mcpmesh-session",
    "supergateway",
    "mcp-proxy",
    "contextforge",
)
KB = 1000


def _names(data: dict[str, Any]) -> list[str]:
    """Contenders in the table's order; variants (mcpmesh with tunings) after the standard ones."""
    return [c for c in ORDER if c in data["contenders"]] + [c for c in data["contenders"] if c not in ORDER]


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not math.isnan(float(x)) else None


def _get(d: Any, *path: str) -> float | None:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return _num(d)


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


# -- progress lines ----------------------------------------------------------------------------
def brief_latency(lat: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} " + (f"p50 {v['p50_ms']:.2f} ms p99 {v['p99_ms']:.2f} ms" if "p50_ms" in v else f"ERROR {v['error']}")
        for k, v in lat.items()
    )


def brief_throughput(tp: dict[str, Any]) -> str:
    return ", ".join(
        f"{n}: {v['calls_per_s']:.0f}/s p99 {v['p99_ms']:.1f} ms"
        + (f" ({v['errors']} errors)" if v.get("errors") else "")
        if "calls_per_s" in v
        else f"{n}: ERROR {v.get('error')}"
        for n, v in tp.items()
    )


def brief_scale(sc: dict[str, Any], n: int) -> str:
    parts = []
    for k, v in sc.items():
        if "error" in v:
            parts.append(f"{k} server(s): ERROR {v['error'][:200]}")
        else:
            extra = f" (healthz {v['healthz_s']:.2f} s)" if "healthz_s" in v else ""
            parts.append(f"{k} server(s): {v['all_ready_s']:.2f} s{extra}")
    return "; ".join(parts)


# -- metrics -----------------------------------------------------------------------------------
Extract = Callable[[dict[str, Any], str], float | None]


def _metrics(data: dict[str, Any]) -> list[tuple[str, str, str, str, str, Extract]]:
    """(key, group, label, unit, better, extract(round, contender))."""
    plan = data["plan"]
    ms: list[tuple[str, str, str, str, str, Extract]] = []

    def lat(size: str, q: str) -> Extract:
        return lambda rd, c: _get(rd.get(c), "latency", size, q)

    def added(rd: dict[str, Any], c: str) -> float | None:
        mine, direct = (
            _get(rd.get(c), "latency", "small", "p50_ms"),
            _get(rd.get("direct"), "latency", "small", "p50_ms"),
        )
        return None if mine is None or direct is None or c == "direct" else mine - direct

    ms.append(("lat.small.p50", "latency", "echo p50", "ms", "low", lat("small", "p50_ms")))
    ms.append(("lat.small.added", "latency", "echo p50 added over direct", "ms", "low", added))
    ms.append(("lat.small.p99", "latency", "echo p99", "ms", "low", lat("small", "p99_ms")))
    for size in ("100KB", "5MB"):
        if size in plan["latency_calls"]:
            ms.append((f"lat.{size}.p50", "latency", f"echo {size} p50", "ms", "low", lat(size, "p50_ms")))
            ms.append((f"lat.{size}.p99", "latency", f"echo {size} p99", "ms", "low", lat(size, "p99_ms")))
    for n in plan["levels"]:

        def rate(rd: dict[str, Any], c: str, n: int = n) -> float | None:
            v = (rd.get(c) or {}).get("throughput", {}).get(str(n), {})
            return None if v.get("errors") else _num(v.get("calls_per_s"))

        def p99(rd: dict[str, Any], c: str, n: int = n) -> float | None:
            v = (rd.get(c) or {}).get("throughput", {}).get(str(n), {})
            return None if v.get("errors") else _num(v.get("p99_ms"))

        def cpu(rd: dict[str, Any], c: str, n: int = n) -> float | None:
            v = (rd.get(c) or {}).get("throughput", {}).get(str(n), {})
            return _num(v.get("client_cpu_share"))

        ms.append((f"tput.{n}.rate", "throughput", f"throughput, {n} sessions", "calls/s", "high", rate))
        ms.append((f"tput.{n}.p99", "throughput", f"{n} sessions p99", "ms", "low", p99))

        def gw(rd: dict[str, Any], c: str, n: int = n) -> float | None:
            v = (rd.get(c) or {}).get("throughput", {}).get(str(n), {})
            return _num(v.get("gateway_us_per_call"))

        ms.append((f"tput.{n}.gw_us", "throughput", f"{n} sessions: gateway CPU per call", "µs", "low", gw))
        ms.append((f"tput.{n}.client_cpu", "throughput", f"{n} sessions: load generator CPU", "cores", "info", cpu))

    ms.append(
        (
            "mem.idle",
            "memory",
            "idle RSS (gateway + children)",
            "MiB",
            "low",
            lambda rd, c: _get(rd.get(c), "idle_rss_mib"),
        )
    )
    ms.append(
        (
            "mem.per_session",
            "memory",
            "per idle session",
            "KiB",
            "low",
            lambda rd, c: _get(rd.get(c), "sessions", "per_session_kib"),
        )
    )
    ms.append(
        (
            "mem.opened",
            "memory",
            "idle sessions held",
            "sessions",
            "info",
            lambda rd, c: _get(rd.get(c), "sessions", "opened"),
        )
    )
    return ms


def _scale_metrics(data: dict[str, Any]) -> list[tuple[str, str, str, str, str, Extract]]:
    n = str(data["plan"]["scale_servers"])

    def at(*path: str) -> Extract:
        return lambda rd, c: _get(rd.get(c), *path)

    return [
        ("scale.1.ready", "scale", "1 server: start to answering", "s", "low", at("1", "all_ready_s")),
        (f"scale.{n}.ready", "scale", f"{n} servers: start to all answering", "s", "low", at(n, "all_ready_s")),
        (f"scale.{n}.healthz", "scale", f"{n} servers: start to /healthz healthy", "s", "low", at(n, "healthz_s")),
        (f"scale.{n}.list", "scale", f"tools/list p50, {n} configured", "ms", "low", at(n, "tools_list", "p50_ms")),
        (f"scale.{n}.rss", "scale", f"RSS with {n} servers", "MiB", "low", at(n, "rss_mib")),
    ]


def _stats(vals: list[float]) -> dict[str, float]:
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    names = _names(data)
    peers = [c for c in names if data["contenders"][c]["peer"]]
    metrics: dict[str, Any] = {}
    for rounds, defs in ((data["rounds"], _metrics(data)), (data["scale_rounds"], _scale_metrics(data))):
        for key, group, label, unit, better, extract in defs:
            stats = {}
            for c in names:
                vals = [v for rd in rounds if (v := extract(rd, c)) is not None]
                if vals:
                    stats[c] = _stats(vals)
            if not stats:
                continue
            best = None
            if better in ("low", "high"):
                cands = [(stats[p]["median"], p) for p in peers if p in stats]
                if cands:
                    best = (min if better == "low" else max)(cands)[1]
            ratios = {}
            for m in MESH:
                if best and m in stats and stats[best]["median"]:
                    ratios[m] = stats[m]["median"] / stats[best]["median"]
            metrics[key] = {
                "group": group,
                "label": label,
                "unit": unit,
                "better": better,
                "stats": stats,
                "best_peer": best,
                "ratio": ratios,
            }
    return {"metrics": metrics, "targets": _targets(data, metrics)}


def _median(metrics: dict[str, Any], key: str, c: str) -> float | None:
    m = metrics.get(key)
    if not m or c not in m["stats"]:
        return None
    return float(m["stats"][c]["median"])


def _targets(data: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    added = metrics.get("lat.small.added")
    # The thin forwarder is held to the same speed targets: where it misses one too, no gateway
    # written in Python can meet that target on this machine, mcpmesh included.
    for m in (*MESH, "thin"):
        mine = _median(metrics, "lat.small.added", m)
        best = added["best_peer"] if added else None
        ref = _median(metrics, "lat.small.added", best) if best else None
        if mine is not None and ref is not None:
            out.append(
                {
                    "target": "added p50 latency over direct ≤ ½ best peer's",
                    "who": m,
                    "value": f"{mine:.3f} ms",
                    "goal": f"≤ {ref / 2:.3f} ms (½ × {best} {ref:.3f} ms)",
                    "met": mine <= ref / 2,
                }
            )
        rate = metrics.get("tput.32.rate")
        mine = _median(metrics, "tput.32.rate", m)
        best = rate["best_peer"] if rate else None
        ref = _median(metrics, "tput.32.rate", best) if best else None
        if mine is not None and ref is not None:
            out.append(
                {
                    "target": "throughput at 32 sessions ≥ 3× best peer",
                    "who": m,
                    "value": f"{mine:.0f} calls/s",
                    "goal": f"≥ {3 * ref:.0f} (3 × {best} {ref:.0f})",
                    "met": mine >= 3 * ref,
                }
            )
        per = _median(metrics, "mem.per_session", m)
        opened = _median(metrics, "mem.opened", m)
        if per is not None:
            want = data["plan"]["idle_sessions_per_process" if m.endswith("session") else "idle_sessions"]
            errors = [rd.get(m, {}).get("sessions", {}).get("errors", 0) for rd in data["rounds"]]
            out.append(
                {
                    "target": "≤ 50 KB per idle session, 1,000 held without error",
                    "who": m,
                    "value": f"{per * 1024 / KB:.1f} KB × {opened:.0f} sessions ({sum(errors)} errors)",
                    "goal": "≤ 50 KB, 1,000 sessions" + ("" if want >= 1000 else f" (this run: {want})"),
                    "met": per * 1024 / KB <= 50 and not any(errors) and (opened or 0) >= min(want, 1000),
                }
            )
    n = str(data["plan"]["scale_servers"])
    single = _median(metrics, "scale.1.ready", "direct")
    # "The slowest single server's start time" read two ways: one server started alone, and the
    # slowest of the n started at once with no gateway (on 2 cores they share the CPU, so each
    # starts slower than alone: no gateway can make n starts cheaper than the servers themselves).
    together = _median(metrics, f"scale.{n}.ready", "direct")
    for m in MESH:
        many = _median(metrics, f"scale.{n}.healthz", m)
        own = _median(metrics, "scale.1.ready", m)
        value = f"{many:.2f} s (mcpmesh spawn → /healthz all healthy)" if many is not None else ""
        if many is not None and single is not None:
            out.append(
                {
                    "target": f"{n} servers healthy ≤ slowest single start + 0.5 s (started alone)",
                    "who": m,
                    "value": value,
                    "goal": f"≤ {single + 0.5:.2f} s (one server-everything alone {single:.2f} s + 0.5)"
                    + (f"; vs mcpmesh with 1 server: ≤ {own + 0.5:.2f} s" if own is not None else ""),
                    "met": many <= single + 0.5,
                }
            )
        if many is not None and together is not None:
            out.append(
                {
                    "target": f"{n} servers healthy ≤ slowest single start + 0.5 s (all {n} started at once)",
                    "who": m,
                    "value": value,
                    "goal": f"≤ {together + 0.5:.2f} s (the slowest of {n} server-everything started at once "
                    f"with no gateway {together:.2f} s + 0.5)",
                    "met": many <= together + 0.5,
                }
            )
    return out


# -- Markdown ----------------------------------------------------------------------------------
def _cell(st: dict[str, float] | None, rounds: int) -> str:
    if st is None:
        return "—"
    if st["n"] > 1 and rounds > 1:
        return f"{fmt(st['median'])} ({fmt(st['min'])}–{fmt(st['max'])})"
    return fmt(st["median"])


def markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    names = _names(data)
    labels = [data["contenders"][c]["label"] for c in names]
    rounds = max(len(data["rounds"]), len(data["scale_rounds"]))
    mach = data["machine"]
    lines = [
        f"# mcpmesh benchmark, {data['date']} ({data['mode']} mode)",
        "",
        f"{mach['cpus']} cores, Python {mach['python']}, Node {mach['node']}, mcpmesh {mach['mcpmesh_commit']}; "
        f"{len(data['rounds'])} round(s) of the main workloads, {len(data['scale_rounds'])} of the scale workload, "
        f"interleaved (contender order rotated each round); cells are median (min–max) over rounds; "
        f"ratio = mcpmesh ÷ best peer (the best of supergateway, mcp-proxy, ContextForge for that figure).",
        "",
        "| figure | unit | " + " | ".join(labels) + " | best peer | shared ÷ best | session ÷ best |",
        "|---|---|" + "---:|" * len(labels) + "---|---:|---:|",
    ]
    group = None
    for m in s["metrics"].values():
        if m["group"] != group:
            group = m["group"]
            lines.append(f"| **{group}** | |" + " |" * len(labels) + " | | |")
        best = m["best_peer"]
        best_label = data["contenders"][best]["label"] if best else ""
        cells = [_cell(m["stats"].get(c), rounds) for c in names]
        ratios = [f"{m['ratio'][k]:.2f}×" if k in m["ratio"] else "" for k in MESH]
        lines.append(
            f"| {m['label']} | {m['unit']} | " + " | ".join(cells) + f" | {best_label} | " + " | ".join(ratios) + " |"
        )
    lines += ["", "## Targets", "", "| target | who | value | goal | met |", "|---|---|---|---|---|"]
    for t in s["targets"]:
        lines.append(f"| {t['target']} | {t['who']} | {t['value']} | {t['goal']} | {'yes' if t['met'] else '**no**'} |")
    notes = _notes(data)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _notes(data: dict[str, Any]) -> list[str]:
    plan = data["plan"]
    notes = [
        "Backend: `@modelcontextprotocol/server-everything` (stdio) from tools/node_modules, `tools/call echo`. "
        "server-everything has no tool that returns sized content for a small request, so the 100 KB and 5 MB "
        "rows echo a message of that size: the request carries the size as well as the result.",
        "Latency: the official SDK client (`ClientSession` over `streamable_http_client`, or over `stdio_client` "
        f"for direct), sequential calls on one session after 5 warm-up calls; {plan['latency_calls']} calls per size.",
        "Throughput: the raw load generator (bench/loadgen.py: HTTP/1.1 over asyncio sockets on uvloop, one "
        "keep-alive connection per session, one client process); direct = the same workers multiplexed over one "
        f"stdio pipe. {plan['warmup']} s warm-up, {plan['duration']} s window. Contenders with one backend process "
        f"per session run up to {plan['per_process_max_sessions']} sessions only (each session starts a Node process).",
        "Memory: RSS of the gateway and all its descendants. Sessions are opened (initialize + initialized) over a "
        "pool of 16 connections that are then closed, so the figure is the session state, not open sockets; "
        f"{plan['idle_sessions']} sessions ({plan['idle_sessions_per_process']} for one-process-per-session "
        "contenders).",
        "Scale: 15 server-everything servers (mcpmesh, mcp-proxy: one gateway with 15 servers; supergateway, "
        "ContextForge: 15 gateway processes; direct: 15 stdio processes at once), from spawn until every endpoint "
        "answered initialize + tools/list over the raw client.",
        "supergateway binds 0.0.0.0 (it has no host flag); everything else binds 127.0.0.1. "
        "All load targets 127.0.0.1.",
    ]
    ceiling = data.get("ceiling") or []
    if ceiling:
        per = {n: [c[n]["calls_per_s"] for c in ceiling if n in c] for n in ceiling[0]}
        notes.append(
            "Load generator ceiling (against a null HTTP server in its own process, same machine): "
            + ", ".join(f"{n} sessions {fmt(statistics.median(v))} calls/s" for n, v in per.items())
            + "; its CPU use per run is in the `load generator CPU` rows (1.0 = one core busy)."
        )
    foreign = [r["cpu"]["foreign_cores"] for rd in data["rounds"] for r in rd.values() if "cpu" in r]
    if foreign:
        notes.append(
            "CPU used by processes outside the bench during the contender rounds: "
            f"median {statistics.median(foreign):.2f}, max {max(foreign):.2f} cores "
            f"of {data['machine']['cpus']} (0 on a quiet machine)."
        )
    for c, why in data.get("skipped", {}).items():
        notes.append(f"{c} skipped: {why}")
    for c, why in data.get("install_problems", {}).items():
        notes.append(f"install problem, {c}: {why}")
    for rd in data["rounds"]:
        for c, r in rd.items():
            if "error" in r:
                notes.append(f"{c} failed in a round: {r['error'][:300]}")
            for size, v in r.get("latency", {}).items():
                if "error" in v:
                    said = re.sub(r"\s+", " ", re.sub(r"<[^>]*>|\\n", " ", v.get("raw_http") or "")).strip()
                    raw = f" (raw client: {said[:160]})" if said else ""
                    notes.append(f"{c}, {size} echo: {v['error'][:160]}{raw}")
            for n, v in r.get("throughput", {}).items():
                if v.get("errors") or "error" in v:
                    notes.append(f"{c}, {n} sessions: {v.get('error') or v.get('first_errors')}"[:300])
            if r.get("sessions") and not r["sessions"].get("with_session_id"):
                notes.append(f"{c} issues no Mcp-Session-Id: it keeps no per-session state to measure")
            if r.get("sessions", {}).get("errors"):
                notes.append(f"{c}, idle sessions: {r['sessions']['first_errors']}"[:300])
    for rd in data["scale_rounds"]:
        for c, r in rd.items():
            for n, v in r.items():
                if "error" in v:
                    notes.append(f"{c}, scale {n}: {v['error'][:300]}")
    notes.append(
        "Leftover processes after the run: "
        + (", ".join(map(str, data["leftovers"])) + " (killed)" if data.get("leftovers") else "none")
    )
    return list(dict.fromkeys(notes))


# -- chart -------------------------------------------------------------------------------------
def chart(data: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    s = data["summary"]["metrics"]
    names = _names(data)
    labels = [data["contenders"][c]["label"].replace(" ", "\n", 1) for c in names]
    palette = {
        "direct": "#888888",
        "null-http": "#cccccc",
        "thin": "#aaaaaa",
        "mcpmesh-shared": "#1f77b4",
        "mcpmesh-session": "#6baed6",
    }
    palette |= {"supergateway": "#ff7f0e", "mcp-proxy": "#2ca02c", "contextforge": "#d62728"}
    extra = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    colors = [palette.get(c) or extra[i % len(extra)] for i, c in enumerate(names)]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))

    def bars(ax: Any, key: str, title: str) -> None:
        m = s.get(key)
        if not m:
            ax.set_visible(False)
            return
        med = [m["stats"].get(c, {}).get("median", 0) for c in names]
        lo = [med[i] - m["stats"].get(c, {}).get("min", med[i]) for i, c in enumerate(names)]
        hi = [m["stats"].get(c, {}).get("max", med[i]) - med[i] for i, c in enumerate(names)]
        ax.bar(range(len(names)), med, yerr=[lo, hi], color=colors, capsize=3)
        ax.set_xticks(range(len(names)), labels, fontsize=8)
        ax.set_title(f"{title} ({m['unit']})")
        for i, v in enumerate(med):
            if v:
                ax.text(i, v, fmt(v), ha="center", va="bottom", fontsize=8)

    bars(axes[0][0], "lat.small.p50", "tools/call echo latency, p50, 1 session")
    ax = axes[0][1]
    for c, col in zip(names, colors, strict=True):
        pts = [
            (n, s[f"tput.{n}.rate"]["stats"][c]["median"])
            for n in data["plan"]["levels"]
            if f"tput.{n}.rate" in s and c in s[f"tput.{n}.rate"]["stats"]
        ]
        if pts:
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o", color=col, label=data["contenders"][c]["label"]
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent sessions")
    ax.set_title("throughput (calls/s, log scale)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    bars(axes[1][0], "mem.per_session", "memory per idle session, log scale")
    axes[1][0].set_yscale("log")
    n = data["plan"]["scale_servers"]
    bars(axes[1][1], f"scale.{n}.ready", f"cold start of {n} servers to all answering")
    fig.suptitle(f"mcpmesh bench {data['date']} ({data['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
