"""The package's shape: layers as subpackages, no import cycles, public faces.

Read from the source with ``ast`` (every import, also the ones inside
functions), so a lazy in-function import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scanner_core"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


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


def dependencies(module: str) -> set[str]:
    """The modules ``module`` really loads, seeing through the lazy faces."""
    found: set[str] = set()
    for _node, base, names in imports_of(module):
        if not base.startswith("scanner_core"):
            continue
        exports = face_exports(base) if base in MODULES and MODULES[base].name == "__init__.py" else {}
        targets = [exports.get(name) or (f"{base}.{name}" if f"{base}.{name}" in MODULES else base) for name in names]
        found.update(t for t in (targets or [base]) if t in MODULES and t != module)
    return found


def test_the_layers_are_subpackages() -> None:
    assert {"config", "functions", "monitor", "queue", "registry", "storage", "trivy"} <= set(SUBPACKAGES)


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = {module: dependencies(module) for module in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dependency in sorted(graph[module]):
            if state.get(dependency) == 1:
                cycles.append(path[path.index(dependency) :] + [dependency])
            elif dependency not in state:
                visit(dependency, [*path, dependency])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_other_layers_import_a_subpackage_through_its_face(module: str) -> None:
    own = module.split(".")[1] if module.count(".") >= 1 and module.split(".")[1] in SUBPACKAGES else None
    private = []
    for node, base, _names in imports_of(module):
        parts = base.split(".")
        if len(parts) >= 3 and parts[0] == "scanner_core" and parts[1] in SUBPACKAGES and parts[1] != own:
            private.append(f"line {node.lineno}: {base}")
    assert private == [], f"{module} reaches into another layer's private modules: {private}"


@pytest.mark.parametrize("package", [f"scanner_core.{name}" for name in SUBPACKAGES])
def test_each_face_names_real_definitions(package: str) -> None:
    for name, defining in face_exports(package).items():
        tree = ast.parse(MODULES[defining].read_text(encoding="utf-8"))
        defined = {
            target.id if isinstance(target, ast.Name) else getattr(node, "name", None)
            for node in tree.body
            for target in (node.targets if isinstance(node, ast.Assign) else [node])
        } | {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
        assert name in defined, f"{package} exports {name} from {defining}, which does not define it"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_the_size_budget(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by job (budget {MAX_LINES})"


def test_function_app_is_wiring_only() -> None:
    source = (PACKAGE.parent / "function_app.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    functions = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert functions == [], f"function_app.py defines functions {functions}: put them in a Blueprint"
    assert "register_functions" in source
