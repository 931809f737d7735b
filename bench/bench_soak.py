"""Soak: does a long-running worker keep its memory, descriptors, threads and scratch space flat?

Run from the repo root: ``.venv/bin/python bench/bench_soak.py [--scans 500] [--mode listener|trigger|both]``.

Its own Azurite, registry (the sample image pushed), trivy DB and container. A
worker process takes ``--scans`` requests from a real queue, in batches of 50:

* ``listener``: ``python -m scanner_core listen --concurrency 2``;
* ``trigger``: the function app's queue trigger (``handlers.on_scan_message``, the
  body the Functions host calls) driven by a minimal host loop in a child process
  (``--child-trigger``): receive one message, invoke, delete it when the
  invocation returns, leave it to reappear when it raises, as the host does.

Half the requests succeed (a real trivy scan each: by tag, so dedup never
answers them); a tenth fail in each of five ways: a message that is not JSON
(quarantined at once), an image not found (permanent), a registry with nothing
listening (transient; ``RETRY_MAX_ATTEMPTS=1`` makes it final at once), a
registry not allowed (``169.254.169.254``: refused before any connection) and
a registry that accepts and never answers (trivy's deadline, ``TRIVY_TIMEOUT``
3 s). After each batch has settled (the queue empty) the worker's RSS, open
file descriptors and threads (``/proc/<pid>``) and the entries of its
``SCAN_SCRATCH_DIR`` are printed, then the growth from the 100th scan to the
last. Goals: RSS growth <= 10 MiB, descriptors and threads flat, scratch empty
between batches. Nothing is asserted.
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
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from azure.storage.queue import QueueClient  # noqa: E402

from tests.support.azurite import Azurite  # noqa: E402
from tests.support.faults import Blackhole, trivy_processes  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image  # noqa: E402
from tests.support.listener import ListenerProcess, listener_env, queue_length  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES, Registry, unreachable_address  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402

BATCH = 50
KINDS = ("ok", "ok", "ok", "ok", "ok", "invalid", "not-found", "unreachable", "not-allowed", "hung")


@dataclass
class Sample:
    scans: int
    rss_kib: int
    fds: int
    threads: int
    scratch: int

    def row(self) -> str:
        return f"{self.scans:>6} {self.rss_kib / 1024:>9.1f} {self.fds:>5} {self.threads:>8} {self.scratch:>8}"


def sample(pid: int, scans: int, scratch: Path) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Sample(scans, int(fields["VmRSS"].split()[0]), len(os.listdir(f"/proc/{pid}/fd")),
                  int(fields["Threads"]), len(list(scratch.iterdir())) if scratch.exists() else 0)


def bodies(index: int, images: dict[str, str], mode: str) -> str:
    kind = KINDS[index % len(KINDS)]
    if kind == "invalid":
        return "this is not a scan request {"
    created = time.time()
    return json.dumps({"headers": {"creation-time": int(created), "payload-version": "1"},
                       "payload": {"image-scan-id": f"soak-{mode}-{index:05d}-{kind}", "image-full-name": images[kind]}})


def child_trigger() -> int:
    """A minimal Functions host: one invocation of the real queue trigger per message."""
    from azure.functions.queue import QueueMessage

    from scanner_core.functions import handlers
    from scanner_core.queue import QueueSender

    connection, name = os.environ["AzureWebJobsStorage"], os.environ["SCAN_QUEUE_NAME"]
    poison = QueueSender(connection, f"{name}-poison", "none")
    with QueueClient.from_connection_string(connection, name) as queue:
        while not Path(os.environ["SOAK_STOP_FILE"]).exists():
            received = list(queue.receive_messages(max_messages=1, visibility_timeout=60))
            if not received:
                time.sleep(0.2)
                continue
            message = received[0]
            try:
                handlers.on_scan_message(
                    QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count,
                                 insertion_time=message.inserted_on),
                    poison.quarantine, REPO_ROOT)
            except Exception as error:  # noqa: BLE001 - as the host: the invocation failed, the message reappears
                print(f"invocation failed: {type(error).__name__}", flush=True)
                continue
            queue.delete_message(message)
    poison.close()
    return 0


def run_mode(mode: str, scans: int, azurite: Azurite, env: dict[str, str], images: dict[str, str],
             work: Path) -> list[Sample]:
    queue_name = f"soak-{mode}-{uuid.uuid4().hex[:8]}"
    scratch = work / f"scratch-{mode}"
    stop = work / f"stop-{mode}"
    child_env = listener_env(azurite.connection_string, queue_name, **env, SCAN_SCRATCH_DIR=str(scratch),
                             SOAK_STOP_FILE=str(stop))
    log = work / f"{mode}.log"
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        queue.create_queue()
        if mode == "listener":
            worker = ListenerProcess(child_env, log, ["--concurrency", "2", "--visibility-timeout", "60"]).start()
            pid, stop_worker = worker.pid, lambda: worker.stop(timeout=60)
        else:
            with log.open("ab") as out:
                process = subprocess.Popen([sys.executable, __file__, "--child-trigger"], cwd=REPO_ROOT,
                                           env=child_env, stdout=out, stderr=subprocess.STDOUT)
            pid = process.pid

            def stop_worker() -> int | None:
                stop.touch()
                return process.wait(timeout=120)

        samples: list[Sample] = []
        print(f"\n[{mode}] {'scans':>6} {'RSS MiB':>9} {'fds':>5} {'threads':>8} {'scratch':>8}", flush=True)
        started = time.monotonic()
        try:
            for first in range(0, scans, BATCH):
                for index in range(first, min(scans, first + BATCH)):
                    queue.send_message(bodies(index, images, mode))
                deadline = time.monotonic() + 1800
                while queue_length(azurite.connection_string, queue_name) and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(0.5)  # the last delete has returned; the worker is between scans
                samples.append(sample(pid, min(scans, first + BATCH), scratch))
                print(f"[{mode}] {samples[-1].row()}   ({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            code = stop_worker()
        print(f"[{mode}] worker exit code {code}; trivy processes left: {len(trivy_processes(env['TRIVY_CACHE_DIR']))}", flush=True)
        print(f"[{mode}] outcomes: {outcomes(azurite, queue_name, env['AZ_BLOB_STORAGE_SAS'], mode)}", flush=True)
    return samples


def outcomes(azurite: Azurite, queue_name: str, sas_url: str, mode: str) -> dict[str, int]:
    """How the requests ended: metas by result, quarantine entries by failure reason."""
    from collections import Counter

    from azure.storage.blob import ContainerClient

    counts: Counter[str] = Counter()
    with ContainerClient.from_container_url(sas_url) as container:
        for blob in container.list_blobs():
            if blob.name.endswith("/meta") and f"-soak-{mode}-" in blob.name:
                counts["meta " + json.loads(container.download_blob(blob.name).readall())["audit-result"]] += 1
    with QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison") as poison:
        for message in poison.receive_messages(messages_per_page=32, visibility_timeout=600):
            counts["quarantined " + json.loads(message.content).get("failure-reason", "?")] += 1
    return dict(sorted(counts.items()))



def growth(mode: str, samples: list[Sample]) -> None:
    base = next((s for s in samples if s.scans >= 100), samples[0])
    last = samples[-1]
    print(f"[{mode}] growth from scan {base.scans} to {last.scans}: RSS {(last.rss_kib - base.rss_kib) / 1024:+.1f} MiB, "
          f"fds {last.fds - base.fds:+d}, threads {last.threads - base.threads:+d}, "
          f"scratch entries at every sample: {sorted({s.scratch for s in samples})}")


def main() -> int:
    if "--child-trigger" in sys.argv:
        return child_trigger()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=500)
    parser.add_argument("--mode", choices=["listener", "trigger", "both"], default="both")
    args = parser.parse_args()
    trivy = Path(sys.prefix) / "bin" / "trivy"
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as temp:
        work = Path(temp)
        cache = work / "trivy-cache"
        build_trivy_db(cache, SAMPLE_ADVISORIES, updated_at=datetime(2026, 11, 1, tzinfo=UTC),
                       next_update=datetime(2026, 11, 2, tzinfo=UTC))
        image = build_alpine_image(work / "sample.tar", SAMPLE_PACKAGES)
        (work / "registry").mkdir()
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry, Blackhole() as hung:
            registry.push_docker_archive(image.path, "team/app", "1.0")
            container = f"audits-{uuid.uuid4().hex[:12]}"
            azurite.create_container(container)
            config = work / "scanner.yaml"
            config.write_text(json.dumps({"heartbeat-period": 60, "registries": [
                {"address": registry.address, "username": registry.username, "password": registry.password,
                 "insecure": True},
                {"address": hung.address, "insecure": True}]}))
            env = {
                "SCANNER_IDENTIFIER": str(uuid.uuid4()), "AZ_BLOB_STORAGE_SAS": azurite.container_sas_url(container),
                "TRIVY_CONFIG_PATH": str(config), "TRIVY_PATH": str(trivy), "TRIVY_CACHE_DIR": str(cache),
                "TRIVY_SKIP_DB_UPDATE": "true", "TRIVY_OFFLINE_SCAN": "true", "TRIVY_TIMEOUT": "3000",
                "RETRY_MAX_ATTEMPTS": "1", "DB_SNAPSHOT": "none", "LOG_FORMAT": "plain-text",
                "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,
            }
            images = {
                "ok": f"{registry.address}/team/app:1.0",
                "not-found": f"{registry.address}/team/missing:1.0",
                "unreachable": f"{unreachable_address()}/team/app:1.0",
                "not-allowed": "169.254.169.254/team/app:1.0",
                "hung": f"{hung.address}/team/app:1.0",
            }
            print(f"soak: {args.scans} requests per worker, batches of {BATCH}; kinds per 10: {', '.join(KINDS)}")
            modes = ["listener", "trigger"] if args.mode == "both" else [args.mode]
            for mode in modes:
                growth(mode, run_mode(mode, args.scans, azurite, env, images, work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
