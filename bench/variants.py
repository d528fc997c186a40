"""mcpmesh with one or more tunings applied at start-up, from outside its source: the evidence behind
the profile's suggestions (`python -m bench --variants gc,asyncio-event,...`). Never a contender by
default; src/ is not touched. `gc` and `asyncio-event` have since been made in src/ (the Outbox now
waits on a bare future), so on the current tree they change nothing; to see their effect again,
compare refs with `python -m bench.ab`.

  python -m bench.variants TUNING[,TUNING...] up --config FILE ...   (the rest as for `mcpmesh`)

Tunings:
  gc              gc.freeze() once started, and gc.set_threshold(50_000, 50, 100): the young generation
                  is collected every 50,000 allocations instead of 700 (py-spy: gc_collect_main 9% of
                  the gateway's samples at 32 sessions)
  asyncio-event   the Outbox's wake-up event is a plain asyncio.Event instead of anyio.Event (each
                  anyio.Event() asks sniffio which library runs, costing a getpid() syscall)
  no-proxy-headers  uvicorn without its ProxyHeadersMiddleware (since made in src/: the mesh applies
                  proxy headers itself, only on the routes that read the client's address)
  uvicorn-protocol  uvicorn's own httptools protocol and proxy-header rewrite instead of the mesh's
                  HTTP/1.1 protocol (front/http1/): what that protocol is worth, in one run
"""

from __future__ import annotations

import asyncio
import gc
import sys
import types
from typing import Any

TUNINGS = ("gc", "asyncio-event", "no-proxy-headers", "uvicorn-protocol")


def apply(tunings: list[str]) -> None:
    unknown = set(tunings) - set(TUNINGS)
    if unknown:
        sys.exit(f"unknown tuning(s): {', '.join(sorted(unknown))}; known: {', '.join(TUNINGS)}")
    if "gc" in tunings:
        gc.set_threshold(50_000, 50, 100)
        from mcpmesh import app

        create_app = app.create_app

        def create_app_then_freeze(*args: Any, **kwargs: Any) -> Any:
            made = create_app(*args, **kwargs)
            gc.collect()
            gc.freeze()  # what start-up allocated is never scanned again
            return made

        app.create_app = create_app_then_freeze
        import mcpmesh.cli.up

        mcpmesh.cli.up.create_app = create_app_then_freeze  # type: ignore[attr-defined]
    if "asyncio-event" in tunings:
        import anyio

        from mcpmesh.router import session

        shim = types.ModuleType("anyio_with_asyncio_event")
        shim.__dict__.update({k: getattr(anyio, k) for k in dir(anyio) if not k.startswith("__")})
        shim.Event = asyncio.Event  # type: ignore[attr-defined]
        session.anyio = shim  # type: ignore[attr-defined]
    if "no-proxy-headers" in tunings:
        import uvicorn

        config = uvicorn.Config

        class Config(config):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any):
                kwargs["proxy_headers"] = False
                super().__init__(*args, **kwargs)

        uvicorn.Config = Config  # type: ignore[misc]

    if "uvicorn-protocol" in tunings:
        from mcpmesh.front.uvicorn_options import SERVE_WITH

        SERVE_WITH.update(http="httptools", proxy_headers=True)  # the dict every listener is configured from


def main() -> int:
    tunings = [t for t in sys.argv[1].split(",") if t]
    apply(tunings)
    from mcpmesh.cli.main import main as mesh_main

    return mesh_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
