"""The JSON documents the scanner writes to Blob Storage (kebab-case keys).

Text an image chooses (package names and versions, its OS name, the licence names
of its packages) is bounded where it enters a document: ``NAME_CHARS`` for names,
versions, ids and the OS, ``TEXT_CHARS`` for titles, paths and the reasons that
quote them; a cut string keeps its first ``limit - 1`` characters and ends with
``…``, so a hostile image cannot make a meta, an approval request (the dashboard
loads one per row) or a webhook body megabytes long. The report
(``scan-result.json``) keeps every string whole.

JSON lines (an approval's history): a JSON encoder may leave U+0085, U+2028 and
U+2029 raw inside a string, and ``str.splitlines`` splits on them; ``json_line``
escapes every such character as ``\\uXXXX`` and ``read_json_lines`` splits on
``\\n`` only, so a line the old code wrote (a raw U+2028 in a reason) reads as it
was written.
"""

from __future__ import annotations

import json
from datetime import date
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel, to_pascal

NAME_CHARS = 256
TEXT_CHARS = 1_000
ELLIPSIS = "\u2026"


def bounded(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and ``…`` when it is longer than ``limit``."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def bounded_name(text: str) -> str:
    return bounded(text, NAME_CHARS)


def bounded_text(text: str) -> str:
    return bounded(text, TEXT_CHARS)


BoundedName = Annotated[str, AfterValidator(bounded_name)]
BoundedText = Annotated[str, AfterValidator(bounded_text)]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _BlobDocument(BaseModel):
    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, frozen=True, extra="ignore")

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2).encode("utf-8")


class AuditResult(str, Enum):
    SUCCEEDED = "succeeded"
    AUDIT_FAILED = "audit-failed"
    UPLOAD_FAILED = "upload-failed"


class KevEntry(BaseModel):
    """A CVE's entry in CISA's Known Exploited Vulnerabilities catalogue (the catalogue's names)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    date_added: str | None = None
    due_date: str | None = None
    known_ransomware_campaign_use: str | None = None

    @property
    def ransomware(self) -> bool:
        return (self.known_ransomware_campaign_use or "").lower() == "known"


class Finding(BaseModel):
    """One row of ``details``: trivy's own field names, as in its report; ``kev``,
    ``epss`` and ``percentile`` are the exploitability feeds' (issue 15, ``exploits/``)."""

    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, frozen=True)

    vulnerability_id: BoundedName = Field(alias="VulnerabilityID")
    pkg_name: BoundedName
    installed_version: BoundedName | None = None
    fixed_version: BoundedName | None = None
    severity: str
    title: BoundedText | None = None
    target: BoundedText | None = None
    kev: KevEntry | None = Field(None, alias="kev")
    epss: float | None = Field(None, alias="epss")
    percentile: float | None = Field(None, alias="percentile")


class AuditChanges(_BlobDocument):
    """What changed since the previous audit of the same image (``follow_up/changes.py``)."""

    new: list[str] = Field(default_factory=list)
    fixed: list[str] = Field(default_factory=list)
    status_from: str | None = None
    status_to: str | None = None


class OsInfo(_BlobDocument):
    """The image's OS as trivy detected it; ``eosl``: the distribution no longer supports it."""

    family: BoundedName | None = None
    name: BoundedName | None = None
    eosl: bool = False


class SuppressionFile(_BlobDocument):
    """A suppression file trivy was given, and its content's SHA-256 at scan time."""

    setting: Literal["TRIVY_IGNOREFILE", "TRIVY_VEX"]
    file: str
    sha256: str


class AcceptedRisk(_BlobDocument):
    """A finding accepted until a date, with why: an approval's ``accept`` entry or a
    policy allow-list entry (issue 15). Past ``until`` it no longer applies."""

    id: str
    until: date | None = None
    justification: str = ""


