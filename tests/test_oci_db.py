"""trivy's DB refresh (``trivy image --download-db-only --db-repository ...``), offline.

A private registry (htpasswd basic auth, plain HTTP on 127.0.0.1) serves a DB
built by ``build_trivy_db`` and pushed as trivy-db's OCI artifact by
``publish_trivy_db``; the real trivy 0.76 downloads it and then scans with it.

What these tests pin down about trivy 0.76 (see also the source references):

* ``--db-repository`` without a tag gets ``:2`` (the DB schema version) added.
* ``127.0.0.1``/``localhost`` registries are spoken to over plain HTTP even
  without ``--insecure`` (go-containerregistry treats loopback as insecure);
  any other plain-HTTP host needs ``--insecure``, which is honoured for the DB
  repository.
* Credentials: ``TRIVY_USERNAME``/``TRIVY_PASSWORD`` are tried first, then the
  docker keychain (``DOCKER_CONFIG`` / ``REGISTRY_AUTH_FILE``), then anonymous.
* Without ``--skip-db-update`` trivy only contacts the repository when the
  local DB is due: ``NextUpdate`` in the past AND ``DownloadedAt`` older than
  one hour (pkg/db/db.go ``isNewDB``); otherwise it exits 0 silently.
* A download is not atomic: after fetching the layer to a temp dir, trivy
  removes ``<cache>/db`` entirely (``os.RemoveAll``), recreates it and writes
  ``trivy.db`` then ``metadata.json`` in place (O_TRUNC, no rename), then
  rewrites ``metadata.json`` with a new ``DownloadedAt``. A failed download
  (network, auth, tag) leaves the previous DB untouched.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image, expected_findings
from tests.support.oci_db import publish_trivy_db
from tests.support.registry import Registry, unreachable_address, write_auth_file
from tests.support.trivy_db import build_trivy_db

TRIVY_TIMEOUT = 120
UPDATED_AT = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
NEXT_UPDATE = UPDATED_AT + timedelta(hours=24)
COMMON_FLAGS = ("--no-progress", "--skip-version-check", "--disable-telemetry")

EXPECTED = {tuple(f) for f in expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES)}


# ------------------------------------------------------------------ helpers


@dataclass
class Published:
    """A DB pushed to the test registry, and what it was built from."""

    registry: Registry
    repository: str
    tag: str
    digest: str
    db_dir: Path

    @property
    def reference(self) -> str:
        return f"{self.registry.address}/{self.repository}:{self.tag}"

    @property
    def credentials(self) -> dict[str, str]:
        return {"TRIVY_USERNAME": self.registry.username, "TRIVY_PASSWORD": self.registry.password}


def trivy_env(home: Path, **extra: str) -> dict[str, str]:
    """An explicit minimal environment: nothing of the developer's TRIVY_*/proxy/docker config leaks in."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), **extra}


def download_db(
    trivy: Path, cache_dir: Path, db_repository: str, env: dict[str, str], *extra_flags: str
) -> subprocess.CompletedProcess[str]:
    command = [
        str(trivy), "image", "--download-db-only",
        "--db-repository", db_repository,
        "--cache-dir", str(cache_dir),
        *COMMON_FLAGS, *extra_flags,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TRIVY_TIMEOUT, check=False)


def scan_tarball(
    trivy: Path, cache_dir: Path, tarball: Path, output: Path, env: dict[str, str], *extra_flags: str
) -> subprocess.CompletedProcess[str]:
    command = [
        str(trivy), "image", "--input", str(tarball),
        "--cache-dir", str(cache_dir),
        "--scanners", "vuln", "--format", "json", "--output", str(output),
        *COMMON_FLAGS, *extra_flags,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TRIVY_TIMEOUT, check=False)


def reported_findings(report: dict) -> set[tuple[str, str, str, str, str]]:
    return {
        (v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v.get("FixedVersion", ""), v["Severity"])
        for result in report.get("Results", [])
        for v in result.get("Vulnerabilities") or []
    }


def read_metadata(cache_dir: Path) -> dict:
    return json.loads((cache_dir / "db" / "metadata.json").read_text())


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)  # trivy writes RFC 3339 with up to 9 fractional digits


def write_times(cache_dir: Path, **times: datetime) -> None:
    """Rewrite fields of ``<cache>/db/metadata.json`` (NextUpdate, DownloadedAt, ...)."""
    metadata = read_metadata(cache_dir)
    metadata.update({name: moment.strftime("%Y-%m-%dT%H:%M:%SZ") for name, moment in times.items()})
    (cache_dir / "db" / "metadata.json").write_text(json.dumps(metadata))


