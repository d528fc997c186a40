"""`mcpmesh up` starts its servers sooner when it loads only what it serves with: the client
commands' libraries (httpx, rich, the MCP SDK) and a WebSocket stack are not imported on the way.
bench/README.md measures the cold start; this keeps the imports from creeping back."""

from __future__ import annotations

import subprocess
import sys

import uvicorn

from mcpmesh.front.http1.connection import Http1Protocol
from mcpmesh.front.uvicorn_options import SERVE_WITH

CLIENT_ONLY = ("httpx", "rich", "mcp", "pygments")


def test_the_up_command_imports_no_client_libraries() -> None:
    code = "import sys, mcpmesh.cli.main; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(out.stdout.split())
    assert "uvicorn" in loaded and "mcpmesh" in loaded  # the probe itself works
    assert loaded.isdisjoint(CLIENT_ONLY), sorted(loaded & set(CLIENT_ONLY))


def test_listeners_load_no_websocket_protocol() -> None:
    config = uvicorn.Config(lambda scope, receive, send: None, **SERVE_WITH)
    config.load()
    assert config.ws_protocol_class is None
    assert config.http_protocol_class is Http1Protocol
