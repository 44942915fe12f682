"""The COPY path tells the runner when its rows are with the database (what remains is the server's)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from cdc.sink.columns import record_fields
from cdc.sink.config import SinkMode
from cdc.sink.engine import sink_engine
from cdc.sink.errors import MessageRef
from cdc.sink.records import Change, Reduced
from cdc.sink.tables import TableManager
from cdc.sink.writer import TableWriter

pytestmark = pytest.mark.integration

VALUE = {
    "type": "record",
    "name": "Item",
    "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
}


def _ops(plan: Any, count: int) -> list[Reduced]:
    return [
        Reduced(
            Change(
                MessageRef("t", 0, i, {"id": i}),
                (None, "items"),
                (i,),
                {"id": i, "name": "n"},
                None,
                plan=plan,
            )
        )
        for i in range(count)
    ]


def _count(raw: psycopg.Connection[Any], table: sql.Identifier) -> int:
    row = raw.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("count", [100, 3])  # the COPY path, the statement path
def test_sent_is_called_once_the_rows_are_staged_and_before_they_are_upserted(
    pg_database: str, count: int
) -> None:
    engine = sink_engine(pg_database.replace("postgresql://", "postgresql+psycopg://", 1))
    tables = TableManager(engine, auto_create=True, auto_evolve=False)
    plan = tables.plan(None, "items", record_fields(VALUE, "v"), ("id",), inserts=True, cache_key=("items",))
    writer = TableWriter("postgresql")
    seen: list[tuple[int, int]] = []
    try:
        with engine.connect() as conn, conn.begin():
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)

            def sent() -> None:  # the staging table is this session's: its rows are visible here
                names = raw.execute(
                    "SELECT relname FROM pg_class WHERE relname LIKE 'cdc_stage_%%' AND relpersistence = 't'"
                ).fetchall()
                staged = sum(_count(raw, sql.Identifier(n)) for (n,) in names)
                seen.append((staged, _count(raw, sql.Identifier("items"))))

            assert writer.upsert(conn, plan, SinkMode.UPSERT, _ops(plan, count), sent=sent) == count
            assert _count(raw, sql.Identifier("items")) == count
        # COPY: staged, nothing upserted yet; statements: called before anything is written
        assert seen == [(count, 0)] if count >= 50 else seen == [(0, 0)]
        assert writer.copied_rows == (count if count >= 50 else 0)
    finally:
        engine.dispose()
