"""Putting scan requests on the trigger queue (the enqueue command, the HTTP API)."""

from __future__ import annotations

from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient

from ..errors import StorageError
from ..redact import Redactor
from .connection import QUEUE_SENDER_ROLE, QueueConnection
from .messages import QueueEncoding, ScanMessage, encode_body


@dataclass(frozen=True)
class EnqueuedMessage:
    queue: str
    message_id: str
    body: str


def queue_client(connection: str | QueueConnection, queue_name: str, **options: object) -> QueueClient:
    """The one queue-client factory: from a resolved connection (``resolve_queue_connection``:
    identity-based or not), a connection string, or a queue URL carrying its SAS token."""
    if isinstance(connection, QueueConnection):
        return connection.client(queue_name, **options)
    if connection.startswith(("http://", "https://")):
        return QueueClient.from_queue_url(connection, **options)
    return QueueClient.from_connection_string(connection, queue_name, **options)


def enqueue(
    message: ScanMessage,
    *,
    connection: str | QueueConnection,
    queue_name: str,
    encoding: QueueEncoding,
    create_queue: bool = True,
) -> EnqueuedMessage:
    """Sends one message, encoded as the host expects (``host.json`` ``messageEncoding``)."""
    body = encode_body(message.to_text(), encoding)
    redactor = Redactor(connection.secrets if isinstance(connection, QueueConnection) else [connection])
    try:
        with queue_client(connection, queue_name) as client:
            if create_queue:
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
            sent = client.send_message(body)
            return EnqueuedMessage(queue=client.queue_name, message_id=sent.id, body=body)
    except AzureError as error:
        reason = getattr(error, "error_code", None) or type(error).__name__
        if isinstance(connection, QueueConnection) and connection.uses_identity and _status(error) == 403:
            reason = f"{reason}: forbidden: the app's identity needs the role '{QUEUE_SENDER_ROLE}' on the queue"
        raise StorageError(redactor(f"could not put the message on queue {queue_name!r}: {reason}")) from None
    except ValueError as error:
        raise StorageError(
            redactor(f"the queue connection is not a valid connection string or queue URL: {error}")
        ) from None


def _status(error: AzureError) -> int | None:
    return getattr(error, "status_code", None)
