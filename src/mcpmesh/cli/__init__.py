"""The `mcpmesh` command: main.py parses the arguments and hands each subcommand to its module: up.py
(run the mesh, with up_progress.py), tables.py (`status`, `ports`), server_control.py
(`restart|stop|start`), events_and_logs.py (`events`, `logs`), validate.py (`validate`),
connect.py (`connect`, `disconnect`, with client_configs.py and connections.py), stdio_bridge.py (`stdio`).

May import anything below it; the client commands import httpx, rich and the MCP SDK only when they
run, so `up` does not load them."""
