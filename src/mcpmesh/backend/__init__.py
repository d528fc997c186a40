"""One connection to one server: what a connection offers (connection.py), a child process over
stdio (process.py), a remote server over HTTP (remote.py, with its SSE reader in sse.py), and one
MCP connection over either (upstream.py: framing, era probe, handshake, the gateway's own calls).

May import: config, protocol, jsonrpc, errors. Knows nothing of clients or their sessions."""
