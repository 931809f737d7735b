"""The test-service launchers work against the real programs: Azurite, docker-registry, skopeo, trivy.

The trivy tests also pin down the exact error texts trivy 0.76 prints for the
failures the scanner has to tell apart (bad credentials, missing image,
registry down), so a trivy upgrade that changes them shows up here first.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from tests.support.azurite import Azurite, AzuriteError
from tests.support.ports import port_accepts
from tests.support.registry import Registry, unreachable_address, write_auth_file

TRIVY = Path(sys.executable).parent / "trivy"
# A well-formed but fake GitHub token: trivy's secret scanner reports it, which
# proves trivy really pulled and unpacked the layer from the registry.
FAKE_GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
REPOSITORY = "team/tiny"
TAG = "1.0"


# -- a minimal `docker save` archive --------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_docker_archive(path: Path, files: dict[str, bytes]) -> Path:
    """Write a one-layer image in `docker save` layout (manifest.json, config, layer.tar)."""
    layer = _tar(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "tests/test_services.py"}],
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["tiny:latest"], "Layers": [layer_name]}])
    path.write_bytes(_tar({"manifest.json": manifest.encode(), config_name: config, layer_name: layer}))
    return path


# -- Azurite ----------------------------------------------------------------------


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[Azurite]:
    with Azurite(tmp_path / "azurite") as storage:
        yield storage


def _container(storage: Azurite, name: str, *, timeout: int = 10) -> ContainerClient:
    """A client on a container SAS URL, without retries so that failures surface at once."""
    storage.create_container(name)
    return ContainerClient.from_container_url(
        storage.container_sas_url(name), retry_total=0, connection_timeout=timeout, read_timeout=timeout
    )


def test_blob_round_trip_through_container_sas_url(azurite: Azurite) -> None:
    with _container(azurite, "reports") as container:
        container.upload_blob("scan/result.json", b'{"ok": true}', overwrite=True)
        assert container.download_blob("scan/result.json").readall() == b'{"ok": true}'
        assert [blob.name for blob in container.list_blobs()] == ["scan/result.json"]


def test_queue_round_trip_through_connection_string(azurite: Azurite) -> None:
    with QueueClient.from_connection_string(azurite.connection_string, "scan-requests") as queue:
        queue.create_queue()
        queue.send_message("hello")
        messages = list(queue.receive_messages())
    assert [m.content for m in messages] == ["hello"]


def test_stopped_azurite_refuses_uploads_then_restarts_on_same_port_with_its_data(azurite: Azurite) -> None:
    endpoint = azurite.blob_endpoint
    with _container(azurite, "reports") as container:
        container.upload_blob("before.txt", b"kept", overwrite=True)

        azurite.stop()
        with pytest.raises(ServiceRequestError, match=r"(?i)refused"):
            container.upload_blob("during.txt", b"lost", overwrite=True)

        azurite.start()
        assert azurite.blob_endpoint == endpoint
        container.upload_blob("after.txt", b"back", overwrite=True)
        assert container.download_blob("before.txt").readall() == b"kept"
        assert sorted(b.name for b in container.list_blobs()) == ["after.txt", "before.txt"]


def test_paused_azurite_makes_uploads_time_out_until_resumed(azurite: Azurite) -> None:
    with _container(azurite, "reports", timeout=1) as container:
        azurite.pause()
        try:
            with pytest.raises((ServiceResponseError, ServiceRequestError)):
                container.upload_blob("paused.txt", b"x", overwrite=True)
        finally:
            azurite.resume()
        container.upload_blob("resumed.txt", b"x", overwrite=True)


def test_missing_azurite_names_npm_ci(tmp_path: Path) -> None:
    with pytest.raises(AzuriteError, match="npm ci"):
        Azurite(tmp_path, executable=tmp_path / "no-azurite").start()


# -- registry, skopeo and trivy ---------------------------------------------------


@dataclass(frozen=True)
class PushedImage:
    registry: Registry
    reference: str
    digest: str


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushedImage]:
    workdir = tmp_path_factory.mktemp("registry")
    archive = build_docker_archive(
        workdir / "tiny.tar", {"app/config.env": f"GITHUB_TOKEN={FAKE_GITHUB_TOKEN}\n".encode()}
    )
    with Registry(workdir / "service") as registry:
        digest = registry.push_docker_archive(archive, REPOSITORY, TAG)
        yield PushedImage(registry, f"{registry.address}/{REPOSITORY}:{TAG}", digest)


def _get_v2(address: str, credentials: tuple[str, str] | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{address}/v2/")
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("WWW-Authenticate", "")


def test_registry_requires_basic_auth(pushed: PushedImage) -> None:
    registry = pushed.registry
    status, challenge = _get_v2(registry.address, None)
    assert (status, challenge) == (401, 'Basic realm="test-registry"')
    assert _get_v2(registry.address, (registry.username, "wrong"))[0] == 401
    assert _get_v2(registry.address, (registry.username, registry.password))[0] == 200


def _skopeo_inspect(reference: str, auth_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--authfile", str(auth_file), f"docker://{reference}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pushed_image_is_readable_with_right_credentials_only(pushed: PushedImage, tmp_path: Path) -> None:
    registry = pushed.registry
    assert pushed.digest.startswith("sha256:") and len(pushed.digest) == 71

    good = write_auth_file(tmp_path / "good.json", registry.address, registry.username, registry.password)
    inspected = _skopeo_inspect(pushed.reference, good)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == pushed.digest

    bad = write_auth_file(tmp_path / "bad.json", registry.address, registry.username, "wrong")
    refused = _skopeo_inspect(pushed.reference, bad)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower()


def test_registry_restarts_on_same_address_with_its_images(tmp_path: Path) -> None:
    archive = build_docker_archive(tmp_path / "tiny.tar", {"hello.txt": b"hi\n"})
    with Registry(tmp_path / "service", password="fixed") as registry:
        digest = registry.push_docker_archive(archive, "again", "v1")
        address = registry.address
        registry.stop()
        assert not port_accepts(int(address.rsplit(":", 1)[1]))
        registry.start()
        assert registry.address == address
        inspected = _skopeo_inspect(f"{address}/again:v1", registry.auth_file)
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["Digest"] == digest


def test_unreachable_address_has_nothing_listening() -> None:
    host, port = unreachable_address().rsplit(":", 1)
    assert host == "127.0.0.1" and not port_accepts(int(port))


def _trivy(reference: str, username: str, password: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    """Secret-only remote scan: needs no vulnerability DB, so it runs offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIVY_")}
    env |= {"TRIVY_USERNAME": username, "TRIVY_PASSWORD": password}
    command = [
        str(TRIVY), "image", "--image-src", "remote", "--insecure",
        "--skip-db-update", "--offline-scan", "--skip-version-check", "--disable-telemetry",
        "--scanners", "secret", "--format", "json", "--cache-dir", str(cache_dir), reference,
    ]  # fmt: skip
    # trivy's own --timeout does not cover a registry that accepts but never answers.
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_trivy_scans_image_from_plain_http_registry_with_basic_auth(pushed: PushedImage, tmp_path: Path) -> None:
    registry = pushed.registry
    result = _trivy(pushed.reference, registry.username, registry.password, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ArtifactName"] == pushed.reference
    assert report["Metadata"]["RepoDigests"] == [f"{registry.address}/{REPOSITORY}@{pushed.digest}"]
    [finding] = [s for r in report["Results"] for s in r.get("Secrets", [])]
    assert finding["RuleID"] == "github-pat"


def test_trivy_wrong_password_is_unauthorized(pushed: PushedImage, tmp_path: Path) -> None:
    result = _trivy(pushed.reference, pushed.registry.username, "wrong", tmp_path)
    assert result.returncode == 1
    assert "UNAUTHORIZED: authentication required" in result.stderr
    assert "MANIFEST_UNKNOWN" not in result.stderr


def test_trivy_missing_tag_is_manifest_unknown(pushed: PushedImage, tmp_path: Path) -> None:
    registry = pushed.registry
    result = _trivy(f"{registry.address}/{REPOSITORY}:missing", registry.username, registry.password, tmp_path)
    assert result.returncode == 1
    assert "MANIFEST_UNKNOWN: manifest unknown" in result.stderr
    # trivy retries anonymously too, so a missing tag ALSO carries an UNAUTHORIZED line:
    # classify MANIFEST_UNKNOWN first.
    assert "UNAUTHORIZED" in result.stderr


def test_trivy_unreachable_registry_is_connection_refused(tmp_path: Path) -> None:
    result = _trivy(f"{unreachable_address()}/{REPOSITORY}:{TAG}", "scanner", "secret", tmp_path)
    assert result.returncode == 1
    assert "connect: connection refused" in result.stderr
