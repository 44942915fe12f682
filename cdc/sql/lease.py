"""Single-instance leases held in the source database (released when the session dies).

PostgreSQL: ``pg_try_advisory_lock``; MySQL/MariaDB: ``GET_LOCK``; SQLite: an exclusive
``flock`` on a file beside the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from typing import IO

import sqlalchemy as sa

from cdc.errors import AlreadyRunningError, LeaseHeldError
from cdc.plugin import Lease
from cdc.sql import engines


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for advisory locks."""
    return int.from_bytes(hashlib.sha256(f"cdc-lease:{name}".encode()).digest()[:8], "big", signed=True)


class _SessionLease(Lease):
    def __init__(self, conn: sa.Connection) -> None:
        self._conn: sa.Connection | None = conn

    def release(self) -> None:
        if self._conn is not None:
            # The lock dies with the session. invalidate() closes the database connection now;
            # close() alone would park it, lock and all, in the pool until the engine is disposed.
            self._conn.invalidate()
            self._conn.close()
            self._conn = None


class _FileLease(Lease):
    def __init__(self, fh: IO[str]) -> None:
        self._fh: IO[str] | None = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _refuse(name: str) -> LeaseHeldError:
    return LeaseHeldError(
        f"another instance of connector {name!r} is running (it holds the lease)",
        hint="stop the other instance first (two instances would publish the same changes twice), "
        "or set runtime.standby: true to run this one as its hot standby",
    )


def acquire(engine: sa.Engine, name: str) -> Lease:
    dialect = engine.dialect.name
    if dialect == "sqlite":
        db = engine.url.database
        path = (
            f"{db}.cdc-lease"
            if db and db != ":memory:"
            else os.path.join(tempfile.gettempdir(), f"cdc-lease-{lock_key(name)}")
        )
        fh = open(path, "w")  # noqa: SIM115 - held open for the lease's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise _refuse(name) from None
        fh.write(str(os.getpid()))
        fh.flush()
        return _FileLease(fh)
    params: dict[str, object]
    if dialect == "postgresql":
        query, params = "SELECT pg_try_advisory_lock(:k) = true", {"k": lock_key(name)}
    elif dialect in ("mysql", "mariadb"):
        query, params = "SELECT GET_LOCK(:n, 0) = 1", {"n": f"cdc:{name}"[:64]}
    else:
        raise AlreadyRunningError(f"no lease mechanism for dialect {dialect!r}; use delivery: exactly_once")
    try:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except sa.exc.DBAPIError as exc:  # the database is down: retriable, like any other connect
        raise engines.translate(exc, f"taking the lease of connector {name!r}") from None
    try:
        got = bool(conn.execute(sa.text(query), params).scalar())
    except sa.exc.DBAPIError as exc:
        conn.invalidate()
        conn.close()
        raise engines.translate(exc, f"taking the lease of connector {name!r}") from None
    if not got:
        conn.close()
        raise _refuse(name)
    return _SessionLease(conn)
