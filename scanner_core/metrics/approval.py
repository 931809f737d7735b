"""The approval state of an image, for the metrics' ``trivy_scanner_image_approval``.

A placeholder for the approval requests (``scanner_core/approvals/``, issue 15):
once they are merged, this is the one function to change so that it answers the
image's approval state (``approved``, ``rejected``, ``pending``...). Until then it
answers ``None`` and the metric has no series.
"""

from __future__ import annotations

from ..storage import AuditRow


def approval_state(row: AuditRow) -> str | None:
    """The approval state of the image whose latest audit is ``row``; ``None``: unknown."""
    del row  # issue 15's approvals will read it
    return None
