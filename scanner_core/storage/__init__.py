"""Blob Storage: uploads with retries, blob names and the audit folder layout,
and the audit index behind the HTTP API.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "AZURITE_CONNECTION_STRING": ".account",
    "AccountConnection": ".account",
    "QUEUE_PROCESSOR_ROLE": ".account",
    "QUEUE_SENDER_ROLE": ".account",
    "TABLE_ROLE": ".account",
    "resolve_account_connection": ".account",
    "QueueConnection": ".account",
    "resolve_queue_connection": ".account",
    "MAX_KEY_CHARS": ".tables",
    "fleet_table": ".tables",
    "forget_tables": ".tables",
    "key_text": ".tables",
    "table_key": ".tables",
    "AuditRebuilder": ".rebuild",
    "NamedRebuilder": ".rebuild",
    "RebuildCount": ".rebuild",
    "audit_folders": ".rebuild",
    "rebuild_audits": ".rebuild",
    "FleetState": ".fleet_state",
    "fleet_state_of": ".fleet_state",
    "fleet_table_name": ".fleet_state",
    "ImageState": ".image_state",
    "digest_row": ".image_state",
    "tag_row": ".image_state",
    "AzureBlobStore": ".blob",
    "BlobStore": ".blob",
    "AuditIndex": ".index",
    "BLOB_ROLE": ".container",
    "container_client": ".container",
    "StorageErrors": ".container",
    "SnapshotBlobs": ".snapshots",
    "snapshot_prefix": ".snapshots",
    "shared_container_client": ".clients",
    "AuditRow": ".index_rows",
    "InvalidCursor": ".index_rows",
    "decode_cursor": ".index_rows",
    "encode_cursor": ".index_rows",
    "MAX_IMAGE_CHARS": ".index_rows",
    "encode_image": ".index_rows",
    "image_identity": ".index_rows",
    "same_image": ".index_rows",
    "iso8601": ".index_rows",
    "META_BLOB": ".layout",
    "NOTIFICATION_BLOB": ".layout",
    "REPORT_BLOB": ".layout",
    "SBOM_BLOB": ".layout",
    "audit_folder": ".layout",
    "heartbeat_blob": ".layout",
    "scanner_folder": ".layout",
    "validate_audit_id": ".layout",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
