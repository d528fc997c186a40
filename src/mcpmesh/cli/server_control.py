"""`mcpmesh restart|stop|start NAME` and `mcpmesh reload`: ask a running mesh to act, and say what it did."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
from rich.console import Console

CONTROL_TIMEOUT = 60.0  # a stop waits for the server's processes to end (SIGTERM, then SIGKILL)


def control(base_url: str, action: str, name: str, console: Console) -> int:
    """0 when the mesh did it (or it was already so), 1 when it refused, 2 when unreachable."""
    answer = _post(base_url, f"/v1/servers/{name}/{action}", console)
    if answer is None:
        return 2
    response, body = answer
    if response.status_code >= 400:
        console.print(f"[red]{action} {name}: {body.get('message') or response.text}[/red]")
        return 1
    server = body["server"]
    done = "done" if body["changed"] else f"nothing to do (already {server['state']})"
    console.print(f"{action} {name}: {done}; now {server['state']} ({server['reason']})")
    return 0


def reload(base_url: str, as_json: bool, console: Console) -> int:
    """`mcpmesh reload`: 0 when the mesh applied its file again, 1 when it refused (and kept
    running the old config), 2 when unreachable."""
    from mcpmesh.supervision.reload import ReloadResult, summary

    answer = _post(base_url, "/v1/reload", console)
    if answer is None:
        return 2
    response, body = answer
    style = "red" if response.status_code >= 400 else None
    if as_json and "reloaded" in body:
        print(json.dumps(body))
    elif "reloaded" in body:  # applied (200) or the file refused (422): what `up` logs too
        known = {f.name for f in dataclasses.fields(ReloadResult)}
        console.print(
            summary(ReloadResult(**{k: v for k, v in body.items() if k in known})),
            style=style,
            markup=False,
            soft_wrap=True,
        )
    else:  # 403, 409: the mesh would not try
        console.print(f"reload: {body.get('message') or response.text}", style=style, markup=False, soft_wrap=True)
    return 0 if response.status_code < 400 else 1


def _post(base_url: str, path: str, console: Console) -> tuple[httpx.Response, dict[str, Any]] | None:
    """The mesh's answer and its JSON body ({} when it has none); None, said, when unreachable."""
    try:
        response = httpx.post(f"{base_url}{path}", timeout=CONTROL_TIMEOUT)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the mesh at {base_url}: {exc}[/red]")
        return None
    json_body = response.headers.get("content-type", "").startswith("application/json")
    return response, response.json() if json_body else {}
