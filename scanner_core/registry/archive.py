"""Reading the image name out of a local image tarball (``--input``)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from ..errors import RequestError

_OCI_REF_ANNOTATION = "org.opencontainers.image.ref.name"


def image_name_from_archive(path: Path) -> str | None:
    """The first ``RepoTags`` entry of a docker-archive, or the ref name of an
    OCI layout's index; ``None`` when the archive names no image."""
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if name in ("manifest.json", "index.json") and member.isfile():
                    stream = archive.extractfile(member)
                    if stream is None:
                        continue
                    document = json.load(stream)
                    found = _docker_name(document) if name == "manifest.json" else _oci_name(document)
                    if found:
                        return found
    except (OSError, tarfile.TarError, ValueError) as error:
        raise RequestError("input", f"{path} is not a readable image tarball ({error})") from None
    return None


def _docker_name(manifest: object) -> str | None:
    if isinstance(manifest, list):
        for entry in manifest:
            tags = entry.get("RepoTags") if isinstance(entry, dict) else None
            if tags:
                return str(tags[0])
    return None


def _oci_name(index: object) -> str | None:
    manifests = index.get("manifests", []) if isinstance(index, dict) else []
    for entry in manifests:
        name = (entry.get("annotations") or {}).get(_OCI_REF_ANNOTATION) if isinstance(entry, dict) else None
        if name and ("/" in name or ":" in name):
            return str(name)
    return None
