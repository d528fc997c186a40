"""What an operator sees: Prometheus metrics (metrics.py), recent traffic for the dashboard
(stats.py), the audit trail of tool calls (audit.py), how the mesh logs (logs.py), and the mask for
secrets in all of it (redact.py). Calls are observed through router's `CallObserver`; the live
state is read from supervision's servers at scrape time.

May import: supervision, router, registry, config, jsonrpc, errors."""
