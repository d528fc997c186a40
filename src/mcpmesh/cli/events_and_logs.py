"""`mcpmesh events` and `mcpmesh logs`: page through (and with --follow, keep reading) the event
log and a server's stderr of a running mesh, over its /v1 API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from mcpmesh.errors import MeshUnreachable

FOLLOW_INTERVAL = 1.0  # seconds between polls while following; the API answers at once
PAGE = 1000  # the API's largest page


def pages(
    http: httpx.Client, path: str, key: str, params: dict[str, Any], follow: bool, sleep: Callable[[float], None]
) -> Iterator[dict[str, Any]]:
    """Every item under `key` of `path` from the cursor `after`, paging with `next`; when following,
    keep polling for more until interrupted."""
    after = 0
    while True:
        try:
            reply = http.get(path, params={**params, "after": after, "limit": PAGE})
        except httpx.HTTPError as exc:
            raise MeshUnreachable(f"cannot reach the mesh at {http.base_url}: {exc}") from exc
        if reply.status_code != 200:
            raise MeshUnreachable(_problem(reply))
        body = reply.json()
        yield from body[key]
        after = body["next"]
        if len(body[key]) < PAGE:
            if not follow:
                return
            sleep(FOLLOW_INTERVAL)


def events(base_url: str, server: str | None, follow: bool, as_json: bool, out: Callable[[str], None] = print) -> int:
    params = {"server": server} if server else {}
    return _run(base_url, "/v1/events", "events", params, follow, out, _event_line if not as_json else json.dumps)


def logs(base_url: str, server: str, follow: bool, as_json: bool, out: Callable[[str], None] = print) -> int:
    line = json.dumps if as_json else _log_line
    return _run(base_url, f"/v1/servers/{server}/logs", "lines", {}, follow, out, line)


def _run(
    base_url: str,
    path: str,
    key: str,
    params: dict[str, Any],
    follow: bool,
    out: Callable[[str], None],
    render: Callable[[dict[str, Any]], str],
) -> int:
    """0 when everything was printed (or following was interrupted), 2 when the mesh cannot say."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        try:
            for item in pages(http, path, key, params, follow, time.sleep):
                out(render(item))
        except MeshUnreachable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 0
    return 0


def _event_line(event: dict[str, Any]) -> str:
    detail = " ".join(f"{k}={_value(v)}" for k, v in event["detail"].items())
    return f"{_clock(event['at'])} #{event['id']} {event['server'] or '-'} {event['kind']} {detail}".rstrip()


def _log_line(line: dict[str, Any]) -> str:
    return f"{_clock(line['at'])} [{line['pid'] or '-'}] {line['text']}"


def _value(value: Any) -> str:
    return value if isinstance(value, str) and value and " " not in value else json.dumps(value)


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def _problem(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["message"])
    except (ValueError, KeyError, TypeError):
        return f"the mesh answered {reply.status_code} {reply.reason_phrase}"