class PolicyDecision(_BlobDocument):
    """What the approval policy decided for one audit, by which rule and why (issue 15)."""

    action: Literal["approve", "reject", "review"]
    rule: str
    reason: BoundedText  # it may quote package and licence names


class AuditMeta(_BlobDocument):
    """The ``meta`` file of one audit folder."""

    audit_id: str
    scanner_type: Literal["trivy"] = "trivy"
    scanner_id: str
    scanner_periodicity: Literal["on-message"] = "on-message"
    scanner_version: str
    timestamp: int
    requested_at: int
    trigger: Literal["request", "watch", "event", "rescan", "admission"] | None = None  # what asked for the scan (monitor/)
    requested_by: BoundedName | None = None  # POST /api/scans: the App Service principal (four eyes, issue 25)
    audit_result: AuditResult
    failure_description: str | None = None
    failure_reason: str | None = None
    failure_kind: Literal["transient", "permanent"] | None = None
    image: str | None = None
    image_tag: str | None = None  # the reference exactly as requested (joseki's reader expects it)
    # A repo:tag@digest request whose tag the registry did not confirm points at the digest: the
    # audit is recorded under the digest alone (``image`` without the tag), and this names the tag.
    tag_not_confirmed: str | None = None
    # An image index (multi-platform): every manifest a runtime may pull from it, {digest: platform}
    # ("" for an entry without one). Approvals are per manifest (``platform-digest``): the index is
    # allowed only when each of these is (issue 23).
    index_manifests: dict[str, str] | None = None
    image_digest: str | None = None
    image_id: str | None = None
    trivy_version: str | None = None
    trivy_db_updated_at: str | None = None
    trivy_db_next_update: str | None = None
    trivy_server: str | None = None  # client/server mode: the server whose DB the scan used
    trivy_audit_path: str | None = None
    sbom_path: str | None = None
    # Answered from an earlier audit of the same digest, DB and settings (monitor/reuse.py):
    # its id; the report and SBOM paths above are that audit's.
    reused_from: str | None = None
    # Inventory rescans (issue 18): the CycloneDX inventory the next rescan matches (maybe an earlier
    # audit's); the audit whose inventory this rescan matched; why a rescan pulled the image instead;
    # the audit whose image scan counted ``secrets`` (an inventory has no files to search).
    inventory_path: str | None = None
    rescanned_from: str | None = None
    rescan_fallback: str | None = None
    secrets_from: str | None = None
    # The verdict (present when the scan succeeded); see verdict.py for the counting rule.
    vulnerabilities: dict[str, int] | None = None
    secrets: int | None = None
    scan_status: Literal["passed", "warning", "failed"] | None = None
    summary: str | None = None
    critical_threshold: int | None = None
    high_threshold: int | None = None
    details: list[Finding] | None = None
    # Licence findings by trivy's category (TRIVY_SCANNERS with license; issue 15).
    licenses: dict[str, int] | None = None
    # Failed misconfiguration checks by severity (TRIVY_SCANNERS with misconfig; issue 15).
    misconfigurations: dict[str, int] | None = None
    # Exploitability (issue 15, exploits/): findings in CISA's KEV catalogue, the highest EPSS score.
    kev: int | None = None
    epss_max: float | None = None
    # The monitor loop (issue 10): the previous audit of the same image, what changed, the decision.
    previous_audit_id: str | None = None
    changes: AuditChanges | None = None
    decision: Literal["rejected", "pending"] | None = None
    # The approval gate (issue 15): the policy's decision for this audit (policy/, approvals/).
    policy: PolicyDecision | None = None
    # Real-world images (issue 8).
    trivy_java_db_updated_at: str | None = None
    trivy_java_db_next_update: str | None = None
    trivy_db_stale: bool | None = None
    # The KEV and EPSS feeds (issue 15): {"kev": FeedState, "epss": FeedState}, for the feeds turned on.
    exploit_feeds: dict[str, FeedState] | None = None
    platform: str | None = None
    platform_digest: str | None = None
    image_size: int | None = None
    scan_duration_ms: int | None = None
    os: OsInfo | None = None
    suppressed: dict[str, int] | None = None
    suppressions: list[SuppressionFile] | None = None


