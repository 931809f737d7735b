"""How many scans at once per instance: throughput, latency and trivy memory by concurrency.

Run from the repo root: ``.venv/bin/python bench/bench_concurrency.py``.

The queue trigger runs up to ``batchSize + newBatchThreshold`` invocations at
once per instance (host.json, ``extensions.queues``), each on a thread of the
Python worker's pool and each running one trivy process. This bench builds a
mid-size image (``large_fixture(1500, 2)``: 3000 findings, a ~10 MB report)
and the sample image, with one trivy DB holding both advisory sets, starts
Azurite, and then, for each concurrency C, runs C worker threads that each do
K scans of the mid-size image back to back, every scan through a new
``Scanner(load_config()).scan(...)`` (as ``functions.make_scanner`` does per
invocation). Per C it records wall time, throughput, median and p95 per-scan
latency, CPU use, and the peak total RSS of the trivy processes running at
once (a background thread sums ``VmRSS`` of this bench's trivy children every
~50 ms). From these it derives the smallest C that reaches 90 % of the best
throughput, the memory one concurrent scan needs, and an extrapolation to
Azure plan sizes. On a shared machine it waits for the CPUs to be quiet before
each run and redoes a run during which other work took CPU (``--attempts``).

Figures go to stdout and, as JSON, to ``bench/out/concurrency-<timestamp>.json``.
No figure is asserted: this measures, it does not judge.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from azure.storage.blob import ContainerClient  # noqa: E402

from bench.bench_scan import MIB, Fixture, run_bare_trivy, say, scanner_environment, trivy_executable  # noqa: E402
from scanner_core.audit import AuditOutcome, ScanRequest, utc_now
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.trivy import Trivy
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image, large_fixture  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402

OUT_DIR = REPO_ROOT / "bench" / "out"
CONTAINER = "audits-concurrency"
SAMPLE_FINDINGS = 6  # SAMPLE_PACKAGES x SAMPLE_ADVISORIES, see tests/support/images.py
DISTURBED_SHARE = 0.10  # other people's CPU use above which a run is flagged
KNEE_FRACTION = 0.90  # "enough" concurrency: the smallest C reaching this share of the best throughput

# Plans to extrapolate to: (name, vCPUs, memory MiB), as the Azure Functions docs list them.
PLANS: tuple[tuple[str, int, int], ...] = (
    ("Consumption", 1, 1536),
    ("Premium EP1", 1, 3584),
    ("Premium EP2", 2, 7168),
)


# ------------------------------------------------------------ RSS sampling


@dataclass
class RssPeaks:
    """What the sampler saw during one run (KiB, except the counts)."""

    samples: int = 0
    sample_seconds: float = 0.0  # time spent sampling, to judge the sampler's own cost
    peak_sum_rss_kib: int = 0  # max over samples of the sum of VmRSS of all trivy processes
    peak_sum_anon_kib: int = 0  # the same for RssAnon (private memory; VmRSS also counts shared file pages)
    processes_at_peak: int = 0  # trivy processes alive in the sample with peak_sum_rss_kib
    peak_processes: int = 0  # max trivy processes alive in any one sample
    peak_single_rss_kib: int = 0  # the largest VmRSS of any one trivy process
    peak_self_rss_kib: int = 0  # this (Python) process's largest VmRSS: the worker's side
    trivy_pids: set[int] = field(default_factory=set)


def _status_fields(pid: int | str, names: tuple[str, ...]) -> dict[str, int]:
    """Selected ``/proc/<pid>/status`` fields as ints (kB values and PPid); {} if the process is gone."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in names:
                    found[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return found


class TrivyRssSampler:
    """A background thread that sums the RSS of this process's trivy children every ``interval``.

    A process counts when ``/proc/<pid>/exe`` is the trivy binary and its parent is
    this process (so trivy runs of anyone else on the machine are not counted).
    """

    def __init__(self, trivy: Path, interval: float) -> None:
        self.trivy = str(trivy.resolve())
        self.interval = interval
        self.parent = os.getpid()
        self.peaks = RssPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> TrivyRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break

    def sample(self) -> None:
        started = time.perf_counter()
        peaks = self.peaks
        total_rss = total_anon = count = 0
        with os.scandir("/proc") as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    if os.readlink(f"/proc/{entry.name}/exe") != self.trivy:
                        continue
                except OSError:  # gone, a kernel thread, or not ours to read
                    continue
                status = _status_fields(entry.name, ("PPid", "VmRSS", "RssAnon"))
                if status.get("PPid") != self.parent or "VmRSS" not in status:
                    continue
                count += 1
                total_rss += status["VmRSS"]
                total_anon += status.get("RssAnon", 0)
                peaks.peak_single_rss_kib = max(peaks.peak_single_rss_kib, status["VmRSS"])
                peaks.trivy_pids.add(int(entry.name))
        if total_rss > peaks.peak_sum_rss_kib:
            peaks.peak_sum_rss_kib, peaks.processes_at_peak = total_rss, count
        peaks.peak_sum_anon_kib = max(peaks.peak_sum_anon_kib, total_anon)
        peaks.peak_processes = max(peaks.peak_processes, count)
        peaks.peak_self_rss_kib = max(peaks.peak_self_rss_kib, _status_fields("self", ("VmRSS",)).get("VmRSS", 0))
        peaks.samples += 1
        peaks.sample_seconds += time.perf_counter() - started


# ------------------------------------------------------------------ one run


@dataclass(frozen=True)
class RunResult:
    concurrency: int
    attempt: int
    scans: int
    wall_seconds: float
    scans_per_minute: float
    latency_median_seconds: float
    latency_p95_seconds: float
    latencies_seconds: list[float]
    peak_trivy_rss_sum_mib: float
    peak_trivy_anon_sum_mib: float
    trivy_processes_at_peak: int
    peak_trivy_processes: int
    peak_single_trivy_rss_mib: float
    peak_worker_rss_mib: float  # this process's VmRSS high-water mark so far (it never goes back down much)
    trivy_cpu_seconds: float  # user + sys of the trivy children (incl. each scanner's `trivy --version`)
    worker_cpu_seconds: float  # user + sys of this process: the core's Python side, the SDK, the sampler
    azurite_cpu_seconds: float | None  # the emulator shares this machine's CPUs; real Blob Storage would not
    cpu_utilisation: float  # all of the above over wall time x cores
    sampler_samples: int
    sampler_mean_ms: float
    machine_cpu_busy: float  # share of all CPUs busy during the run, anyone's work
    others_cpu_share: float  # of which not this bench (trivy, worker, Azurite): other people's load
    machine_busy_before: float  # the busy share in the second before the run (see --quiet-threshold)
    mode: str = "host"  # "host": Scanner.scan per invocation, as the Functions host runs them; "bare": trivy only

    @property
    def scans_per_minute_per_vcpu(self) -> float:
        return self.scans_per_minute / (os.cpu_count() or 1)

    @property
    def mib_per_concurrent_scan(self) -> float:
        """The peak of the trivy processes' summed RSS, shared out over the scans running then."""
        return self.peak_trivy_rss_sum_mib / max(self.trivy_processes_at_peak, 1)


def p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from ``/proc/<pid>/stat``, or None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15 of stat(5)


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs together, from the ``cpu`` line of ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(value) for value in stat.readline().split()[1:9]]  # user .. steal
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def machine_busy_share(seconds: float) -> float:
    """The share of all CPUs busy (anyone's work) over the next ``seconds``."""
    busy_before, total_before = machine_cpu_ticks()
    time.sleep(seconds)
    busy_after, total_after = machine_cpu_ticks()
    return (busy_after - busy_before) / max(total_after - total_before, 1)


