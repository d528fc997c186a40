"""A small TOML writer for the mesh config `mcpmesh import` writes: strings, booleans, numbers,
arrays of them and tables of strings, with a comment above each server. Small enough to check
whole (tomllib reads back exactly what was written); tomli-w would drop the comments."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped (TOML allows
    none of U+0000-U+001F and U+007F unescaped)."""
    out = []
    for char in text:
        if char in ESCAPES:
            out.append(ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if BARE_KEY.match(name) else string(name)


def value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if not math.isfinite(item):
            raise ValueError(f"{item!r} has no place in a mesh config")
        return repr(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, Sequence):
        return "[" + ", ".join(value(element) for element in item) + "]"
    raise TypeError(f"cannot write {type(item).__name__} as TOML")


def comment(text: str) -> list[str]:
    """Comment lines, one per line of `text`; a comment cannot hold a control character, so each
    is written as its escape."""
    shown = "".join(f"\\u{ord(c):04X}" if (ord(c) < 0x20 and c not in "\t\n") or ord(c) == 0x7F else c for c in text)
    return [f"# {line}".rstrip() for line in shown.split("\n")]


def server_tables(servers: Mapping[str, Mapping[str, Any]], comments: Mapping[str, Sequence[str]]) -> str:
    """`[servers.NAME]` tables: plain settings first, then each sub-table (`env`, `headers`) of its own."""
    lines: list[str] = []
    for name, table in servers.items():
        lines.append("")
        for text in comments.get(name, ()):
            lines += comment(text)
        lines.append(f"[servers.{key(name)}]")
        subtables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        lines += [f"{key(k)} = {value(v)}" for k, v in table.items() if k not in subtables]
        for sub, entries in subtables.items():
            if entries:
                lines.append(f"[servers.{key(name)}.{key(sub)}]")
                lines += [f"{key(str(k))} = {value(v)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"
