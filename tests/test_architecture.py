"""The package's shape: layers that only point down, no import cycles, public faces.

Read from the source with ``ast`` (``tests/support/import_graph.py``: every import, also
the ones inside functions and under ``TYPE_CHECKING``), so a lazy import cannot hide a
cycle or an upward edge. ``python scripts/import_graph.py`` prints the graph.
"""

from __future__ import annotations

import ast

import pytest

from tests.support.import_graph import (
    MODULES,
    PACKAGE,
    SUBPACKAGES,
    dependencies,
    face_exports,
    imports_of,
    layer_of,
    resolve,
)

MAX_LINES = 400

# The layers, top first. A module may import its own layer and any layer of a later row;
# never a layer of its own row (siblings stay apart) or of an earlier one. Top-level
# modules are layers of their own ("scanner_core" is the package's __init__).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),  # the one-time runner and the listener's command line
    ("functions",),  # the Azure Functions side: Blueprints, handlers, the HTTP API
    ("metrics",),  # Prometheus and Azure Monitor figures, read from storage and the queue
    ("queue",),  # the message contract, delivery, the stand-alone listener
    ("heartbeat",),
    ("core",),  # Scanner: one request in, one audit folder out; the one wiring point
    ("stages",),  # plan, run, ship and their helpers
    ("follow_up",),  # what each audit adds: policy decision, changes, approvals, webhooks
    ("monitor",),  # the loop: watch, push events, rescans, dedup, image records
    ("admission", "fleet_queries"),  # what a cluster asks (reviews, provider keys, tags, client certificates); which current images have a vulnerability or a package
    ("approvals", "exploits"),
    ("audit",),  # the core's input and output types
    ("storage",),
    ("verdict",),  # status, counts and summary: the domain's terms
    ("config", "trivy"),
    ("policy",),
    ("registry", "report"),  # report: trivy's JSON report, decoded natively
    ("identity", "telemetry"),
    ("scanner_core", "log"),
    ("log_records", "io_pool", "yaml_files"),
    ("models", "errors", "redact", "_lazy"),
)
RANK = {layer: rank for rank, row in enumerate(LAYERS) for layer in row}


def test_every_layer_has_a_place_in_the_order() -> None:
    missing = sorted({layer_of(module) for module in MODULES} - set(RANK))
    assert missing == [], f"layers missing from LAYERS (add each where it belongs): {missing}"


def test_the_layers_only_point_down() -> None:
    upward = []
    for module in sorted(MODULES):
        source = layer_of(module)
        for dependency in sorted(dependencies(module)):
            target = layer_of(dependency)
            if target != source and RANK[target] <= RANK[source]:
                upward.append(f"{module} -> {dependency}")
    assert upward == [], "imports that point up or sideways:\n" + "\n".join(upward)


def test_every_import_of_the_package_names_a_module_that_exists() -> None:
    """A moved module leaves no import of its old path behind (lazy ones included)."""
    dangling = []
    for module in sorted(MODULES):
        for node, base, names in imports_of(module):
            if base.startswith("scanner_core") and any(resolve(base, name) is None for name in names or [None]):
                dangling.append(f"{module} line {node.lineno}: {base} {names}")
    assert dangling == [], "imports of modules that do not exist:\n" + "\n".join(dangling)


def test_no_module_imports_another_modules_private_names() -> None:
    private = []
    for module in sorted(MODULES):
        for node, base, names in imports_of(module):
            if not base.startswith("scanner_core"):
                continue
            for name in names:
                target = resolve(base, name)
                if name.startswith("_") and not name.startswith("__") and target != module:
                    private.append(f"{module} line {node.lineno}: {name} from {base}")
    assert private == [], "underscore names imported across modules:\n" + "\n".join(private)


def test_the_layers_are_subpackages() -> None:
    assert {"config", "follow_up", "functions", "monitor", "queue", "registry", "stages", "storage",
            "trivy"} <= set(SUBPACKAGES)  # fmt: skip


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


def test_the_top_level_keeps_only_the_cores_faces() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "_lazy", "audit", "cli", "core", "errors", "heartbeat", "io_pool",
                   "log", "log_records", "models", "redact", "verdict", "yaml_files"], top  # fmt: skip


def test_function_app_is_wiring_only() -> None:
    source = (PACKAGE.parent / "function_app.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    functions = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert functions == [], f"function_app.py defines functions {functions}: put them in a Blueprint"
    assert "register_functions" in source
