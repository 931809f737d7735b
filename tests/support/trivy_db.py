"""Build an offline trivy vulnerability DB (``<cache>/db/trivy.db`` + metadata).

Layout written (the subset of trivy-db schema 2 that trivy's Alpine detector
reads, see trivy-db ``pkg/db`` and ``pkg/vulnsrc/alpine``)::

    "alpine 3.18"   -> {<source package>: {<vuln id>: {"FixedVersion": ...}}}
    "vulnerability" -> {<vuln id>: {"Title", "Description", "Severity",
                                    "VendorSeverity", "References"}}
    "data-source"   -> {"alpine 3.18": {"ID", "Name", "URL"}}

Maven advisories (trivy-db ``pkg/vulnsrc/ghsa``, read by trivy's Java
library detector) go to one bucket per ecosystem and source::

    "maven::GitHub Security Advisory Maven"
        -> {"<groupId>:<artifactId>": {<vuln id>: {"PatchedVersions": [...],
                                                   "VulnerableVersions": [...]}}}
    "data-source" -> {"maven::GitHub Security Advisory Maven": {"ID": "ghsa", ...}}

``VulnerableVersions`` are Maven ranges in trivy's comparer syntax
(``">=2.0.0, <2.15.0"``); ``PatchedVersions`` become the reported FixedVersion.

The advisory bucket is keyed by the apk *origin* (source package) name: trivy
looks advisories up by ``SrcName`` and reports the binary package name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .bolt import BoltValue, write_bolt

# trivy 0.76 pins trivy-db with ``SchemaVersion = 2``; with --skip-db-update it
# refuses any metadata.json whose Version differs.
SCHEMA_VERSION = 2

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")

# Alpine's secdb carries no severities, so trivy's "auto" severity selection
# falls back to NVD's entry in VendorSeverity (reported as SeveritySource
# "nvd"), exactly as with the real DB.
SEVERITY_SOURCE = "nvd"

_DATA_SOURCES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"alpine": {"ID": "alpine", "Name": "Alpine Secdb", "URL": "https://secdb.alpinelinux.org/"}}
)


MAVEN_BUCKET = "maven::GitHub Security Advisory Maven"
_MAVEN_DATA_SOURCE = {
    "ID": "ghsa",
    "Name": "GitHub Security Advisory Maven",
    "URL": "https://github.com/advisories?query=type%3Areviewed+ecosystem%3Amaven",
}


@dataclass(frozen=True)
class MavenAdvisory:
    """One GHSA advisory for one Maven package (``group:artifact``)."""

    vulnerability_id: str
    package: str
    vulnerable_versions: tuple[str, ...]
    patched_versions: tuple[str, ...]
    severity: str
    title: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if ":" not in self.package:
            raise ValueError(f"a Maven package is 'group:artifact', got {self.package!r}")


@dataclass(frozen=True)
class Advisory:
    """One vulnerability affecting one source package of one OS release.

    ``package`` is the apk origin name; ``fixed_version=None`` means unfixed
    (every installed version is reported).
    """

    vulnerability_id: str
    package: str
    fixed_version: str | None
    severity: str
    title: str
    description: str = ""
    os_family: str = "alpine"
    os_release: str = "3.18"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.os_family not in _DATA_SOURCES:
            raise ValueError(f"unsupported os_family {self.os_family!r}")

    @property
    def platform(self) -> str:
        """trivy-db's OS bucket name, e.g. ``"alpine 3.18"``."""
        return f"{self.os_family} {self.os_release}"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _advisory_value(advisory: Advisory) -> bytes:
    # trivy-db omits an empty FixedVersion (``omitempty``); "{}" means unfixed.
    return _json({"FixedVersion": advisory.fixed_version} if advisory.fixed_version else {})


def _vulnerability_value(advisory: Advisory | MavenAdvisory) -> dict[str, Any]:
    """Details record; UNKNOWN is expressed by leaving severity out entirely.

    Writing ``Severity: "UNKNOWN"`` would make trivy log a "severities from
    other vendors" warning while reporting the same thing.
    """
    detail: dict[str, Any] = {
        "Title": advisory.title,
        "References": [f"https://nvd.nist.gov/vuln/detail/{advisory.vulnerability_id}"],
    }
    if advisory.description:
        detail["Description"] = advisory.description
    if advisory.severity != "UNKNOWN":
        detail["Severity"] = advisory.severity
        detail["VendorSeverity"] = {SEVERITY_SOURCE: SEVERITIES.index(advisory.severity)}
    return detail


