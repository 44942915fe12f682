"""Configuration of the polling source (``source:`` block and each stream's ``capture:``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cdc.config.durations import Duration
from cdc.config.secrets import DsnField
from cdc.handoff import DEFAULT_QUEUE_EVENTS


class Mode(StrEnum):
    BULK = "bulk"  # every poll reads everything (small reference tables)
    INCREMENTING = "incrementing"  # new rows by a strictly increasing column (inserts only)
    TIMESTAMP = "timestamp"  # changed rows by a last-modified column
    TIMESTAMP_INCREMENTING = "timestamp+incrementing"  # both: changed rows, ties broken by id


class PollingConfig(BaseModel):
    """``source:`` of the polling connector."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: DsnField = Field(description="SQLAlchemy/DB URL: postgresql://, mysql://, sqlite:///path")
    poll_interval: Duration = Field(1.0, description="default time between polls of a stream")
    lag_window: Duration = Field(
        0.0,
        description="exclude rows newer than now minus this (needed when the application's clock sets timestamps)",
    )
    timestamp_zone: str | None = Field(
        None, description="zone of zone-less timestamp columns (default: the database's default zone)"
    )
    fetch_size: int = Field(10_000, ge=1, description="rows fetched per round trip (bounded memory)")
    queue_events: int = Field(
        DEFAULT_QUEUE_EVENTS, ge=100, description="events buffered between pollers and the pipeline"
    )
    progress: bool = Field(True, description="progress bar / log lines during an initial load")
    zero_dates: Literal["error", "null"] = Field(
        "error",
        description="MySQL/MariaDB zero or invalid dates (0000-00-00): a row error naming the field, or null",
    )


class DeleteDetection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    interval: Duration = Field(60.0, description="how often all keys are compared to find hard deletes")


class PollingStream(BaseModel):
    """``capture:`` of one polled stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str | None = Field(None, description="table or view, optionally schema-qualified: schema.table")
    query: str | None = Field(None, description="a custom SELECT (wrapped as a subquery); prefer a view")
    mode: Mode = Field(description="bulk | incrementing | timestamp | timestamp+incrementing")
    timestamp_column: str | None = Field(None, description="last-modified column (timestamp modes)")
    incrementing_column: str | None = Field(
        None, description="strictly increasing column (incrementing modes)"
    )
    poll_interval: Duration | None = Field(None, description="overrides source.poll_interval")
    delete_detection: DeleteDetection | None = Field(
        None, description="emit deletes for keys that disappeared"
    )

    @model_validator(mode="after")
    def _coherent(self) -> PollingStream:
        problems = []
        if (self.table is None) == (self.query is None):
            problems.append("give exactly one of table or query")
        if self.mode in (Mode.TIMESTAMP, Mode.TIMESTAMP_INCREMENTING) and not self.timestamp_column:
            problems.append(f"mode {self.mode.value} needs timestamp_column")
        if self.mode in (Mode.INCREMENTING, Mode.TIMESTAMP_INCREMENTING) and not self.incrementing_column:
            problems.append(f"mode {self.mode.value} needs incrementing_column")
        if problems:
            raise ValueError("\n".join(problems))  # one problem a line: a problem may contain "; "
        return self
