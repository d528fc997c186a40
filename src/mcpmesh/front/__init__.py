"""HTTP only: the app's short way in for MCP requests (entry.py), Streamable HTTP with sessions
(streamable_http.py), 2026-07-28 requests (stateless.py), the 2024-11-05 HTTP+SSE transport
(legacy_sse.py), dedicated ports (dedicated.py), what every request must pass (security.py), the
request view, the responses and the first-reply wait, and HTTP/1.1 itself (http1/).

May import: router, protocol, config, registry (the port pool), jsonrpc, errors. It serves
servers through `served.ServedServer`, never importing supervision."""
