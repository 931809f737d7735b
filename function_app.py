"""The Azure Functions app (Python v2 programming model): wiring only.

Each concern is a Blueprint in ``scanner_core/functions/`` (the scan queue,
the timers, the HTTP API); bindings are named by app settings (see
docs/configuration.md), read when the worker indexes the functions.
"""

from __future__ import annotations

import azure.functions as func

from scanner_core.functions import all_blueprints

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in all_blueprints():
    app.register_functions(blueprint)
