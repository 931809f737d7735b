"""What the scanner core costs on top of a bare trivy run: time and memory.

Run from the repo root: ``.venv/bin/python bench/bench_scan.py [--rounds N]``.

* small: the sample image, N warm rounds each of bare ``trivy image`` and of the
  core in-process (``Scanner.scan``: trivy once + report and meta shipped to
  Azurite); medians, ratio, per-scan overhead, and the core's phases.
* large: ``large_fixture(3000, 3)`` (9000 findings, a report of ~32 MB): one bare
  trivy run, then one ``Scanner.scan`` in a separate Python process whose peak
  RSS is the core's own (trivy, its child, is measured apart), against a
  baseline process that only imports the core and loads its configuration.

Figures go to stdout and, as JSON, to ``bench/out/<timestamp>.json``. No
figure is asserted: this measures, it does not judge.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from azure.storage.blob import ContainerClient  # noqa: E402

from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config_cached  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from scanner_core.storage import AuditIndex, AzureBlobStore  # noqa: E402
from scanner_core.trivy import ScanTarget, Trivy, TrivyOptions, child_environment, summarise_report  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import (  # noqa: E402
    SAMPLE_ADVISORIES,
    SAMPLE_PACKAGES,
    ApkPackage,
    build_alpine_image,
    large_fixture,
)
from tests.support.trivy_db import Advisory, build_trivy_db  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES  # noqa: E402

OUT_DIR = REPO_ROOT / "bench" / "out"
CONTAINER = "audits"
SCANNER_ID = "be5c4000-0000-4000-8000-000000000001"
MIB = 1024 * 1024

# The core in a process of its own, importing nothing but the core. Mode
# "baseline" stops after load_config() + Scanner(); mode "scan" also scans and
# ships the tarball once. Prints one JSON line: its peak RSS (RUSAGE_SELF),
# trivy's (RUSAGE_CHILDREN), both KiB, the phases' seconds, the report's size.
CORE_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from scanner_core.audit import ScanRequest, utc_now
    from scanner_core.config import load_config
    from scanner_core.core import Scanner

    import statistics
    mode, tar, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    scanner = Scanner(load_config())
    scanner.trivy.version()  # a warm instance knows it (a per-process cache): not part of a scan
    result = {}
    spent = {}
    def timed(owner, method, key, note=None):
        original = getattr(owner, method)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            value = original(*args, **kwargs)
            spent.setdefault(key, []).append(time.perf_counter() - started)
            if note:
                note(value)
            return value
        setattr(owner, method, wrapper)

    if mode == "scan":
        timed(scanner.trivy, "scan", "trivy_seconds", lambda run: result.update(
            report_bytes=run.report_path.stat().st_size))
        timed(scanner.blob_store, "upload_file_observed", "report_upload_seconds")
        timed(scanner.blob_store, "upload_bytes", "meta_upload_seconds")
        for index in range(rounds):
            started = time.perf_counter()
            outcome = scanner.scan(ScanRequest(audit_id=f"bench-large-{index}", requested_at=utc_now(), input_tar=tar))
            spent.setdefault("scan_seconds", []).append(time.perf_counter() - started)
            if not outcome.succeeded:
                break
        result.update(
            {key: statistics.median(values) for key, values in spent.items()},
            scan_seconds_all=spent.get("scan_seconds"),
            succeeded=outcome.succeeded,
            failure=str(outcome.failure) if outcome.failure else None,
            report_blob=outcome.meta.trivy_audit_path,
        )
    result["self_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    status = Path("/proc/self/status").read_text().splitlines()
    result["vmhwm_kib"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps(result))
    """
)

# ru_maxrss survives execve(2): a child exec'd straight from this (large) process
# would start from this process's peak. Through a shell that *forks* the child,
# the child's figure starts from the shell's few MiB, so it is the child's own.
# (VmHWM, the peak of the exec'd image alone, is recorded as a cross-check.)
CLEAN_LAUNCH = ["/bin/sh", "-c", '"$@"; exit $?', "sh"]


