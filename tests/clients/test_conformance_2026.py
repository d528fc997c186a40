"""The official MCP conformance suite's 0.2.0 line against the project's stdio fixture, through the mesh.

The suite (npm alias conformance-next in tools/package.json) runs the server scenarios that a spec
revision requires (``--requirements``): 2025-11-25, where the client speaks the initialize
handshake, and 2026-07-28, where every request is stateless and carries its own ``_meta``. The
fixture only speaks the handshake era, so the 2026-07-28 runs test the gateway's bridging: its
own server/discover, the envelope, input_required results for the fixture's mid-call requests.
What fails, and why (all of it the gateway's), is in conformance_2026_expected_failures.yaml.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml  # PyYAML, which schemathesis (a pinned test dependency) brings

from tests.conftest import conformance_server, node22, node_module, running_mesh

pytestmark = [pytest.mark.anyio, pytest.mark.node]

BASELINE = Path(__file__).with_name("conformance_2026_expected_failures.yaml")
# The runner's summary of each run: scenarios passed and failed (a scenario whose failures are
# SHOULD-level WARNINGs still counts as passed there), then checks passed and failed.
SUMMARY: dict[tuple[str, str], tuple[int, int, int, int]] = {
    ("2025-11-25", "shared"): (33, 0, 80, 0),
    ("2025-11-25", "session"): (33, 0, 80, 0),
    ("2026-07-28", "shared"): (31, 19, 143, 40),
    ("2026-07-28", "session"): (39, 11, 157, 32),
}


def expected_failures(sharing: str) -> dict[str, list[str]]:
    """This sharing mode's section of the baseline: `server` (for the runner) and `not_scored`."""
    section: dict[str, Any] = yaml.safe_load(BASELINE.read_text())[sharing]
    return {"server": list(section.get("server") or []), "not_scored": list(section.get("not_scored") or [])}


@pytest.mark.timeout(170)
@pytest.mark.parametrize("sharing", ["shared", "session"])
@pytest.mark.parametrize("requirements", ["2025-11-25", "2026-07-28"])
async def test_requirement_set(requirements: str, sharing: str, tmp_path: Path) -> None:
    cli = node_module("conformance-next", "dist", "index.js")
    expected = expected_failures(sharing)
    baseline = tmp_path / "expected-failures.yaml"
    baseline.write_text(yaml.safe_dump({"server": expected["server"]}))
    command = [node22(), str(cli), "server", "--requirements", requirements, "--expected-failures", str(baseline)]
    async with running_mesh({"fixture": {**conformance_server(), "sharing": sharing}}) as mesh:
        with anyio.fail_after(150):
            proc = await anyio.run_process(
                [*command, "--url", mesh.url("fixture"), "-o", str(tmp_path / "results")],
                check=False,
                env={**os.environ, "PATH": f"{Path(node22()).parent}{os.pathsep}{os.environ['PATH']}"},
            )
    output = proc.stdout.decode() + proc.stderr.decode()
    summary = output.partition("=== SUMMARY ===")[2]
    report = summary or output[-20000:]
    passed = re.findall(r"^✓ (\S+):", summary, re.MULTILINE)
    failed = re.findall(r"^✗ (\S+):", summary, re.MULTILINE)
    total = re.search(r"^Total: (\d+) passed, (\d+) failed$", summary, re.MULTILINE)
    assert total is not None, report

    # The not-scored scenarios, which the runner leaves out of its baseline: each one listed fails...
    ran = set(passed) | set(failed)
    listed_not_scored = set(expected["not_scored"]) & ran
    assert listed_not_scored - set(failed) == set(), report
    # ...and nothing fails that the baseline does not name.
    baselined = {entry.partition(":")[0] for entry in expected["server"]}
    assert set(failed) - baselined - listed_not_scored == set(), report

    # The runner's own verdict on the scored ones: every failure expected, no entry stale.
    assert "Baseline check passed: all failures are expected." in output, report
    assert proc.returncode == 0, report
    counts = (len(passed), len(failed), int(total.group(1)), int(total.group(2)))
    assert counts == SUMMARY[(requirements, sharing)], report
