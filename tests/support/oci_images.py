"""Multi-platform images: an OCI image layout holding an image index, pushed
with ``skopeo copy --all`` so the registry serves the index and every platform.

Layout written (OCI image-layout spec)::

    oci-layout                  {"imageLayoutVersion": "1.0.0"}
    index.json                  one entry: the image index, ref.name = <tag>
    blobs/sha256/<hex>          the index, each platform's manifest, config, gzip'd layer

Each platform is a one-layer fake Alpine (``images.py``'s files) whose apk
arch and image config follow the platform (``linux/arm64`` → ``aarch64``),
plus any extra files (e.g. JARs).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .images import (
    FIXED_CREATED,
    ApkPackage,
    apk_installed_db,
    deterministic_tar,
    os_release,
)
from .registry import (
    PUSH_TIMEOUT,
    SKOPEO_EXECUTABLE,
    Registry,
    RegistryError,
    write_auth_file,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_APK_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7", "386": "x86", "s390x": "s390x"}


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image inside an index."""

    platform: str  # os/arch[/variant]
    manifest_digest: str
    manifest_size: int
    compressed_size: int  # layers + config, as the manifest states


@dataclass(frozen=True)
class OciIndexLayout:
    path: Path
    tag: str
    index_digest: str
    platforms: tuple[PlatformImage, ...]

    def platform(self, name: str) -> PlatformImage:
        return next(p for p in self.platforms if p.platform == name)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class _Blobs:
    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        digest = _sha(data)
        (self.dir / digest.split(":", 1)[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}


def _platform_parts(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"platform must be os/arch[/variant], got {platform!r}")
    found = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        found["variant"] = parts[2]
    return found


def _platform_image(
    blobs: _Blobs,
    platform: str,
    packages: Sequence[ApkPackage],
    alpine_version: str,
    extra_files: Mapping[str, bytes],
    padding_bytes: int,
) -> tuple[dict[str, Any], PlatformImage]:
    parts = _platform_parts(platform)
    arch = _APK_ARCH.get(parts["architecture"], parts["architecture"])
    files: dict[str, bytes] = {
        "etc/alpine-release": f"{alpine_version}\n".encode(),
        "etc/os-release": os_release(alpine_version),
        "lib/apk/db/installed": apk_installed_db([replace(p, arch=arch) for p in packages]),
        "etc/fixture-platform": platform.encode(),
        **extra_files,
    }
    if padding_bytes:
        # Incompressible-ish filler: a big image without a big fixture in memory twice.
        files["opt/filler.bin"] = hashlib.shake_256(platform.encode()).digest(padding_bytes)
    layer_tar = deterministic_tar(files)
    layer = gzip.compress(layer_tar, mtime=0)
    layer_descriptor = blobs.put(OCI_LAYER_GZIP, layer)
    config = _json({
        **parts,
        "created": FIXED_CREATED,
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]},
        "history": [{"created": FIXED_CREATED, "created_by": f"ADD rootfs for {platform}"}],
    })
    config_descriptor = blobs.put(OCI_CONFIG, config)
    manifest = _json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": [layer_descriptor],
    })
    descriptor = blobs.put(OCI_MANIFEST, manifest, platform=parts)
    image = PlatformImage(platform, descriptor["digest"], len(manifest), len(layer) + len(config))
    return descriptor, image


def build_oci_index(
    path: Path,
    platforms: Sequence[str],
    packages: Sequence[ApkPackage] | Mapping[str, Sequence[ApkPackage]],
    *,
    tag: str = "1.0",
    alpine_version: str = "3.18.4",
    extra_files: Mapping[str, bytes] | None = None,
    padding_bytes: int = 0,
) -> OciIndexLayout:
    """An OCI layout at ``path`` with one image index of ``platforms``; ``packages`` is every
    platform's, or each platform's own (a mapping by platform)."""
    path = Path(path)
    blobs = _Blobs(path)
    descriptors, images = [], []
    for platform in platforms:
        own = packages[platform] if isinstance(packages, Mapping) else packages
        descriptor, image = _platform_image(blobs, platform, own, alpine_version, extra_files or {},
                                            padding_bytes)
        descriptors.append(descriptor)
        images.append(image)
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
    index_descriptor = blobs.put(OCI_INDEX, index, annotations={"org.opencontainers.image.ref.name": tag})
    (path / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    (path / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": [index_descriptor]}))
    return OciIndexLayout(path, tag, index_descriptor["digest"], tuple(images))


def push_oci_index(registry: Registry, layout: OciIndexLayout, repository: str, tag: str | None = None) -> str:
    """``skopeo copy --all oci:<layout>:<tag> docker://<registry>/<repository>:<tag>``;
    returns the index digest the registry stores (the same bytes, so the same digest)."""
    tag = tag or layout.tag
    digest_file = registry.workdir / "push-index.digest"
    digest_file.unlink(missing_ok=True)
    auth = write_auth_file(registry.auth_file, registry.address, registry.username, registry.password)
    command = [
        str(SKOPEO_EXECUTABLE), "--insecure-policy", "copy", "--all", "--quiet", "--preserve-digests",
        "--dest-tls-verify=false", "--dest-authfile", str(auth), "--digestfile", str(digest_file),
        f"oci:{layout.path}:{layout.tag}", f"docker://{registry.address}/{repository}:{tag}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=PUSH_TIMEOUT, check=False)
    if result.returncode != 0:
        raise RegistryError(f"skopeo copy --all failed ({result.returncode}): {result.stderr.strip()}")
    return digest_file.read_text(encoding="utf-8").strip()
