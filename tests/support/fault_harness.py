"""The fault-injection harness shared by ``tests/test_queue_faults.py`` (small) and
``bench/bench_faults.py`` (>= 100 messages).

Messages go through real ``python -m scanner_core listen`` processes (competing
consumers, each with several workers, the root logger at DEBUG) on real Azurite,
against a real registry, while faults are injected: trivy killed mid-scan, the
registry killed (-9) and restarted, Azurite stopped and restarted on the same
ports and data, and some images on a registry that accepts connections and never
answers. Then the invariant is checked: every message ends as exactly one audit
folder with ``meta``, or on the poison queue with its reason; none lost, none
scanned into two folders, no trivy left running, no secret in any log line.

Two more faults (issue 17): ``recycles`` instances die holding messages (an
extra listener is killed -9 with its trivy children while it scans, as a
scale-in or an out-of-memory kill does), so their messages come back with a
higher dequeue count just before the registry outage; and a lifecycle rule
deletes audit folders (``seeds``: audits by digest made first, then deleted
whole) while requests by digest (``by_digest``) are answered by dedup. Every
succeeded audit must then hold its own report (``not_self_contained``).

Azurite is stopped with SIGTERM, not SIGKILL: measured, a SIGKILLed Azurite loses
the writes it acknowledged in its last seconds (its LokiJS metadata is saved
every few seconds), which real Storage never does; a harness that did so would
count the emulator's losses as the scanner's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from scanner_core.queue import build_message

from .azurite import DEV_ACCOUNT_KEY, Azurite
from .faults import Blackhole, kill_service, kill_trivy, trivy_processes
from .listener import ListenerProcess, listener_env, poison_entries, queue_length
from .registry import LOOPBACK_REGISTRIES, Registry


@dataclass(frozen=True)
class FaultPlan:
    messages: int = 24
    hung_messages: int = 2  # images on the registry that never answers
    listeners: int = 2
    concurrency: int = 2
    trivy_kills: int = 3
    registry_outage_seconds: float = 3.0
    azurite_outage_seconds: float = 3.0
    timeout_seconds: float = 240.0
    recycles: int = 0  # instances killed -9 while holding messages
    by_digest: int = 0  # messages asking for the image by digest (dedup answers them)
    seeds: int = 0  # audits by digest made first, then deleted as a lifecycle rule would


@dataclass
class FaultReport:
    messages: int
    faults: list[str] = field(default_factory=list)
    succeeded: int = 0
    audit_failed: int = 0
    quarantined: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexplained_poison: list[dict] = field(default_factory=list)
    trivy_left: int = 0
    leaked_lines: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    listener_exit_codes: list[int | None] = field(default_factory=list)
    not_self_contained: list[str] = field(default_factory=list)
    reused: int = 0

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]

    def summary(self) -> str:
        p50 = statistics.median(self.latencies) if self.latencies else float("nan")
        return (
            f"messages {self.messages}, faults injected {len(self.faults)} ({'; '.join(self.faults)}), "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, succeeded {self.succeeded}, "
            f"audit-failed {self.audit_failed}, quarantined {self.quarantined}, trivy left {self.trivy_left}, "
            f"answered by dedup {self.reused}, not self-contained {len(self.not_self_contained)}, "
            f"leaked log lines {len(self.leaked_lines)}, enqueue->meta p50 {p50:.1f} s p95 {self.percentile(0.95):.1f} s, "
            f"total {self.elapsed_seconds:.1f} s"
        )


def run_faults(
    plan: FaultPlan,
    *,
    azurite: Azurite,
    registry: Registry,
    image: str,
    scanner_env: dict[str, str],
    container_sas_url: str,
    config_path: Path,
    workdir: Path,
    digest: str | None = None,
) -> FaultReport:
    """Runs ``plan``; ``scanner_env`` holds the scanner's settings (blob SAS, trivy paths...)."""
    queue_name = f"faults-{uuid.uuid4().hex[:12]}"
    report = FaultReport(messages=plan.messages)
    with Blackhole() as hung:
        config_path.write_text(yaml.safe_dump({"heartbeat-period": 60, "registries": [
            {"address": registry.address, "username": registry.username, "password": registry.password,
             "insecure": True},
            {"address": hung.address, "insecure": True},
        ]}))
        env = listener_env(azurite.connection_string, queue_name, **{
            "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,  # the bench's environment may not list them
            **scanner_env, "TRIVY_CONFIG_PATH": str(config_path), "TRIVY_TIMEOUT": "3000",
            "RETRY_BACKOFF_BASE_SECONDS": "1", "RETRY_BACKOFF_MAX_SECONDS": "4", "RETRY_MAX_ATTEMPTS": "5",
        })
        by_digest = f"{image.rsplit(':', 1)[0]}@{digest}" if digest else image
        started = time.monotonic()

        def listener(name: str) -> ListenerProcess:
            return ListenerProcess(env, workdir / f"{name}.log",
                                   ["--concurrency", str(plan.concurrency), "--visibility-timeout", "5",
                                    "--grace-period", "20", "--log-level", "debug"]).start()

        listeners = [listener(f"listener-{i}") for i in range(plan.listeners)]
        try:
            _lifecycle_deletion(plan, report, azurite, queue_name, container_sas_url, by_digest)
            doomed = [listener(f"recycled-{k}") for k in range(plan.recycles)]  # compete from the start
            enqueued = _enqueue(azurite, queue_name, plan, image, f"{hung.address}/team/app:1.0", by_digest)
            _recycle(report, registry, doomed)
            _inject(plan, report, azurite, registry)
            _await_settled(azurite, queue_name, container_sas_url, enqueued, plan.timeout_seconds)
        finally:
            report.listener_exit_codes = [listener.stop(timeout=30) for listener in listeners]
            report.elapsed_seconds = time.monotonic() - started
        report.trivy_left = len(trivy_processes(registry.address)) + len(trivy_processes(hung.address))
        _check(report, azurite, queue_name, container_sas_url, enqueued)
        secrets = [registry.password, DEV_ACCOUNT_KEY, _signature(container_sas_url)]
        for listener in listeners:
            report.leaked_lines += [line for line in listener.log().splitlines() if any(s in line for s in secrets)]
    return report


