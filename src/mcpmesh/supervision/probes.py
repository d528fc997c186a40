"""Health from MCP traffic: a live process is asked over MCP at every interval, and any answer
(even an error) means it is serving; never "the port is open"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from mcpmesh.backend.upstream import Upstream
from mcpmesh.errors import BackendTimeout, MeshError
from mcpmesh.protocol.envelope import GATEWAY_INFO, modern_meta

UNHEALTHY_AFTER = 2  # probes missed in a row before a live process is stopped


async def probes(upstream: Upstream, interval: float, timeout: float) -> AsyncIterator[int]:  # noqa: ASYNC109  # bounds each probe's exchange
    """Ask the process over MCP at every interval (`ping`, or `server/discover` for a 2026-07-28
    server; any answer, even an error, means it is serving) and yield how many probes in a row went
    unanswered: 0 after an answer. Ends when the process is gone."""
    method = probe_method(upstream)
    params: dict[str, Any] = {"_meta": modern_meta({}, GATEWAY_INFO)} if upstream.era == "modern" else {}
    misses = 0
    while True:
        await anyio.sleep(interval)
        if upstream.closed:
            return
        try:
            await upstream.call(method, params, timeout)
        except BackendTimeout:
            misses += 1
        except MeshError:
            return  # the process is gone; whoever runs it handles its exit
        else:
            misses = 0
        yield misses


def probe_method(upstream: Upstream) -> str:
    return "server/discover" if upstream.era == "modern" else "ping"
