"""Configuration of the PostgreSQL WAL source."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdc.config.durations import Duration
from cdc.config.secrets import DsnField
from cdc.handoff import DEFAULT_QUEUE_EVENTS
from cdc.logsource import SnapshotMode

__all__ = ["SnapshotMode", "UnchangedToast", "WalConfig", "WalStream"]

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class UnchangedToast(StrEnum):
    RESELECT = "reselect"  # read the current value by key (a value at least as new as the event)
    FAIL = "fail"  # stop with a located error


class WalConfig(BaseModel):
    """``source:`` of the postgres_wal connector."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: DsnField = Field(description="postgresql://user:pass@host:port/db (the user needs REPLICATION)")
    slot: str = Field(description="logical replication slot name (created if missing)")
    publication: str = Field(description="publication name (created for the configured tables if missing)")
    create_slot: bool = Field(True, description="create the slot when missing (else print the statement)")
    create_publication: bool = Field(
        True, description="create/extend the publication (else print statements)"
    )
    snapshot_mode: SnapshotMode = Field(
        SnapshotMode.INITIAL, description="initial | never (no_data) | initial_only | when_needed"
    )
    keep_slot: bool = Field(False, description="initial_only: keep the slot instead of a temporary one")
    status_interval: Duration = Field(5.0, description="how often the confirmed position is reported")
    snapshot_fetch_size: int = Field(10_000, ge=1, description="rows per round trip while snapshotting")
    queue_events: int = Field(
        DEFAULT_QUEUE_EVENTS, ge=100, description="decoded events buffered ahead of the pipeline"
    )
    heartbeat_query: str | None = Field(
        None, description="SQL run every heartbeat_interval on the source so an idle database's slot advances"
    )
    heartbeat_interval: Duration = Field(60.0, description="period of heartbeat_query")
    messages: bool = Field(False, description="also decode pg_logical_emit_message messages (logged)")
    signal_table: str | None = Field(
        None,
        description="schema.table for signals and snapshot watermarks (created if missing); enables "
        "incremental snapshots (cdc snapshot CONFIG) and consistent recovery of an interrupted snapshot",
    )
    incremental_chunk_size: int = Field(1024, ge=1, description="rows per incremental snapshot chunk")

    @field_validator("slot", "publication")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError("use lowercase letters, digits and _ (a PostgreSQL identifier, at most 63)")
        return v


class WalStream(BaseModel):
    """``capture:`` of one WAL stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str = Field(description="schema.table captured by this stream")
    children: str | None = Field(
        None,
        description="regex of inheritance children (same schema) mapped to this stream, e.g. payment_p2007_.*",
    )
    insert_only: bool = Field(
        False, description="capture inserts only (allows keyless tables in the publication)"
    )
    unchanged_toast: UnchangedToast = Field(
        UnchangedToast.RESELECT,
        description="an unchanged out-of-line value in an update: reselect it by key, or fail "
        "(with REPLICA IDENTITY FULL the old image supplies it)",
    )
    snapshot: bool = Field(True, description="include this table in the initial snapshot")
