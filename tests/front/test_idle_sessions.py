"""Sessions clients leave behind without a DELETE (Claude Code's `mcp list`, the inspector,
mcp-remote): told apart from active ones, and a session-mode server's end sooner, process and all."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import httpx
import pytest

from mcpmesh.router import session as sessions
from mcpmesh.supervision.per_session import PerSessionServer
from tests.conftest import conformance_server, running_mesh
from tests.front.test_streamable_http import call, headers, open_session

pytestmark = pytest.mark.anyio


async def test_a_left_session_of_a_session_mode_server_ends_with_its_process_while_shared_ones_stay() -> None:
    servers = {"solo": {**conformance_server(), "sharing": "session"}, "conf": conformance_server()}
    async with running_mesh(servers, session_process_idle_timeout=0.5, session_idle_timeout=600) as mesh:
        solo = mesh.mesh.supervisor.servers["solo"]
        assert isinstance(solo, PerSessionServer)
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as http:
            shared_session = await open_session(http, mesh)
            spare = set(solo.processes)  # the warm spare, which the next session takes
            init = await http.post(
                mesh.url("solo"),
                json={
                    **call(1, "initialize"),
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "leaver", "version": "1"},
                    },
                },
                headers=headers(version=None),
            )
            left = init.headers["mcp-session-id"]
            assert (await http.post(mesh.url("solo"), json=call(2, "ping"), headers=headers(left))).status_code == 200
            assert spare and spare <= set(solo.processes)
            with anyio.fail_after(15):  # the client never sends DELETE
                while [s for s in mesh.mesh.store.sessions() if s.server == "solo"]:  # noqa: ASYNC110  # time-driven
                    await anyio.sleep(0.05)
            assert (await http.post(mesh.url("solo"), json=call(3, "ping"), headers=headers(left))).status_code == 404
            with anyio.fail_after(15):  # the session's process ends with it
                while spare & set(solo.processes):  # noqa: ASYNC110  # its stop runs in the background
                    await anyio.sleep(0.05)
            still = await http.post(mesh.url("conf"), json=call(4, "ping"), headers=headers(shared_session))
            assert still.status_code == 200


async def test_the_api_counts_sessions_left_idle_apart_from_active_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "ACTIVE_WINDOW", 0.5)
    async with running_mesh({"conf": conformance_server()}) as mesh:
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as http:
            await open_session(http, mesh)
            await anyio.sleep(0.6)  # past the (shortened) active window, with nothing in flight
            busy = await open_session(http, mesh)
            assert (await http.post(mesh.url("conf"), json=call(2, "ping"), headers=headers(busy))).status_code == 200
            described = (await http.get("/v1/servers/conf")).json()
            # A listening client stays active however long it is quiet: what `status` shows.
            async with http.stream("GET", mesh.url("conf"), headers={**headers(busy), "Accept": "text/event-stream"}):
                command = [sys.executable, "-m", "mcpmesh", "status", "--url", mesh.base_url]
                # os.environ, not the process's C-level environment, where pytest's terminal leaves COLUMNS=80
                environ = dict(os.environ)
                table = await anyio.to_thread.run_sync(
                    lambda: subprocess.run(command, capture_output=True, text=True, env=environ)
                )
    assert (described["sessions"], described["active_sessions"]) == (2, 1)
    assert "2 (1 idle)" in table.stdout, table.stdout
