"""Putting scan requests on the trigger queue (the enqueue command, the HTTP API)."""

from __future__ import annotations

from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient

from ..errors import StorageError
from ..redact import Redactor
from ..storage import QUEUE_SENDER_ROLE, QueueConnection
from .messages import BatchMessage, QueueEncoding, ScanMessage, encode_body


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
    message: ScanMessage | BatchMessage,
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


class QueueSender:
    """Sends texts to one queue, encoded as the host expects, optionally invisible for a
    while (a retry after its backoff delay; a quarantine entry has none). The client comes
    from ``queue_client``, the one factory; the queue is created on first use."""

    def __init__(self, connection: str | QueueConnection, queue_name: str, encoding: QueueEncoding) -> None:
        self._connection = connection
        self._queue_name = queue_name
        self._encoding = encoding
        self._client: QueueClient | None = None
        self._redactor = Redactor(connection.secrets if isinstance(connection, QueueConnection) else [connection])

    def send(self, text: str, delay_seconds: int = 0) -> str:
        """Returns the new message's id; raises ``StorageError`` (redacted)."""
        try:
            if self._client is None:
                client = queue_client(self._connection, self._queue_name)
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                self._client = client
            sent = self._client.send_message(
                encode_body(text, self._encoding), visibility_timeout=delay_seconds or None
            )
            return str(sent.id)
        except AzureError as error:
            self.close()
            reason = getattr(error, "error_code", None) or type(error).__name__
            raise StorageError(self._redactor(f"could not put a message on queue {self._queue_name!r}: {reason}")) from None
        except ValueError as error:
            raise StorageError(
                self._redactor(f"the queue connection is not a valid connection string or queue URL: {error}")
            ) from None

    def retry_later(self, text: str, delay_seconds: int) -> None:
        self.send(text, delay_seconds)

    def quarantine(self, record: str) -> None:
        self.send(record)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
