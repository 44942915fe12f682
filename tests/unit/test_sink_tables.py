"""Tables from Avro: column types per dialect, auto-create, additive evolution, refused changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from cdc.errors import SchemaError
from cdc.sink.columns import record_fields, sql_type
from cdc.sink.engine import sink_engine
from cdc.sink.errors import TableMismatchError
from cdc.sink.tables import TableManager

VALUE: dict[str, Any] = {
    "type": "record",
    "name": "V",
    "namespace": "n",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "code", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 3}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": ["null", {"type": "long", "logicalType": "local-timestamp-micros"}]},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "blob", "type": "bytes"},
        {"name": "ok", "type": "boolean"},
        {"name": "ratio", "type": "float"},
        {"name": "score", "type": "double"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "kind2", "type": "Kind"},
    ],
}


def ddl(dialect: Any, keys: tuple[str, ...] = ("id", "code")) -> str:
    name = "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name
    columns = [
        sa.Column(
            f.name, sql_type(f, name, key=f.name in keys), primary_key=f.name in keys, nullable=f.nullable
        )
        for f in record_fields(VALUE, "v")
    ]
    return str(sa.schema.CreateTable(sa.Table("t", sa.MetaData(), *columns)).compile(dialect=dialect))


def test_postgresql_types() -> None:
    text = ddl(postgresql.dialect())
    for expected in (
        "id BIGINT NOT NULL",
        "code TEXT NOT NULL",
        "qty INTEGER NOT NULL",
        "price NUMERIC(12, 3) NOT NULL",
        "at TIMESTAMP WITH TIME ZONE NOT NULL",
        "local TIMESTAMP WITHOUT TIME ZONE,",
        "day DATE NOT NULL",
        "ref UUID NOT NULL",
        "blob BYTEA NOT NULL",
        "ok BOOLEAN NOT NULL",
        "ratio FLOAT(24) NOT NULL",
        "score DOUBLE PRECISION NOT NULL",
        "tags TEXT[] NOT NULL",
        "attrs JSONB NOT NULL",
        "kind TEXT NOT NULL",
        "kind2 TEXT NOT NULL",
        "PRIMARY KEY (id, code)",
    ):
        assert expected in text, f"{expected!r} not in {text}"


def test_mysql_types() -> None:
    text = ddl(mysql.dialect())
    for expected in (
        "code VARCHAR(255) NOT NULL",  # a key column must be indexable
        "price NUMERIC(12, 3) NOT NULL",
        "at DATETIME(6) NOT NULL",
        "local DATETIME(6)",
        "ref VARCHAR(36) NOT NULL",
        "`blob` LONGBLOB NOT NULL",  # a reserved word, quoted by SQLAlchemy
        "tags TEXT NOT NULL",  # JSON text
        "attrs TEXT NOT NULL",
    ):
        assert expected in text, f"{expected!r} not in {text}"


def test_unions_of_several_types_and_array_keys_are_refused() -> None:
    bad = {"type": "record", "name": "B", "fields": [{"name": "x", "type": ["null", "long", "string"]}]}
    with pytest.raises(SchemaError, match=r"B\.x: a union of several non-null types"):
        record_fields(bad, "B")
    arr = record_fields(VALUE, "v")[12]
    with pytest.raises(SchemaError, match="cannot be a primary key"):
        sql_type(arr, "postgresql", key=True)


def fields(extra: list[dict[str, Any]] | None = None, drop: str | None = None) -> list[Any]:
    schema = {**VALUE, "fields": [f for f in VALUE["fields"] if f["name"] != drop] + (extra or [])}
    return record_fields(schema, "v")


@pytest.fixture
def manager(tmp_path: Path) -> TableManager:
    return TableManager(sink_engine(f"sqlite:///{tmp_path / 't.db'}"), auto_create=True, auto_evolve=True)


def test_auto_create_then_add_an_optional_field(manager: TableManager) -> None:
    plan = manager.plan(None, "things", fields(), ("id",), inserts=True, cache_key=(1,))
    assert [c.name for c in plan.table.primary_key.columns] == ["id"]
    assert set(plan.converters) == {"at", "ref", "tags", "attrs"}  # UTC wall clock, uuid text, JSON text
    new = {"name": "color", "type": ["null", "string"], "default": None}
    plan2 = manager.plan(None, "things", fields([new]), ("id",), inserts=True, cache_key=(2,))
    assert plan2.table.c.color.nullable
    columns = {c["name"] for c in sa.inspect(manager.engine).get_columns("things")}
    assert "color" in columns
    # A second instance reading the same schema finds nothing to do.
    other = TableManager(manager.engine, auto_create=True, auto_evolve=True)
    assert (
        other.plan(None, "things", fields([new]), ("id",), inserts=True, cache_key=(2,)).columns
        == plan2.columns
    )


def test_a_new_required_field_and_a_changed_type_are_refused(manager: TableManager) -> None:
    manager.plan(None, "things", fields(), ("id",), inserts=True, cache_key=(1,))
    required = {"name": "weight", "type": "double"}
    with pytest.raises(TableMismatchError, match=r"new field\(s\) \['weight'\] are required"):
        manager.plan(None, "things", fields([required]), ("id",), inserts=True, cache_key=(2,))
    changed = [{**f, "type": "string"} if f["name"] == "qty" else f for f in VALUE["fields"]]
    with pytest.raises(TableMismatchError, match="column 'qty' is INTEGER but the field is Avro string"):
        manager.plan(
            None,
            "things",
            record_fields({**VALUE, "fields": changed}, "v"),
            ("id",),
            inserts=True,
            cache_key=(3,),
        )
    with pytest.raises(TableMismatchError, match="'code' is NOT NULL without a default"):
        manager.plan(None, "things", fields(drop="code"), ("id",), inserts=True, cache_key=(4,))
    # Update mode never inserts: a missing NOT NULL column does not matter there.
    manager.plan(None, "things", fields(drop="code"), ("id",), inserts=False, cache_key=(5,))


def test_missing_table_without_auto_create_and_a_key_that_is_not_unique(tmp_path: Path) -> None:
    engine = sink_engine(f"sqlite:///{tmp_path / 't.db'}")
    strict = TableManager(engine, auto_create=False, auto_evolve=False)
    with pytest.raises(SchemaError, match="does not exist"):
        strict.plan(None, "things", fields(), ("id",), inserts=True, cache_key=(1,))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE things (id INTEGER, code TEXT)")
    with pytest.raises(SchemaError, match="neither its primary key"):
        strict.plan(None, "things", fields(), ("id",), inserts=True, cache_key=(2,))


def test_mysql_value_shapes_into_native_columns() -> None:
    import datetime as dt
    from decimal import Decimal

    from cdc.sink.columns import FieldSpec, compatible, converter

    micros = FieldSpec("t", "long", True, True)
    for column in (postgresql.INTERVAL(), mysql.TIME(fsp=6)):
        assert compatible(micros, column)
        conv = converter(micros, column, "postgresql")
        assert conv is not None and conv(-3020399000000) == -dt.timedelta(hours=838, minutes=59, seconds=59)
        assert conv(None) is None
    members = FieldSpec("s", "array", True, True, item=FieldSpec("item", "string", False, False))
    assert compatible(members, mysql.SET("a", "b"))
    conv = converter(members, mysql.SET("a", "b"), "mysql")
    assert conv is not None and conv(["a", "b"]) == "a,b" and conv([]) == ""
    assert not compatible(
        FieldSpec("s", "array", True, True, item=FieldSpec("i", "long", False, False)), mysql.SET("a")
    )
    u64 = FieldSpec("u", "decimal", True, True, precision=20, scale=0)
    assert compatible(u64, mysql.BIGINT(unsigned=True))
    conv = converter(u64, mysql.BIGINT(unsigned=True), "mysql")
    assert conv is not None and conv(Decimal("18446744073709551615")) == 18446744073709551615
    assert not compatible(FieldSpec("u", "decimal", True, True, precision=20, scale=2), mysql.BIGINT())
    assert compatible(FieldSpec("y", "int", True, True), mysql.YEAR())
    assert not compatible(FieldSpec("y", "string", True, True), mysql.YEAR())
    assert compatible(FieldSpec("b", "boolean", True, True), mysql.BIT(1))
    assert not compatible(FieldSpec("b", "boolean", True, True), mysql.YEAR())
    assert compatible(FieldSpec("b", "long", True, True), mysql.BIT(3))


def test_database_text_into_typed_postgresql_columns() -> None:
    from cdc.sink.columns import FieldSpec, compatible, converter, database_text

    text = FieldSpec("x", "string", True, True)
    for column in (
        sa.Numeric(),
        sa.Time(timezone=True),
        postgresql.JSONB(),
        postgresql.INET(),
        postgresql.INT4RANGE(),
    ):
        assert database_text(text, column, "postgresql") and compatible(text, column, "postgresql"), column
        assert not database_text(text, column, "mysql")
    # a type with an exact Avro counterpart still refuses a string at start-up
    for column in (sa.Integer(), sa.Boolean(), sa.Double(), sa.Time(), sa.DateTime(), sa.LargeBinary()):
        assert not compatible(text, column, "postgresql"), column
    (interval,) = record_fields(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {
                    "name": "iv",
                    "type": {
                        "type": "record",
                        "name": "Interval",
                        "fields": [
                            {"name": "months", "type": "int"},
                            {"name": "days", "type": "int"},
                            {"name": "micros", "type": "long"},
                        ],
                    },
                }
            ],
        },
        "t",
    )
    assert interval.interval and compatible(interval, postgresql.INTERVAL(), "postgresql")
    conv = converter(interval, postgresql.INTERVAL(), "postgresql")
    assert (
        conv is not None and conv({"months": 14, "days": -3, "micros": 1}) == "14 mons -3 days 1 microseconds"
    )
    (nullable_items,) = record_fields(
        {
            "type": "record",
            "name": "A",
            "fields": [{"name": "a", "type": {"type": "array", "items": ["null", "int"]}}],
        },
        "t",
    )
    assert (
        nullable_items.kind == "array"
        and nullable_items.item is not None
        and nullable_items.item.kind == "int"
    )