def assert_downloaded(result: subprocess.CompletedProcess[str], reference: str) -> None:
    assert result.returncode == 0, result.stderr
    assert "Need to update DB" in result.stderr
    assert f'Artifact successfully downloaded\trepo="{reference}"' in result.stderr


def assert_not_contacted(result: subprocess.CompletedProcess[str]) -> None:
    """trivy considered the local DB fresh: exit 0, no download attempted, nothing printed."""
    assert result.returncode == 0, result.stderr
    assert "Need to update DB" not in result.stderr
    assert "Downloading" not in result.stderr


class TcpForwarder:
    """Relay ``127.0.0.2:<port>`` to a local port: a plain-HTTP registry that is not "127.0.0.1"."""

    def __init__(self, target_port: int, host: str = "127.0.0.2") -> None:
        self.target_port = target_port
        self._server = socket.create_server((host, 0))
        self.address = f"{host}:{self._server.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> TcpForwarder:
        self._spawn(self._accept_loop)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()
        for sock in list(self._sockets):
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: socket.socket) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def db_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("db-registry")) as running:
        yield running


def publish(
    registry: Registry, workdir: Path, repository: str, tag: str = "2", *, legacy_config: bool = False, **times: datetime
) -> Published:
    """Build a DB under ``workdir`` and push it as ``<registry>/<repository>:<tag>``."""
    db_dir = build_trivy_db(
        workdir,
        SAMPLE_ADVISORIES,
        updated_at=times.get("updated_at", UPDATED_AT),
        next_update=times.get("next_update", NEXT_UPDATE),
    )
    digest = publish_trivy_db(
        registry.address, repository, tag, db_dir,
        username=registry.username, password=registry.password, legacy_config=legacy_config,
    )  # fmt: skip
    return Published(registry, repository, tag, digest, db_dir)


