"""Which tables the sink writes through COPY, and the statements it composes for them."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cdc.sink.config import SinkMode
from cdc.sink.tables import TablePlan
from cdc.sink.writer import (
    _copy_statements,
    _copy_steps,
    _copyable,
    _naive_timestamp_columns,
    _picker,
    _utc_wall_clock,
    binary_types,
)


def _plan(*extra: sa.Column[object], schema: str | None = "app") -> TablePlan:
    table = sa.Table(
        'or"ders', sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("amount", sa.Numeric(10, 2)), *extra, schema=schema,
    )  # fmt: skip
    columns = tuple(c.name for c in table.columns)
    return TablePlan(table, ("id",), columns, {})


def test_plain_types_and_arrays_of_them_are_copied() -> None:
    assert _copyable(
        _plan(
            sa.Column("tags", postgresql.ARRAY(sa.Text)),
            sa.Column("at", sa.DateTime),
            sa.Column("score", postgresql.DOUBLE_PRECISION),
            sa.Column("ref", postgresql.UUID),
        )
    )


def test_types_needing_bind_processing_keep_the_statement_path() -> None:
    assert not _copyable(_plan(sa.Column("doc", postgresql.JSONB)))
    assert not _copyable(_plan(sa.Column("rating", postgresql.ENUM("G", "PG-13", name="mpaa"))))
    assert not _copyable(_plan(sa.Column("spans", postgresql.ARRAY(postgresql.INTERVAL))))
    assert not _copyable(_plan(sa.Column("opens", sa.Time(timezone=True))))


def test_statements_quote_every_identifier_and_upsert_on_the_key() -> None:
    create, copy, binary, insert, clear = _copy_statements(_plan(), SinkMode.UPSERT)
    assert binary.as_string(None).endswith("FROM STDIN (FORMAT BINARY)")
    text = insert.as_string(None)
    assert text.startswith(
        'INSERT INTO "app"."or""ders" ("id", "amount") SELECT "id", "amount" FROM "cdc_stage_'
    )
    assert text.endswith('ON CONFLICT ("id") DO UPDATE SET "amount" = EXCLUDED."amount"')
    assert "ON COMMIT DELETE ROWS AS SELECT" in create.as_string(None)
    assert copy.as_string(None).startswith('COPY "cdc_stage_') and clear.as_string(None).startswith(
        "TRUNCATE"
    )
    plain = _copy_statements(_plan(), SinkMode.INSERT)[3].as_string(None)
    assert "ON CONFLICT" not in plain
    # Different modes and shapes never share a staging table within one transaction.
    assert copy.as_string(None) != _copy_statements(_plan(), SinkMode.INSERT)[1].as_string(None)


def test_aware_values_for_timestamp_columns_become_utc_wall_clock() -> None:
    plan = _plan(sa.Column("at", sa.DateTime), sa.Column("at_tz", sa.DateTime(timezone=True)))
    assert _naive_timestamp_columns(plan) == {"at"}
    berlin = dt.timezone(dt.timedelta(hours=2))
    assert _utc_wall_clock(dt.datetime(2024, 5, 1, 12, 0, tzinfo=berlin)) == dt.datetime(2024, 5, 1, 10, 0)
    assert _utc_wall_clock(dt.datetime(2024, 5, 1, 12, 0)) == dt.datetime(2024, 5, 1, 12, 0)


def _copy_row(plan: TablePlan, row: dict[str, object]) -> list[object]:
    """The values the COPY path writes for one row, as ``_copy_upsert`` picks them."""
    steps = _copy_steps(plan)
    if steps is None:
        try:
            return list(_picker(plan.columns)(row))
        except KeyError:
            return [row.get(c) for c in plan.columns]
    return [row.get(c) if f is None else f(row.get(c)) for c, f in steps]


def test_copy_rows_are_the_row_values_in_column_order_after_converters() -> None:
    plain = _plan()
    assert _copy_steps(plain) is None  # no converter, no timestamp column: picked in C
    assert _copy_row(plain, {"amount": 1, "id": 7, "extra": "ignored"}) == [7, 1]
    assert _copy_row(plain, {"id": 7}) == [7, None]  # a missing field is NULL, as before
    one = TablePlan(plain.table, ("id",), ("id",), {})
    assert _copy_row(one, {"id": 3}) == [3]
    berlin = dt.timezone(dt.timedelta(hours=2))
    at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=berlin)
    base = _plan(sa.Column("at", sa.DateTime), sa.Column("ref", sa.Text))
    converted = TablePlan(base.table, ("id",), base.columns, {"ref": str, "at": lambda v: v})
    assert _copy_row(converted, {"id": 1, "amount": 2, "at": at, "ref": 5}) == [
        1,
        2,
        dt.datetime(2024, 5, 1, 10, 0),  # converter first, then the UTC wall clock
        "5",
    ]
    assert _copy_row(converted, {"id": 1, "amount": None, "at": None, "ref": 5}) == [1, None, None, "5"]


def test_binary_copy_only_when_every_column_type_takes_its_kind_as_decoded() -> None:
    base = _plan(sa.Column("at", sa.DateTime), sa.Column("tags", postgresql.ARRAY(sa.Text)))
    kinds = {"id": "long", "amount": "decimal", "at": "timestamp", "tags": "array<string>"}
    plan = TablePlan(base.table, ("id",), base.columns, {}, kinds)
    types = {
        "id": "bigint",
        "amount": "numeric",
        "at": "timestamp without time zone",
        "tags": "text[]",
        "unused": "smallint",
    }
    assert binary_types(plan, types) == ["bigint", "numeric", "timestamp without time zone", "text[]"]
    # A long into an integer column could overflow on the client: text COPY, the server refuses it.
    assert binary_types(plan, {**types, "id": "integer"}) is None
    assert binary_types(plan, {**types, "amount": "real"}) is None  # float4 rounding: keep text
    assert binary_types(plan, {**types, "at": "my_domain"}) is None
    assert (
        binary_types(TablePlan(base.table, ("id",), base.columns, {}, {**kinds, "amount": "double"}), types)
        is None
    )
    # A converter changes the values' type: text COPY as before.
    assert binary_types(TablePlan(base.table, ("id",), base.columns, {"amount": str}, kinds), types) is None
    assert binary_types(TablePlan(base.table, ("id",), base.columns, {}, {}), types) is None
