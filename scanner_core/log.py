"""Log lines: plain text or one JSON object per line (``LOG_FORMAT``).

The JSON is rendered into the message text itself, not left to a handler's
formatter: the Azure Functions Python worker forwards only the message (it
drops ``extra=`` fields), so this way a line is the same JSON object whether
it is printed by the one-time runner or shipped by the Functions host. Every
line passes through the redactor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableMapping
from datetime import datetime, timezone
from typing import Any, Literal

from .redact import Redactor

LOGGER_NAME = "scanner_core"
LogFormat = Literal["plain-text", "json"]


class ScanLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds the audit's context (audit id, image) to every line and renders it."""

    def __init__(
        self,
        log_format: LogFormat = "plain-text",
        redactor: Redactor | None = None,
        context: Mapping[str, Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(logger or logging.getLogger(LOGGER_NAME), dict(context or {}))
        self.log_format = log_format
        self.redactor = redactor or Redactor()

    def bind(self, **context: Any) -> ScanLogger:
        """A logger with more context, e.g. ``bind(audit_id=..., image=...)``."""
        merged = {**self.extra, **{k: v for k, v in context.items() if v is not None}}  # type: ignore[dict-item]
        return ScanLogger(self.log_format, self.redactor, merged, self.logger)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            fields = kwargs.pop("fields", None) or {}
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, self.render(level, text, fields), **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def _redacted(self, value: Any) -> Any:
        return self.redactor(value) if isinstance(value, str) else value

    def render(self, level: int, text: str, fields: Mapping[str, Any]) -> str:
        context = {**self.extra, **fields}  # type: ignore[dict-item]
        if self.log_format == "json":
            # Redacted before encoding: an escaped secret would no longer match its value.
            record = {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "level": logging.getLevelName(level).lower(),
                "message": self.redactor(text),
                **{key.replace("_", "-"): self._redacted(value) for key, value in context.items()},
            }
            return json.dumps(record, default=str, separators=(",", ":"))
        suffix = " ".join(f"{key.replace('_', '-')}={value}" for key, value in context.items())
        line = f"{text} [{suffix}]" if suffix else text
        return self.redactor(" ".join(line.splitlines()))


def configure_cli_logging(log_format: LogFormat, level: int = logging.INFO) -> None:
    """For the one-time runner: lines on stderr, plain text with a time, or bare JSON."""
    handler = logging.StreamHandler()
    pattern = "%(message)s" if log_format == "json" else "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(pattern))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("azure").setLevel(logging.WARNING)
