"""The worker side of the host double: a process that plays the platform's Python worker
around the real worker library, ``azure_functions_runtime`` (its ``handle_event`` module).

On Azure the Python worker process owns the gRPC ``EventStream`` and hands each request to
the library as ``request.request`` (the ``StreamingMessage``) with
``request.properties = {"protos": <the protocol module>, "host": ...}``. This double does the
same, with the stream carried over stdin/stdout instead of gRPC: each message is the
serialized ``StreamingMessage`` preceded by its length (4 bytes, big-endian). Logging records
go back as ``rpc_log`` messages, as the worker sends them to the host.

Run by ``tests/support/functions_host.py`` as ``python -I -S worker_shim.py PACKAGE WORKER_LIB
PROTOS`` with the host's environment; ``sys.path`` is then, as on the platform, the package's
``.python_packages/lib/site-packages`` first, the package root, then the worker library.
Only the standard library is imported before that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import sys
import threading


def _set_path(package: str, worker_lib: str, protos: str) -> None:
    site_packages = os.path.join(package, ".python_packages", "lib", "site-packages")
    sys.path[:0] = [site_packages, package, worker_lib, protos]


class Channel:
    """Length-prefixed ``StreamingMessage`` frames over two binary files."""

    def __init__(self, reader, writer, pb) -> None:  # noqa: ANN001 - raw file objects
        self._reader, self._writer, self._pb = reader, writer, pb
        self._lock = threading.Lock()

    def receive(self):  # noqa: ANN201
        header = self._reader.read(4)
        if len(header) < 4:
            return None
        (size,) = struct.unpack(">I", header)
        message = self._pb.StreamingMessage()
        message.ParseFromString(self._reader.read(size))
        return message

    def send(self, message) -> None:  # noqa: ANN001
        data = message.SerializeToString()
        with self._lock:
            self._writer.write(struct.pack(">I", len(data)) + data)
            self._writer.flush()


class RpcLogHandler(logging.Handler):
    """Every log record of the worker and the app, as an ``rpc_log`` to the host."""

    LEVELS = {logging.DEBUG: 1, logging.INFO: 2, logging.WARNING: 3, logging.ERROR: 4, logging.CRITICAL: 5}

    def __init__(self, channel: Channel, pb) -> None:  # noqa: ANN001
        super().__init__(logging.DEBUG)
        self._channel, self._pb = channel, pb

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = max((v for k, v in self.LEVELS.items() if k <= record.levelno), default=0)
            log = self._pb.RpcLog(category=record.name, level=level, message=record.getMessage())
            self._channel.send(self._pb.StreamingMessage(rpc_log=log))
        except Exception:  # noqa: BLE001 - logging must never break the worker
            self.handleError(record)


class Request:
    """What the worker library's handlers take: the message and the properties."""

    def __init__(self, message, properties: dict) -> None:  # noqa: ANN001
        self.request = message
        self.properties = properties


# The request kinds the library handles, and the response field each answer goes in.
DISPATCH = {
    "worker_init_request": ("worker_init_request", "worker_init_response"),
    "functions_metadata_request": ("functions_metadata_request", "function_metadata_response"),
    "function_load_request": ("function_load_request", "function_load_response"),
    "invocation_request": ("invocation_request", "invocation_response"),
    "function_environment_reload_request": (
        "function_environment_reload_request", "function_environment_reload_response"),
}  # fmt: skip


async def serve(channel: Channel, pb, handle_event) -> None:  # noqa: ANN001
    properties = {"protos": pb, "host": "127.0.0.1"}
    while (message := channel.receive()) is not None:
        kind = message.WhichOneof("content")
        if kind == "worker_status_request":
            channel.send(pb.StreamingMessage(request_id=message.request_id,
                                             worker_status_response=pb.WorkerStatusResponse()))  # fmt: skip
            continue
        handler_name, response_field = DISPATCH[kind]
        response = await getattr(handle_event, handler_name)(Request(message, properties))
        reply = pb.StreamingMessage(request_id=message.request_id)
        getattr(reply, response_field).CopyFrom(response)
        channel.send(reply)


def main() -> None:
    package, worker_lib, protos = sys.argv[1:4]
    _set_path(package, worker_lib, protos)
    # The protocol owns the real stdout; the app's and the worker's prints go to stderr.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    import function_rpc_pb2 as pb

    channel = Channel(sys.stdin.buffer, protocol_out, pb)
    root = logging.getLogger()
    root.addHandler(RpcLogHandler(channel, pb))
    root.setLevel(logging.INFO)
    channel.send(pb.StreamingMessage(start_stream=pb.StartStream(worker_id=os.environ.get("WORKER_ID", "double"))))
    from azure_functions_runtime import handle_event

    asyncio.run(serve(channel, pb, handle_event))


if __name__ == "__main__":
    main()
