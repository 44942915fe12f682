"""Configuration of the outbox relay."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdc.config.durations import Duration
from cdc.config.secrets import DsnField

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class OutboxConfig(BaseModel):
    """``source:`` of the outbox relay."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: DsnField = Field(description="the application's database: postgresql://, mysql://, sqlite:///")
    table: str = Field("cdc_outbox", description="the outbox table (created by cdc migrations apply)")
    shards: int = Field(
        16,
        ge=1,
        le=4096,
        description="aggregates are hashed into shards; each shard is relayed by one replica at a time",
    )
    batch_size: int = Field(
        200,
        ge=1,
        description="rows claimed per poll for each free shard, taken together in seq order "
        "(also bounds what a kill -9 replays)",
    )
    poll_interval: Duration = Field(0.2, description="time between polls when the outbox is empty")
    notify_channel: str | None = Field(
        None, description="PostgreSQL: LISTEN on this channel to wake up early (the poll stays the truth)"
    )
    mode: Literal["polling", "log"] = Field(
        "polling",
        description="polling (any database) or log (outbox inserts read from the PostgreSQL WAL or "
        "the MySQL/MariaDB binlog)",
    )
    slot: str | None = Field(
        None, description="log mode, PostgreSQL: logical replication slot (created if missing)"
    )
    publication: str | None = Field(
        None, description="log mode, PostgreSQL: an insert-only publication of the table"
    )
    server_id: int | None = Field(
        None,
        ge=1,
        le=4294967295,
        description="log mode, MySQL/MariaDB: the replica server_id the relay registers with (distinct "
        "from the server's own and every other replica's)",
    )
    resume_by: Literal["gtid", "file"] = Field(
        "gtid", description="log mode, MySQL/MariaDB: binlog positions kept by GTID or by file:position"
    )
    status_interval: Duration = Field(
        5.0,
        description="log mode: how often the confirmed position is reported (PostgreSQL), the binlog "
        "heartbeat period (MySQL/MariaDB)",
    )

    @property
    def mysql(self) -> bool:
        """True for a MySQL/MariaDB URL."""
        return self.url.secret.split(":", 1)[0].split("+", 1)[0].lower() in ("mysql", "mariadb")

    @model_validator(mode="after")
    def _log_mode(self) -> OutboxConfig:
        if self.mode != "log":
            return self
        if self.mysql:
            if self.server_id is None:
                raise ValueError("mode log on MySQL/MariaDB needs server_id (the binlog replica id)")
            if self.slot or self.publication:
                raise ValueError(
                    "slot and publication are PostgreSQL settings; MySQL/MariaDB takes server_id"
                )
        elif not self.slot or not self.publication:
            raise ValueError("mode log on PostgreSQL needs slot and publication")
        elif self.server_id is not None:
            raise ValueError("server_id is a MySQL/MariaDB setting; PostgreSQL takes slot and publication")
        return self

    @field_validator("table")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError("a plain table name (letters, digits, _)")
        return v


class OutboxStream(BaseModel):
    """``capture:`` of one relayed stream: the aggregate type whose events go to its topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    aggregate_type: str = Field(description="rows with this aggregatetype are relayed to this stream's topic")
