"""Blueprint: the monitor loop (watch timer, rescan timer, ACR's Event Grid events)."""

from __future__ import annotations

import azure.functions as func

from .host import APP_ROOT
from .bindings import binding_names

bindings = binding_names()  # without pydantic: see bindings.py
blueprint = func.Blueprint()


@blueprint.function_name("watch_repositories")
@blueprint.timer_trigger(arg_name="timer", schedule=bindings.watch_schedule, run_on_startup=False, use_monitor=True)
def watch_repositories(timer: func.TimerRequest) -> None:
    from . import monitor_handlers  # the core and the storage SDKs: on first use, not at indexing

    monitor_handlers.on_watch(timer, APP_ROOT)


@blueprint.function_name("rescan_images")
@blueprint.timer_trigger(arg_name="timer", schedule=bindings.rescan_schedule, run_on_startup=False, use_monitor=True)
def rescan_images(timer: func.TimerRequest) -> None:
    from . import monitor_handlers  # the core and the storage SDKs: on first use, not at indexing

    monitor_handlers.on_rescan(timer, APP_ROOT)


@blueprint.function_name("image_pushed")
@blueprint.event_grid_trigger(arg_name="event")
@blueprint.queue_output(
    arg_name="quarantine", queue_name=bindings.poison_queue_name, connection=bindings.queue_connection
)
def image_pushed(event: func.EventGridEvent, quarantine: func.Out[str]) -> None:
    from . import monitor_handlers  # the core and the storage SDKs: on first use, not at indexing

    monitor_handlers.on_image_pushed(event, quarantine.set, APP_ROOT)
