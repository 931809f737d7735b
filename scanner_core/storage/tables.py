"""Azure Table Storage for the fleet views (issue 24): one client per table and
process, the table made on first use, and keys that are safe for any name.

The same code serves a storage account's Table service, Azurite's, and Azure
Cosmos DB for Table (a connection string with its ``TableEndpoint``, or
``<setting>__tableServiceUri`` with the identity): see docs/configuration.md.

Keys: PartitionKey and RowKey may not hold ``/``, ``\\``, ``#``, ``?`` or
control characters, and are at most 1 KiB. ``table_key`` keeps letters,
digits and ``-._:@`` and writes every other character as ``~XX`` per UTF-8
byte (``~`` included), so distinct names stay distinct and sort by their
readable prefix; a key that would pass ``MAX_KEY_CHARS`` keeps its head and
ends in ``~~`` and the SHA-256 of the whole name.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceExistsError

from .account import AccountConnection
from .container import StorageErrors

if TYPE_CHECKING:
    from azure.data.tables import TableClient

MAX_KEY_CHARS = 512
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:@")

_lock = threading.Lock()
_tables: dict[tuple[str, str, str, str], TableClient] = {}


def table_key(text: str) -> str:
    """``text`` as a PartitionKey or RowKey: reversible (``key_text``) unless hashed."""
    key = "".join(c if c in _SAFE else "".join(f"~{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in text)
    if len(key) <= MAX_KEY_CHARS:
        return key
    return key[: MAX_KEY_CHARS - 66] + "~~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def key_text(key: str) -> str:
    """The name ``table_key`` encoded (for a hashed key: its readable head only)."""
    head = key.split("~~", 1)[0]
    out = bytearray()
    index = 0
    while index < len(head):
        if head[index] == "~" and index + 3 <= len(head):
            out += bytes.fromhex(head[index + 1 : index + 3])
            index += 3
        else:
            out += head[index].encode()
            index += 1
    return out.decode("utf-8", "replace")


def fleet_table(connection: AccountConnection, name: str) -> TableClient:
    """The process's client for table ``name`` on ``connection``; the table is created
    the first time this process asks for it. Raises ``StorageError`` (status only)."""
    secret = hashlib.sha256((connection.value or "").encode()).hexdigest()  # two Azurites, one setting name
    identity = (connection.setting, secret, connection.table_service_uri or "", name)
    with _lock:
        client = _tables.get(identity)
        if client is not None:
            return client
    # Bounded like the blob clients: a table that cannot be reached fails in seconds, not minutes
    # (the state's writers log and go on; reindex repairs).
    service = connection.table_service(retry_total=3, connection_timeout=10, read_timeout=30)
    with StorageErrors(f"creating the table {name!r}"):
        try:
            service.create_table(name)
        except ResourceExistsError:
            pass
    client = service.get_table_client(name)
    with _lock:
        return _tables.setdefault(identity, client)


def forget_tables() -> None:
    """Empties the client cache (tests)."""
    with _lock:
        _tables.clear()
