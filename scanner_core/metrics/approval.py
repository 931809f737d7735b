"""The approval state of each image, for the metrics' ``trivy_scanner_image_approval``.

Read once per scrape from the approval requests' list rows (``approvals/store.py``:
one listing, no per-image read), keyed by repository and digest as the requests are.
"""

from __future__ import annotations

from ..approvals import ApprovalStore

ApprovalStates = dict[tuple[str, str], str]


def approval_states(container_url: str, scanner_short_id: str) -> ApprovalStates:
    """Every approval request's state by (repository, digest)."""
    states: ApprovalStates = {}
    for row in ApprovalStore(container_url, scanner_short_id).rows():
        repository, digest, state = row.get("repository"), row.get("digest"), row.get("state")
        if repository and digest and state:
            states.setdefault((repository, digest), state)  # rows come newest first
    return states


def approval_state(states: ApprovalStates, repository: str | None, digest: str | None) -> str | None:
    """The state of the request for this image's digest; ``None``: no request."""
    if not repository or not digest:
        return None
    return states.get((repository, digest))
