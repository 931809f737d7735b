"""Where a trivy server is and how to authenticate to it (client/server mode, server.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConnection:
    """Where the server is and how to authenticate (``token`` is a secret)."""

    url: str
    token: str | None = None
    token_header: str = "Trivy-Token"

    def __repr__(self) -> str:  # never the token
        return f"ServerConnection(url={self.url!r}, token_header={self.token_header!r})"