@pytest.fixture(scope="module")
def published_db(db_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish(db_registry, tmp_path_factory.mktemp("published-db"), "mirror/trivy-db")


@pytest.fixture(scope="module")
def sample_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_alpine_image(tmp_path_factory.mktemp("oci-db-images") / "sample.tar", SAMPLE_PACKAGES).path


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("legacy_config", [False, True], ids=["oras-1.2-artifact", "legacy-trivy-config"])
def test_download_db_only_fetches_the_published_db_then_scans_offline(
    db_registry, trivy_executable, sample_tarball, tmp_path, tmp_path_factory, legacy_config
):
    published = publish(
        db_registry, tmp_path_factory.mktemp("db"), f"layout-{int(legacy_config)}/trivy-db", legacy_config=legacy_config
    )
    assert published.digest.startswith("sha256:")
    cache = tmp_path / "fresh-cache"
    env = trivy_env(tmp_path, **published.credentials)
    started = datetime.now(timezone.utc)

    result = download_db(trivy_executable, cache, published.reference, env, "--insecure")

    assert_downloaded(result, published.reference)
    assert result.stdout == ""
    assert sorted(p.name for p in (cache / "db").iterdir()) == ["metadata.json", "trivy.db"]
    assert (cache / "db" / "trivy.db").read_bytes() == (published.db_dir / "trivy.db").read_bytes()
    metadata, source = read_metadata(cache), json.loads((published.db_dir / "metadata.json").read_text())
    assert metadata["Version"] == source["Version"] == 2
    assert parse_time(metadata["UpdatedAt"]) == parse_time(source["UpdatedAt"]) == UPDATED_AT
    assert parse_time(metadata["NextUpdate"]) == parse_time(source["NextUpdate"]) == NEXT_UPDATE
    # trivy rewrites DownloadedAt with the download time (RFC 3339, nanoseconds)
    assert started - timedelta(seconds=5) <= parse_time(metadata["DownloadedAt"]) <= datetime.now(timezone.utc)

    report = tmp_path / "report.json"
    scan = scan_tarball(
        trivy_executable, cache, sample_tarball, report, trivy_env(tmp_path), "--skip-db-update", "--offline-scan"
    )
    assert scan.returncode == 0, scan.stderr
    findings = reported_findings(json.loads(report.read_text()))
    assert {f[0] for f in findings} == {f[0] for f in EXPECTED}
    assert findings == EXPECTED


def test_db_repository_without_tag_gets_the_schema_version(published_db, trivy_executable, tmp_path):
    assert published_db.tag == "2"
    untagged = f"{published_db.registry.address}/{published_db.repository}"

    result = download_db(trivy_executable, tmp_path / "cache", untagged, trivy_env(tmp_path, **published_db.credentials))

    assert "Adding schema version to the DB repository for backward compatibility" in result.stderr
    assert_downloaded(result, f"{untagged}:2")


def test_loopback_registry_needs_no_insecure_flag(published_db, trivy_executable, tmp_path):
    env = trivy_env(tmp_path, **published_db.credentials)
    port = published_db.registry.address.rsplit(":", 1)[1]
    for name, reference in [
        ("ip", published_db.reference),
        ("localhost", f"localhost:{port}/{published_db.repository}:{published_db.tag}"),
    ]:
        assert_downloaded(download_db(trivy_executable, tmp_path / name, reference, env), reference)


def test_other_plain_http_hosts_need_insecure(published_db, trivy_executable, tmp_path):
    """127.0.0.2 is not special-cased by go-containerregistry: https unless --insecure."""
    env = trivy_env(tmp_path, **published_db.credentials)
    with TcpForwarder(int(published_db.registry.address.rsplit(":", 1)[1])) as forwarder:
        reference = f"{forwarder.address}/{published_db.repository}:{published_db.tag}"

        refused = download_db(trivy_executable, tmp_path / "secure", reference, env)
        assert refused.returncode == 1
        assert "http: server gave HTTP response to HTTPS client" in refused.stderr
        assert f'Get "https://{forwarder.address}/v2/"' in refused.stderr
        assert not (tmp_path / "secure").exists()

        assert_downloaded(download_db(trivy_executable, tmp_path / "insecure", reference, env, "--insecure"), reference)


def test_credentials_can_come_from_an_auth_file_instead_of_env(published_db, trivy_executable, tmp_path):
    """The docker keychain (REGISTRY_AUTH_FILE, containers-auth.json format) works too."""
    registry = published_db.registry
    auth_file = write_auth_file(tmp_path / "auth.json", registry.address, registry.username, registry.password)
    env = trivy_env(tmp_path, REGISTRY_AUTH_FILE=str(auth_file))

    assert_downloaded(download_db(trivy_executable, tmp_path / "cache", published_db.reference, env), published_db.reference)


@pytest.mark.parametrize("case", ["unreachable", "missing-tag", "wrong-password", "no-credentials"])
def test_download_failures_exit_1_with_a_fatal_message(published_db, trivy_executable, tmp_path, case):
    registry = published_db.registry
    reference, credentials = published_db.reference, published_db.credentials
    if case == "unreachable":
        reference = f"{unreachable_address()}/{published_db.repository}:2"
    elif case == "missing-tag":
        reference = f"{registry.address}/{published_db.repository}:no-such-tag"
    elif case == "wrong-password":
        credentials = {**credentials, "TRIVY_PASSWORD": "not-the-password"}
    else:
        credentials = {}
    cache = tmp_path / "cache"

    result = download_db(trivy_executable, cache, reference, trivy_env(tmp_path, **credentials), "--insecure")

    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "\tFATAL\tFatal error\trun error: init error: DB error: failed to download vulnerability DB" in result.stderr
    assert f"failed to download artifact from {reference}: OCI repository error:" in result.stderr
    assert not cache.exists()  # nothing written, not even the cache dir
    host = reference.split("/", 1)[0]
    manifest_url = f"GET http://{host}/v2/{published_db.repository}/manifests/{reference.rsplit(':', 1)[1]}"
    unauthorized = f"{manifest_url}: UNAUTHORIZED: authentication required"
    troubleshooting = "WARN\tSee https://trivy.dev/docs/v0.76/guide/references/troubleshooting#db"
    if case == "unreachable":
        # https first, then http (loopback); once per auth method (credentials, then keychain/anonymous)
        assert "2 errors occurred" in result.stderr
        assert f'Get "https://{host}/v2/": dial tcp {host}: connect: connection refused' in result.stderr
        assert f'Get "http://{host}/v2/": dial tcp {host}: connect: connection refused' in result.stderr
    elif case == "missing-tag":
        # with the credentials the tag is unknown; the anonymous retry is refused
        assert "2 errors occurred" in result.stderr
        assert f"{manifest_url}: MANIFEST_UNKNOWN: manifest unknown; map[Tag:no-such-tag]" in result.stderr
        assert unauthorized in result.stderr
        assert troubleshooting not in result.stderr
    elif case == "wrong-password":
        assert "2 errors occurred" in result.stderr
        assert result.stderr.count(unauthorized) == 2
        assert "MANIFEST_UNKNOWN" not in result.stderr
        assert troubleshooting in result.stderr
    else:
        assert "1 error occurred" in result.stderr  # only the keychain/anonymous attempt
        assert result.stderr.count(unauthorized) == 1
        assert troubleshooting in result.stderr


def test_refresh_downloads_only_when_due_and_replaces_the_db_dir(db_registry, trivy_executable, tmp_path):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    first = publish(
        db_registry, tmp_path / "v1", "refresh/trivy-db",
        updated_at=now - timedelta(hours=3), next_update=now + timedelta(hours=21),
    )  # fmt: skip
    env = trivy_env(tmp_path, **first.credentials)
    cache = tmp_path / "cache"
    assert_downloaded(download_db(trivy_executable, cache, first.reference, env), first.reference)

    second = publish(
        db_registry, tmp_path / "v2", "refresh/trivy-db",
        updated_at=now - timedelta(minutes=30), next_update=now + timedelta(hours=23, minutes=30),
    )  # fmt: skip
    assert second.digest != first.digest and second.reference == first.reference

    # NextUpdate in the future: no contact at all, even though the registry has a newer DB
    assert_not_contacted(download_db(trivy_executable, cache, first.reference, env))
    assert parse_time(read_metadata(cache)["UpdatedAt"]) == now - timedelta(hours=3)

    # NextUpdate past, but downloaded less than an hour ago: still no contact
    write_times(cache, NextUpdate=now - timedelta(minutes=1))
    assert_not_contacted(download_db(trivy_executable, cache, first.reference, env))
    assert parse_time(read_metadata(cache)["UpdatedAt"]) == now - timedelta(hours=3)

    # due (NextUpdate past, DownloadedAt > 1 h ago) but the download fails: the old DB is kept as is
    write_times(cache, NextUpdate=now - timedelta(minutes=1), DownloadedAt=now - timedelta(hours=2))
    (cache / "db" / "planted.txt").write_text("not trivy's")
    old_db = cache / "db" / "trivy.db"
    old_bytes, old_dir_inode, old_db_inode = old_db.read_bytes(), (cache / "db").stat().st_ino, old_db.stat().st_ino
    failed = download_db(trivy_executable, cache, first.reference, {**env, "TRIVY_PASSWORD": "wrong"})
    assert failed.returncode == 1 and "UNAUTHORIZED" in failed.stderr
    assert "Need to update DB" in failed.stderr
    assert parse_time(read_metadata(cache)["UpdatedAt"]) == now - timedelta(hours=3)
    assert (cache / "db" / "planted.txt").exists() and old_db.stat().st_ino == old_db_inode

    # due and reachable: re-downloaded; <cache>/db is removed and recreated (planted file gone,
    # new inodes); a reader holding the old trivy.db open still reads the old content
    with old_db.open("rb") as reader:
        refreshed = download_db(trivy_executable, cache, first.reference, env)
        assert_downloaded(refreshed, first.reference)
        assert reader.read() == old_bytes
    metadata = read_metadata(cache)
    assert parse_time(metadata["UpdatedAt"]) == now - timedelta(minutes=30)
    assert parse_time(metadata["NextUpdate"]) == now + timedelta(hours=23, minutes=30)
    assert parse_time(metadata["DownloadedAt"]) >= now
    assert sorted(p.name for p in (cache / "db").iterdir()) == ["metadata.json", "trivy.db"]
    assert (cache / "db").stat().st_ino != old_dir_inode
    assert old_db.stat().st_ino != old_db_inode
    assert old_db.read_bytes() == (second.db_dir / "trivy.db").read_bytes()


def test_scan_without_skip_db_update_uses_a_fresh_db_without_the_network(
    published_db, trivy_executable, sample_tarball, tmp_path
):
    """A scan's implicit DB update follows the same rule: a fresh DB needs no reachable repository."""
    cache = tmp_path / "cache"
    env = trivy_env(tmp_path, **published_db.credentials)
    assert_downloaded(download_db(trivy_executable, cache, published_db.reference, env), published_db.reference)
    down = f"{unreachable_address()}/{published_db.repository}:2"

    fresh = scan_tarball(trivy_executable, cache, sample_tarball, tmp_path / "a.json", env, "--db-repository", down)
    assert fresh.returncode == 0, fresh.stderr
    assert "Need to update DB" not in fresh.stderr
    assert reported_findings(json.loads((tmp_path / "a.json").read_text())) == EXPECTED

    now = datetime.now(timezone.utc)
    write_times(cache, NextUpdate=now - timedelta(minutes=1), DownloadedAt=now - timedelta(hours=2))
    due = scan_tarball(trivy_executable, cache, sample_tarball, tmp_path / "b.json", env, "--db-repository", down)
    assert due.returncode == 1
    assert "Need to update DB" in due.stderr and "connection refused" in due.stderr
    assert (cache / "db" / "trivy.db").exists()  # the failed update left the DB in place

    skipped = scan_tarball(
        trivy_executable, cache, sample_tarball, tmp_path / "c.json", env, "--db-repository", down, "--skip-db-update"
    )
    assert skipped.returncode == 0, skipped.stderr
    assert reported_findings(json.loads((tmp_path / "c.json").read_text())) == EXPECTED
