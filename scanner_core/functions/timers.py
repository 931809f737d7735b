"""Blueprint: the timers (heartbeat, DB refresh)."""

from __future__ import annotations

import azure.functions as func

from .host import APP_ROOT
from .bindings import binding_names

bindings = binding_names()  # without pydantic: see bindings.py
blueprint = func.Blueprint()


@blueprint.function_name("heartbeat")
@blueprint.timer_trigger(arg_name="timer", schedule=bindings.heartbeat_schedule, run_on_startup=False, use_monitor=True)
def heartbeat(timer: func.TimerRequest) -> None:
    from . import handlers  # the core and the storage SDKs: on first use, not at indexing

    handlers.on_heartbeat(timer, handlers.binding_settings(), APP_ROOT)


@blueprint.function_name("refresh_vulnerability_db")
@blueprint.timer_trigger(
    arg_name="timer", schedule=bindings.db_refresh_schedule, run_on_startup=False, use_monitor=True
)
def refresh_vulnerability_db(timer: func.TimerRequest) -> None:
    from . import handlers  # the core and the storage SDKs: on first use, not at indexing

    handlers.on_db_refresh(timer, APP_ROOT)
