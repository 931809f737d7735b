"""Blueprint: the scan queue's trigger, with the quarantine queue as an output."""

from __future__ import annotations

import azure.functions as func

from .host import APP_ROOT
from .bindings import binding_names

bindings = binding_names()  # without pydantic: see bindings.py
blueprint = func.Blueprint()


@blueprint.function_name("scan_request")
@blueprint.queue_trigger(arg_name="message", queue_name=bindings.queue_name, connection=bindings.queue_connection)
@blueprint.queue_output(
    arg_name="quarantine", queue_name=bindings.poison_queue_name, connection=bindings.queue_connection
)
def scan_request(message: func.QueueMessage, quarantine: func.Out[str]) -> None:
    from . import handlers  # the core and the storage SDKs: on first use, not at indexing

    handlers.on_scan_message(message, quarantine.set, APP_ROOT)
