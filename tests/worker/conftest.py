"""The app under the real Python language worker, from the package ``func`` would deploy.

These tests need Python 3.13 (``azure-functions-runtime``, the platform's worker library,
requires it): ``scripts/test.sh`` runs them with ``.venv-3.13`` after the full suite on the
default interpreter. On an older interpreter they are not collected (they would not import);
there the 3.13 run is the one that covers them, and a missing 3.13 fails ``scripts/setup.sh``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

if sys.version_info < (3, 13):
    collect_ignore_glob = ["test_*.py"]
else:
    from tests.support import func_package
    from tests.support.functions_host import FunctionsHost, environment_for_worker

CACHE = REPO_ROOT / ".work" / "func-package"


@pytest.fixture(scope="session")
def package() -> Path:
    """The deployment package, built from the tracked files (see func_package.py)."""
    return func_package.build_package(REPO_ROOT, Path(sys.executable), CACHE, CACHE / "app")


@pytest.fixture(scope="session")
def worker_lib() -> Path:
    return func_package.build_worker_library(REPO_ROOT, Path(sys.executable), CACHE)


@pytest.fixture(scope="session")
def protos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return func_package.compile_protocol(tmp_path_factory.mktemp("protos"))


@pytest.fixture(scope="session")
def pb(protos: Path):  # noqa: ANN201 - the generated module
    sys.path.insert(0, str(protos))
    return importlib.import_module("function_rpc_pb2")


def app_settings(scanner_env, azurite) -> dict[str, str]:
    """The app settings a deployed instance would have for this test, read when its worker
    starts: the scanner's settings (without ``TRIVY_PATH``: trivy must come from the package)
    and the storage connection."""
    values = {"AzureWebJobsStorage": azurite.connection_string}
    values.update({k: v for k, v in scanner_env.values.items() if k != "TRIVY_PATH"})
    return values


@pytest.fixture
def start_worker(pb, package, worker_lib, protos) -> Iterator:
    """``start_worker(settings, app=package)``: a worker over ``app``, initialized, its
    functions indexed and loaded (the init and metadata responses are on the host)."""
    hosts: list[FunctionsHost] = []

    def start(settings: dict[str, str], app: Path = package, *, load: bool = True) -> FunctionsHost:
        python = func_package.worker_python()
        host = FunctionsHost(pb, app, worker_lib, protos, python, environment_for_worker(settings))
        hosts.append(host)
        return host.handshake(load=load)

    yield start
    for host in hosts:
        host.close()
