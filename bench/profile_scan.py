"""Where a warm ``Scanner.scan`` of the small sample image spends its wall time.

Run from the repo root: ``.venv/bin/python bench/profile_scan.py [--rounds N] [--cold]``, or
``--compare [--packages 1500]`` for the top costs per scan (cProfile, CPU of this process: trivy
is a child) with the native report decoder and with the ijson pass it replaced (issue 26), on
the 3,000-finding image of ``bench_listener.py`` (``large_fixture(1500, 2)``) by default.

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

import cProfile  # noqa: E402
import pstats  # noqa: E402
from collections.abc import Callable  # noqa: E402

from pyinstrument import Profiler  # noqa: E402

from bench.bench_scan import CONTAINER, build_fixture, scanner_environment, trivy_executable  # noqa: E402
from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config_cached  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support import ijson_report  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, large_fixture  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cold", action="store_true", help="a new Scanner(load_config_cached()) per scan")
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval, seconds")
    parser.add_argument("--compare", action="store_true", help="top costs per scan, native decoder vs ijson")
    parser.add_argument("--packages", type=int, default=1500, help="--compare: large_fixture(packages, 2)")
    parser.add_argument("--top", type=int, default=15, help="--compare: functions listed per variant")
    args = parser.parse_args(argv)
    trivy = trivy_executable()
    with tempfile.TemporaryDirectory(prefix="profile-scan-") as tmp:
        work = Path(tmp)
        with Azurite(work / "azurite") as azurite:
            packages, advisories = large_fixture(args.packages, 2) if args.compare else (SAMPLE_PACKAGES,
                                                                                          SAMPLE_ADVISORIES)
            fixture = build_fixture(work / "small", packages, advisories)
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
            if args.compare:
                import scanner_core.stages.ship as ship

                ship.BACKGROUND_PARSE_BYTES = 1 << 40  # parsed on the profiled thread, not one of its own
                for label, patch in (("native decoder (msgspec, issue 26)", _native), ("ijson pass (before)", _ijson)):
                    restore = patch()
                    try:
                        top_costs(label, scan, args.rounds, args.top)
                    finally:
                        restore()
                return 0
            profiler = Profiler(interval=args.interval)
            profiler.start()
            for index in range(args.rounds):
                scan(f"profile-{index}")
            profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    return 0


def _native() -> Callable[[], None]:
    return lambda: None


class _ReferenceSummariser(ijson_report.ReportSummariser):
    decoded = None  # the ijson pass kept nothing for the policy's facts: they read the file again


def _ijson() -> Callable[[], None]:
    """The ship stage with the ijson summariser it had before issue 26."""
    import scanner_core.stages.ship as ship

    saved = ship.ReportSummariser, ship.summarise_report
    ship.ReportSummariser, ship.summarise_report = _ReferenceSummariser, ijson_report.summarise_report  # type: ignore[assignment,misc]

    def restore() -> None:
        ship.ReportSummariser, ship.summarise_report = saved

    return restore


_WAITS = {"<method 'poll' of 'select.poll' objects>", "<method 'acquire' of '_thread.lock' objects>",
          "<built-in method time.sleep>", "<method 'join' of 'threading.Thread' objects>"}


def top_costs(label: str, scan: Callable[[str], None], rounds: int, top: int) -> None:
    """The functions with the most own CPU time, per scan (cProfile; this process only)."""
    profile = cProfile.Profile()
    profile.enable()
    for index in range(rounds):
        scan(f"top-{label.split()[0]}-{index}")
    profile.disable()
    stats = pstats.Stats(profile)
    items = stats.stats.items()  # type: ignore[attr-defined]
    waiting = sum(own for (_, _, name), (_, _, own, _, _) in items if name in _WAITS)
    working = sum(own for (_, _, name), (_, _, own, _, _) in items if name not in _WAITS)
    print(f"\n## {label}: {rounds} scans; per scan {1000 * working / rounds:.0f} ms of work in this process, "
          f"{1000 * waiting / rounds:.0f} ms waiting (trivy, uploads on other threads)")
    print(f"{'own ms/scan':>12} {'calls/scan':>11}  function")
    rows = sorted(((key, value) for key, value in items if key[2] not in _WAITS), key=lambda item: item[1][2],
                  reverse=True)[:top]  # fmt: skip
    for (filename, line, name), (_, calls, own, _, _) in rows:
        where = filename.split("/site-packages/")[-1].split("/decoder/")[-1]
        print(f"{1000 * own / rounds:12.1f} {calls / rounds:11.0f}  {name} ({where}:{line})")


if __name__ == "__main__":
    sys.exit(main())
