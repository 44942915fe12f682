"""Configuration of the audit relay."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cdc.config.durations import Duration
from cdc.config.secrets import DsnField


class AuditConfig(BaseModel):
    """``source:`` of the audit relay."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: DsnField = Field(description="the application's database: postgresql://, mysql://, sqlite:///")
    audit_schema: str | None = Field(
        None, description="PostgreSQL: schema of cdc_audit_log (default: the session's current schema)"
    )
    batch_size: int = Field(2000, ge=1, description="audit rows read per stream and poll")
    max_pending: int = Field(
        20_000, ge=1, description="rows per stream published but not yet acknowledged before reading pauses"
    )
    poll_interval: Duration = Field(0.2, description="time between polls when there is nothing new")
    after_relay: Literal["delete", "mark"] = Field(
        "delete", description="delete relayed audit rows, or mark them (relayed_at) and keep them"
    )
    keep_marked: Duration | None = Field(
        None, description="mark mode: delete marked rows older than this (default: keep them)"
    )
    on_truncate: Literal["fail", "skip"] = Field(
        "fail", description="PostgreSQL TRUNCATE records: stop (a re-snapshot is needed) or skip them"
    )


class AuditStream(BaseModel):
    """``capture:`` of one audited table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str = Field(description="the audited table, schema-qualified where needed")