def _signature(sas_url: str) -> str:
    return sas_url.split("sig=", 1)[1].split("&", 1)[0]


def _enqueue(azurite: Azurite, queue_name: str, plan: FaultPlan, image: str, hung_image: str,
             by_digest: str) -> dict[str, float]:
    """Audit id -> enqueue time (unix s)."""
    enqueued: dict[str, float] = {}
    hung = {int((k + 0.5) * plan.messages / plan.hung_messages) for k in range(plan.hung_messages)}
    digests = {int((k + 0.25) * plan.messages / plan.by_digest) for k in range(plan.by_digest)} - hung
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
        try:
            client.create_queue()
        except ResourceExistsError:
            pass  # the seeds' queue
        for index in range(plan.messages):
            target, audit_id = (hung_image, f"hung-{index:04d}") if index in hung else (image, f"fault-{index:04d}")
            if index in digests:
                target = by_digest
            now = time.time()
            client.send_message(build_message(target, audit_id, created_at=now).to_text())
            enqueued[audit_id] = now
    return enqueued


def _lifecycle_deletion(plan: FaultPlan, report: FaultReport, azurite: Azurite, queue_name: str, sas_url: str,
                        by_digest: str) -> None:
    """Seed audits by digest, then delete their folders whole, as a lifecycle rule would."""
    if not plan.seeds:
        return
    seeds = [f"seed-{k:04d}" for k in range(plan.seeds)]
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
        client.create_queue()
        for audit_id in seeds:
            client.send_message(build_message(by_digest, audit_id, created_at=time.time()).to_text())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(a in _metas(sas_url) for a in seeds):
        time.sleep(0.5)
    folders = [folder for a in seeds for folder in _metas(sas_url).get(a, [])]
    with ContainerClient.from_container_url(sas_url) as container:
        for folder in folders:
            for blob in list(container.list_blobs(name_starts_with=folder + "/")):
                container.delete_blob(blob.name)
    report.faults.append(f"a lifecycle rule deleted {len(folders)} audit folders before requests by digest")


