"""The approval state of each image, for the metrics' ``trivy_scanner_image_approval``.

Read once per scrape from the approval requests' list rows (``approvals/store.py``:
one listing, no per-image read), keyed by repository and digest as the requests are.
"""

from __future__ import annotations

from datetime import datetime

from ..approvals import ApprovalStore


class ApprovalStates(dict[tuple[str, str], str]):
    """Each request's state by (repository, digest); ``deadlines``: an at-risk one's (issue 25)."""

    def __init__(self) -> None:
        super().__init__()
        self.deadlines: dict[tuple[str, str], float] = {}


def approval_states(container_url: str, scanner_short_id: str) -> ApprovalStates:
    """Every approval request's state (and an at-risk one's deadline) by (repository, digest)."""
    states = ApprovalStates()
    for row in ApprovalStore(container_url, scanner_short_id).rows():
        repository, digest, state = row.get("repository"), row.get("digest"), row.get("state")
        if repository and digest and state and (repository, digest) not in states:  # rows come newest first
            states[(repository, digest)] = state
            if state == "at-risk" and row.get("deadline"):
                states.deadlines[(repository, digest)] = datetime.fromisoformat(
                    row["deadline"].replace("Z", "+00:00")).timestamp()
    return states


def approval_deadline(states: dict[tuple[str, str], str], repository: str | None, digest: str | None) -> float | None:
    """An at-risk request's deadline (Unix seconds): revoked then unless re-approved."""
    deadlines: dict[tuple[str, str], float] = getattr(states, "deadlines", {})  # a plain dict has none
    return deadlines.get((repository, digest)) if repository and digest else None


def approval_state(states: ApprovalStates, repository: str | None, digest: str | None) -> str | None:
    """The state of the request for this image's digest; ``None``: no request."""
    if not repository or not digest:
        return None
    return states.get((repository, digest))
