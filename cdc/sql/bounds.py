"""The exclusive upper bound U of a timestamp poll: every row with ``ts < U`` that will ever
commit is already committed when the poll's data is read, so the cursor never passes a row
that appears later.

The database stamps a row (``now()``, ``CURRENT_TIMESTAMP``) with a time T it fixed *before*
the row becomes visible. A row stamped T and still invisible at the sample is one of:

1. its statement is still executing. MySQL/MariaDB fix ``CURRENT_TIMESTAMP`` when the
   statement starts, before any metadata-lock, table-lock or row-lock wait, and InnoDB opens
   the transaction only when the statement first touches it (after such a wait), so
   ``innodb_trx.trx_started`` can be seconds after T. The sample therefore takes the start of
   every executing statement from ``information_schema.processlist`` (``NOW(6) - TIME_MS``).
2. its statement finished but its transaction is open. Once the statement is done nothing in
   the server shows T any more, so the tracker remembers, per open writing transaction, a time
   known to be <= T (its *floor*): a writing transaction first seen in sample n was, at the
   processlist read of the previous sample n-1, either not yet started, or executing the
   statement during which it started (or not writing yet): each of its rows is stamped >= the
   *raw bound* of sample n-1, min(now, start of every executing statement). A transaction
   that has written nothing yet needs no floor: whatever it writes comes from a statement
   executing now or later, so it gets the raw bound of this sample.
   A writing transaction already open at the first sample after start-up has no known floor:
   the poll reads nothing until it ends (it blocks, it never guesses).
3. a PostgreSQL prepared transaction (two-phase commit): gone from ``pg_stat_activity`` after
   ``PREPARE TRANSACTION``, its rows are stamped with its start. While it ran, every sample saw
   it in ``pg_stat_activity``, so one first seen in sample n gets the raw bound of sample n-1
   (``min(now, oldest xact_start)``) as its floor; one present at start-up blocks until it
   is committed or rolled back.

Every "now" is the sample statement's own start (``UTC_TIMESTAMP(6)``, ``statement_timestamp()``),
taken before it reads the server's state, minus ``PUBLISH_MARGIN``: a server thread takes its
statement time a moment before it shows the statement in processlist / pg_stat_activity. The
dialect samplers are in :mod:`cdc.sql.txsample`; this module holds the pure logic.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import sqlalchemy as sa

UTC = dt.UTC

#: Upper bound of the time a server thread spends between fixing its statement's timestamp and
#: showing the statement (processlist, pg_stat_activity). Only a thread descheduled longer
#: than this at exactly that point could slip through; it also delays every poll by as much.
PUBLISH_MARGIN = dt.timedelta(seconds=1)

#: A sample completed less than this long ago is reused by the next poll (of any stream):
#: a bound stays valid for every later read, and InnoDB refreshes information_schema.innodb_trx
#: only when it was not read for 100 ms.
REUSE_SECONDS = 0.15


@dataclass(frozen=True, slots=True)
class Sample:
    """What one look at the server showed.

    ``now``: the sample statement's start (server clock, aware UTC), taken before anything was
    read. ``executing``: the earliest start of a statement or transaction that was executing,
    if any. ``writers``: the open transactions that have written rows and whose stamps are no
    longer shown (MySQL: InnoDB transactions with modified rows; PostgreSQL: prepared
    transactions), by a stable identity, with a label for log messages.
    """

    now: dt.datetime
    executing: dt.datetime | None = None
    writers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bound:
    """``upper`` is aware (UTC), or None when an open transaction of unknown start blocks the poll
    (``blocked_by`` names it); ``oldest_open`` is the earliest stamp an open transaction may carry."""

    upper: dt.datetime | None
    now: dt.datetime
    oldest_open: dt.datetime | None
    blocked_by: tuple[str, ...] = ()


class Tracker:
    """Turns successive samples of one server into bounds (see the module docstring).

    Samples must be observed in the order they were taken, each completed before the next one
    starts; :class:`SourceBounds` serializes them.
    """

    def __init__(self) -> None:
        self._previous_raw: dt.datetime | None = None  # None: no sample yet
        self._floors: dict[str, dt.datetime | None] = {}  # writer -> floor (None: unknown)

    def observe(self, sample: Sample, lag_window: float) -> Bound:
        raw = sample.now - PUBLISH_MARGIN
        if sample.executing is not None and sample.executing < raw:
            raw = sample.executing
        floors: dict[str, dt.datetime | None] = {}
        for key in sample.writers:
            # First seen now: at the previous sample its stamps were >= that sample's raw bound.
            floors[key] = self._floors.get(key, self._previous_raw)
        self._floors = floors
        self._previous_raw = raw
        blocked = tuple(sample.writers[k] for k, f in floors.items() if f is None)
        oldest = min([raw, *(f for f in floors.values() if f is not None)])
        upper = min(oldest, sample.now - dt.timedelta(seconds=lag_window))
        return Bound(None if blocked else upper, sample.now, oldest, blocked)


class SourceBounds:
    """The bound shared by every stream of one source: one tracker, samples serialized and
    reused for REUSE_SECONDS. ``sampler(conn)`` takes a sample (see cdc.sql.txsample)."""

    def __init__(self, sampler: Callable[[sa.Connection], Sample]) -> None:
        self._sampler = sampler
        self._tracker = Tracker()
        self._lock = threading.Lock()
        self._last: tuple[float, float, Bound] | None = None  # (completed, lag_window, bound)

    def compute(self, conn: sa.Connection, lag_window: float) -> Bound:
        """A bound valid for any data read on ``conn`` after this call returns."""
        with self._lock:
            if self._last is not None:
                completed, lag, bound = self._last
                if lag == lag_window and time.monotonic() - completed < REUSE_SECONDS:
                    return bound
            bound = self._tracker.observe(self._sampler(conn), lag_window)
            self._last = (time.monotonic(), lag_window, bound)
            return bound


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def server_now(conn: sa.Connection) -> dt.datetime:
    """The database's clock (aware UTC; the session runs in UTC, see cdc.sql.engines)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        value = conn.execute(sa.text("SELECT statement_timestamp()")).scalar()
    elif dialect in ("mysql", "mariadb"):
        value = conn.execute(sa.text("SELECT UTC_TIMESTAMP(6)")).scalar()
    else:
        value = dt.datetime.now(UTC)
    now = _aware(value)
    assert now is not None
    return now


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
