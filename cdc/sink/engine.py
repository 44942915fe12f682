"""The target database engine: the project's engine setup plus what a sink needs on SQLite."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cdc.sql.engines import create_engine


def sink_engine(url: str) -> sa.Engine:
    """An engine for writing; on SQLite, real transactions with SAVEPOINT and a busy timeout.

    pysqlite's legacy transaction handling defers BEGIN and breaks SAVEPOINT, so the driver is
    put in autocommit mode and SQLAlchemy emits ``BEGIN IMMEDIATE`` itself (taking the write
    lock up front also keeps two sink processes from deadlocking on a lock upgrade).
    """
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