@dataclass(frozen=True)
class Fixture:
    tar: Path
    cache_dir: Path


@dataclass(frozen=True)
class TrivyResult:
    seconds: float
    maxrss_kib: int  # trivy's peak, unless it is not above launcher_maxrss_kib (see CLEAN_LAUNCH)
    launcher_maxrss_kib: int
    report_bytes: int

    @property
    def maxrss_mib(self) -> float | None:
        """trivy's own peak RSS, or None when the inherited figure masks it."""
        return self.maxrss_kib / 1024 if self.maxrss_kib > self.launcher_maxrss_kib else None


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def trivy_executable() -> Path:
    path = Path(sys.prefix) / "bin" / "trivy"
    if not path.is_file():
        raise SystemExit(f"no trivy at {path}: run scripts/setup.sh first")
    return path


def build_fixture(directory: Path, packages: Sequence[ApkPackage], advisories: Sequence[Advisory]) -> Fixture:
    tar = build_alpine_image(directory / "image.tar", packages, repo_tag="sample/app:1.0").path
    cache_dir = directory / "trivy-cache"
    build_trivy_db(cache_dir, advisories)
    return Fixture(tar, cache_dir)


# ------------------------------------------------------------------ bare trivy


def run_bare_trivy(trivy: Path, fixture: Fixture, output: Path, home: Path) -> TrivyResult:
    """``trivy image`` as the core runs it (own session, allow-listed env), without the core."""
    # Exactly the command the core runs (Trivy.build_command with the core's options).
    options = TrivyOptions(cache_dir=fixture.cache_dir, timeout_ms=600_000, skip_db_update=True,
                           cache_backend="memory", offline_scan=True)
    command = Trivy(trivy).build_command(ScanTarget(input_tar=fixture.tar), options, output)  # fmt: skip
    output.unlink(missing_ok=True)
    launcher_maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            env=child_environment(None, home),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"bare trivy failed ({process.returncode}): {stderr.read().decode()[-2000:]}")
    return TrivyResult(seconds, usage.ru_maxrss, launcher_maxrss_kib, output.stat().st_size)


# ------------------------------------------------------------- core in-process


def scanner_environment(sas_url: str, trivy: Path, fixture: Fixture, config_path: Path) -> dict[str, str]:
    """The variables tests/conftest.py's ``scanner_env`` sets: the benches' loopback registries
    are listed (``ALLOWED_REGISTRIES``, issue 17) and the public KEV/EPSS feeds are off."""
    config_path.write_text("heartbeat-period: 60\nregistries: []\n", encoding="utf-8")
    return {
        "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,
        "KEV_FEED_URL": "",
        "EPSS_FEED_URL": "",
        "SCANNER_IDENTIFIER": SCANNER_ID,
        "AZ_BLOB_STORAGE_SAS": sas_url,
        "TRIVY_CONFIG_PATH": str(config_path),
        "TRIVY_PATH": str(trivy),
        "TRIVY_CACHE_DIR": str(fixture.cache_dir),
        "TRIVY_SKIP_DB_UPDATE": "true",
        "TRIVY_OFFLINE_SCAN": "true",
        "TRIVY_TIMEOUT": "600000",
        "LOG_FORMAT": "plain-text",
    }


