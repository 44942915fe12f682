"""The exclusive upper bound of a timestamp poll, per dialect.

A row whose timestamp the database assigned (``now()``, ``CURRENT_TIMESTAMP``) can commit
long after rows with later timestamps were polled. Polling ``ts < U`` where U is no later than
the start of the oldest transaction still open means every row below U is already committed
and visible, so the cursor never passes a row that will appear later.

PostgreSQL: every open transaction of a client backend counts, not only those holding an xid:
a transaction that began before U but writes after our poll would get an xid only then, while
its ``now()`` is its start time. Seeing other users' sessions needs ``pg_read_all_stats``.
MySQL/MariaDB: ``information_schema.innodb_trx`` (needs PROCESS); ``NOW()`` there is the
statement's time, which is never earlier than ``trx_started``. SQLite: only the lag window.
The bound is computed in its own statement *before* the data is read (see the module tests).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa

UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class Bound:
    """``upper`` is aware (UTC); ``oldest_open`` is the start of the oldest open transaction, if any."""

    upper: dt.datetime
    now: dt.datetime
    oldest_open: dt.datetime | None


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def compute(conn: sa.Connection, lag_window: float) -> Bound:
    """Compute the bound on ``conn`` (whose session runs in UTC, see cdc.sql.engines)."""
    dialect = conn.dialect.name
    oldest: dt.datetime | None
    if dialect == "postgresql":
        row = conn.execute(
            sa.text(
                "SELECT clock_timestamp(), (SELECT min(xact_start) FROM pg_stat_activity "
                "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend')"
            )
        ).one()
        now, oldest = _aware(row[0]), _aware(row[1])
    elif dialect in ("mysql", "mariadb"):
        row = conn.execute(
            sa.text(
                "SELECT UTC_TIMESTAMP(6), (SELECT MIN(trx_started) FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID())"
            )
        ).one()
        now, oldest = _aware(row[0]), _aware(row[1])
    else:
        now, oldest = dt.datetime.now(UTC), None
    assert now is not None
    upper = now - dt.timedelta(seconds=lag_window)
    if oldest is not None and oldest < upper:
        upper = oldest
    return Bound(upper, now, oldest)


def default_zone(conn: sa.Connection) -> dt.tzinfo:
    """The zone in which the application's sessions write zone-less timestamps by default."""
    dialect = conn.dialect.name
    name: str | None = None
    if dialect == "postgresql":
        name = conn.execute(sa.text("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'")).scalar()
    elif dialect in ("mysql", "mariadb"):
        name = conn.execute(sa.text("SELECT @@global.time_zone")).scalar()
        if name == "SYSTEM":
            name = conn.execute(sa.text("SELECT @@system_time_zone")).scalar()
    return parse_zone(name or "UTC")


def parse_zone(name: str) -> dt.tzinfo:
    """'UTC', 'Europe/Paris', '+02:00' -> tzinfo."""
    if name and name[0] in "+-" and ":" in name:
        sign = 1 if name[0] == "+" else -1
        hours, minutes = name[1:].split(":")
        return dt.timezone(sign * dt.timedelta(hours=int(hours), minutes=int(minutes)))
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    return ZoneInfo(name)


def for_column(bound: dt.datetime, *, aware: bool, zone: dt.tzinfo, precision: int) -> dt.datetime:
    """Express the bound as the column stores it, floored to the column's fractional precision."""
    value = bound if aware else bound.astimezone(zone).replace(tzinfo=None)
    step = 10 ** (6 - max(0, min(precision, 6)))
    return value.replace(microsecond=value.microsecond - value.microsecond % step)
