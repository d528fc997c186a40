"""Everything MCP-aware between client sessions and one server's connection. The multiplexer
(multiplexer.py) routes each message to the one client it belongs to; around it: client sessions
and their calls (session.py) and outboxes (outbox.py), how calls end (outcomes.py), who may
receive what (attribution.py), server-initiated requests (server_requests.py), input-required
bridging for 2026-07-28 callers (input_required.py), resource subscriptions and listen streams,
log levels, the gateway's own calls (gateway_calls.py), the catalog, the circuit breaker, and one
timer for waits that share a time-out (expiry.py).

May import: backend, protocol, registry (its record types), jsonrpc, errors. Knows no HTTP."""
