"""Configuration of the MySQL/MariaDB binlog source."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from cdc.config.durations import Duration
from cdc.config.secrets import DsnField
from cdc.handoff import DEFAULT_QUEUE_EVENTS
from cdc.logsource import SnapshotMode
from cdc.mysql.types import ZeroDates

__all__ = ["BinlogConfig", "BinlogStream", "ResumeBy", "SnapshotMode"]


class ResumeBy(StrEnum):
    GTID = "gtid"  # MariaDB domain-server-seq list or MySQL GTID set (survives a failover)
    FILE = "file"  # binlog file name and position (when GTIDs are off)


class BinlogConfig(BaseModel):
    """``source:`` of the mysql_binlog connector."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: DsnField = Field(
        description="mysql://user:pass@host:port/db (REPLICATION SLAVE, REPLICATION CLIENT, SELECT; "
        "BINLOG MONITOR on MariaDB)"
    )
    server_id: int = Field(
        ge=1,
        le=4294967295,
        description="replica server_id this connector registers with: distinct from the server's own "
        "and from every other replica",
    )
    resume_by: ResumeBy = Field(ResumeBy.GTID, description="gtid | file: how positions are stored")
    snapshot_mode: SnapshotMode = Field(
        SnapshotMode.INITIAL, description="initial | never (no_data) | initial_only | when_needed"
    )
    heartbeat_interval: Duration = Field(
        2.0, description="MASTER_HEARTBEAT_PERIOD: the server sends a heartbeat after this much silence"
    )
    snapshot_chunk_size: int = Field(10_000, ge=1, description="rows per key-ordered snapshot query")
    zero_dates: ZeroDates = Field(
        "error",
        description="MySQL/MariaDB zero or invalid dates (0000-00-00): a row error naming the field, or null",
    )
    queue_events: int = Field(
        DEFAULT_QUEUE_EVENTS, ge=100, description="decoded events buffered ahead of the pipeline"
    )
    signal_table: str | None = Field(
        None,
        description="db.table (or table, in the URL's database) for signals and snapshot watermarks "
        "(created if missing); enables incremental snapshots (cdc snapshot CONFIG) and finishes an "
        "interrupted initial snapshot as one",
    )
    incremental_chunk_size: int = Field(1024, ge=1, description="rows per incremental snapshot chunk")


class BinlogStream(BaseModel):
    """``capture:`` of one binlog stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str = Field(description="db.table (or table, in the URL's database) captured by this stream")
    snapshot: bool = Field(True, description="include this table in the initial snapshot")
