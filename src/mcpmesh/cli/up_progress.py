"""What `mcpmesh up` prints while its servers start: a line as each one comes up or fails (with
why), a line now and then naming those still starting, then where every server is served."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from mcpmesh import __version__
from mcpmesh.supervision.server import ServerBase, State
from mcpmesh.supervision.supervisor import Supervisor

POLL = 0.1  # seconds between looks at the servers' states
STILL_STARTING_EVERY = 5.0  # seconds between "still starting" lines
SETTLED = (State.HEALTHY, State.FAILED, State.STOPPED)


async def show_progress(supervisor: Supervisor, base_url: str, patience: float, say: Callable[[str], None]) -> None:
    """Report each server as it settles (or changes state on the way); then the summary."""
    servers = supervisor.servers
    say(f"mcpmesh {__version__}: starting {len(servers)} server(s): {', '.join(servers)}")
    started = time.monotonic()
    last_seen = {name: State.STARTING for name in servers}
    last_reminder = started
    with anyio.move_on_after(patience):  # then the summary says where things stand
        while True:
            for name, server in servers.items():
                if server.state != last_seen[name]:
                    last_seen[name] = server.state
                    say(_transition(name, server, time.monotonic() - started))
            pending = [name for name, server in servers.items() if server.state not in SETTLED]
            if not pending:
                break
            if time.monotonic() - last_reminder >= STILL_STARTING_EVERY:
                last_reminder = time.monotonic()
                say(f"  ... still starting: {', '.join(pending)}")
            await anyio.sleep(POLL)
    say(summary(supervisor, base_url))


def _transition(name: str, server: ServerBase, elapsed: float) -> str:
    mark = {State.HEALTHY: "up", State.FAILED: "FAILED"}.get(server.state, server.state.value)
    return f"  {mark:<10} {name} after {elapsed:.1f}s: {server.reason}"


def summary(supervisor: Supervisor, base_url: str) -> str:
    up = sum(server.state == State.HEALTHY for server in supervisor.servers.values())
    lines = ["", f"mcpmesh {__version__}: {up} of {len(supervisor.servers)} server(s) up"]
    width = max([16, *(len(name) + 1 for name in supervisor.servers)])  # the URLs line up
    for name, server in supervisor.servers.items():
        mark = {State.HEALTHY: "up", State.FAILED: "FAILED"}.get(server.state, server.state.value)
        lines.append(f"  {mark:<10} {name:<{width}} {base_url}/servers/{name}/mcp  ({server.reason})")
    lines.append(f"  dashboard: {base_url}/   health: {base_url}/healthz   metrics: {base_url}/metrics   stop: Ctrl-C")
    return "\n".join(lines)
