"""Where a warm ``Scanner.scan`` of the small sample image spends its wall time.

Run from the repo root: ``.venv/bin/python bench/profile_scan.py [--rounds N] [--cold]``.

Starts its own Azurite, builds the sample image and DB, warms up with one scan,
then profiles N scans with pyinstrument (wall-clock sampling, so time spent
waiting on trivy and on Azurite shows up as the frames that wait). ``--cold``
builds a new ``Scanner(load_config_cached())`` for every scan, as the queue trigger
does per invocation. Prints pyinstrument's text tree; nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

from pyinstrument import Profiler  # noqa: E402

from bench.bench_scan import CONTAINER, build_fixture, scanner_environment, trivy_executable  # noqa: E402
from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config_cached  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cold", action="store_true", help="a new Scanner(load_config_cached()) per scan")
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval, seconds")
    args = parser.parse_args(argv)
    trivy = trivy_executable()
    with tempfile.TemporaryDirectory(prefix="profile-scan-") as tmp:
        work = Path(tmp)
        with Azurite(work / "azurite") as azurite:
            fixture = build_fixture(work / "small", SAMPLE_PACKAGES, SAMPLE_ADVISORIES)
            azurite.create_container(CONTAINER)
            for name in [name for name in os.environ if name.startswith("TRIVY_")]:
                del os.environ[name]
            os.environ.update(
                scanner_environment(azurite.container_sas_url(CONTAINER), trivy, fixture, work / "scanner.yaml")
            )
            scanner = Scanner(load_config_cached())

            def scan(audit_id: str) -> None:
                current = Scanner(load_config_cached()) if args.cold else scanner
                outcome = current.scan(ScanRequest(audit_id=audit_id, requested_at=utc_now(), input_tar=fixture.tar))
                if not outcome.succeeded:
                    raise SystemExit(f"scan failed: {outcome.meta.failure_description}")

            scan("profile-warmup")
            profiler = Profiler(interval=args.interval)
            profiler.start()
            for index in range(args.rounds):
                scan(f"profile-{index}")
            profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
