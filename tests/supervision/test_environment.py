"""What a real server finds in its environment: the allow-list, its own `env` and `inherit_env`,
and `[mesh] inherit_env`, which every server gets."""

from __future__ import annotations

import json

import mcp
import pytest

from mcpmesh.config import MeshConfig
from tests.conftest import everything_server, running_mesh

pytestmark = [pytest.mark.anyio, pytest.mark.node]


async def environment_of(url: str) -> dict[str, str]:
    """server-everything's get-env tool: the process's whole environment."""
    async with mcp.Client(url, mode="legacy") as client:
        result = await client.call_tool("get-env", {})
    return json.loads(result.content[0].text)  # type: ignore[union-attr, no-any-return]


async def test_mesh_wide_inherit_env_reaches_every_server_beside_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPMESH_TEST_TEAM_CA", "/etc/team/ca.pem")
    monkeypatch.setenv("MCPMESH_TEST_OWN", "only for b")
    monkeypatch.setenv("MCPMESH_TEST_UNLISTED", "nobody asked")
    servers = {"a": everything_server(), "b": {**everything_server(), "inherit_env": ["MCPMESH_TEST_OWN"]}}
    async with running_mesh(servers, inherit_env=["MCPMESH_TEST_TEAM_CA"]) as mesh:
        a, b = await environment_of(mesh.url("a")), await environment_of(mesh.url("b"))
    assert a.get("MCPMESH_TEST_TEAM_CA") == b.get("MCPMESH_TEST_TEAM_CA") == "/etc/team/ca.pem"
    assert "MCPMESH_TEST_OWN" not in a and b.get("MCPMESH_TEST_OWN") == "only for b"
    assert "MCPMESH_TEST_UNLISTED" not in a and "MCPMESH_TEST_UNLISTED" not in b


def test_mesh_wide_inherit_env_is_part_of_each_servers_config() -> None:
    config = MeshConfig.model_validate(
        {"mesh": {"inherit_env": ["A", "B"]}, "servers": {"s": {"command": "x", "inherit_env": ["B", "C"]}}}
    )
    assert config.servers["s"].inherit_env == ["A", "B", "C"]  # a change to [mesh] changes every server
