"""Decoding trivy's JSON report in one streaming pass, natively (msgspec), in bounded memory.

msgspec decodes a whole document at once, so a 31 MiB report would be held whole. trivy
writes its report indented by two spaces per level (Go's ``json.Encoder.SetIndent``), and a
raw newline byte can only be whitespace in JSON (inside a string it is escaped), so
``\\n`` + six spaces + ``"Key": [`` opens an array of a result (``Results[].Key``), the
first ``\\n      ]`` after it closes that array, and ``\\n        },`` ends one of its
items. The decoder cuts those arrays out of the stream as they arrive and decodes them
item batch by item batch; what is left (the "spine": the metadata and each result's
target, class and type) holds a number where each array was, and is decoded at the end.

Nothing depends on the cutting for correctness: a report with no newlines (compact
JSON) is simply decoded whole at ``close``. Every number the spine holds must name one
array cut, and every array cut must be named once, else the layout was not understood
and the report is refused (``ReportUnreadable``) rather than read wrong. Arrays of other
keys (``Packages``, the image config's ``history``) are validated and dropped.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import msgspec

from ..errors import ReportUnreadable
from .documents import ATTRIBUTES, ITEM_TYPES, DecodedReport

READ_BYTES = 1024 * 1024
_SLICE_BYTES = 128 * 1024
_ARRAY_OPEN = re.compile(rb'\n      "([A-Za-z]{1,64})": \[\n')
OPEN_TAIL = 80  # bytes kept back in the spine: an opening split across two chunks
ARRAY_CLOSE = b"\n      ]"
_ITEM_END = b"\n        },"
_SKIPPED = msgspec.json.Decoder(list[msgspec.Raw])
_DECODERS = {key: msgspec.json.Decoder(list[kind]) for key, kind in ITEM_TYPES.items()}  # type: ignore[valid-type]
_REPORT = msgspec.json.Decoder(DecodedReport)


class ReportDecoder:
    """``decode_report`` fed chunk by chunk (push decoding, so the report can be read from
    the very bytes being uploaded). Memory: the spine, the decoded structs, and at most one
    128 KiB slice plus one item of undecoded bytes. ``feed`` raises ``ReportUnreadable`` at the
    first malformed batch; ``close`` on a truncated or malformed report."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._spine: list[bytes] = []
        self._batches: list[list[Any]] = []
        self._key: str | None = None  # the array being read, if any
        self._searched = 0  # how much of the buffer holds no array's end
        self.bytes_fed = 0

    def feed(self, chunk: bytes) -> None:
        self.bytes_fed += len(chunk)
        # In slices: what is buffered and copied for one batch stays at a slice (an upload
        # hands over 4 MiB blocks; whole, they cost ~15 MiB more at the peak).
        with memoryview(chunk) as view:
            for start in range(0, len(view), _SLICE_BYTES):
                self._buffer += view[start : start + _SLICE_BYTES]
                while self._step():
                    pass

    def close(self) -> DecodedReport:
        if self._key is not None:
            raise ReportUnreadable(f"the report ends inside its {self._key!r} list (truncated)")
        self._spine.append(bytes(self._buffer))
        self._buffer.clear()
        try:
            report = _REPORT.decode(b"".join(self._spine))
        except msgspec.DecodeError as error:
            raise ReportUnreadable(f"the report is not trivy's JSON: {error}") from None
        finally:
            self._spine.clear()
        self._stitch(report)
        return report

    def _step(self) -> bool:
        """Moves what the buffer holds into the spine or a batch; whether to go on."""
        buffer = self._buffer
        if self._key is None:
            match = _ARRAY_OPEN.search(buffer)
            if match is None:
                keep = max(0, len(buffer) - OPEN_TAIL)
                if keep:
                    self._spine.append(bytes(buffer[:keep]))
                    del buffer[:keep]
                return False
            key = match.group(1).decode()
            placeholder = b"null"
            if key in _DECODERS:
                placeholder = str(len(self._batches)).encode()
                self._batches.append([])
            self._spine.append(bytes(buffer[: match.start()]) + b'\n      "' + match.group(1) + b'": ' + placeholder)
            del buffer[: match.end()]
            self._key = key
            return True
        end = buffer.find(ARRAY_CLOSE, self._searched)
        if end >= 0:
            self._decode(end)
            del buffer[: end + len(ARRAY_CLOSE)]
            self._key, self._searched = None, 0
            return True
        cut = buffer.rfind(_ITEM_END)
        if cut >= 0:
            self._decode(cut + len(_ITEM_END) - 1)
            del buffer[: cut + len(_ITEM_END)]
        self._searched = max(0, len(buffer) - len(ARRAY_CLOSE))
        return False

    def _decode(self, end: int) -> None:
        """Decodes the items the buffer holds up to ``end`` as one list (one copy)."""
        assert self._key is not None
        decoder = _DECODERS.get(self._key)
        data = bytearray(b"[")
        with memoryview(self._buffer) as view:
            data += view[:end]
        data += b"]"
        try:
            if decoder is None:
                _SKIPPED.decode(data)  # validated, not kept
            else:
                self._batches[-1].extend(decoder.decode(data))
        except msgspec.DecodeError as error:
            raise ReportUnreadable(f"the report's {self._key!r} list is not trivy's JSON: {error}") from None

    def _stitch(self, report: DecodedReport) -> None:
        """Puts each batch back where its number stands in the spine."""
        named: list[int] = []
        for result in report.results or ():
            for attribute in ATTRIBUTES.values():
                value = getattr(result, attribute)
                if isinstance(value, int):
                    if not 0 <= value < len(self._batches):
                        raise ReportUnreadable(f"the report's layout was not understood ({attribute}: {value})")
                    named.append(value)
                    setattr(result, attribute, self._batches[value])
        if sorted(named) != list(range(len(self._batches))):
            raise ReportUnreadable("the report's layout was not understood (lists outside Results)")
        self._batches = []


def decode_report(report: Path | bytes | IO[bytes] | Iterable[bytes]) -> DecodedReport:
    """One report: a path, its bytes, a binary stream or its chunks (a download)."""
    decoder = ReportDecoder()
    for chunk in _chunks(report):
        decoder.feed(chunk)
    return decoder.close()


def _chunks(report: Path | bytes | IO[bytes] | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(report, bytes):
        report = io.BytesIO(report)
    if isinstance(report, Path):
        with report.open("rb") as stream:
            yield from iter(lambda: stream.read(READ_BYTES), b"")
        return
    if hasattr(report, "read"):
        stream = report
        yield from iter(lambda: stream.read(READ_BYTES), b"")  # type: ignore[union-attr]
        return
    yield from report  # type: ignore[misc]
