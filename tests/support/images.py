"""Build deterministic ``docker save``-style image tarballs of a fake Alpine.

The archive holds ``manifest.json``, the image config ``<sha256>.json`` and a
single uncompressed layer ``<diff id hex>/layer.tar`` containing the files
trivy's Alpine analyzers read: ``etc/alpine-release`` (OS version),
``etc/os-release`` and ``lib/apk/db/installed`` (installed packages).

Everything is deterministic (fixed mtimes and ownership, sorted entries,
canonical JSON) so identical inputs give byte-identical tarballs and therefore
identical layer/config digests, which keeps trivy's layer cache keys stable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from .trivy_db import Advisory

# 2024-01-01T00:00:00Z: any fixed instant works, it only has to never change.
FIXED_MTIME = 1704067200
FIXED_CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class ApkPackage:
    """An entry of the apk installed database; ``origin`` defaults to ``name``."""

    name: str
    version: str
    arch: str = "x86_64"
    origin: str | None = None
    license: str = "MIT"

    @property
    def source_name(self) -> str:
        """The name trivy uses to look up advisories (apk ``o:`` origin)."""
        return self.origin or self.name


@dataclass(frozen=True)
class ImageTarball:
    """A built archive; ``config_digest`` is the image ID trivy reports."""

    path: Path
    repo_tag: str
    config_digest: str


class Finding(NamedTuple):
    """The identity of one vulnerability row of a trivy JSON report."""

    vulnerability_id: str
    pkg_name: str
    installed_version: str
    fixed_version: str
    severity: str


# ---------------------------------------------------------------- file bodies


def _fake_checksum(pkg: ApkPackage) -> str:
    """apk's ``C:`` line is "Q1" + base64(sha1); derive one from name/version."""
    digest = hashlib.sha1(f"{pkg.name}-{pkg.version}".encode()).digest()
    return "Q1" + base64.b64encode(digest).decode()


def apk_installed_db(packages: Sequence[ApkPackage]) -> bytes:
    """Render ``lib/apk/db/installed``: one blank-line separated block each.

    ``V:`` must precede ``o:`` because trivy copies the version seen so far
    into the package's source version when it meets the origin line.
    """
    blocks = []
    for pkg in packages:
        lines = [
            f"C:{_fake_checksum(pkg)}",
            f"P:{pkg.name}",
            f"V:{pkg.version}",
            f"A:{pkg.arch}",
            "S:102400",
            "I:307200",
            f"T:{pkg.name} (test fixture package)",
            f"U:https://pkgs.example.invalid/{pkg.source_name}",
            f"L:{pkg.license}",
            f"o:{pkg.source_name}",
            "m:Fixture Maintainer <fixtures@example.invalid>",
            f"t:{FIXED_MTIME}",
            f"c:{hashlib.sha1(pkg.source_name.encode()).hexdigest()}",
        ]
        blocks.append("\n".join(lines) + "\n")
    return ("\n".join(blocks) + "\n").encode()


def os_release(alpine_version: str) -> bytes:
    return (
        'NAME="Alpine Linux"\n'
        "ID=alpine\n"
        f"VERSION_ID={alpine_version}\n"
        f'PRETTY_NAME="Alpine Linux v{_minor(alpine_version)}"\n'
        'HOME_URL="https://alpinelinux.org/"\n'
        'BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"\n'
    ).encode()


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


# --------------------------------------------------------------- tar helpers


def _tar_info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def _parent_dirs(paths: Iterable[str]) -> set[str]:
    dirs: set[str] = set()
    for path in paths:
        dirs.update(str(parent) for parent in PurePosixPath(path).parents if str(parent) != ".")
    return dirs


