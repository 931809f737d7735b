"""The stand-alone listener (``python -m scanner_core listen``) as a real process against
real Azurite, a real registry, real trivy: it scans and deletes, renews its lease while
a scan runs, stops gracefully, and no trivy outlives it, even after kill -9."""

from __future__ import annotations

import base64
import signal
import time
import uuid

import pytest
from azure.storage.queue import QueueClient

from scanner_core.queue import build_message
from tests.support.faults import Blackhole, trivy_processes
from tests.support.listener import ListenerProcess, listener_env, poison_entries, visible_count, wait_for


@pytest.fixture
def queue_name() -> str:
    return f"listen-{uuid.uuid4().hex[:12]}"


def send(azurite, queue_name: str, text: str) -> None:
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
        try:
            client.create_queue()
        except Exception:  # noqa: BLE001 - exists already
            pass
        client.send_message(text)


def test_listener_scans_every_form_deletes_and_heartbeats(scanner_env, registry, pushed_sample, audits, azurite,
                                                         queue_name, tmp_path):
    scanner_env.write_config({"heartbeat-period": 60, "registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    joseki = (f'{{"Headers":{{"CreationTime":1795300000,"PayloadVersion":"0.2"}},"Payload":{{"ImageScanId":"joseki-1",'
              f'"ImageFullName":"{pushed_sample.reference}"}}}}')
    send(azurite, queue_name, build_message(pushed_sample.reference, "envelope-1").to_text())
    send(azurite, queue_name, base64.b64encode(joseki.encode()).decode())
    send(azurite, queue_name, pushed_sample.reference)  # a bare reference dropped by hand
    send(azurite, queue_name, "not a reference at all!")
    listener = ListenerProcess(listener_env(azurite.connection_string, queue_name), tmp_path / "listener.log",
                               ["--concurrency", "2"]).start()
    try:
        assert wait_for(lambda: len([n for n in audits.names() if n.endswith("/meta")]) == 3, timeout=90), listener.log()
        assert wait_for(lambda: len(poison_entries(azurite.connection_string, queue_name)) == 1, timeout=30)
        assert wait_for(lambda: visible_count(azurite.connection_string, queue_name) == 0, timeout=10)
        heartbeat = f"trivy-{scanner_env.short_id}/trivy-{scanner_env.short_id}.meta"
        assert wait_for(lambda: heartbeat in audits.names(), timeout=10)
    finally:
        code = listener.stop(timeout=30)
    assert code == 0, listener.log()
    metas = [audits.json(n) for n in audits.names() if n.endswith("/meta") and "/2" in n]
    assert sorted(m["audit-result"] for m in metas) == ["succeeded"] * 3
    assert {m["image-tag"] for m in metas} == {pushed_sample.reference}
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
        assert client.get_queue_properties().approximate_message_count == 0  # all deleted, none hidden
    assert registry.password not in listener.log() and "sig=" not in listener.log().replace("sig=***", "")


def test_lease_is_renewed_during_a_long_scan_and_kill_9_takes_trivy_along(scanner_env, audits, azurite, queue_name,
                                                                         tmp_path):
    with Blackhole() as hung:  # a registry that accepts and never answers: trivy waits
        scanner_env.write_config({"registries": [{"address": hung.address, "insecure": True}]})
        scanner_env.set(TRIVY_TIMEOUT="60000")
        send(azurite, queue_name, build_message(f"{hung.address}/team/app:1.0", "long-1").to_text())
        first = ListenerProcess(listener_env(azurite.connection_string, queue_name), tmp_path / "a.log",
                                ["--visibility-timeout", "2"]).start()
        second = ListenerProcess(listener_env(azurite.connection_string, queue_name), tmp_path / "b.log",
                                 ["--visibility-timeout", "2"]).start()
        try:
            assert wait_for(lambda: len(trivy_processes(hung.address)) == 1, timeout=30), first.log() + second.log()
            time.sleep(7)  # more than three visibility timeouts: without renewal the other would take it
            assert len(trivy_processes(hung.address)) == 1
            assert visible_count(azurite.connection_string, queue_name) == 0
            (scanning,) = [p for p in (first, second) if any(t.ppid == p.pid for t in trivy_processes(hung.address))]
            scanning.signal(signal.SIGKILL)
            scanning.wait(timeout=5)
            killed_at = time.monotonic()
            assert wait_for(lambda: not any(t.ppid in (0, 1) or t.ppid == scanning.pid
                                            for t in trivy_processes(hung.address)), timeout=1.0)
            assert time.monotonic() - killed_at <= 1.0
        finally:
            first.stop(timeout=10)
            second.stop(timeout=10)
        assert trivy_processes(hung.address) == []


def test_sigterm_waits_the_grace_period_then_kills_trivy_and_gives_the_message_back(
    scanner_env, audits, azurite, queue_name, tmp_path
):
    with Blackhole() as hung:
        scanner_env.write_config({"registries": [{"address": hung.address, "insecure": True}]})
        scanner_env.set(TRIVY_TIMEOUT="60000")
        send(azurite, queue_name, build_message(f"{hung.address}/team/app:1.0", "stopped-1").to_text())
        listener = ListenerProcess(listener_env(azurite.connection_string, queue_name), tmp_path / "l.log",
                                   ["--grace-period", "2", "--visibility-timeout", "30"]).start()
        try:
            assert wait_for(lambda: len(trivy_processes(hung.address)) == 1, timeout=30), listener.log()
            signalled = time.monotonic()
            listener.signal(signal.SIGTERM)
            assert listener.wait(timeout=15) == 1  # running scans abandoned
            assert 2 <= time.monotonic() - signalled < 10
        finally:
            listener.stop(timeout=5)
        assert trivy_processes(hung.address) == []
        with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
            (message,) = client.receive_messages(visibility_timeout=30)  # visible again at once, not after 30 s
            assert message.dequeue_count == 2
        assert [n for n in audits.names() if n.endswith("/meta")] == []  # no audit recorded, no attempt spent
        assert poison_entries(azurite.connection_string, queue_name) == []
        assert "scans abandoned" in listener.log()


def test_a_lease_taken_over_by_another_consumer_is_no_longer_held(azurite):
    """After an outage longer than its lease, a message is delivered to another consumer; the first
    one must then send nothing for it (``Lease.still_held``, used before any retry copy or quarantine
    entry), or both would: the fault test's duplicated quarantine entry under an Azurite restart."""
    from scanner_core.log import ScanLogger
    from scanner_core.queue.lease import Lease

    name = f"lease-{uuid.uuid4().hex[:12]}"
    with QueueClient.from_connection_string(azurite.connection_string, name) as client:
        client.create_queue()
        client.send_message("scan me")
        first = next(iter(client.receive_messages(visibility_timeout=1)))
        held = Lease(client, first, 30, ScanLogger())
        assert held.still_held()  # renewed: ours for 30 s more
        client.update_message(first.id, held._pop_receipt, visibility_timeout=0)  # as if its lease ran out
        second = next(iter(client.receive_messages(visibility_timeout=30)))  # another consumer takes it
        assert second.id == first.id
        assert held.still_held() is False and held.lost
        assert Lease(client, second, 30, ScanLogger()).still_held()
