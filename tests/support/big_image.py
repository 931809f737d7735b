"""A deterministic docker-archive of a given size, for benchmarks of big images.

Two layers: the sample Alpine root filesystem of ``images.build_alpine_image``
(so the scan has its known findings) and a layer of large files under
``opt/data/``: mostly incompressible binary blobs (what a real application
layer's jars, shared objects and models look like to a scanner: read, hashed,
not parsed) plus some text files, which trivy's secret scanner reads line by
line. Content comes from SHAKE-256 of a fixed seed, so the same arguments give
byte-identical archives (and the same layer digests, which are trivy's layer
cache keys), and building 100+ MiB costs well under a second of CPU.

The archive is streamed to disk: nothing of the size of a layer is held in
memory.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .images import (
    FIXED_CREATED,
    SAMPLE_PACKAGES,
    ApkPackage,
    ImageTarball,
    _canonical_json,
    _sha256,
    _tar_info,
    apk_installed_db,
    deterministic_tar,
    os_release,
)

MIB = 1024 * 1024
_BLOCK = 4 * MIB
_TEXT_LINE = b"2024-01-01T00:00:00Z INFO worker-%05d processed batch %08d in %4d ms (queue depth %3d)\n"


@dataclass(frozen=True)
class BigImage(ImageTarball):
    """A built archive and what it holds."""

    layer_bytes: int = 0  # the big layer's uncompressed size
    file_count: int = 0


def _stream(seed: str, size: int) -> Iterator[bytes]:
    """``size`` deterministic, incompressible bytes, in blocks."""
    counter = 0
    remaining = size
    while remaining > 0:
        block = hashlib.shake_256(f"{seed}/{counter}".encode()).digest(min(_BLOCK, remaining))
        counter += 1
        remaining -= len(block)
        yield block


def _text(index: int, size: int) -> bytes:
    lines = []
    total = 0
    n = 0
    while total < size:
        line = _TEXT_LINE % (index, n, (n * 37) % 1000, (n * 11) % 128)
        lines.append(line)
        total += len(line)
        n += 1
    return b"".join(lines)[:size]


class _Reader:
    """A file-like view of a chunk iterator, for ``tarfile.addfile``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class _HashingWriter:
    """Writes through to a file and hashes what it wrote (the layer's diff id)."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self._target.write(data)


def _write_data_layer(
    target: BinaryIO, size_mib: int, file_mib: int, text_files: int, seed: str
) -> tuple[str, int, int]:
    writer = _HashingWriter(target)
    files = 0
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for directory in ("opt/", "opt/data/"):
            tar.addfile(_tar_info(directory, directory=True))
        text_bytes = 0
        for index in range(text_files):
            body = _text(index, MIB)
            tar.addfile(_tar_info(f"opt/data/log-{index:03d}.txt", len(body)), _Reader(iter([body])))
            text_bytes += len(body)
            files += 1
        remaining = size_mib * MIB - text_bytes
        index = 0
        while remaining > 0:
            size = min(file_mib * MIB, remaining)
            tar.addfile(_tar_info(f"opt/data/blob-{index:03d}.bin", size), _Reader(_stream(f"{seed}blob-{index}", size)))
            remaining -= size
            index += 1
            files += 1
    return writer.sha256.hexdigest(), target.tell(), files


def build_big_image(
    path: Path,
    *,
    size_mib: int = 112,
    file_mib: int = 16,
    text_files: int = 8,
    packages: Sequence[ApkPackage] = SAMPLE_PACKAGES,
    repo_tag: str = "sample/big:1.0",
    alpine_version: str = "3.18.4",
    seed: str = "",
) -> BigImage:
    """Writes a two-layer docker-archive whose data layer holds ``size_mib`` MiB.
    Another ``seed`` gives another data layer (another layer digest) of the same shape."""
    if size_mib < 1 or file_mib < 1 or text_files < 0 or text_files > size_mib:
        raise ValueError("size_mib and file_mib must be at least 1, and 0 <= text_files <= size_mib")
    base = deterministic_tar(
        {
            "etc/alpine-release": f"{alpine_version}\n".encode(),
            "etc/os-release": os_release(alpine_version),
            "lib/apk/db/installed": apk_installed_db(packages),
        }
    )
    base_id = _sha256(base)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path.parent) as data_layer:
        data_id, data_size, files = _write_data_layer(data_layer, size_mib, file_mib, text_files, seed)
        config = _canonical_json(_config(base_id, data_id, repo_tag))
        config_hex = _sha256(config)
        manifest = [
            {
                "Config": f"{config_hex}.json",
                "RepoTags": [repo_tag],
                "Layers": [f"{base_id}/layer.tar", f"{data_id}/layer.tar"],
            }
        ]
        entries: list[tuple[str, int, BinaryIO | _Reader]] = [
            ("manifest.json", len(_canonical_json(manifest)), _Reader(iter([_canonical_json(manifest)]))),
            (f"{config_hex}.json", len(config), _Reader(iter([config]))),
            (f"{base_id}/layer.tar", len(base), _Reader(iter([base]))),
        ]
        with path.open("wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for directory in sorted({base_id, data_id}):
                archive.addfile(_tar_info(f"{directory}/", directory=True))
            for name, size, body in entries:
                archive.addfile(_tar_info(name, size), body)  # type: ignore[arg-type]
            data_layer.seek(0)
            archive.addfile(_tar_info(f"{data_id}/layer.tar", data_size), data_layer)
    return BigImage(
        path=path,
        repo_tag=repo_tag,
        config_digest=f"sha256:{config_hex}",
        layer_bytes=data_size,
        file_count=files,
    )


def _config(base_id: str, data_id: str, repo_tag: str) -> dict[str, object]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": FIXED_CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.example.fixture": repo_tag},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{base_id}", f"sha256:{data_id}"]},
        "history": [
            {"created": FIXED_CREATED, "created_by": f"/bin/sh -c #(nop) ADD file:{base_id} in / "},
            {"created": FIXED_CREATED, "created_by": f"/bin/sh -c #(nop) COPY dir:{data_id} in /opt/data "},
        ],
    }
