"""`mcpmesh restart|stop|start NAME`: ask a running mesh to act on one server, and say what it did."""

from __future__ import annotations

import httpx
from rich.console import Console

CONTROL_TIMEOUT = 60.0  # a stop waits for the server's processes to end (SIGTERM, then SIGKILL)


def control(base_url: str, action: str, name: str, console: Console) -> int:
    """0 when the mesh did it (or it was already so), 1 when it refused, 2 when unreachable."""
    try:
        response = httpx.post(f"{base_url}/v1/servers/{name}/{action}", timeout=CONTROL_TIMEOUT)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the mesh at {base_url}: {exc}[/red]")
        return 2
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        console.print(f"[red]{action} {name}: {body.get('message') or response.text}[/red]")
        return 1
    server = body["server"]
    done = "done" if body["changed"] else f"nothing to do (already {server['state']})"
    console.print(f"{action} {name}: {done}; now {server['state']} ({server['reason']})")
    return 0
