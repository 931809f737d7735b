"""The decision over a pod's images (pure): each image's verdict document becomes an
``ImageOutcome``; ``decide`` applies ``ADMISSION_MODE`` and ``ADMISSION_UNSCANNED`` and
says whether the pod is allowed, the message naming the first refused image and why, and
the warnings (at-risk images with their deadline; refusals under ``warn``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .settings import AdmissionMode, UnscannedMode

OutcomeState = Literal["allowed", "at-risk", "refused", "unscanned", "unresolved", "exempt"]
MAX_MESSAGE_CHARS = 1024
MAX_WARNINGS = 16
UNSCANNED = "it has never been scanned"  # the API server shows each to the user; kubectl prints them all


@dataclass(frozen=True)
class ImageOutcome:
    """One image of the pod: ``image`` as written, ``digest`` it names (resolved), and the outcome."""

    image: str
    state: OutcomeState
    reason: str = ""
    digest: str | None = None
    deadline: str | None = None
    queued: str | None = None  # the audit id of the scan queued for it (unscanned)


@dataclass(frozen=True)
class AdmissionDecision:
    allowed: bool
    message: str | None
    warnings: list[str] = field(default_factory=list)
    refused: list[ImageOutcome] = field(default_factory=list)  # what enforce would refuse (logged in every mode)


def outcome_of(image: str, digest: str | None, verdict: Mapping[str, Any] | None) -> ImageOutcome:
    """The outcome of one image from its verdict document (``None``: never scanned)."""
    if verdict is None:
        return ImageOutcome(image, "unscanned", UNSCANNED, digest)
    approval = verdict.get("approval") or {}
    if verdict.get("allowed"):
        if approval.get("state") == "at-risk":
            return ImageOutcome(image, "at-risk", "its approval is at risk", digest, approval.get("deadline"))
        return ImageOutcome(image, "allowed", "", digest)
    return ImageOutcome(image, "refused", _why(verdict, approval), digest)


def decide(outcomes: Sequence[ImageOutcome], mode: AdmissionMode, unscanned: UnscannedMode) -> AdmissionDecision:
    refused = [o for o in outcomes if o.state in ("refused", "unresolved")
               or (o.state == "unscanned" and unscanned == "deny")]
    warnings = [f"{o.image}: approval at risk, revoked at {o.deadline or 'a deadline not yet set'} unless re-approved"
                for o in outcomes if o.state == "at-risk"]
    warnings += [_sentence(o) for o in outcomes if o.state == "unscanned" and unscanned == "warn"]
    if mode == "warn":
        warnings += [_sentence(o) for o in refused]
    if mode != "enforce" or not refused:
        return AdmissionDecision(True, None, _bounded(warnings), refused)
    message = _sentence(refused[0])
    if len(refused) > 1:
        message += f" (and {len(refused) - 1} more image(s) refused: {', '.join(o.image for o in refused[1:4])}"
        message += ", ...)" if len(refused) > 4 else ")"
    return AdmissionDecision(False, message[:MAX_MESSAGE_CHARS], _bounded(warnings), refused)


# -- the parts ---------------------------------------------------------------


def _sentence(outcome: ImageOutcome) -> str:
    text = f"image {outcome.image} is not allowed: {outcome.reason}"
    if outcome.state == "unscanned":
        text = f"image {outcome.image} has never been scanned" + (
            f"; a scan was queued (audit {outcome.queued}): retry once it has finished" if outcome.queued else
            f"; {outcome.reason}" if outcome.reason != UNSCANNED else "")
    return text[:MAX_MESSAGE_CHARS]


def _why(verdict: Mapping[str, Any], approval: Mapping[str, Any]) -> str:
    if verdict.get("audit-result") == "failed":
        return f"its latest scan failed ({verdict.get('failure-reason') or 'see the audit'})"
    summary = verdict.get("summary") or verdict.get("scan-status") or "no summary"
    if not approval:
        return f"no approval for its digest (latest scan: {summary})"
    text = f"its approval is {approval.get('state')}"
    if approval.get("decided-by"):
        text += f" by {approval['decided-by']}"
    if approval.get("reason"):
        text += f" ({str(approval['reason'])[:300]})"
    waiting = [f"{p.get('platform') or p.get('digest')} ({p.get('approval') or 'not scanned'})"
               for p in verdict.get("platforms") or [] if not p.get("allowed")]
    if approval.get("state") in ("approved", "auto-approved", "at-risk") and waiting:
        text = f"not every platform is approved: {', '.join(waiting)}"
    return f"{text}; latest scan: {summary}"


def _bounded(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return [*warnings[: MAX_WARNINGS - 1], f"... and {len(warnings) - MAX_WARNINGS + 1} more warnings"]
