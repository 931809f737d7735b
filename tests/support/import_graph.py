"""scanner_core's import graph, read from the source with ``ast``.

Every import counts, also the ones inside functions and under ``TYPE_CHECKING``, so a
lazy import cannot hide a cycle or an upward edge. Imports through a subpackage's lazy
face (``_EXPORTS`` in its ``__init__``) count as imports of the module that defines the
name. Used by ``tests/test_architecture.py`` and ``scripts/import_graph.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "scanner_core"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    """The layer a module belongs to: its subpackage, or the top-level module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def face_exports(package: str) -> dict[str, str]:
    """A subpackage's ``_EXPORTS``: public name -> absolute module that defines it."""
    tree = ast.parse(MODULES[package].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            mapping = ast.literal_eval(node.value)
            return {name: package + relative for name, relative in mapping.items()}
    return {}


def imports_of(module: str) -> Iterator[tuple[ast.ImportFrom | ast.Import, str, list[str]]]:
    """Every import in ``module`` (any depth), as (node, absolute module, names)."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            yield node, base, [alias.name for alias in node.names]


def resolve(base: str, name: str | None) -> str | None:
    """The module an ``from base import name`` really loads (through a face), if ours."""
    if base in MODULES and MODULES[base].name == "__init__.py" and name is not None:
        exports = face_exports(base)
        if name in exports:
            return exports[name]
        if f"{base}.{name}" in MODULES:
            return f"{base}.{name}"
        if exports:
            return None  # a face that does not export the name: the import fails on first use
    return base if base in MODULES else None


def dependencies(module: str) -> set[str]:
    """The modules ``module`` really loads, seeing through the lazy faces."""
    found: set[str] = set()
    for _node, base, names in imports_of(module):
        if not base.startswith("scanner_core"):
            continue
        for name in names or [None]:
            target = resolve(base, name)
            if target and target != module:
                found.add(target)
    return found
