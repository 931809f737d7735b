"""A storage account connection (queues and tables), read from app settings as
the Functions host reads it.

The setting named by ``SCAN_QUEUE_CONNECTION`` (``AzureWebJobsStorage`` by
default; as the host does, ``AzureWebJobs<name>`` too) holds a connection
string or a queue URL with a SAS. Or, with no secret at all, the host's
identity-based form: ``<name>__queueServiceUri`` / ``<name>__tableServiceUri``
(or ``<name>__accountName`` for ``https://<account>.queue|table.core.windows.net``),
with optional ``<name>__credential`` (``managedidentity``), ``<name>__clientId``
and, for a service principal, ``<name>__tenantId`` + ``<name>__clientSecret``.
One set of app settings serves the trigger and everything of ours that touches
the queue (enqueueing, the HTTP API, listeners) or the fleet tables. The
identity needs *Storage Queue Data Message Sender* to enqueue, *Storage Queue
Data Message Processor* to receive and *Storage Table Data Contributor* for
the tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

AZURITE_CONNECTION_STRING = "UseDevelopmentStorage=true"
QUEUE_SENDER_ROLE = "Storage Queue Data Message Sender"
QUEUE_PROCESSOR_ROLE = "Storage Queue Data Message Processor"
TABLE_ROLE = "Storage Table Data Contributor"


@dataclass(frozen=True)
class AccountConnection:
    """Where the queues and tables are and how to authenticate: a secret connection
    value, or service URIs reached with a token credential."""

    setting: str
    value: str | None = field(default=None, repr=False)  # connection string or queue URL with SAS
    service_uri: str | None = None  # the queue service's
    table_service_uri: str | None = None
    credential_kind: str | None = None
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)

    @property
    def uses_identity(self) -> bool:
        return self.value is None

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.value, self.client_secret) if s]

    def credential(self) -> TokenCredential:
        """The token credential the host would use for these settings."""
        from ..identity import azure_credential

        if self.client_secret and self.tenant_id and self.client_id:
            from azure.identity import ClientSecretCredential

            return ClientSecretCredential(self.tenant_id, self.client_id, self.client_secret)
        return azure_credential(self.client_id, managed_identity_only=self.credential_kind == "managedidentity")

    def client(self, queue_name: str, **options: object) -> QueueClient:
        from azure.storage.queue import QueueClient

        if self.value is None:
            if self.service_uri is None:
                raise ConfigurationError([f"{self.setting}__queueServiceUri: is required for the queue (or "
                                          f"{self.setting}__accountName)"])
            return QueueClient(self.service_uri, queue_name, credential=self.credential(), **options)
        if self.value.startswith(("http://", "https://")):
            return QueueClient.from_queue_url(self.value, **options)
        return QueueClient.from_connection_string(self.value, queue_name, **options)

    def table_service(self, **options: object) -> TableServiceClient:
        """A client of the account's Table service (or Cosmos DB for Table's endpoint):
        from the connection string, or ``__tableServiceUri``/``__accountName`` with the identity."""
        from azure.data.tables import TableServiceClient

        if self.value is None:
            if self.table_service_uri is None:
                raise ConfigurationError(
                    [f"{self.setting}__tableServiceUri: is required for the fleet tables with an identity-based "
                     f"connection (or {self.setting}__accountName)"]
                )
            return TableServiceClient(self.table_service_uri, credential=self.credential(), **options)
        if self.value.startswith(("http://", "https://")):
            raise ConfigurationError(
                [f"{self.setting}: a queue URL with a SAS cannot reach the fleet tables; use a connection string "
                 "or the identity-based settings"]
            )
        return TableServiceClient.from_connection_string(self.value, **options)


def resolve_account_connection(setting: str, environ: Mapping[str, str] | None = None) -> AccountConnection:
    """The connection named ``setting``, by the host's rules; Azurite when nothing is set.

    Raises ``ConfigurationError`` naming the settings (never a value) when
    ``__credential`` is not one the host knows.
    """
    env = os.environ if environ is None else environ
    for name in (setting, f"AzureWebJobs{setting}"):
        if value := env.get(name):
            return AccountConnection(setting=name, value=value)

    def part(suffix: str) -> str | None:
        return env.get(f"{setting}__{suffix}") or env.get(f"{setting}:{suffix}") or None

    account = part("accountName")
    service_uri = part("queueServiceUri") or part("serviceUri")
    if service_uri is None and account:
        service_uri = f"https://{account}.queue.core.windows.net"
    table_uri = part("tableServiceUri") or (f"https://{account}.table.core.windows.net" if account else None)
    if service_uri is None and table_uri is None:
        return AccountConnection(setting=setting, value=AZURITE_CONNECTION_STRING)
    kind = part("credential")
    if kind is not None and kind.lower() != "managedidentity":
        raise ConfigurationError([f"{setting}__credential: must be managedidentity (or unset), got {kind!r}"])
    return AccountConnection(
        setting=setting,
        service_uri=service_uri.rstrip("/") if service_uri else None,
        table_service_uri=table_uri.rstrip("/") if table_uri else None,
        credential_kind=kind.lower() if kind else None,
        client_id=part("clientId"),
        tenant_id=part("tenantId"),
        client_secret=part("clientSecret"),
    )


# The names the queue's callers know (the queue reaches the account this way).
QueueConnection = AccountConnection
resolve_queue_connection = resolve_account_connection
