"""The fleet tables' foundation (issue 24): keys safe for any repository name, a
table made on first use, and the connection resolved by the host's rules, against
Azurite's real Table service."""

from __future__ import annotations

import pytest

from scanner_core.errors import ConfigurationError
from scanner_core.storage import (
    MAX_KEY_CHARS,
    fleet_table,
    forget_tables,
    key_text,
    resolve_account_connection,
    table_key,
)

HOSTILE = [
    "docker.io/library/redis",
    "myacr.azurecr.io/team/app#1?x=y",
    "a\\b/c\x00d\x1f\x7f\x85e",
    "unicode/\u00e9t\u00e9\u2028line",
    "~tilde~7E/",
    "x" * 2000,
]


def test_keys_are_safe_reversible_and_distinct():
    keys = [table_key(name) for name in HOSTILE]
    assert len(set(keys)) == len(keys)
    for name, key in zip(HOSTILE, keys, strict=True):
        assert len(key) <= MAX_KEY_CHARS
        assert not any(c in key for c in "/\\#?") and all(0x20 <= ord(c) < 0x7F for c in key)
        if len(name) < 100:
            assert key_text(key) == name
    assert table_key("x" * 2000) != table_key("x" * 2001)


def test_hostile_names_round_trip_through_azurite(azurite):
    forget_tables()
    connection = resolve_account_connection("FleetTest", {"FleetTest": azurite.connection_string})
    table = fleet_table(connection, "fleettest")
    for position, name in enumerate(HOSTILE):
        table.upsert_entity({"PartitionKey": table_key(name), "RowKey": table_key(f"tag{position}\x01/"),
                             "name": name})
    for position, name in enumerate(HOSTILE):
        entity = table.get_entity(table_key(name), table_key(f"tag{position}\x01/"))
        assert entity["name"] == name
    assert fleet_table(connection, "fleettest") is table  # one client per process


def test_identity_settings_name_the_table_endpoint():
    connection = resolve_account_connection("Store", {"Store__accountName": "acct"})
    assert connection.table_service_uri == "https://acct.table.core.windows.net"
    assert connection.service_uri == "https://acct.queue.core.windows.net"
    queue_only = resolve_account_connection("Store", {"Store__queueServiceUri": "https://q.example"})
    with pytest.raises(ConfigurationError, match="Store__tableServiceUri"):
        queue_only.table_service()