def _vulnerability_bucket(advisories: Sequence[Advisory | MavenAdvisory]) -> dict[bytes, BoltValue]:
    """One record per vulnerability id; conflicting duplicates are an error."""
    details: dict[str, dict[str, Any]] = {}
    for advisory in advisories:
        detail = _vulnerability_value(advisory)
        previous = details.setdefault(advisory.vulnerability_id, detail)
        if previous != detail:
            raise ValueError(f"conflicting details for {advisory.vulnerability_id}")
    return {vid.encode(): _json(detail) for vid, detail in details.items()}


def db_buckets(
    advisories: Sequence[Advisory], maven_advisories: Sequence[MavenAdvisory] = ()
) -> dict[bytes, BoltValue]:
    """The bolt root bucket content for ``advisories`` (no I/O)."""
    platforms: dict[bytes, dict[bytes, dict[bytes, BoltValue]]] = {}
    data_sources: dict[bytes, BoltValue] = {}
    for advisory in advisories:
        platform = advisory.platform.encode()
        packages = platforms.setdefault(platform, {})
        vulns = packages.setdefault(advisory.package.encode(), {})
        key = advisory.vulnerability_id.encode()
        if key in vulns:
            raise ValueError(f"duplicate advisory {advisory.vulnerability_id} for {advisory.package}")
        vulns[key] = _advisory_value(advisory)
        data_sources[platform] = _json(_DATA_SOURCES[advisory.os_family])

    root: dict[bytes, BoltValue] = dict(platforms)
    if maven_advisories:
        root[MAVEN_BUCKET.encode()] = _maven_bucket(maven_advisories)
        data_sources[MAVEN_BUCKET.encode()] = _json(_MAVEN_DATA_SOURCE)
    root[b"vulnerability"] = _vulnerability_bucket([*advisories, *maven_advisories])
    root[b"data-source"] = data_sources
    return root


def _maven_bucket(advisories: Sequence[MavenAdvisory]) -> dict[bytes, BoltValue]:
    packages: dict[bytes, dict[bytes, BoltValue]] = {}
    for advisory in advisories:
        vulns = packages.setdefault(advisory.package.encode(), {})
        key = advisory.vulnerability_id.encode()
        if key in vulns:
            raise ValueError(f"duplicate advisory {advisory.vulnerability_id} for {advisory.package}")
        vulns[key] = _json(
            {"PatchedVersions": list(advisory.patched_versions), "VulnerableVersions": list(advisory.vulnerable_versions)}
        )
    return dict(packages)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_metadata(db_dir: Path, updated_at: datetime, next_update: datetime) -> Path:
    """Write ``metadata.json``.

    ``DownloadedAt`` must be non-zero, otherwise trivy treats the DB as
    possibly corrupted and wants to re-download it unless --skip-db-update.
    """
    path = db_dir / "metadata.json"
    metadata = {
        "Version": SCHEMA_VERSION,
        "NextUpdate": _rfc3339(next_update),
        "UpdatedAt": _rfc3339(updated_at),
        "DownloadedAt": _rfc3339(updated_at),
    }
    path.write_text(json.dumps(metadata) + "\n")
    return path


def build_trivy_db(
    cache_dir: Path,
    advisories: Sequence[Advisory],
    *,
    updated_at: datetime | None = None,
    next_update: datetime | None = None,
    maven_advisories: Sequence[MavenAdvisory] = (),
) -> Path:
    """Write ``<cache_dir>/db/{trivy.db,metadata.json}``; return the db dir.

    Scan with ``trivy --cache-dir <cache_dir> image --skip-db-update ...``.
    """
    updated_at = updated_at or datetime.now(UTC).replace(microsecond=0)
    next_update = next_update or updated_at + timedelta(hours=24)
    db_dir = Path(cache_dir) / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    write_bolt(db_dir / "trivy.db", db_buckets(advisories, maven_advisories))
    write_metadata(db_dir, updated_at, next_update)
    return db_dir
