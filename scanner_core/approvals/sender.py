"""What the approvals need of a webhook sender (``follow_up.Notifier`` is one), as a protocol,
so that the approvals need not import the follow-up that calls them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class EventSender(Protocol):
    """Sends an event to the configured webhooks at most once per claim."""

    @property
    def urls(self) -> Sequence[Any]: ...

    def send_once(self, folder: str, event: dict[str, Any]) -> object:
        """Claims ``{folder}/notification.json`` and sends ``event``; ``None`` when claimed before."""
        ...
