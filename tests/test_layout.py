"""The package's shape: folders are layers, imports only point down, no import cycle (imports under
TYPE_CHECKING count), one error tree, and no module too big to read. The layer order is written
here, once."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import mcpmesh
from mcpmesh import errors

PACKAGE = Path(mcpmesh.__file__).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("jsonrpc",),
    ("protocol",),
    ("registry",),
    ("config",),
    ("backend",),
    ("router",),
    ("front", "supervision"),
    ("observe",),
    ("api", "dashboard"),
    ("app",),
    ("cli",),
    ("__main__",),
)
"""Bottom first. A module may import its own folder and any layer below its own, never a layer above
nor a sibling on its own layer. The root package (`mcpmesh`, its version only) is below them all."""

RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
MAX_LINES = 500
MAX_TOP_LEVEL_MODULES = 8
CODE_LITERAL = re.compile(r"-326\d\d\b")
CODES_LIVE_IN = {"errors.py", "jsonrpc.py"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package's own modules that `name` imports, anywhere in it (TYPE_CHECKING blocks and
    function bodies included), each resolved to the innermost module that exists."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports_of(name, path, known)) for name, path in known.items()}


def layer_of(module: str) -> str | None:
    """The layer a module belongs to: its folder, or its own name at the top; None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = {layer_of(m) for m in modules()} - set(RANK) - {None}
    assert not unplaced, f"modules outside every layer of LAYERS: {sorted(unplaced)}"


def test_imports_only_point_down() -> None:
    wrong = []
    for module, targets in graph().items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if mine is None or theirs is None or theirs == mine:
                continue  # the root package holds only the version; a folder may import itself
            if RANK[theirs] >= RANK[mine]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports of a layer above or beside: " + ", ".join(sorted(wrong))


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_can_fail() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_layers_show_in_folders() -> None:
    top = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.parent.name}/__init__.py says nothing of what the folder owns"


def test_no_module_is_too_long_to_read() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_every_exception_is_in_the_one_tree() -> None:
    """Every exception class the package defines lives in errors.py, is a MeshError and is drawn in
    errors.py's docstring."""
    drawing = errors.__doc__ or ""
    defined = []
    for name in modules():
        if name.endswith("__main__"):
            continue  # importing it runs the command
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == name:
                defined.append(obj)
    assert errors.MeshError in defined  # the probe itself works
    for cls in defined:
        assert cls.__module__ == "mcpmesh.errors", f"{cls.__module__}.{cls.__name__}: exceptions live in errors.py"
        assert issubclass(cls, errors.MeshError), f"{cls.__name__} is not a MeshError"
        assert re.search(rf"\b{cls.__name__}\b", drawing), f"{cls.__name__} is missing from errors.py's drawing"


def test_error_codes_are_named_in_one_place() -> None:
    inline = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in CODES_LIVE_IN and path.parent == PACKAGE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if CODE_LITERAL.search(line):
                inline.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not inline, "JSON-RPC codes written inline; name them in errors.py:\n" + "\n".join(inline)


def test_sources_cite_the_specification_not_files_outside_the_repository() -> None:
    outside = re.compile(r"MCP-NOTES|\.\./shared|shared/spec|shared/design")
    cited = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert not cited, cited
