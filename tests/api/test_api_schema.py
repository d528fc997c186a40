"""The /v1 API against its own OpenAPI document, fuzzed by schemathesis (coverage, fuzzing and
stateful phases, every check) on a live mesh with shared, session-mode and failed servers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from mcpmesh.api.openapi import OPENAPI
from tests.conftest import conformance_server, running_mesh

pytestmark = pytest.mark.anyio

SCHEMATHESIS = Path(sys.executable).parent / "st"


async def test_the_api_keeps_every_promise_of_its_openapi_document(tmp_path: Path) -> None:
    servers = {
        "fixture": {**conformance_server(), "dedicated_port": True},
        "solo": {**conformance_server(), "sharing": "session"},
        "broken": {"command": "/nonexistent/server", "restart": {"max_restarts": 0}},
    }
    async with running_mesh(servers, state_dir=str(tmp_path / "state"), ports="23570-23579") as mesh:
        command = [
            str(SCHEMATHESIS),
            "run",
            f"{mesh.base_url}/v1/openapi.json",
            "--checks=all",
            "--max-examples=25",
            "--seed=1",
            "--request-timeout=30",
            f"--report-dir={tmp_path / 'report'}",
        ]
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout, done.stdout
    tested = re.search(r"Operations:\s+(\d+) selected / (\d+) total", done.stdout)
    assert tested is not None, done.stdout
    operations = sum(len(methods) for methods in OPENAPI["paths"].values()) - 1  # not the document itself
    assert tested.groups() == (str(operations), str(operations))
