"""Settings of the function app's bindings (queue, connection, schedules).

They are read when the worker indexes the functions, so a default applies
when a setting is unset; changing an app setting restarts the app.
"""

from __future__ import annotations

import re

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..config import describe_error
from ..errors import ConfigurationError
from ..storage import QueueConnection, resolve_queue_connection
from .bindings import (
    DEFAULT_DB_REFRESH_SCHEDULE,
    DEFAULT_DEADLINE_SCHEDULE,
    DEFAULT_HEARTBEAT_SCHEDULE,
    DEFAULT_QUEUE_CONNECTION,
    DEFAULT_QUEUE_NAME,
    DEFAULT_RESCAN_SCHEDULE,
    DEFAULT_WATCH_SCHEDULE,
    DIGEST_SCHEDULE_RULE,
    QUEUE_NAME_PATTERN,
)

AZURITE_CONNECTION_STRING = "UseDevelopmentStorage=true"


class FunctionSettings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, populate_by_name=True, env_ignore_empty=True
    )

    # Azure queue names: 3-63 of [a-z0-9-]; "-poison" is appended for the quarantine queue.
    queue_name: str = Field(DEFAULT_QUEUE_NAME, alias="SCAN_QUEUE_NAME", pattern=QUEUE_NAME_PATTERN)
    queue_connection: str = Field(DEFAULT_QUEUE_CONNECTION, alias="SCAN_QUEUE_CONNECTION", min_length=1)
    heartbeat_schedule: str = Field(DEFAULT_HEARTBEAT_SCHEDULE, alias="HEARTBEAT_SCHEDULE")
    db_refresh_schedule: str = Field(DEFAULT_DB_REFRESH_SCHEDULE, alias="DB_REFRESH_SCHEDULE")
    watch_schedule: str = Field(DEFAULT_WATCH_SCHEDULE, alias="WATCH_SCHEDULE")
    rescan_schedule: str = Field(DEFAULT_RESCAN_SCHEDULE, alias="RESCAN_SCHEDULE")
    # At-risk approvals' deadlines (issue 25, approvals/deadlines.py).
    deadline_schedule: str = Field(DEFAULT_DEADLINE_SCHEDULE, alias="APPROVAL_DEADLINE_SCHEDULE")
    # GET /api/metrics without a function key, for a private scrape network (functions/metrics_routes.py).
    metrics_anonymous: bool = Field(False, alias="METRICS_ANONYMOUS")
    # The approvals' daily digest (issue 15): unset or empty (the default) registers no digest timer.
    digest_schedule: str | None = Field(None, alias="DIGEST_SCHEDULE")

    @field_validator("digest_schedule", mode="after")
    @classmethod
    def _check_digest_schedule(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 6:
            raise ValueError(DIGEST_SCHEDULE_RULE)
        return value

    @property
    def poison_queue_name(self) -> str:
        return f"{self.queue_name}-poison"

    @property
    def queue_connection_value(self) -> QueueConnection:
        """The connection the setting ``queue_connection`` names, resolved as the host does:
        a connection string (or queue URL with SAS), or the identity-based
        ``<setting>__queueServiceUri``/``__accountName`` settings; Azurite when none is set."""
        return resolve_queue_connection(self.queue_connection)


def load_function_settings() -> FunctionSettings:
    """The bindings' settings, one source for the trigger, the enqueue command and the
    HTTP API; raises ``ConfigurationError`` naming every bad setting."""
    try:
        return FunctionSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        raise ConfigurationError([describe_error(e) for e in error.errors()]) from None


_STEP = re.compile(r"^\*/(\d+)$")


def schedule_period_seconds(schedule: str) -> int | None:
    """The period of a regular NCRONTAB schedule: fixed values below one ``*`` or
    ``*/N`` field, ``*`` above it, any day (``0 */5 * * * *`` is 300 s). ``None``
    when the schedule is irregular."""
    fields = schedule.split()
    if len(fields) != 6 or fields[3:] != ["*", "*", "*"]:
        return None
    units = (1, 60, 3600)
    for index, field in enumerate(fields[:3]):
        if field.isdigit():
            continue
        step = 1 if field == "*" else int(match.group(1)) if (match := _STEP.match(field)) else None
        if step is None or step == 0 or any(higher != "*" for higher in fields[index + 1 : 3]):
            return None
        return step * units[index]
    return 86_400
