"""How uvicorn serves every listener of the mesh (the main port and each dedicated port)."""

from __future__ import annotations

from typing import Any

# httptools named rather than "auto": the same parser wherever the mesh runs. MCP has no WebSocket
# transport, so no WebSocket protocol either ("auto" would import one at start-up, before any
# server is spawned). Joining each response's header block and body into one writev was tried
# twice (bench/README.md): no difference measured, so uvicorn's protocol is used as it is.
SERVE_WITH: dict[str, Any] = {"http": "httptools", "ws": "none"}
