"""`mcpmesh up`: run the mesh in the foreground until a stop signal, reporting its servers as they
come up (up_progress.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from mcpmesh.app import create_app
from mcpmesh.cli.locate import announce, base_url, withdraw
from mcpmesh.cli.up_progress import show_progress
from mcpmesh.config import MeshConfig, load_config
from mcpmesh.errors import ConfigError, RegistryUnusable
from mcpmesh.front.dedicated import listening_socket
from mcpmesh.front.uvicorn_options import serve_with
from mcpmesh.observe import logs
from mcpmesh.registry.ports import describe_holder
from mcpmesh.supervision.reload import Reloader, watch
from mcpmesh.supervision.supervisor import Supervisor

SETTLE_TIMEOUT = 120.0  # how long `up` waits for every server before printing where things stand


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RELOAD_SIGNAL = signal.SIGHUP  # reads the config file again (supervision/reload.py); never stops the mesh


SHUTDOWN_GRACE = 3  # seconds uvicorn waits for open connections (SSE streams) before closing them


# Per-request garbage (messages, futures, ASGI events) is short-lived and acyclic, so the default
# young-generation collection every 700 allocations only burned CPU (9% of the gateway's samples at
# 32 sessions, bench/README.md); every 50,000 still bounds how much cyclic garbage can pile up.
GC_THRESHOLDS = (50_000, 50, 100)

log = logging.getLogger("mcpmesh.up")


class _MeshServer(uvicorn.Server):
    """uvicorn's server with our own signal handling: SIGINT and SIGTERM start the graceful stop
    (every server process ended), and the process then exits normally instead of re-raising the
    signal as uvicorn does; a second signal forces the exit. SIGHUP reloads the config file."""

    on_stop: Callable[[], None] = staticmethod(lambda: None)
    on_reload: Callable[[], None] = staticmethod(lambda: None)
    _ending: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Sessions end first, so open streams close and calls in flight get an answer before
        # uvicorn waits for connections to finish (it looks at should_exit every 0.1 s). From a
        # task: a signal handler runs outside any, where anyio cannot tell which loop it is on
        # (ending a session-mode session starts the stop of its process); and whatever happens
        # there, the stop goes ahead.
        if not self.should_exit and self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(self._end_client_streams())
        super().handle_exit(sig, frame)

    async def _end_client_streams(self) -> None:
        try:
            self.on_stop()
        except Exception:
            log.exception("ending the client sessions failed; stopping anyway")

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        loop.add_signal_handler(RELOAD_SIGNAL, self.on_reload)
        try:
            yield
        finally:
            for sig in (*STOP_SIGNALS, RELOAD_SIGNAL):
                loop.remove_signal_handler(sig)


def up(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    config = _with_overrides(config, overrides)
    try:  # before any server is spawned: a busy port is said at once, with what to change
        listener = listening_socket(config.mesh.host, config.mesh.port)
    except OSError as exc:
        holder = describe_holder(config.mesh.port)
        print(
            f"error: cannot listen on {config.mesh.host}:{config.mesh.port}: {exc.strerror or exc} "
            f"(held by {holder}); set [mesh] port in {args.config} or pass --port",
            file=sys.stderr,
        )
        return 1

    def reread() -> MeshConfig:
        return _with_overrides(load_config(args.config), overrides)

    async def on_started(supervisor: Supervisor) -> None:
        # What start-up built (modules, config, app, servers) lives for good: never scan it again.
        gc.collect()
        gc.freeze()
        _background(_report(supervisor, config))
        if args.watch:
            _background(watch(Path(args.config), reloader))

    # A person reads the text log beside the progress lines: spawns, handshakes and uvicorn's
    # start-up lines there only break them up (`mcpmesh events` has them). A collector wants all.
    level = args.log_level or ("info" if args.log_format == "json" else "warning")
    gc.set_threshold(*GC_THRESHOLDS)
    _raise_descriptor_limit()
    try:  # opens the registry (creating state_dir): a corrupt or unwritable one is said in one line
        app = create_app(config, on_started, reload_from=reread)
    except RegistryUnusable as exc:
        listener.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reloader: Reloader = app.state.mesh.reloader
    logs.configure(args.log_format, level, app.state.mesh.redact)
    server = _MeshServer(
        uvicorn.Config(
            app,
            host=config.mesh.host,
            port=config.mesh.port,
            log_level=level,
            log_config=None,  # uvicorn's records go through our handler too: one format, secrets masked
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            **serve_with(app.state.mesh.connections),
        )
    )
    server.on_stop = lambda: _stopping(app.state.mesh.supervisor, reloader)
    server.on_reload = lambda: _background(reloader.reload("SIGHUP"))
    address = announce(config, args.config)  # bound: from now on the commands find this mesh
    try:
        server.run(sockets=[listener])
    finally:
        withdraw(address)
    return 0 if server.started else 1


def _raise_descriptor_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, as many servers do: the common soft 1,024 is what
    the connection caps and the servers' pipes (3 per process) share, and the hard one is allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):  # a sandbox may refuse: the soft limit stays
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _with_overrides(config: MeshConfig, overrides: Mapping[str, object]) -> MeshConfig:
    """The config with `--host` / `--port` in place of the file's (at start-up and at every reload)."""
    return config.model_copy(update={"mesh": config.mesh.model_copy(update=dict(overrides))}) if overrides else config


def _stopping(supervisor: Supervisor, reloader: Reloader) -> None:
    reloader.close()  # first: a reload under way starts nothing the stop would have to end
    supervisor.end_client_streams("mesh stopping")


_tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def _background(work: Coroutine[Any, Any, object]) -> None:
    """Run `work` on the loop; an error in it is logged, never left unretrieved."""

    async def run() -> None:
        try:
            await work
        except Exception:
            log.exception("background task failed")

    task = asyncio.get_running_loop().create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _report(supervisor: Supervisor, config: MeshConfig) -> None:
    await show_progress(
        supervisor, base_url(config.mesh.host, config.mesh.port), SETTLE_TIMEOUT, lambda line: print(line, flush=True)
    )
