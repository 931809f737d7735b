"""Deterministic Java archives for trivy's JAR analyser.

trivy identifies a JAR (pkg/dependency/parser/java/jar) in this order:
``META-INF/maven/<group>/<artifact>/pom.properties`` inside it (no DB needed
to name it, but the Java DB must still be present: trivy opens it for every
image with Java archives); otherwise, unless ``--offline-scan``, the JAR's
SHA-1 looked up in the Java DB (``indices.sha1``). With ``--offline-scan`` a
JAR without ``pom.properties`` is identified by its ``MANIFEST.MF`` only.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from .java_db import JavaArtifact, sha1_hex

_FIXED_DATE = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Jar:
    """A built JAR: its bytes, and the Java DB row that names it by SHA-1."""

    content: bytes
    group_id: str
    artifact_id: str
    version: str

    @property
    def sha1(self) -> str:
        return sha1_hex(self.content)

    @property
    def name(self) -> str:
        return f"{self.group_id}:{self.artifact_id}"

    def java_db_row(self) -> JavaArtifact:
        return JavaArtifact(self.group_id, self.artifact_id, self.version, self.sha1)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def build_jar(group_id: str, artifact_id: str, version: str, *, with_pom_properties: bool = True,
              salt: str = "") -> Jar:
    """A JAR with a manifest (no Implementation-* attributes, so the manifest alone
    names nothing) and, if asked, ``pom.properties``; ``salt`` changes the SHA-1."""
    manifest = b"Manifest-Version: 1.0\r\nCreated-By: scanner fixtures\r\n\r\n"
    entries = {
        "META-INF/MANIFEST.MF": manifest,
        f"{artifact_id.replace('-', '/')}/Marker.class": f"fixture {group_id}:{artifact_id}:{version}{salt}".encode(),
    }
    if with_pom_properties:
        entries[f"META-INF/maven/{group_id}/{artifact_id}/pom.properties"] = (
            f"groupId={group_id}\nartifactId={artifact_id}\nversion={version}\n".encode()
        )
    return Jar(_zip(entries), group_id, artifact_id, version)