def deterministic_tar(files: Mapping[str, bytes]) -> bytes:
    """A tar of ``files`` (relative paths) plus their parent directories, sorted."""
    normalized = {_normalize(path): body for path, body in files.items()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted(_parent_dirs(normalized)):
            tar.addfile(_tar_info(directory + "/", directory=True))
        for path in sorted(normalized):
            body = normalized[path]
            tar.addfile(_tar_info(path, len(body)), io.BytesIO(body))
    return buf.getvalue()


def _normalize(path: str) -> str:
    clean = PurePosixPath(path.lstrip("/"))
    if not clean.parts or ".." in clean.parts:
        raise ValueError(f"invalid image path {path!r}")
    return str(clean)


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -------------------------------------------------------------- image build


def _image_config(diff_id: str, repo_tag: str) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": FIXED_CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.example.fixture": repo_tag},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [
            {"created": FIXED_CREATED, "created_by": f"/bin/sh -c #(nop) ADD file:{diff_id} in / "},
            {"created": FIXED_CREATED, "created_by": '/bin/sh -c #(nop)  CMD ["/bin/sh"]', "empty_layer": True},
        ],
    }


def build_alpine_image(
    path: Path,
    packages: Sequence[ApkPackage],
    *,
    repo_tag: str = "sample/app:1.0",
    alpine_version: str = "3.18.4",
    extra_files: Mapping[str, bytes] | None = None,
) -> ImageTarball:
    """Write a one-layer docker-archive tarball for an Alpine root filesystem.

    ``extra_files`` (path -> content) are added to the layer, e.g. to plant a
    secret for trivy's secret scanner; they may override the defaults.
    """
    files: dict[str, bytes] = {
        "etc/alpine-release": f"{alpine_version}\n".encode(),
        "etc/os-release": os_release(alpine_version),
        "lib/apk/db/installed": apk_installed_db(packages),
    }
    files.update({_normalize(p): body for p, body in (extra_files or {}).items()})

    layer = deterministic_tar(files)
    diff_id = _sha256(layer)
    config = _canonical_json(_image_config(diff_id, repo_tag))
    config_hex = _sha256(config)
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [repo_tag], "Layers": [f"{diff_id}/layer.tar"]}]
    archive = deterministic_tar(
        {
            "manifest.json": _canonical_json(manifest),
            f"{config_hex}.json": config,
            f"{diff_id}/layer.tar": layer,
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    return ImageTarball(path=path, repo_tag=repo_tag, config_digest=f"sha256:{config_hex}")


# ------------------------------------------------------------ expectations

_SIMPLE_APK_VERSION = re.compile(r"^(\d+(?:\.\d+)*)-r(\d+)$")


def simple_version_key(version: str) -> tuple[tuple[int, ...], int]:
    """Order key for the plain ``1.2.3-r4`` versions the fixtures use.

    Deliberately not a full apk version comparator: fixtures stick to this
    form so the expected results stay obvious.
    """
    match = _SIMPLE_APK_VERSION.match(version)
    if not match:
        raise ValueError(f"fixture version {version!r} is not of the form 1.2.3-r4")
    return tuple(int(part) for part in match.group(1).split(".")), int(match.group(2))


def is_affected(installed: str, fixed: str | None) -> bool:
    """trivy's Alpine rule: unfixed, or installed strictly older than the fix."""
    return fixed is None or simple_version_key(installed) < simple_version_key(fixed)


def expected_findings(
    packages: Sequence[ApkPackage], advisories: Sequence[Advisory], *, os_release_minor: str = "3.18"
) -> set[Finding]:
    """What trivy should report: advisories matched via origin, still affected."""
    by_source: dict[str, list[Advisory]] = {}
    for advisory in advisories:
        if advisory.os_family == "alpine" and advisory.os_release == os_release_minor:
            by_source.setdefault(advisory.package, []).append(advisory)
    return {
        Finding(adv.vulnerability_id, pkg.name, pkg.version, adv.fixed_version or "", adv.severity)
        for pkg in packages
        for adv in by_source.get(pkg.source_name, [])
        if is_affected(pkg.version, adv.fixed_version)
    }


# ----------------------------------------------------------------- fixtures

SAMPLE_ALPINE_VERSION = "3.18.4"

SAMPLE_PACKAGES: tuple[ApkPackage, ...] = (
    ApkPackage("musl", "1.2.4-r1"),
    ApkPackage("busybox", "1.36.1-r2", license="GPL-2.0-only"),
    ApkPackage("libcrypto3", "3.1.2-r0", origin="openssl", license="Apache-2.0"),
    ApkPackage("zlib", "1.2.13-r1", license="Zlib"),
    ApkPackage("ca-certificates", "20230506-r0", license="MPL-2.0"),  # no advisories
    ApkPackage("curl", "8.4.0-r0", license="curl"),
)

SAMPLE_ADVISORIES: tuple[Advisory, ...] = (
    Advisory(
        vulnerability_id="CVE-2099-0001",
        package="busybox",
        fixed_version="1.36.1-r5",
        severity="CRITICAL",
        title="busybox: heap overflow in wget URL parsing",
        description="A crafted URL passed to busybox wget overflows a heap buffer, allowing remote code execution.",
    ),
    Advisory(
        vulnerability_id="CVE-2099-0002",
        package="busybox",
        fixed_version=None,
        severity="MEDIUM",
        title="busybox: awk out-of-bounds read",
        description="busybox awk reads past the end of a buffer when evaluating a crafted regular expression.",
    ),
    Advisory(
        vulnerability_id="CVE-2099-0003",
        package="musl",
        fixed_version="1.2.4-r2",
        severity="HIGH",
        title="musl: iconv buffer overflow",
        description="Converting crafted input with iconv from GB18030 writes past the output buffer.",
    ),
    Advisory(
        vulnerability_id="CVE-2099-0004",
        package="openssl",
        fixed_version="3.1.4-r0",
        severity="HIGH",
        title="openssl: excessive time spent checking DH keys",
        description="Checking overly long DH keys or parameters takes a very long time, causing a denial of service.",
    ),
    Advisory(  # fixed before the installed 3.1.2-r0: must NOT be reported
        vulnerability_id="CVE-2099-0005",
        package="openssl",
        fixed_version="3.1.1-r0",
        severity="MEDIUM",
        title="openssl: AES-SIV ignores empty associated data",
        description="AES-SIV ignores empty associated data entries, which are then silently not authenticated.",
    ),
    Advisory(
        vulnerability_id="CVE-2099-0006",
        package="zlib",
        fixed_version="1.2.13-r2",
        severity="LOW",
        title="zlib: integer overflow in deflateBound",
        description="deflateBound may return a too-small value for extremely large inputs on 32-bit platforms.",
    ),
    Advisory(
        vulnerability_id="CVE-2099-0007",
        package="curl",
        fixed_version="8.5.0-r0",
        severity="UNKNOWN",
        title="curl: cookie injection with none file",
        description="Under rare conditions curl may load cookies from a file named 'none' in the working directory.",
    ),
)


_LOREM = (
    "An attacker able to supply crafted input to the affected component can trigger "
    "memory corruption in the parsing routines, which may lead to a denial of service "
    "or, under specific heap layouts, to arbitrary code execution with the privileges "
    "of the calling process. "
)


def large_fixture(n_packages: int, cves_per_package: int) -> tuple[list[ApkPackage], list[Advisory]]:
    """A big fixture for benchmarks: every advisory is affected (fixed later).

    Each advisory has a ~2.5 kB description so that a trivy JSON report of
    ``n_packages * cves_per_package`` findings weighs several kB per finding
    (3000 x 3 gives a report of tens of MB).
    """
    severities = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
    packages = [ApkPackage(f"pkg{i:05d}", f"1.{i % 10}.0-r0") for i in range(n_packages)]
    advisories = []
    for i, pkg in enumerate(packages):
        for j in range(cves_per_package):
            n = i * cves_per_package + j
            advisories.append(
                Advisory(
                    vulnerability_id=f"CVE-2098-{n + 10000:06d}",
                    package=pkg.name,
                    fixed_version=f"1.{i % 10}.{j + 1}-r0",
                    severity=severities[n % len(severities)],
                    title=f"{pkg.name}: synthetic vulnerability #{j + 1}",
                    description=f"Synthetic finding {n} in {pkg.name}. " + _LOREM * 8,
                )
            )
    return packages, advisories
