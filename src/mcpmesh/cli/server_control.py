"""`mcpmesh restart|stop|start NAME` and `mcpmesh reload`: ask a running mesh to act, and say what it did."""

from __future__ import annotations

import dataclasses
import json

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


def reload(base_url: str, as_json: bool, console: Console) -> int:
    """`mcpmesh reload`: 0 when the mesh applied its file again, 1 when it refused it (and kept
    running the old one), 2 when unreachable."""
    try:
        response = httpx.post(f"{base_url}/v1/reload", timeout=CONTROL_TIMEOUT)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the mesh at {base_url}: {exc}[/red]")
        return 2
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if as_json and "reloaded" in body:
        print(json.dumps(body))
    elif response.status_code >= 400:
        why = body.get("message") or response.text  # the file's error: may hold brackets, never markup
        console.print(f"reload refused, the mesh keeps its running config: {why}", style="red", markup=False)
    else:
        from mcpmesh.supervision.reload import ReloadResult, summary

        known = {f.name for f in dataclasses.fields(ReloadResult)}
        console.print(summary(ReloadResult(**{k: v for k, v in body.items() if k in known})), markup=False)
    return 0 if response.status_code < 400 else 1
