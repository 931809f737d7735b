"""The report without its findings, as the input of ``trivy convert`` to an inventory (issue 26).

An inventory rescan matches packages only, yet ``trivy convert`` of the whole report decodes and
re-encodes every finding: on a 3,000-finding image that is as much CPU as the scan itself. Cut
the same way the decoder cuts (``decoder.py``: trivy's two-space indentation), each result's
``Vulnerabilities`` list becomes ``[]`` and the rest (metadata, OS, packages) is copied as it
is, streamed in bounded memory. A report without that layout (compact JSON) is copied whole.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ReportUnreadable
from .decoder import ARRAY_CLOSE, OPEN_TAIL, READ_BYTES

_FINDINGS_OPEN = re.compile(rb'\n      "Vulnerabilities": \[\n')


def write_packages_only(report: Path, target: Path) -> None:
    """Writes ``report`` to ``target`` with every ``Results[].Vulnerabilities`` emptied."""
    inside = False
    buffer = b""
    with report.open("rb") as source, target.open("wb") as out:
        while chunk := source.read(READ_BYTES):
            buffer += chunk
            while True:
                if not inside:
                    match = _FINDINGS_OPEN.search(buffer)
                    if match is None:
                        keep = max(0, len(buffer) - OPEN_TAIL)
                        out.write(buffer[:keep])
                        buffer = buffer[keep:]
                        break
                    out.write(buffer[: match.start()])
                    out.write(b'\n      "Vulnerabilities": []')
                    buffer, inside = buffer[match.end() :], True
                else:
                    end = buffer.find(ARRAY_CLOSE)
                    if end < 0:
                        buffer = buffer[max(0, len(buffer) - len(ARRAY_CLOSE) + 1) :]
                        break
                    buffer, inside = buffer[end + len(ARRAY_CLOSE) :], False
        if inside:
            raise ReportUnreadable("the report ends inside a 'Vulnerabilities' list (truncated)")
        out.write(buffer)
