"""The layers of docs/architecture.md, enforced: lower layers never import higher ones, and
no module of the package imports itself back through another (no import cycle).

Imports are read from the source (module level and inside functions alike), so a lazy
import that points upwards or closes a cycle fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unirnn"

LAYERS = [
    ("spec/weights", ("unirnn._errors", "unirnn._gates", "unirnn._assumed", "unirnn._spec",
                      "unirnn._weights", "unirnn._activations", "unirnn._extras",
                      "unirnn._evaluation", "unirnn._file", "unirnn._families")),
    ("cells", ("unirnn._cells", "unirnn._cell_families")),
    ("layouts", ("unirnn.layouts",)),
    ("stack", ("unirnn._stack", "unirnn._inputs")),
    ("backends", ("unirnn.backends",)),
    ("porting", ("unirnn.porting",)),
    ("tools", ("unirnn.tools", "unirnn.__main__")),
]
"""Bottom to top (docs/architecture.md). ``unirnn/__init__.py`` is the package's facade:
it re-exports from every layer and is imported by none of them."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (absolute names)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("unirnn"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("unirnn"):
                continue
            # `from . import x` imports the submodule x when there is one
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    return {_existing(m) for m in found}


def _exists(module: str) -> bool:
    path = PACKAGE.parent / module.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _existing(module: str) -> str:
    while module and not _exists(module):
        module = module.rpartition(".")[0]
    return module


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if m != "unirnn" and _layer(m) is None]
    assert unplaced == [], f"modules in no layer of docs/architecture.md: {unplaced}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "unirnn"))
def test_imports_point_downwards(module):
    rank = _layer(module)
    upward = sorted(
        f"{target} ({LAYERS[_layer(target)][0]})" for target in GRAPH[module]
        if target == "unirnn" and LAYERS[rank][0] != "tools"
        or target != "unirnn" and _layer(target) is not None and _layer(target) > rank
    )
    assert upward == [], f"{module} ({LAYERS[rank][0]}) imports a higher layer: {upward}"


def test_no_import_cycle():
    """Depth-first search for a back edge among the package's own modules."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target == "unirnn" or target == node:
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (cycle := visit(module)):
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")


def test_backend_modules_stay_small():
    """A backend module past about 400 lines is a sign that math leaked out of the cells."""
    long = {p.name: n for p in (PACKAGE / "backends").glob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}
