"""The parts of trivy's JSON report (``--format json``, schema 2) the scanner reads, as
msgspec structs: the decoder fills them in C and skips every other field unbuilt.

Field names are Python's; ``name=`` is trivy's key. Severities are upper-cased and a
missing one is ``UNKNOWN``; an empty ``FixedVersion`` is ``None`` (as the meta has them).
"""

from __future__ import annotations

from typing import TypeVar

from msgspec import Struct, field

T = TypeVar("T")


class Vulnerability(Struct, gc=False):
    """``Results[].Vulnerabilities[]``: one finding (vulnerability id x package x target)."""

    vulnerability_id: str = field(default="", name="VulnerabilityID")
    pkg_name: str = field(default="", name="PkgName")
    installed_version: str | None = field(default=None, name="InstalledVersion")
    fixed_version: str | None = field(default=None, name="FixedVersion")
    severity: str | None = field(default=None, name="Severity")
    title: str | None = field(default=None, name="Title")
    # Not in trivy's item: its result's ``Target``, set by the summariser for ``on_finding``'s
    # readers (the fleet query tables name the target a package was found in).
    target: str | None = field(default=None, name="-target")

    def __post_init__(self) -> None:
        self.severity = (self.severity or "UNKNOWN").upper()
        self.fixed_version = self.fixed_version or None


class Licence(Struct, gc=False):
    """``Results[].Licenses[]`` (the license scanner)."""

    pkg_name: str | None = field(default=None, name="PkgName")
    name: str = field(default="", name="Name")
    category: str | None = field(default=None, name="Category")


class Secret(Struct, gc=False):
    """``Results[].Secrets[]``: only counted."""


class ModifiedSeverity(Struct, gc=False):
    severity: str | None = field(default=None, name="Severity")


class ModifiedFinding(Struct, gc=False):
    """``Results[].ExperimentalModifiedFindings[]``: what an ignore file or VEX suppressed."""

    type: str = field(default="vulnerability", name="Type")
    finding: ModifiedSeverity | None = field(default=None, name="Finding")


class Misconfiguration(Struct, gc=False):
    """``Results[].Misconfigurations[]``: failed checks are counted by severity."""

    status: str = field(default="FAIL", name="Status")
    severity: str | None = field(default=None, name="Severity")


# An int stands for a list the decoder read apart (``decoder.py``), replaced before anyone sees it.
class ReportResult(Struct):
    """``Results[]``: one target (the OS packages, a lock file, a secret scan...)."""

    target: str | None = field(default=None, name="Target")
    result_class: str | None = field(default=None, name="Class")
    type: str | None = field(default=None, name="Type")
    vulnerabilities: list[Vulnerability] | int | None = field(default=None, name="Vulnerabilities")
    licenses: list[Licence] | int | None = field(default=None, name="Licenses")
    secrets: list[Secret] | int | None = field(default=None, name="Secrets")
    misconfigurations: list[Misconfiguration] | int | None = field(default=None, name="Misconfigurations")
    modified: list[ModifiedFinding] | int | None = field(default=None, name="ExperimentalModifiedFindings")


class OperatingSystem(Struct, gc=False):
    family: str | None = field(default=None, name="Family")
    name: str | None = field(default=None, name="Name")
    eosl: bool | None = field(default=None, name="EOSL")


class ImageConfig(Struct, gc=False):
    created: str | None = None


class Metadata(Struct):
    os: OperatingSystem | None = field(default=None, name="OS")
    image_id: str | None = field(default=None, name="ImageID")
    repo_digests: list[str] | None = field(default=None, name="RepoDigests")
    image_config: ImageConfig | None = field(default=None, name="ImageConfig")


class DecodedReport(Struct):
    """What the scanner reads of one report. After ``decode_report`` every list field of
    every result is a list (``None`` where trivy listed nothing)."""

    artifact_name: str | None = field(default=None, name="ArtifactName")
    metadata: Metadata | None = field(default=None, name="Metadata")
    results: list[ReportResult] | None = field(default=None, name="Results")

    def vulnerabilities(self) -> list[tuple[ReportResult, Vulnerability]]:
        """Every finding with its result, in the report's order."""
        return [(result, v) for result in self.results or () for v in listed(result.vulnerabilities)]


ITEM_TYPES: dict[str, type] = {
    "Vulnerabilities": Vulnerability,
    "Licenses": Licence,
    "Secrets": Secret,
    "Misconfigurations": Misconfiguration,
    "ExperimentalModifiedFindings": ModifiedFinding,
}
ATTRIBUTES = {"Vulnerabilities": "vulnerabilities", "Licenses": "licenses", "Secrets": "secrets",
              "Misconfigurations": "misconfigurations", "ExperimentalModifiedFindings": "modified"}  # fmt: skip


def listed(value: list[T] | int | None) -> list[T]:
    """A result's list field as a list (``[]`` where trivy listed nothing)."""
    return value if isinstance(value, list) else []
