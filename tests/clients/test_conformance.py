"""The official MCP conformance suite against the project's stdio fixture, through the mesh."""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio
import pytest

from tests.conftest import conformance_server, node22, node_module, running_mesh

pytestmark = [pytest.mark.anyio, pytest.mark.node]

ALL_SERVER_SCENARIOS = 32


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_all_32_server_scenarios_pass(sharing: str, tmp_path: Path) -> None:
    cli = node_module("@modelcontextprotocol", "conformance", "dist", "index.js")
    async with running_mesh({"fixture": {**conformance_server(), "sharing": sharing}}) as mesh:
        with anyio.fail_after(300):
            proc = await anyio.run_process(
                [node22(), str(cli), "server", "--url", mesh.url("fixture"), "--suite", "all", "-o", str(tmp_path)],
                check=False,
                env={**os.environ, "PATH": f"{Path(node22()).parent}{os.pathsep}{os.environ['PATH']}"},
            )
    output = proc.stdout.decode() + proc.stderr.decode()
    passed_scenarios = re.findall(r"^✓ (\S+):", output, re.MULTILINE)
    failed_scenarios = re.findall(r"^✗ (\S+):", output, re.MULTILINE)
    assert failed_scenarios == [], output
    assert len(passed_scenarios) == ALL_SERVER_SCENARIOS, output
    total = re.search(r"Total: (\d+) passed, (\d+) failed", output)
    assert total is not None and total.group(2) == "0", output
    assert proc.returncode == 0, output
