"""A server flooding its stderr beside mcp-server-time: the time server keeps answering, and the
flood's lines beyond the keep rate are dropped and counted (said in `mcpmesh logs`), not kept."""

from __future__ import annotations

import re

import anyio
import httpx
import pytest

from mcpmesh.backend.process import STDERR_KEEP_BURST
from tests.conftest import fixture_server, running_mesh, time_server
from tests.observe.test_metrics import Raw

CALLS = 20
DEADLINE = 60.0  # generous: the machine is shared; a starved loop takes far longer than this
DROPPED = re.compile(r"^\((\d+) stderr lines dropped: over \d+ lines/s\)$")


@pytest.mark.anyio
async def test_a_stderr_flood_does_not_starve_a_neighbour_and_its_dropped_lines_are_counted() -> None:
    servers = {"time": time_server("handshake"), "flood": fixture_server("faulty_server.py", "--flood-stderr")}
    async with running_mesh(servers) as mesh, httpx.AsyncClient(timeout=DEADLINE) as http:
        raw = await Raw.open(http, mesh.url("time"), "neighbour")
        with anyio.fail_after(DEADLINE):
            for _ in range(CALLS):
                answer = await raw.call_tool("get_current_time", timezone="UTC")
                assert answer["result"]["isError"] is False, answer
        await raw.close()
        child = next(iter(mesh.mesh.supervisor.servers["flood"].live_connections()))
        page = (await http.get(f"{mesh.base_url}/v1/servers/flood/logs", params={"limit": 100000})).json()
    notes = [int(m.group(1)) for line in page["lines"] if (m := DROPPED.match(line["text"]))]
    assert notes and all(n > 0 for n in notes)
    assert child.stderr_dropped >= sum(notes) > 0  # counted, not kept: the kept lines are bounded
    kept = [line for line in page["lines"] if line["text"].startswith("flood ")]
    assert kept and child.stderr_dropped > STDERR_KEEP_BURST  # the flood is still shown, in part