def _recycle(report: FaultReport, registry: Registry, doomed: list[ListenerProcess]) -> None:
    """Instances that die holding messages: each extra listener is killed -9, with its trivy,
    once it has started a scan (its deliveries come back later with a higher dequeue count)."""
    for process in doomed:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "scan requested" not in process.log():
            time.sleep(0.1)
        time.sleep(0.3)
        children = _children(process.pid, registry.address)
        process.signal(signal.SIGKILL)
        process.wait(timeout=10)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        held = process.log().count("scan requested")
        report.faults.append(f"an instance killed -9 holding messages ({held} scans started, {len(children)} trivy)")


def _children(pid: int, marker: str) -> list[int]:
    return [p.pid for p in trivy_processes(marker) if p.ppid == pid]


def _inject(plan: FaultPlan, report: FaultReport, azurite: Azurite, registry: Registry) -> None:
    """The faults, one after the other, while the listeners work."""
    kills = 0
    deadline = time.monotonic() + 60
    while kills < plan.trivy_kills and time.monotonic() < deadline:
        time.sleep(0.3)
        if trivy_processes(registry.address) and kill_trivy(registry.address):
            kills += 1
            report.faults.append("trivy killed mid-scan")
            time.sleep(0.5)
    kill_service(registry)
    report.faults.append(f"registry killed -9 for {plan.registry_outage_seconds:.0f} s")
    time.sleep(plan.registry_outage_seconds)
    registry.start()
    time.sleep(1.0)
    azurite.stop()
    report.faults.append(f"Azurite stopped for {plan.azurite_outage_seconds:.0f} s, restarted on its ports and data")
    time.sleep(plan.azurite_outage_seconds)
    azurite.start()
    if plan.hung_messages:
        report.faults.append(f"{plan.hung_messages} images on a registry that accepts and never answers")


def _metas(container_sas_url: str) -> dict[str, list[str]]:
    """Audit id -> the folders holding a meta for it."""
    folders: dict[str, list[str]] = {}
    with ContainerClient.from_container_url(container_sas_url) as container:
        for blob in container.list_blobs():
            if blob.name.endswith("/meta") and "/index/" not in blob.name:
                folder = blob.name.rsplit("/", 1)[0]
                audit_id = folder.rsplit("/", 1)[1].split("-", 2)[2]  # {YYYYMMDD}-{HHMMSS}-{audit-id}
                folders.setdefault(audit_id, []).append(folder)
    return folders


def _await_settled(azurite: Azurite, queue_name: str, sas_url: str, enqueued: dict[str, float], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            metas = _metas(sas_url)
            poisoned = {e.get("audit-id") for e in poison_entries(azurite.connection_string, queue_name)}
            if queue_length(azurite.connection_string, queue_name) == 0 and all(
                a in metas or a in poisoned for a in enqueued
            ):
                return
        except Exception:  # noqa: BLE001 - Azurite may be restarting
            pass
        time.sleep(1.0)


def _check(report: FaultReport, azurite: Azurite, queue_name: str, sas_url: str, enqueued: dict[str, float]) -> None:
    metas = _metas(sas_url)
    poison = poison_entries(azurite.connection_string, queue_name)
    poisoned = {e.get("audit-id") for e in poison}
    report.quarantined = len(poison)
    report.unexplained_poison = [e for e in poison if not e.get("reason") or e.get("audit-id") not in enqueued]
    report.lost = sorted(a for a in enqueued if a not in metas and a not in poisoned)
    poison_ids = [e.get("audit-id") for e in poison]
    report.duplicated = sorted({a for a, folders in metas.items() if len(folders) > 1}
                               | {a for a in poison_ids if poison_ids.count(a) > 1})
    with ContainerClient.from_container_url(sas_url) as container:
        for audit_id, folders in metas.items():
            meta = json.loads(container.download_blob(f"{folders[0]}/meta").readall())
            if meta["audit-result"] == "succeeded":
                report.succeeded += 1
                report.reused += "reused-from" in meta
                path = meta.get("trivy-audit-path") or ""
                if not path.startswith(folders[0] + "/") or not container.get_blob_client(path).exists():
                    report.not_self_contained.append(audit_id)
                if audit_id in poisoned:  # a result and a quarantine entry: not "exactly one"
                    report.unexplained_poison += [e for e in poison if e.get("audit-id") == audit_id]
            else:
                report.audit_failed += 1
            if audit_id in enqueued:
                report.latencies.append(meta["timestamp"] - enqueued[audit_id])