def wait_until_quiet(threshold: float, timeout: float) -> float:
    """Waits (up to ``timeout``) for a second in which under ``threshold`` of the CPUs is busy.

    Other people's test runs on a shared machine would otherwise take CPU from the scans.
    Returns the last busy share seen.
    """
    deadline = time.monotonic() + timeout
    next_note = 0.0
    while True:
        share = machine_busy_share(1.0)
        if share < threshold or time.monotonic() >= deadline:
            return share
        if time.monotonic() >= next_note:
            say(f"  machine {share:.0%} busy with other work; waiting (up to {timeout:.0f} s) for it to quiet down")
            next_note = time.monotonic() + 10


def scan_once(fixture: Fixture, audit_id: str, expected_findings: int) -> tuple[float, AuditOutcome]:
    """One invocation's worth: a new Scanner from the environment, one scan, shipped to Azurite."""
    started = time.perf_counter()
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=utc_now(), input_tar=fixture.tar))
    seconds = time.perf_counter() - started
    if not outcome.succeeded:
        raise RuntimeError(f"scan {audit_id} did not succeed: {outcome.meta.failure_description}")
    findings = sum(outcome.summary.counts.values()) if outcome.summary else -1
    if findings != expected_findings:
        raise RuntimeError(f"scan {audit_id} found {findings} vulnerabilities, expected {expected_findings}")
    return seconds, outcome


