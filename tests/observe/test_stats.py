"""TrafficStats: exact arithmetic on synthetic calls with known durations and a clock the test
moves, then GET /v1/stats through real traffic on a live mesh."""

from __future__ import annotations

import httpx
import pytest

from mcpmesh.observe.stats import BINS, FLOOR, RECENT, STEP, WINDOW, TrafficStats, bin_of, upper_edge
from mcpmesh.router.outcomes import Outcome
from mcpmesh.router.session import Call
from tests.conftest import fixture_server, running_mesh
from tests.observe.test_metrics import Raw

T0 = 1_800_000_000  # a wall-clock second that is a multiple of STEP


class Clock:
    def __init__(self) -> None:
        self.wall = float(T0)
        self.mono = 0.0  # so a call started at -d took exactly d


def stats_with_clock() -> tuple[TrafficStats, Clock]:
    clock = Clock()
    return TrafficStats(["fx"], clock=lambda: clock.wall, monotonic=lambda: clock.mono), clock


def call_taking(stats: TrafficStats, clock: Clock, seconds: float, outcome: str = Outcome.OK) -> None:
    """One call that ended now, after `seconds`."""
    call = Call.__new__(Call)  # the observer reads only `started`; no session is needed
    call.started = clock.mono - seconds
    stats.call_started("fx", call)
    stats.call_done("fx", call, outcome)


def test_bins_are_about_19_percent_wide_and_hold_their_upper_edge() -> None:
    assert bin_of(0.0) == bin_of(FLOOR) == 0
    assert bin_of(FLOOR * 2) == 4  # four bins per doubling
    for index in range(BINS - 1):
        edge = upper_edge(index)
        assert bin_of(edge) == index
        assert bin_of(edge * 1.0001) == index + 1
    assert bin_of(10_000.0) == BINS - 1


def test_a_quiet_server_reports_no_latency_and_no_error_rate() -> None:
    stats, _ = stats_with_clock()
    summary = stats.summary("fx")
    assert (summary["requests"], summary["rate"], summary["errors"]) == (0, 0.0, 0)
    assert summary["error_rate"] is None and summary["p50"] is None and summary["p99"] is None
    assert len(summary["series"]) == WINDOW // STEP
    assert all(point["requests"] == 0 and point["p50"] is None for point in summary["series"])


def test_rate_errors_and_percentiles_of_the_last_minute_are_exact() -> None:
    stats, clock = stats_with_clock()
    for _ in range(98):
        call_taking(stats, clock, 0.005)
    call_taking(stats, clock, 2.0, Outcome.TIMEOUT)
    call_taking(stats, clock, 0.005, Outcome.EXITED)
    for outcome in (Outcome.TOOL_ERROR, Outcome.CANCELLED, Outcome.SESSION_ENDED, Outcome.ERROR):
        call_taking(stats, clock, 0.005, outcome)
    summary = stats.summary("fx")
    assert summary["requests"] == 104
    assert summary["rate"] == 104 / RECENT
    assert summary["errors"] == 3  # timeout, exited and error; not tool_error, cancelled, session_ended
    assert summary["error_rate"] == 3 / 104
    assert summary["p50"] == 0.005  # the calls in its bin all took 5 ms: exact
    assert summary["p99"] == 0.005  # rank ceil(0.99 * 104) = 103 of 104 is still a 5 ms call
    assert summary["in_flight"] == 0


def test_a_percentile_is_the_slowest_call_of_the_bin_that_holds_it() -> None:
    stats, clock = stats_with_clock()
    for _ in range(40):
        call_taking(stats, clock, 0.0100)
    for _ in range(59):
        call_taking(stats, clock, 0.0105)  # the same bin as 10 ms
    call_taking(stats, clock, 0.3)
    assert bin_of(0.0100) == bin_of(0.0105) != bin_of(0.3)
    summary = stats.summary("fx")
    assert summary["p50"] == 0.0105  # the true p50 is 10 ms; within the bin's width above it
    assert summary["p99"] == 0.0105  # rank 99 of 100
    call_taking(stats, clock, 0.3)
    assert stats.summary("fx")["p99"] == 0.3  # rank 100 of 101 is a 0.3 s call


def test_calls_leave_the_summary_after_a_minute_and_the_series_after_the_window() -> None:
    stats, clock = stats_with_clock()
    for _ in range(10):
        call_taking(stats, clock, 0.01)
    clock.wall += 30
    call_taking(stats, clock, 0.04, Outcome.ERROR)
    summary = stats.summary("fx")
    assert summary["requests"] == 11
    series = {point["at"]: point for point in summary["series"]}
    assert series[T0]["requests"] == 10 and series[T0]["p50"] == 0.01 and series[T0]["errors"] == 0
    assert series[T0 + 30] == {"at": T0 + 30, "requests": 1, "errors": 1, "p50": 0.04, "p99": 0.04}
    assert summary["series"][-1]["at"] == T0 + 30  # the newest point is the current STEP

    clock.wall += RECENT - 30  # T0 + 60: the first ten ended over a minute ago
    assert stats.summary("fx")["requests"] == 1
    assert {p["at"]: p["requests"] for p in stats.summary("fx")["series"]}[T0] == 10

    clock.wall = T0 + WINDOW + 5  # T0's point has left the series; T0 + 30's is the oldest one left
    series_at = [p["at"] for p in stats.summary("fx")["series"]]
    assert series_at[0] == T0 + STEP and T0 not in series_at
    assert sum(p["requests"] for p in stats.summary("fx")["series"]) == 1


def test_a_reused_slot_forgets_the_second_it_held_before() -> None:
    stats, clock = stats_with_clock()
    call_taking(stats, clock, 0.01)
    clock.wall += WINDOW  # the same slot of the ring, one window later
    call_taking(stats, clock, 0.02)
    summary = stats.summary("fx")
    assert summary["requests"] == 1 and summary["p50"] == 0.02
    assert sum(p["requests"] for p in summary["series"]) == 1


def test_calls_in_flight_are_counted_until_they_end() -> None:
    stats, clock = stats_with_clock()
    call = Call.__new__(Call)
    call.started = clock.mono
    stats.call_started("fx", call)
    assert stats.summary("fx")["in_flight"] == 1 and stats.summary("fx")["requests"] == 0
    stats.call_done("fx", call, Outcome.OK)
    assert stats.summary("fx")["in_flight"] == 0 and stats.summary("fx")["requests"] == 1


@pytest.mark.anyio
async def test_v1_stats_reports_real_traffic_per_server() -> None:
    servers = {"fx": fixture_server("faulty_server.py"), "idle": fixture_server("faulty_server.py")}
    async with running_mesh(servers) as mesh, httpx.AsyncClient(timeout=20) as http:
        raw = await Raw.open(http, mesh.url("fx"), "stats test")
        for text in ("a", "b", "c"):
            assert (await raw.call_tool("echo", text=text))["result"]["content"][0]["text"] == text
        assert "error" in await raw.call_tool("no_such_tool")
        body = (await http.get(f"{mesh.base_url}/v1/stats")).json()
    assert body["window"] == WINDOW and body["step"] == STEP and body["recent"] == RECENT
    fx, idle = body["servers"]["fx"], body["servers"]["idle"]
    assert fx["requests"] == 4  # three echoes and one unknown tool (initialize is answered by the mesh)
    assert fx["errors"] == 1 and fx["error_rate"] == 1 / 4
    assert 0 < fx["p50"] <= fx["p99"] < 5
    assert sum(point["requests"] for point in fx["series"]) == 4
    assert idle["requests"] == 0 and idle["p50"] is None
