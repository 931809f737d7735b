"""Redaction of every log record of the process, whatever logger emitted it.

The scanner's own lines pass through its redactor (``log.py``), but libraries
log on their own: with the root logger at DEBUG (host.json ``logLevel`` set to
``Debug`` to troubleshoot), urllib3's connection pool logs each request line,
SAS signature included. Holding those loggers above DEBUG would hide them from
whoever troubleshoots, and a handler filter only covers the handlers present
when it is installed (the Functions worker adds its own). So the record
factory is wrapped instead: each record's message (and a traceback's text) is
redacted when the record is created, before any handler or filter sees it.

The factory lives in the ``logging`` module, the one process-wide place there
is for it; ``install`` is idempotent and adds secrets to the installed one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .redact import Redactor


class RedactingRecordFactory:
    """Wraps the previous record factory; see the module docstring."""

    def __init__(self, inner: Callable[..., logging.LogRecord], redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call is the handler's to report, as without us
            return record
        clean = self.redactor(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return record


def install(secrets: Iterable[str] = ()) -> RedactingRecordFactory:
    """Makes every record of this process pass the redactor (credential patterns and
    ``secrets``); returns the installed factory."""
    current = logging.getLogRecordFactory()
    if isinstance(current, RedactingRecordFactory):
        current.redactor = current.redactor.with_secrets(secrets)
        return current
    factory = RedactingRecordFactory(current, Redactor(secrets))
    logging.setLogRecordFactory(factory)
    return factory