class PhaseClock:
    """Wall time spent inside selected methods of live objects, per phase."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, owner: object, method: str, phase: str) -> None:
        original: Callable[..., Any] = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[phase] = self.spent.get(phase, 0.0) + time.perf_counter() - started

        setattr(owner, method, timed)

    def take(self) -> dict[str, float]:
        spent, self.spent = self.spent, {}
        return spent


def core_scan_once(scanner: Scanner, fixture: Fixture, audit_id: str) -> float:
    started = time.perf_counter()
    outcome = scanner.scan(ScanRequest(audit_id=audit_id, requested_at=utc_now(), input_tar=fixture.tar))
    seconds = time.perf_counter() - started
    if not outcome.succeeded:
        raise RuntimeError(f"core scan {audit_id} did not succeed: {outcome.meta.failure_description}")
    return seconds


# --------------------------------------------------------------------- benches


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def bench_small(rounds: int, trivy: Path, azurite: Azurite, work: Path) -> dict[str, Any]:
    fixture = build_fixture(work / "small", SAMPLE_PACKAGES, SAMPLE_ADVISORIES)
    home = work / "small" / "home"
    home.mkdir()
    report = work / "small" / "bare.json"
    azurite.create_container(CONTAINER)
    env = scanner_environment(azurite.container_sas_url(CONTAINER), trivy, fixture, work / "scanner.yaml")
    for name in [name for name in os.environ if name.startswith("TRIVY_")]:
        del os.environ[name]  # a developer's own trivy settings must not change the figures
    os.environ.update(env)
    # A new Scanner per scan, as the function app builds one per invocation
    # (functions.handlers.make_scanner); its per-process caches are warm after the warm-up.
    def new_scanner() -> Scanner:
        return Scanner(load_config_cached(), app_root=REPO_ROOT)

    say("small: warming up (1 bare run, 1 core scan)")
    run_bare_trivy(trivy, fixture, report, home)
    core_scan_once(new_scanner(), fixture, "bench-warmup")

    clock = PhaseClock()  # wraps the classes: every Scanner's parts are timed
    clock.wrap(Trivy, "scan", "trivy")
    clock.wrap(AzureBlobStore, "upload_file_observed", "report upload")
    clock.wrap(AzureBlobStore, "upload_bytes", "meta upload")
    clock.wrap(AuditIndex, "record", "index row + pointer")

    bare: list[float] = []
    core: list[float] = []
    phases: list[dict[str, float]] = []
    say(f"small: {rounds} rounds, each one bare trivy run then one core scan")
    for index in range(rounds):
        result = run_bare_trivy(trivy, fixture, report, home)
        bare.append(result.seconds)
        core.append(core_scan_once(new_scanner(), fixture, f"bench-{index}"))
        phases.append(clock.take())

    parse: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        summary = summarise_report(report)
        parse.append(time.perf_counter() - started)

    phase_names = ["trivy", "report upload", "meta upload", "index row + pointer"]
    phase_ms = {name: median_ms([spent.get(name, 0.0) for spent in phases]) for name in phase_names}
    phase_ms["rest (parse, meta, temp dir...)"] = median_ms(
        [total - sum(spent.values()) for total, spent in zip(core, phases, strict=True)]
    )
    return {
        "rounds": rounds,
        "findings": sum(summary.counts.values()),
        "report_bytes": result.report_bytes,
        "bare_trivy_ms": [round(s * 1000, 2) for s in bare],
        "core_scan_ms": [round(s * 1000, 2) for s in core],
        "bare_trivy_median_ms": median_ms(bare),
        "core_scan_median_ms": median_ms(core),
        "ratio_core_over_bare": median_ms(core) / median_ms(bare),
        "overhead_per_scan_ms": median_ms(core) - median_ms(bare),
        "core_phase_median_ms": phase_ms,
        "core_trivy_phase_minus_bare_ms": phase_ms["trivy"] - median_ms(bare),
        "summarise_report_median_ms": median_ms(parse),
        "bare_trivy_maxrss_mib": result.maxrss_mib,
    }


def run_core_child(mode: str, tar: Path, env: dict[str, str], rounds: int = 1) -> dict[str, Any]:
    completed = subprocess.run(
        [*CLEAN_LAUNCH, sys.executable, "-c", CORE_CHILD, mode, str(tar), str(rounds)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"core child ({mode}) failed ({completed.returncode}):\n{completed.stderr}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def bench_large(
    packages: int, cves: int, trivy: Path, azurite: Azurite, work: Path, rounds: int = 3
) -> dict[str, Any]:
    say(f"large: building large_fixture({packages}, {cves}) image and DB")
    started = time.perf_counter()
    fixture = build_fixture(work / "large", *large_fixture(packages, cves))
    build_seconds = time.perf_counter() - started
    home = work / "large" / "home"
    home.mkdir()

    say(f"large: {rounds} bare trivy runs")
    report = work / "large" / "bare.json"
    bare_runs = [run_bare_trivy(trivy, fixture, report, home) for _ in range(rounds)]
    bare = sorted(bare_runs, key=lambda run: run.seconds)[len(bare_runs) // 2]  # the median run
    started = time.perf_counter()
    findings = sum(summarise_report(report).counts.values())
    parse_seconds = time.perf_counter() - started

    container = "audits-large"
    azurite.create_container(container)
    sas_url = azurite.container_sas_url(container)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        **scanner_environment(sas_url, trivy, fixture, work / "scanner-large.yaml"),
    }
    say("large: baseline child (imports the core, loads its config, builds a Scanner)")
    baseline = run_core_child("baseline", fixture.tar, env)
    say(f"large: core child ({rounds} Scanner.scan, report shipped to Azurite; medians)")
    child = run_core_child("scan", fixture.tar, env, rounds)
    if not child.get("succeeded"):
        raise RuntimeError(f"the large audit did not succeed: {child.get('failure')}")

    with ContainerClient.from_container_url(sas_url) as client:
        blob_bytes = int(client.get_blob_client(child["report_blob"]).get_blob_properties().size)

    core_peak_mib = child["self_maxrss_kib"] / 1024
    report_mib = child["report_bytes"] / MIB
    return {
        "packages": packages,
        "cves_per_package": cves,
        "fixture_build_seconds": build_seconds,
        "findings": findings,
        "summarise_report_seconds": parse_seconds,
        "rounds": rounds,
        "bare_trivy_seconds": bare.seconds,
        "bare_trivy_seconds_all": [run.seconds for run in bare_runs],
        "bare_trivy_maxrss_mib": bare.maxrss_mib,
        "bare_report_bytes": bare.report_bytes,
        "core_scan_seconds": child["scan_seconds"],
        # Run 1 is the image's first audit; later runs also compare with the previous audit
        # (the monitor's changes, issue 10), which streams that audit's stored report.
        "core_scan_seconds_all": child["scan_seconds_all"],
        "core_first_scan_seconds": child["scan_seconds_all"][0],
        "core_trivy_seconds": child["trivy_seconds"],
        "core_report_upload_seconds": child["report_upload_seconds"],
        "core_meta_upload_seconds": child["meta_upload_seconds"],
        "core_report_bytes": child["report_bytes"],
        "uploaded_report_bytes": blob_bytes,
        "uploaded_size_matches_core_report": blob_bytes == child["report_bytes"],
        "report_mib": report_mib,
        "baseline_maxrss_mib": baseline["self_maxrss_kib"] / 1024,
        "baseline_vmhwm_mib": baseline["vmhwm_kib"] / 1024,
        "core_vmhwm_mib": child["vmhwm_kib"] / 1024,
        "core_maxrss_mib": core_peak_mib,
        "core_maxrss_over_baseline_mib": core_peak_mib - baseline["self_maxrss_kib"] / 1024,
        "core_trivy_maxrss_mib": child["children_maxrss_kib"] / 1024,
        "ratio_core_peak_over_report": core_peak_mib / report_mib,
    }


# ---------------------------------------------------------------------- output


def _mib(value: float | None) -> str:
    return "n/a (masked by the bench's own peak)" if value is None else f"{value:.1f} MiB"


def print_table(small: dict[str, Any], large: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [
        (f"SMALL sample/app:1.0 ({small['findings']} findings, report {small['report_bytes']:,} B), "
         f"{small['rounds']} warm rounds", ""),
        ("bare trivy, median", f"{small['bare_trivy_median_ms']:.1f} ms"),
        ("core Scanner.scan, median", f"{small['core_scan_median_ms']:.1f} ms"),
        ("ratio core / bare", f"{small['ratio_core_over_bare']:.2f}"),
        ("overhead per scan (core - bare)", f"{small['overhead_per_scan_ms']:.1f} ms"),
        *[(f"  core phase: {name}, median", f"{ms:.1f} ms") for name, ms in small["core_phase_median_ms"].items()],
        ("core's trivy phase - bare trivy (same command)", f"{small['core_trivy_phase_minus_bare_ms']:.1f} ms"),
        ("summarise_report on the report, median", f"{small['summarise_report_median_ms']:.2f} ms"),
        ("", ""),
        (f"LARGE large_fixture({large['packages']}, {large['cves_per_package']}) "
         f"({large['findings']:,} findings)", ""),
        ("fixture build (image + DB)", f"{large['fixture_build_seconds']:.1f} s"),
        ("bare trivy, median", f"{large['bare_trivy_seconds']:.2f} s"),
        ("core Scanner.scan, median (child process)", f"{large['core_scan_seconds']:.2f} s"),
        ("  of which trivy", f"{large['core_trivy_seconds']:.2f} s"),
        ("  of which report upload", f"{large['core_report_upload_seconds']:.2f} s"),
        ("  of which meta upload", f"{large['core_meta_upload_seconds']:.2f} s"),
        ("summarise_report on the report (in the bench)", f"{large['summarise_report_seconds']:.2f} s"),
        ("report size", f"{large['report_mib']:.1f} MiB ({large['core_report_bytes']:,} B)"),
        ("uploaded scan-result.json size", f"{large['uploaded_report_bytes']:,} B "
         f"({'equal' if large['uploaded_size_matches_core_report'] else 'DIFFERENT'})"),
        ("baseline process peak RSS (import + config)", f"{large['baseline_maxrss_mib']:.1f} MiB"),
        ("core process peak RSS (scan + ship)", f"{large['core_maxrss_mib']:.1f} MiB"),
        ("  added by scanning and shipping", f"{large['core_maxrss_over_baseline_mib']:.1f} MiB"),
        ("trivy peak RSS (core's child)", f"{large['core_trivy_maxrss_mib']:.1f} MiB"),
        ("trivy peak RSS (bare run)", _mib(large["bare_trivy_maxrss_mib"])),
        ("cross-check, VmHWM baseline / core",
         f"{large['baseline_vmhwm_mib']:.1f} / {large['core_vmhwm_mib']:.1f} MiB"),
        ("ratio core peak RSS / report size", f"{large['ratio_core_peak_over_report']:.2f}"),
    ]  # fmt: skip
    width = max(len(label) for label, value in rows if value)
    print()
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}" if value else label)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of the small bench (default 7)")
    parser.add_argument("--large-packages", type=int, default=3000, help="large fixture packages (default 3000)")
    parser.add_argument("--cves-per-package", type=int, default=3, help="large fixture CVEs per package (default 3)")
    parser.add_argument("--json", type=Path, help="write the JSON here (default bench/out/<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    for signum in (signal.SIGTERM, signal.SIGHUP):  # unwind, so that the finally stops Azurite
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    trivy = trivy_executable()
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        work = Path(tmp)
        say("starting Azurite")
        azurite = Azurite(work / "azurite")
        try:
            azurite.start()
            small = bench_small(args.rounds, trivy, azurite, work)
            large = bench_large(args.large_packages, args.cves_per_package, trivy, azurite, work)
        finally:
            azurite.stop()

    print_table(small, large)
    results = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "trivy": {"path": str(trivy), "version": Trivy(trivy).version()},
        "small": small,
        "large": large,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = args.json or OUT_DIR / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
