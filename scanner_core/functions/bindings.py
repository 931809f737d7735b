"""The binding names the Blueprints read when the worker indexes the functions (issue 18).

The same settings as ``settings.FunctionSettings``, read from the environment without
pydantic: at a cold start, importing pydantic and pydantic-settings costs more than the
rest of the app's indexing (``bench/bench_cold_start.py``). The values are checked by the
same rules, and a bad one gives the same start-up error, naming the setting and its pattern.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ConfigurationError

DEFAULT_HEARTBEAT_SCHEDULE = "0 */5 * * * *"  # every 300 s: the default heartbeat-period
DEFAULT_DB_REFRESH_SCHEDULE = "0 30 */6 * * *"  # every 6 h; trivy's DB is rebuilt every 6 h
DEFAULT_WATCH_SCHEDULE = "0 */15 * * * *"  # the watch list's registries, every 15 minutes
DEFAULT_RESCAN_SCHEDULE = "0 0 3 * * *"  # rescans, daily at 03:00 UTC
DEFAULT_DEADLINE_SCHEDULE = "0 10 * * * *"  # at-risk approvals' deadlines (issue 25), hourly at :10
DEFAULT_QUEUE_NAME = "trivy-scan-requests"
DEFAULT_QUEUE_CONNECTION = "AzureWebJobsStorage"
# Azure queue names: 3-63 of [a-z0-9-]; "-poison" is appended for the quarantine queue.
QUEUE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$"


@dataclass(frozen=True)
class BindingNames:
    queue_name: str
    queue_connection: str
    heartbeat_schedule: str
    db_refresh_schedule: str
    watch_schedule: str
    rescan_schedule: str
    deadline_schedule: str = DEFAULT_DEADLINE_SCHEDULE  # approval_routes.py: at-risk approvals' deadlines
    metrics_anonymous: bool = False  # GET /api/metrics without a function key (metrics_routes.py)
    digest_schedule: str | None = None  # the approvals' daily digest; None: no digest timer (approval_routes.py)

    @property
    def poison_queue_name(self) -> str:
        return f"{self.queue_name}-poison"


def _value(name: str, default: str) -> str:
    return os.environ.get(name) or default  # an empty value counts as unset (env_ignore_empty)


# pydantic's spellings of a bool, so that METRICS_ANONYMOUS means what FunctionSettings reads.
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
DIGEST_SCHEDULE_RULE = ("must be an NCRONTAB expression of 6 fields (second minute hour day month weekday), "
                        "e.g. '0 0 7 * * *' for 07:00 UTC daily; unset or empty: no digest")


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not value:
        return False
    raise ConfigurationError([f"{name}: Input should be a valid boolean, e.g. true or false (got {value!r})"])


def _digest_schedule() -> str | None:
    value = os.environ.get("DIGEST_SCHEDULE") or None
    if value is not None and len(value.split()) != 6:
        raise ConfigurationError([f"DIGEST_SCHEDULE: Value error, {DIGEST_SCHEDULE_RULE} (got {value!r})"])
    return value


def binding_names() -> BindingNames:
    """The bindings' names and schedules; ``ConfigurationError`` like ``load_function_settings``."""
    names = BindingNames(
        queue_name=_value("SCAN_QUEUE_NAME", DEFAULT_QUEUE_NAME),
        queue_connection=_value("SCAN_QUEUE_CONNECTION", DEFAULT_QUEUE_CONNECTION),
        heartbeat_schedule=_value("HEARTBEAT_SCHEDULE", DEFAULT_HEARTBEAT_SCHEDULE),
        db_refresh_schedule=_value("DB_REFRESH_SCHEDULE", DEFAULT_DB_REFRESH_SCHEDULE),
        watch_schedule=_value("WATCH_SCHEDULE", DEFAULT_WATCH_SCHEDULE),
        rescan_schedule=_value("RESCAN_SCHEDULE", DEFAULT_RESCAN_SCHEDULE),
        deadline_schedule=_value("APPROVAL_DEADLINE_SCHEDULE", DEFAULT_DEADLINE_SCHEDULE),
        metrics_anonymous=_flag("METRICS_ANONYMOUS"),
        digest_schedule=_digest_schedule(),
    )
    if not re.match(QUEUE_NAME_PATTERN, names.queue_name):
        # Word for word what FunctionSettings' validation says (tests/test_function_app.py).
        raise ConfigurationError(
            [f"SCAN_QUEUE_NAME: String should match pattern '{QUEUE_NAME_PATTERN}' (got {names.queue_name!r})"]
        )
    return names
