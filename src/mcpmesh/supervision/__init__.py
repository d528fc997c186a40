"""Desired vs actual servers: the supervisor (supervisor.py) owns every configured server; a server
(server.py) has a state with its reason and serves its processes until they end, in one of two
kinds, shared (shared.py: one process, restarted with backoff) or per session (per_session.py: a
process per client session, from a warm spare); health is probed over MCP (probes.py); stderr is
kept as numbered lines (stderr_log.py); a server's processes are capped (process_cap.py), and what
a mesh killed with -9 left running is reaped at the next start (orphans.py); a reload (reload.py)
applies a changed config file's difference to the running servers.

May import: router, backend, protocol, config, registry, jsonrpc, errors. What it reports goes
through `server.Reporting`, given by whoever builds the supervisor."""
