"""Build an offline trivy Java DB (``<cache>/java-db/trivy-java.db`` + ``metadata.json``)
and publish it as trivy-java-db's OCI artifact.

trivy needs this DB for every image holding Java archives: it looks a JAR up by
its SHA-1 (``indices.sha1``) when the JAR carries no ``pom.properties``, and it
checks that a ``MANIFEST.MF``'s group/artifact exist. The schema is
trivy-java-db's (``pkg/db/db.go``, ``SchemaVersion = 1``)::

    artifacts(id INTEGER PRIMARY KEY, group_id TEXT, artifact_id TEXT)
    indices(artifact_id INTEGER, version TEXT, sha1 BLOB, archive_type TEXT,
            foreign key (artifact_id) references artifacts(id))
    UNIQUE INDEX artifacts_idx ON artifacts(artifact_id, group_id)
    INDEX indices_artifact_idx ON indices(artifact_id)
    UNIQUE INDEX indices_sha1_idx ON indices(sha1)

``sha1`` is the raw 20-byte digest; ``archive_type`` is ``jar`` or ``aar``.
``metadata.json`` is ``{"Version": 1, "NextUpdate", "UpdatedAt", "DownloadedAt"}``
(RFC 3339); trivy 0.76 refuses a DB whose ``Version`` is not 1.

The OCI artifact, as trivy-java-db's CI pushes it (``tar czf javadb.tar.gz -C db
trivy-java.db metadata.json`` then ``oras push --artifact-type
application/vnd.aquasec.trivy.config.v1+json <repo>:1
javadb.tar.gz:application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip``): one
layer of that media type, titled ``javadb.tar.gz``. trivy's default repositories
are ``mirror.gcr.io/aquasec/trivy-java-db:1`` then ``ghcr.io/aquasecurity/trivy-java-db:1``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sqlite3
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .oci_db import (
    OCI_EMPTY_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    TRIVY_CONFIG_MEDIA_TYPE,
    _descriptor,
    _RegistryClient,
)

JAVA_DB_SCHEMA_VERSION = 1
JAVA_DB_DIR = "java-db"
JAVA_DB_FILE = "trivy-java.db"
JAVA_DB_FILES = (JAVA_DB_FILE, "metadata.json")
JAVA_DB_LAYER_MEDIA_TYPE = "application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip"
JAVA_DB_LAYER_TITLE = "javadb.tar.gz"

_SCHEMA = (
    "CREATE TABLE artifacts(id INTEGER PRIMARY KEY, group_id TEXT, artifact_id TEXT)",
    "CREATE TABLE indices(artifact_id INTEGER, version TEXT, sha1 BLOB, archive_type TEXT, "
    "foreign key (artifact_id) references artifacts(id))",
    "CREATE UNIQUE INDEX artifacts_idx ON artifacts(artifact_id, group_id)",
    "CREATE INDEX indices_artifact_idx ON indices(artifact_id)",
    "CREATE UNIQUE INDEX indices_sha1_idx ON indices(sha1)",
)


@dataclass(frozen=True)
class JavaArtifact:
    """One Maven artifact version and the SHA-1 of its JAR (hex)."""

    group_id: str
    artifact_id: str
    version: str
    sha1: str
    archive_type: str = "jar"

    @property
    def name(self) -> str:
        """trivy's package name for it: ``group:artifact``."""
        return f"{self.group_id}:{self.artifact_id}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_java_db(
    cache_dir: Path,
    artifacts: Sequence[JavaArtifact],
    *,
    updated_at: datetime | None = None,
    next_update: datetime | None = None,
    version: int = JAVA_DB_SCHEMA_VERSION,
) -> Path:
    """Write ``<cache_dir>/java-db/{trivy-java.db,metadata.json}``; return that dir.

    Scan with ``trivy --cache-dir <cache_dir> image --skip-java-db-update ...``.
    """
    updated_at = updated_at or datetime.now(UTC).replace(microsecond=0)
    next_update = next_update or updated_at + timedelta(days=7)
    db_dir = Path(cache_dir) / JAVA_DB_DIR
    db_dir.mkdir(parents=True, exist_ok=True)
    path = db_dir / JAVA_DB_FILE
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    try:
        for statement in _SCHEMA:
            connection.execute(statement)
        for artifact in artifacts:
            connection.execute(
                "INSERT OR IGNORE INTO artifacts(group_id, artifact_id) VALUES (?, ?)",
                (artifact.group_id, artifact.artifact_id),
            )
            connection.execute(
                "INSERT INTO indices(artifact_id, version, sha1, archive_type) VALUES ("
                "(SELECT id FROM artifacts WHERE group_id=? AND artifact_id=?), ?, ?, ?)",
                (artifact.group_id, artifact.artifact_id, artifact.version, bytes.fromhex(artifact.sha1),
                 artifact.archive_type),
            )
        connection.commit()
    finally:
        connection.close()
    metadata = {
        "Version": version,
        "NextUpdate": _rfc3339(next_update),
        "UpdatedAt": _rfc3339(updated_at),
        "DownloadedAt": _rfc3339(updated_at),
    }
    (db_dir / "metadata.json").write_text(json.dumps(metadata) + "\n", encoding="utf-8")
    return db_dir


def java_db_layer(db_dir: Path) -> bytes:
    """``javadb.tar.gz``: ``trivy-java.db`` and ``metadata.json`` at the tar's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in JAVA_DB_FILES:
            path = Path(db_dir) / name
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as body:
                tar.addfile(info, body)
    return gzip.compress(buffer.getvalue(), mtime=0)


def java_db_manifest(layer: bytes) -> bytes:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": TRIVY_CONFIG_MEDIA_TYPE,
        "config": _descriptor(OCI_EMPTY_MEDIA_TYPE, b"{}", data="e30="),
        "layers": [
            _descriptor(JAVA_DB_LAYER_MEDIA_TYPE, layer, annotations={TITLE_ANNOTATION: JAVA_DB_LAYER_TITLE})
        ],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def publish_java_db(
    registry_address: str, repository: str, tag: str, db_dir: Path, *, username: str, password: str
) -> str:
    """Push ``db_dir`` as ``<registry_address>/<repository>:<tag>``; returns the manifest digest.

    trivy fetches it with ``--download-java-db-only --java-db-repository <address>/<repository>:<tag>``.
    """
    layer = java_db_layer(Path(db_dir))
    client = _RegistryClient(registry_address, repository, username, password)
    client.push_blob(b"{}")
    client.push_blob(layer)
    return client.push_manifest(tag, java_db_manifest(layer))


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