class FeedState(_BlobDocument):
    """One exploitability feed as the DB refresh timer left it (``exploits/``): the date
    and version of the feed in place, when it was fetched, and the last attempt's error."""

    date: str | None = None  # KEV: dateReleased; EPSS: score_date
    version: str | None = None  # KEV: catalogVersion; EPSS: model_version
    entries: int | None = None
    source: str | None = None  # the feed's host
    fetched_at: str | None = None
    attempted_at: str | None = None
    error: str | None = None  # the last attempt failed: why, and that the previous feed is kept


class WatchState(_BlobDocument):
    """One watched repository as the watch timer's last run left it (``monitor/watch.py``):
    what it read, and the cap that stopped it (``WATCH_MAX_PAGES``, ``WATCH_MAX_TAGS``, the time share)."""

    checked_at: str
    pages: int = 0
    tags: int = 0
    enqueued: int = 0
    capped: Literal["pages", "tags", "time"] | None = None
    limit: float | None = None  # the cap's value: pages, tags, or the entry's seconds
    error: str | None = None


class HeartbeatMeta(_BlobDocument):
    """``trivy-{id8}/trivy-{id8}.meta``: the seed's schema, plus the DB's age."""

    scanner_type: Literal["trivy"] = "trivy"
    scanner_id: str
    scanner_periodicity: Literal["on-message"] = "on-message"
    heartbeat_periodicity: int
    heartbeat: int
    scanner_version: str | None = None
    trivy_version: str | None = None
    trivy_db_updated_at: str | None = None
    trivy_db_next_update: str | None = None
    trivy_java_db_updated_at: str | None = None
    trivy_java_db_next_update: str | None = None
    trivy_db_stale: bool | None = None
    # The KEV and EPSS feeds (issue 15): {"kev": FeedState, "epss": FeedState}, for the feeds turned on.
    exploit_feeds: dict[str, FeedState] | None = None
    # The watch timer's last run (issue 23): {repository: WatchState}, for each watched repository.
    watch: dict[str, WatchState] | None = None


# -- JSON lines ---------------------------------------------------------------------------

# What str.splitlines() breaks on besides "\n" and "\r" (which a compact JSON text never holds raw).
_LINE_BREAKS = {code: f"\\u{code:04x}" for code in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}
_MAX_JOINED_LINES = 64


class DamagedJsonLines(ValueError):
    """A line that is not JSON, alone or joined with the lines after it."""


def json_line(compact_json: str | bytes) -> bytes:
    """One JSON-lines record: a compact JSON text with every line-breaking character escaped, and ``\\n``."""
    text = compact_json.decode("utf-8") if isinstance(compact_json, bytes) else compact_json
    if "\n" in text or "\r" in text:
        raise ValueError("a JSON-lines record must be a compact JSON text (no raw line break)")
    return text.translate(_LINE_BREAKS).encode("utf-8") + b"\n"


def read_json_lines(data: bytes) -> list[Any]:
    """The JSON values of a JSON-lines file, split on ``\\n`` only (blank lines skipped). A value
    spread over several lines (pretty-printed by hand) is read by joining them;
    ``DamagedJsonLines`` names the first line that no join makes JSON."""
    lines = data.split(b"\n")
    values: list[Any] = []
    start = 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        for end in range(start + 1, min(start + _MAX_JOINED_LINES, len(lines)) + 1):
            try:
                values.append(json.loads(b"\n".join(lines[start:end])))
            except (ValueError, RecursionError):
                continue
            start = end
            break
        else:
            raise DamagedJsonLines(f"line {start + 1} is not JSON, alone or joined with the lines after it")
    return values
