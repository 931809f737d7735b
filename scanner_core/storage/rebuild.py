"""``python -m scanner_core reindex`` (issue 24, item 5): every stored audit's ``meta``
read once and handed to each per-audit rebuilder, so one pass over an existing
deployment rebuilds the audit index, the fleet state and whatever tables other
features keep per audit.

The extension point is ``AuditRebuilder``: a named object whose ``rebuild(meta,
folder)`` is idempotent (recording the same audit twice changes nothing; an older
audit never replaces a newer one, whatever order the pass reads them in). A
feature with tables of its own (the fleet queries) adds its rebuilder to the
list the command line builds (``cli.py``, ``audit_rebuilders``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from azure.storage.blob import ContainerClient

from ..errors import StorageError
from ..models import AuditMeta
from .container import StorageErrors
from .layout import META_BLOB, scanner_folder

READERS = 16  # metas read and recorded side by side


class AuditRebuilder(Protocol):
    """Something kept per audit that a rebuild can write again from the audit's meta."""

    name: str

    def rebuild(self, meta: AuditMeta, folder: str) -> None: ...


@dataclass
class RebuildCount:
    """What a pass did: metas read, metas skipped (not readable by this version), and
    per rebuilder the audits it failed on (the pass goes on; the count says so)."""

    audits: int = 0
    unreadable: int = 0
    failures: dict[str, int] = field(default_factory=dict)


def audit_folders(container: ContainerClient, scanner_short_id: str) -> list[str]:
    """Every audit folder of one scanner that holds a ``meta`` (one listing of the scanner's blobs)."""
    prefix = f"{scanner_folder(scanner_short_id)}/"
    with StorageErrors("listing the audit folders", container.url):
        names = [blob.name for blob in container.list_blobs(name_starts_with=prefix)]
    return [name[: -len(META_BLOB) - 1] for name in names
            if name.endswith(f"/{META_BLOB}") and name[len(prefix):].count("/") == 1]


def rebuild_audits(container: ContainerClient, folders: Sequence[str], rebuilders: Sequence[AuditRebuilder],
                   advance: Callable[[int], object] = lambda _n: None) -> RebuildCount:
    """Reads each folder's meta and hands it to every rebuilder; ``advance(1)`` per folder."""
    count = RebuildCount(failures={"read": 0, **{r.name: 0 for r in rebuilders}})

    def one(folder: str) -> tuple[bool, list[str]]:
        try:
            with StorageErrors(f"reading {folder}/{META_BLOB}", container.url):
                data = container.download_blob(f"{folder}/{META_BLOB}").readall()
            meta = AuditMeta.model_validate_json(data)
        except StorageError:
            return True, ["read"]
        except ValueError:
            return False, []
        failed = []
        for rebuilder in rebuilders:
            try:
                rebuilder.rebuild(meta, folder)
            except Exception:  # noqa: BLE001 - counted; the pass goes on and can be run again
                failed.append(rebuilder.name)
        return True, failed

    with ThreadPoolExecutor(READERS, thread_name_prefix="reindex") as pool:
        for readable, failed in pool.map(one, folders):
            count.audits += readable
            count.unreadable += not readable
            for name in failed:
                count.failures[name] += 1
            advance(1)
    return count


@dataclass(frozen=True)
class NamedRebuilder:
    """A rebuilder made of a name and a function (the index's and the state's ``record``)."""

    name: str
    record: Callable[[AuditMeta, str], object]

    def rebuild(self, meta: AuditMeta, folder: str) -> None:
        self.record(meta, folder)
