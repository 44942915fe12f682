"""Samples of a server's open statements and transactions, per dialect, for cdc.sql.bounds.

Order matters and is kept by separate statements: the sample's ``now`` is taken first (the
statement's own start), then the executing statements, then the open writing transactions.

MySQL/MariaDB: ``information_schema.innodb_trx`` is served from a cache that InnoDB refreshes
only when nobody read it for 100 ms, so a plain read may show a state from before the
processlist read, or (under a client reading it continuously) from any time ago. The sampler
therefore opens a transaction of its own and reads innodb_trx with a fresh token in the
statement: the result is fresh only if it lists this connection's transaction running that
very statement. Otherwise it retries; after ``FRESH_TIMEOUT`` it gives up (the poll skips).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable

import sqlalchemy as sa

from cdc.errors import SourceConfigError, SourceUnavailableError
from cdc.sql.bounds import Sample

log = logging.getLogger(__name__)

FRESH_TIMEOUT = 5.0
_ER_SPECIFIC_ACCESS_DENIED = 1227  # "you need (at least one of) the PROCESS privilege(s)"
_RETRY_SECONDS = 0.12  # just over InnoDB's 100 ms cache idle time

# Every thread running a statement counts (clients, event scheduler workers), except threads
# that run none (idle sessions, daemons, a killed query rolling back) and replication threads:
# an applier stamps rows with the primary's clock, which only lag_window covers.
IDLE_COMMANDS = (
    "Sleep", "Daemon", "Killed", "Binlog Dump", "Binlog Dump GTID", "Slave_IO", "Slave_SQL", "Slave_worker",
)  # fmt: skip
_MARIADB_EXECUTING = sa.text(
    "SELECT UTC_TIMESTAMP(6), MAX(TIME_MS) FROM information_schema.processlist "
    "WHERE COMMAND NOT IN :idle AND ID <> CONNECTION_ID()"
).bindparams(sa.bindparam("idle", IDLE_COMMANDS, expanding=True))
# MySQL has TIME in whole seconds only: one more second keeps the estimate early enough.
_MYSQL_EXECUTING = sa.text(
    "SELECT UTC_TIMESTAMP(6), MAX(TIME) + 1 FROM information_schema.processlist "
    "WHERE COMMAND NOT IN :idle AND ID <> CONNECTION_ID()"
).bindparams(sa.bindparam("idle", IDLE_COMMANDS, expanding=True))
_INNODB_TRX = sa.text(
    "SELECT :token AS token, trx_mysql_thread_id = CONNECTION_ID() AS own, trx_query, trx_id, "
    "trx_mysql_thread_id, trx_rows_modified FROM information_schema.innodb_trx"
)
_PG_ACTIVITY = sa.text(
    "SELECT statement_timestamp(), (SELECT min(xact_start) FROM pg_stat_activity "
    "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend')"
)
_PG_PREPARED = sa.text("SELECT gid, prepared FROM pg_prepared_xacts WHERE database = current_database()")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def sampler_for(conn: sa.Connection) -> Callable[[sa.Connection], Sample]:
    """The sampler of ``conn``'s server."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgres
    if dialect in ("mysql", "mariadb"):
        version = str(conn.execute(sa.text("SELECT VERSION()")).scalar())
        return mariadb if "mariadb" in version.lower() else mysql
    return clock_only


def clock_only(conn: sa.Connection) -> Sample:
    """SQLite and others: no view of open transactions; only lag_window protects."""
    return Sample(dt.datetime.now(dt.UTC))


def postgres(conn: sa.Connection) -> Sample:
    """Open transactions of client backends (pg_stat_activity, read first) and prepared ones."""
    conn.commit()  # a fresh transaction: pg_stat_activity is snapshotted once per transaction
    now, oldest = conn.execute(_PG_ACTIVITY).one()
    writers = {
        f"{gid}@{prepared.isoformat()}": f"prepared transaction {gid!r}"
        for gid, prepared in conn.execute(_PG_PREPARED)
    }
    conn.commit()
    return Sample(_aware(now), None if oldest is None else _aware(oldest), writers)


class StaleSampleError(SourceUnavailableError):
    """information_schema.innodb_trx could not be read fresh: this poll must not read."""


def mariadb(conn: sa.Connection) -> Sample:
    """MariaDB: statement starts from TIME_MS (milliseconds, microsecond precision)."""
    return _innodb(conn, _MARIADB_EXECUTING, dt.timedelta(milliseconds=1))


def mysql(conn: sa.Connection) -> Sample:
    """MySQL: statement starts from TIME (whole seconds)."""
    return _innodb(conn, _MYSQL_EXECUTING, dt.timedelta(seconds=1))


def _innodb(conn: sa.Connection, executing_query: sa.TextClause, unit: dt.timedelta) -> Sample:
    try:
        return _innodb_sample(conn, executing_query, unit)
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "args", (None,))[0] == _ER_SPECIFIC_ACCESS_DENIED:
            raise SourceConfigError(
                "timestamp polls need the PROCESS privilege (information_schema.processlist of every "
                f"user and information_schema.innodb_trx): {exc.orig}",
                hint="GRANT PROCESS ON *.* TO <user>",
            ) from None
        raise


def _innodb_sample(conn: sa.Connection, executing_query: sa.TextClause, unit: dt.timedelta) -> Sample:
    conn.commit()
    now, running = conn.execute(executing_query).one()
    conn.commit()
    now = _aware(now)
    executing = None if running is None else now - unit * float(running)
    token = secrets.token_hex(8)
    deadline = time.monotonic() + FRESH_TIMEOUT
    while True:
        # Our own transaction, started after the processlist read, is the freshness witness.
        # (REPEATABLE READ for this one transaction: elsewhere MySQL ignores the snapshot clause)
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        conn.execute(sa.text("START TRANSACTION WITH CONSISTENT SNAPSHOT"))
        rows = conn.execute(_INNODB_TRX, {"token": token}).all()
        conn.rollback()
        if any(r.own and r.trx_query and token in r.trx_query for r in rows):
            break
        if time.monotonic() > deadline:
            raise StaleSampleError(
                f"information_schema.innodb_trx was not refreshed for {FRESH_TIMEOUT:.0f}s",
                hint="InnoDB refreshes it only after 100 ms without readers: a client that reads "
                "it more often keeps it stale; polling waits rather than guess",
            )
        time.sleep(_RETRY_SECONDS)
    writers = {
        str(r.trx_id): f"transaction {r.trx_id} of thread {r.trx_mysql_thread_id}"
        for r in rows
        if not r.own and r.trx_rows_modified
    }
    return Sample(now, executing, writers)