@dataclass(frozen=True)
class RunSettings:
    """What every run shares."""

    fixture: Fixture
    expected_findings: int
    scans_per_worker: int
    trivy: Path
    interval: float  # RSS sampling period, seconds
    azurite_pid: int | None
    quiet_threshold: float
    quiet_timeout: float
    attempts: int  # runs per C at most, while other work disturbs them
    bare: bool = False  # bare trivy (the core's command) instead of Scanner.scan, at the same concurrency


def run_concurrency(concurrency: int, settings: RunSettings, attempt: int, busy_before: float) -> RunResult:
    """C threads, each doing K scans back to back, all released at once."""
    fixture, expected_findings, azurite_pid = settings.fixture, settings.expected_findings, settings.azurite_pid
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start_line = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        start_line.wait()
        for round_ in range(settings.scans_per_worker):
            try:
                audit_id = f"c{concurrency}-a{attempt}-w{index}-s{round_}"
                if settings.bare:
                    with tempfile.TemporaryDirectory(prefix="bare-") as home:
                        seconds = run_bare_trivy(settings.trivy, fixture, Path(home) / "report.json", Path(home)).seconds
                else:
                    seconds, _ = scan_once(fixture, audit_id, expected_findings)
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                with lock:
                    errors.append(error)
                return
            with lock:
                latencies.append(seconds)

    threads = [threading.Thread(target=worker, args=(i,), name=f"scan-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    machine_before = machine_cpu_ticks()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    azurite_before = process_cpu_seconds(azurite_pid) if azurite_pid else None
    with TrivyRssSampler(settings.trivy, settings.interval) as sampler:
        started = time.perf_counter()
        start_line.wait()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    machine_after = machine_cpu_ticks()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    azurite_after = process_cpu_seconds(azurite_pid) if azurite_pid else None
    if errors:
        raise RuntimeError(f"concurrency {concurrency}: {len(errors)} scan(s) failed") from errors[0]

    trivy_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    worker_cpu = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    azurite_cpu = azurite_after - azurite_before if azurite_before is not None and azurite_after is not None else None
    peaks = sampler.peaks
    cpus = os.cpu_count() or 1
    ours = (trivy_cpu + worker_cpu + (azurite_cpu or 0.0)) / (wall * cpus)
    machine_busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1)
    return RunResult(
        concurrency=concurrency,
        attempt=attempt,
        scans=len(latencies),
        wall_seconds=wall,
        scans_per_minute=len(latencies) / wall * 60,
        latency_median_seconds=statistics.median(latencies),
        latency_p95_seconds=p95(latencies),
        latencies_seconds=[round(s, 4) for s in latencies],
        peak_trivy_rss_sum_mib=peaks.peak_sum_rss_kib / 1024,
        peak_trivy_anon_sum_mib=peaks.peak_sum_anon_kib / 1024,
        trivy_processes_at_peak=peaks.processes_at_peak,
        peak_trivy_processes=peaks.peak_processes,
        peak_single_trivy_rss_mib=peaks.peak_single_rss_kib / 1024,
        peak_worker_rss_mib=peaks.peak_self_rss_kib / 1024,
        trivy_cpu_seconds=trivy_cpu,
        worker_cpu_seconds=worker_cpu,
        azurite_cpu_seconds=azurite_cpu,
        cpu_utilisation=ours,
        sampler_samples=peaks.samples,
        sampler_mean_ms=peaks.sample_seconds / max(peaks.samples, 1) * 1000,
        machine_cpu_busy=machine_busy,
        others_cpu_share=max(0.0, machine_busy - ours),
        machine_busy_before=busy_before,
        mode="bare" if settings.bare else "host",
    )


def measure(concurrency: int, settings: RunSettings) -> tuple[RunResult, list[RunResult]]:
    """One run at ``concurrency``, redone while other work disturbs it; (kept, discarded)."""
    attempts: list[RunResult] = []
    for attempt in range(1, settings.attempts + 1):
        busy = wait_until_quiet(settings.quiet_threshold, settings.quiet_timeout)
        say(f"C = {concurrency}: {concurrency} thread(s) x {settings.scans_per_worker} scan(s), attempt {attempt}")
        run = run_concurrency(concurrency, settings, attempt, busy)
        say(
            f"  {run.wall_seconds:.1f} s, {run.scans_per_minute:.1f} scans/min, trivy RSS peak "
            f"{run.peak_trivy_rss_sum_mib:.0f} MiB, others' CPU {run.others_cpu_share:.0%}"
        )
        attempts.append(run)
        if run.others_cpu_share <= DISTURBED_SHARE:
            break
    kept = min(attempts, key=lambda run: run.others_cpu_share)
    return kept, [run for run in attempts if run is not kept]


# ---------------------------------------------------------------- analysis


@dataclass(frozen=True)
class PlanAdvice:
    plan: str
    vcpus: int
    memory_mib: int
    cpu_bound: int  # concurrency the measured CPU scaling suggests for this many vCPUs
    memory_bound: int  # concurrent scans that fit in memory after the reserve
    concurrency: int  # min of the two, at least 1


@dataclass(frozen=True)
class Recommendation:
    best_scans_per_minute: float
    best_concurrency: int
    knee_concurrency: int  # smallest C reaching KNEE_FRACTION of the best throughput
    knee_per_cpu: float
    trivy_mib_per_scan: float  # the largest single trivy VmRSS seen in any run
    worker_mib_per_scan: float  # the Python process's growth, shared out over the largest C
    mib_per_scan: float
    worker_baseline_mib: float
    host_reserve_mib: int
    trivy_cpu_per_scan: float  # seconds, over all runs
    worker_cpu_per_scan: float
    azurite_cpu_per_scan: float | None
    busy_per_vcpu: float  # cross-check: C = 1 median latency / on-instance CPU per scan (Little's law)
    plans: list[PlanAdvice]


def recommend(
    runs: Sequence[RunResult], worker_baseline_mib: float, host_reserve_mib: int, cpus: int
) -> Recommendation:
    best = max(runs, key=lambda run: run.scans_per_minute)
    knee = min(
        (run for run in runs if run.scans_per_minute >= KNEE_FRACTION * best.scans_per_minute),
        key=lambda run: run.concurrency,
    )
    # Conservative: as if every concurrent trivy peaked at the same moment.
    trivy_mib = max(run.peak_single_trivy_rss_mib for run in runs)
    widest = max(runs, key=lambda run: run.concurrency)
    worker_mib = max(0.0, widest.peak_worker_rss_mib - worker_baseline_mib) / widest.concurrency
    per_scan = trivy_mib + worker_mib
    knee_per_cpu = knee.concurrency / cpus
    plans = []
    for name, vcpus, memory_mib in PLANS:
        cpu_bound = max(1, math.floor(knee_per_cpu * vcpus + 0.5))
        budget = memory_mib - host_reserve_mib - worker_baseline_mib
        memory_bound = max(0, math.floor(budget / per_scan))
        plans.append(PlanAdvice(name, vcpus, memory_mib, cpu_bound, memory_bound, max(1, min(cpu_bound, memory_bound))))
    scans = sum(run.scans for run in runs)
    trivy_cpu = sum(run.trivy_cpu_seconds for run in runs) / scans
    worker_cpu = sum(run.worker_cpu_seconds for run in runs) / scans
    single = min(runs, key=lambda run: run.concurrency)
    azurite = [run.azurite_cpu_seconds for run in runs]
    azurite_seconds = None if None in azurite else sum(seconds or 0.0 for seconds in azurite)
    return Recommendation(
        best_scans_per_minute=best.scans_per_minute,
        best_concurrency=best.concurrency,
        knee_concurrency=knee.concurrency,
        knee_per_cpu=knee_per_cpu,
        trivy_mib_per_scan=trivy_mib,
        worker_mib_per_scan=worker_mib,
        mib_per_scan=per_scan,
        worker_baseline_mib=worker_baseline_mib,
        host_reserve_mib=host_reserve_mib,
        trivy_cpu_per_scan=trivy_cpu,
        worker_cpu_per_scan=worker_cpu,
        azurite_cpu_per_scan=(None if azurite_seconds is None else azurite_seconds / scans),
        busy_per_vcpu=single.latency_median_seconds / (trivy_cpu + worker_cpu),
        plans=plans,
    )


# ------------------------------------------------------------------ output


def machine_memory_mib() -> float:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    return next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")) / 1024


def print_table(runs: Sequence[RunResult], advice: Recommendation, header: str) -> None:
    columns = (
        ("C", 3), ("scans", 5), ("wall s", 7), ("scans/min", 9), ("/min/vCPU", 9), ("speed-up", 8), ("median s", 8),
        ("p95 s", 7), ("trivy RSS/anon peak MiB (procs)", 31), ("largest trivy MiB", 17),
        ("CPU ours/others", 15), ("MiB/scan", 8),
    )  # fmt: skip
    base = runs[0].scans_per_minute
    print()
    print(header)
    print("  ".join(name.rjust(width) for name, width in columns))
    for run in runs:
        cells = (
            str(run.concurrency),
            str(run.scans),
            f"{run.wall_seconds:.1f}",
            f"{run.scans_per_minute:.1f}",
            f"{run.scans_per_minute_per_vcpu:.1f}",
            f"{run.scans_per_minute / base:.2f}x",
            f"{run.latency_median_seconds:.2f}",
            f"{run.latency_p95_seconds:.2f}",
            f"{run.peak_trivy_rss_sum_mib:.0f}/{run.peak_trivy_anon_sum_mib:.0f} ({run.trivy_processes_at_peak})",
            f"{run.peak_single_trivy_rss_mib:.0f}",
            f"{run.cpu_utilisation:.0%}/{run.others_cpu_share:.0%}",
            f"{run.mib_per_concurrent_scan:.0f}",
        )
        print("  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, columns, strict=True)))

    azurite = "n/a" if advice.azurite_cpu_per_scan is None else f"{advice.azurite_cpu_per_scan:.2f} s"
    print(
        f"CPU per scan: trivy {advice.trivy_cpu_per_scan:.2f} s, worker (Python) {advice.worker_cpu_per_scan:.2f} s, "
        f"Azurite {azurite} (the emulator shares these CPUs; in Azure, Blob Storage is remote)"
    )
    disturbed = [run.concurrency for run in runs if run.others_cpu_share > DISTURBED_SHARE]
    if disturbed:
        print(
            f"WARNING: other work used more than {DISTURBED_SHARE:.0%} of the CPUs during C = "
            f"{', '.join(map(str, disturbed))}: those figures understate what this machine can do."
        )
    print()
    print(
        f"Recommendation: C = {advice.knee_concurrency} is the smallest concurrency reaching "
        f"{KNEE_FRACTION:.0%} of the best throughput ({advice.best_scans_per_minute:.1f} scans/min at "
        f"C = {advice.best_concurrency}) on this machine's {os.cpu_count()} CPUs; memory per concurrent scan "
        f"~{advice.mib_per_scan:.0f} MiB (trivy peak {advice.trivy_mib_per_scan:.0f} MiB + worker "
        f"{advice.worker_mib_per_scan:.1f} MiB)."
    )
    print(
        f"Extrapolation (not measured on those plans): CPU-bound C = {advice.knee_per_cpu:.2f} per vCPU, "
        f"memory-bound C = (plan memory - {advice.host_reserve_mib} MiB assumed for the Functions host - "
        f"{advice.worker_baseline_mib:.0f} MiB Python worker) / {advice.mib_per_scan:.0f} MiB per scan:"
    )
    print(
        f"  (cross-check, Azurite's CPU excluded: a scan alone takes {advice.busy_per_vcpu:.2f}x its own CPU time, "
        f"so ~{advice.busy_per_vcpu:.1f} scans keep one vCPU busy)"
    )
    for plan in advice.plans:
        print(
            f"  {plan.plan:<12} ({plan.vcpus} vCPU, {plan.memory_mib / 1024:.1f} GiB): "
            f"CPU-bound {plan.cpu_bound}, memory-bound {plan.memory_bound} -> "
            f"batchSize + newBatchThreshold = {plan.concurrency}"
        )


# -------------------------------------------------------------------- main


def parse_concurrency(text: str) -> list[int]:
    values = sorted({int(part) for part in text.split(",") if part.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers, e.g. 1,2,3,4,6")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=1500, help="mid-size fixture packages (default 1500)")
    parser.add_argument("--cves-per-package", type=int, default=2, help="mid-size fixture CVEs per package (default 2)")
    parser.add_argument("--scans-per-worker", type=int, default=5, help="K, scans each worker thread does (default 5)")
    parser.add_argument(
        "--concurrency", type=parse_concurrency, default=[1, 2, 3, 4, 6], help="the Cs to run (default 1,2,3,4,6)"
    )
    parser.add_argument("--interval-ms", type=float, default=50.0, help="RSS sampling period (default 50 ms)")
    parser.add_argument(
        "--host-reserve-mib",
        type=int,
        default=300,
        help="memory assumed for the Functions host and the OS in the plan extrapolation (default 300 MiB)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.20,
        help="before each run, wait for a second with less than this share of the CPUs busy (default 0.20)",
    )
    parser.add_argument(
        "--quiet-timeout", type=float, default=45.0, help="longest wait for that, per run (default 45 s)"
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help=f"runs per C at most: a run during which other work used over {DISTURBED_SHARE:.0%}% "
        "of the CPUs is redone, and the least disturbed one kept (default 3)",
    )
    parser.add_argument("--json", type=Path, help="write the JSON here (default bench/out/concurrency-<time>.json)")
    parser.add_argument("--bare", action="store_true",
                        help="also run bare trivy (the core's command) at each C, for the same K scans per worker")
    args = parser.parse_args(argv)
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    if args.scans_per_worker < 1:
        parser.error("--scans-per-worker must be at least 1")

    for signum in (signal.SIGTERM, signal.SIGHUP):  # unwind, so that the finally stops Azurite
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    trivy = trivy_executable()
    cpus = os.cpu_count() or 1
    memory_mib = machine_memory_mib()
    started_at = datetime.now(UTC)
    runs: list[RunResult] = []
    disturbed_runs: list[RunResult] = []  # attempts redone because other work took CPU
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        work = Path(tmp)
        say(f"building large_fixture({args.packages}, {args.cves_per_package}), the sample image, one DB for both")
        packages, advisories = large_fixture(args.packages, args.cves_per_package)
        cache_dir = work / "trivy-cache"
        build_trivy_db(cache_dir, [*SAMPLE_ADVISORIES, *advisories])
        mid = Fixture(build_alpine_image(work / "mid.tar", packages, repo_tag="bench/mid:1.0").path, cache_dir)
        sample = Fixture(
            build_alpine_image(work / "sample.tar", SAMPLE_PACKAGES, repo_tag="sample/app:1.0").path, cache_dir
        )
        mid_findings = len(advisories)  # every large_fixture advisory is affected

        say("starting Azurite")
        azurite = Azurite(work / "azurite")
        try:
            azurite.start()
            azurite.create_container(CONTAINER)
            env = scanner_environment(azurite.container_sas_url(CONTAINER), trivy, mid, work / "scanner.yaml")
            for name in [name for name in os.environ if name.startswith("TRIVY_")]:
                del os.environ[name]  # a developer's own trivy settings must not change the figures
            os.environ.update(env)
            azurite_process = getattr(azurite, "_process", None)  # its CPU time is read from /proc
            azurite_pid = azurite_process.pid if azurite_process is not None else None

            say("warming up: one scan of the sample image, one of the mid-size image")
            scan_once(sample, "warmup-sample", SAMPLE_FINDINGS)
            _, warmup = scan_once(mid, "warmup-mid", mid_findings)
            worker_baseline_mib = _status_fields("self", ("VmRSS",))["VmRSS"] / 1024

            settings = RunSettings(
                fixture=mid,
                expected_findings=mid_findings,
                scans_per_worker=args.scans_per_worker,
                trivy=trivy,
                interval=args.interval_ms / 1000,
                azurite_pid=azurite_pid,
                quiet_threshold=args.quiet_threshold,
                quiet_timeout=args.quiet_timeout,
                attempts=args.attempts,
            )
            for concurrency in args.concurrency:
                run, discarded = measure(concurrency, settings)
                runs.append(run)
                disturbed_runs.extend(discarded)
            bare_runs: list[RunResult] = []
            if args.bare:
                bare_settings = replace(settings, bare=True)
                for concurrency in args.concurrency:
                    run, discarded = measure(concurrency, bare_settings)
                    bare_runs.append(run)
                    disturbed_runs.extend(discarded)
            report_bytes = _uploaded_bytes(azurite, warmup.meta.trivy_audit_path)
        finally:
            azurite.stop()

    advice = recommend(runs, worker_baseline_mib, args.host_reserve_mib, cpus)
    header = (
        f"large_fixture({args.packages}, {args.cves_per_package}): {mid_findings:,} findings, report "
        f"{report_bytes / MIB:.1f} MiB; K = {args.scans_per_worker} scans per worker thread; "
        f"machine: {cpus} CPUs, {memory_mib / 1024:.1f} GiB; worker baseline RSS {worker_baseline_mib:.0f} MiB"
    )
    print_table(runs, advice, header)
    if bare_runs:
        print("\nBare trivy (the core's command, no storage, no Python) at the same concurrency:")
        print(f"{'C':>3}  {'scans/min':>9}  {'/min/vCPU':>9}  {'host/bare':>9}  {'median s':>8}  {'MiB/scan':>8}")
        for bare_run, run in zip(bare_runs, runs, strict=True):
            print(f"{bare_run.concurrency:>3}  {bare_run.scans_per_minute:9.1f}  {bare_run.scans_per_minute_per_vcpu:9.1f}  "
                  f"{run.scans_per_minute / bare_run.scans_per_minute:9.2f}  {bare_run.latency_median_seconds:8.2f}  "
                  f"{bare_run.mib_per_concurrent_scan:8.0f}")
    if disturbed_runs:
        print(
            f"({len(disturbed_runs)} run(s) disturbed by other work were redone; "
            "they are in the JSON under discarded_runs.)"
        )
    results = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": cpus,
            "memory_mib": round(memory_mib, 1),
        },
        "trivy": {"path": str(trivy), "version": Trivy(trivy).version()},
        "fixture": {
            "packages": args.packages,
            "cves_per_package": args.cves_per_package,
            "findings": mid_findings,
            "report_bytes": report_bytes,
        },
        "scans_per_worker": args.scans_per_worker,
        "sampling_interval_ms": args.interval_ms,
        "worker_baseline_rss_mib": worker_baseline_mib,
        "runs": [asdict(run) | {"scans_per_minute_per_vcpu": run.scans_per_minute_per_vcpu,
                                "mib_per_concurrent_scan": run.mib_per_concurrent_scan} for run in runs],
        "bare_runs": [asdict(run) | {"scans_per_minute_per_vcpu": run.scans_per_minute_per_vcpu,
                                     "mib_per_concurrent_scan": run.mib_per_concurrent_scan} for run in bare_runs],
        "discarded_runs": [asdict(run) for run in disturbed_runs],
        "recommendation": asdict(advice),
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = args.json or OUT_DIR / f"concurrency-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nJSON: {out}")
    return 0


def _uploaded_bytes(azurite: Azurite, blob: str | None) -> int:
    """The size of a blob as stored in Azurite (the warm-up's scan-result.json)."""
    if blob is None:
        raise RuntimeError("the warm-up scan recorded no report path")
    with ContainerClient.from_container_url(azurite.container_sas_url(CONTAINER)) as client:
        return int(client.get_blob_client(blob).get_blob_properties().size)


if __name__ == "__main__":
    sys.exit(main())
