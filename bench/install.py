"""Installs what the bench needs, each peer in its own place under bench/.peers/ (gitignored):
mcp-proxy and ContextForge in their own virtualenvs (mcp-proxy pins mcp<2), supergateway from npm,
and the bench's own tools (bench/requirements.txt) into the interpreter running the bench."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / ".peers"
MCP_PROXY_VERSION = "0.13.0"
CONTEXTFORGE_VERSION = "1.0.7.post20260921"
SUPERGATEWAY_VERSION = "4.0.0"
MCP_PROXY = PEERS / "mcp-proxy" / "bin" / "mcp-proxy"
SUPERGATEWAY_JS = PEERS / "supergateway" / "node_modules" / "supergateway" / "dist" / "index.js"


def contextforge_python() -> Path:
    return PEERS / "contextforge" / "bin" / "python"


def py_spy() -> Path:
    return Path(sys.executable).parent / "py-spy"


def _run(argv: list[str], cwd: Path | None = None) -> None:
    print("  $", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def _venv(name: str, requirement: str, marker: Path) -> str | None:
    stamp = PEERS / f"{name}.installed"
    if marker.exists() and stamp.exists() and stamp.read_text() == requirement:
        return None
    venv = PEERS / name
    try:
        if not (venv / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", requirement])
    except subprocess.CalledProcessError as exc:
        return f"{requirement}: {exc}"
    stamp.write_text(requirement)
    return None


def _supergateway() -> str | None:
    if SUPERGATEWAY_JS.exists():
        return None
    where = PEERS / "supergateway"
    where.mkdir(parents=True, exist_ok=True)
    try:
        _run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", f"supergateway@{SUPERGATEWAY_VERSION}"],
            where,
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        return f"supergateway: {exc}"
    return None


def _own_tools() -> str | None:
    try:
        import matplotlib  # noqa: F401
        import pyinstrument  # noqa: F401

        missing = not py_spy().exists()
    except ImportError:
        missing = True
    if missing:
        try:
            _run([sys.executable, "-m", "pip", "install", "--quiet", "-r", str(BENCH / "requirements.txt")])
        except subprocess.CalledProcessError as exc:
            return f"bench/requirements.txt: {exc}"
    return None


def ensure() -> dict[str, str]:
    """Install what is missing; returns problems by piece (empty when all is there)."""
    PEERS.mkdir(parents=True, exist_ok=True)
    print("install: checking peers and tools", flush=True)
    problems = {
        "tools": _own_tools(),
        "mcp-proxy": _venv("mcp-proxy", f"mcp-proxy=={MCP_PROXY_VERSION}", MCP_PROXY),
        "contextforge": _venv(
            "contextforge", f"mcp-contextforge-gateway=={CONTEXTFORGE_VERSION}", contextforge_python()
        ),
        "supergateway": _supergateway(),
    }
    return {k: v for k, v in problems.items() if v}
