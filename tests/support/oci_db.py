"""Publish an offline trivy DB as trivy-db's OCI artifact, for DB-refresh tests.

trivy downloads its vulnerability DB from an OCI registry (``--db-repository``,
default ``mirror.gcr.io/aquasec/trivy-db:2`` then ``ghcr.io/aquasecurity/trivy-db:2``).
This module pushes ``trivy.db`` + ``metadata.json`` to a local registry in the
same shape, speaking the distribution HTTP API directly with stdlib urllib:
``POST /v2/<name>/blobs/uploads/`` then ``PUT <location>&digest=...`` per blob,
then ``PUT /v2/<name>/manifests/<tag>``.

The artifact, as trivy-db's CI makes it (``tar cvzf db.tar.gz -C assets trivy.db
metadata.json`` then ``oras push --artifact-type application/vnd.aquasec.trivy.config.v1+json
<repo>:<tag> db.tar.gz:application/vnd.aquasec.trivy.db.layer.v1.tar+gzip``, oras 1.2)::

    OCI image manifest (application/vnd.oci.image.manifest.v1+json)
      artifactType: application/vnd.aquasec.trivy.config.v1+json
      config:       the OCI empty descriptor (application/vnd.oci.empty.v1+json, "{}")
      layers:       exactly one, application/vnd.aquasec.trivy.db.layer.v1.tar+gzip,
                    annotation org.opencontainers.image.title = db.tar.gz;
                    a gzip'd tar with trivy.db and metadata.json at its root

What trivy 0.76 actually checks (pkg/oci/artifact.go, pkg/db/db.go): a single
layer, that layer's media type, and the title annotation (it becomes the file
name that go-getter decompresses by extension, so it must end in ``.tar.gz``).
The config and ``artifactType`` are ignored; ``legacy_config=True`` produces
the older oras shape (config media type ``application/vnd.aquasec.trivy.config.v1+json``,
content ``{}``, no ``artifactType``), which trivy accepts just the same.

Authentication: the registry's htpasswd realm answers 401 with
``WWW-Authenticate: Basic realm="..."``; basic auth needs no token exchange,
so every request carries the ``Authorization: Basic`` header up front.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DB_LAYER_MEDIA_TYPE = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
TRIVY_CONFIG_MEDIA_TYPE = "application/vnd.aquasec.trivy.config.v1+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
TITLE_ANNOTATION = "org.opencontainers.image.title"
LAYER_TITLE = "db.tar.gz"
DB_FILES = ("trivy.db", "metadata.json")
REQUEST_TIMEOUT = 60.0

_EMPTY_CONFIG = b"{}"


class OciPublishError(RuntimeError):
    """The registry refused a step of the push (status and body in the message)."""


def db_layer(db_dir: Path) -> bytes:
    """``db.tar.gz``: a gzip'd tar of ``trivy.db`` and ``metadata.json`` at its root.

    Entries are plain files (no directory entries, like ``tar -C dir trivy.db
    metadata.json``); the gzip header carries no name and mtime 0.
    """
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in DB_FILES:
            path = Path(db_dir) / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: build the DB first (build_trivy_db)")
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime = int(path.stat().st_mtime)
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with path.open("rb") as body:
                tar.addfile(info, body)
    return gzip.compress(tar_buffer.getvalue(), mtime=0)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, content: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(content), "size": len(content), **extra}


def db_manifest(layer: bytes, *, legacy_config: bool = False) -> tuple[bytes, bytes]:
    """Return ``(manifest bytes, config bytes)`` for a DB layer."""
    layer_descriptor = _descriptor(DB_LAYER_MEDIA_TYPE, layer, annotations={TITLE_ANNOTATION: LAYER_TITLE})
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST_MEDIA_TYPE}
    if legacy_config:
        manifest["config"] = _descriptor(TRIVY_CONFIG_MEDIA_TYPE, _EMPTY_CONFIG)
    else:
        manifest["artifactType"] = TRIVY_CONFIG_MEDIA_TYPE
        manifest["config"] = _descriptor(
            OCI_EMPTY_MEDIA_TYPE, _EMPTY_CONFIG, data=base64.b64encode(_EMPTY_CONFIG).decode("ascii")
        )
    manifest["layers"] = [layer_descriptor]
    return json.dumps(manifest, separators=(",", ":")).encode(), _EMPTY_CONFIG


class _RegistryClient:
    """Just enough of the distribution v2 API to push blobs and a manifest."""

    def __init__(self, address: str, repository: str, username: str, password: str,
                 authorization: str | None = None) -> None:
        self.base = f"http://{address}"
        self.repository = repository.strip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self.authorization = authorization or f"Basic {token}"
        # No proxies: the registry is local, and an http_proxy in the environment must not apply.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if url.startswith("/"):
            url = self.base + url
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Authorization", self.authorization)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with self.opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            return exc.code, dict(exc.headers.items()), payload

    def _fail(self, step: str, status: int, payload: bytes) -> OciPublishError:
        text = payload.decode("utf-8", "replace").strip()
        return OciPublishError(f"{step} on {self.base}/v2/{self.repository}: HTTP {status}: {text}")

    def blob_exists(self, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"/v2/{self.repository}/blobs/{digest}")
        return status == 200

    def push_blob(self, data: bytes) -> str:
        digest = _digest(data)
        if self.blob_exists(digest):
            return digest
        status, headers, payload = self.request(
            "POST", f"/v2/{self.repository}/blobs/uploads/", b"", {"Content-Length": "0"}
        )
        if status != 202:
            raise self._fail("starting a blob upload", status, payload)
        location = _header(headers, "Location")
        if not location:
            raise self._fail("starting a blob upload (no Location)", status, payload)
        location = urllib.parse.urljoin(self.base + "/", location)
        separator = "&" if urllib.parse.urlsplit(location).query else "?"
        status, headers, payload = self.request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(digest)}",
            data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if status != 201:
            raise self._fail(f"uploading blob {digest}", status, payload)
        stored = _header(headers, "Docker-Content-Digest")
        if stored and stored != digest:
            raise OciPublishError(f"registry stored blob {digest} as {stored}")
        return digest

    def push_manifest(self, reference: str, manifest: bytes) -> str:
        status, headers, payload = self.request(
            "PUT",
            f"/v2/{self.repository}/manifests/{urllib.parse.quote(reference)}",
            manifest,
            {"Content-Type": OCI_MANIFEST_MEDIA_TYPE, "Content-Length": str(len(manifest))},
        )
        if status != 201:
            raise self._fail(f"putting manifest {reference}", status, payload)
        digest = _digest(manifest)
        stored = _header(headers, "Docker-Content-Digest")
        if stored and stored != digest:
            raise OciPublishError(f"registry stored the manifest as {stored}, expected {digest}")
        return digest


def _header(headers: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def publish_trivy_db(
    registry_address: str,
    repository: str,
    tag: str,
    db_dir: Path,
    *,
    username: str,
    password: str,
    legacy_config: bool = False,
    authorization: str | None = None,
) -> str:
    """Push ``db_dir/{trivy.db,metadata.json}`` as ``<registry_address>/<repository>:<tag>``.

    Plain HTTP with basic auth (or ``authorization``, a whole header value such as a
    token-auth registry's ``Bearer ...``). Returns the manifest digest ``sha256:...``.
    trivy then fetches it with ``--db-repository <registry_address>/<repository>:<tag>``.
    """
    layer = db_layer(Path(db_dir))
    manifest, config = db_manifest(layer, legacy_config=legacy_config)
    client = _RegistryClient(registry_address, repository, username, password, authorization)
    client.push_blob(config)
    client.push_blob(layer)
    return client.push_manifest(tag, manifest)
