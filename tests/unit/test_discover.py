"""cdc init's pure parts: the column -> Avro mapping (judged by the runtime's own start-up check),
table selection globs, and never overwriting a file without --force."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from pathlib import Path
from typing import Any

import pytest

from cdc.discover.avro import map_column, record_name
from cdc.discover.catalog import matches
from cdc.discover.scaffold import identifier, write
from cdc.errors import LocalResourceError
from cdc.mysql.types import column_info as mysql_column
from cdc.pg.columns import Column, column_infos
from cdc.plugin import ColumnInfo
from cdc.schemas.convert import compile_record
from cdc.schemas.sourcecheck import check_fields

DECIMAL_20 = {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0}
LOCAL_US = {"type": "long", "logicalType": "local-timestamp-micros"}


def pg(name: str, type_name: str, base: str, category: str = "N", **kw: Any) -> tuple[ColumnInfo, str, str]:
    col = Column(name, 0, type_name, base, category, kw.get("not_null", True), kw.get("precision"),
                 kw.get("scale"), kw.get("labels"))  # fmt: skip
    return column_infos([col])[name], base, category


PG_CASES = [
    (pg("a", "integer", "int4"), "int"),
    (pg("a", "year", "int4"), "int"),  # a domain over integer: the base type decides
    (pg("a", "bigint", "int8"), "long"),
    (pg("a", "numeric(5,2)", "numeric", precision=5, scale=2),
     {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}),
    (pg("a", "numeric", "numeric"), "string"),
    (pg("a", "timestamp without time zone", "timestamp", "D"), LOCAL_US),
    (pg("a", "timestamp with time zone", "timestamptz", "D"), {"type": "long", "logicalType": "timestamp-micros"}),
    (pg("a", "interval", "interval", "T"),
     {"type": "record", "name": "TAInterval", "fields": [{"name": "months", "type": "int"},
      {"name": "days", "type": "int"}, {"name": "micros", "type": "long"}]}),
    (pg("a", "text[]", "_text", "A"), {"type": "array", "items": "string"}),
    (pg("a", "integer[]", "_int4", "A"), {"type": "array", "items": "int"}),
    (pg("a", "uuid", "uuid", "U"), {"type": "string", "logicalType": "uuid"}),
    (pg("a", "jsonb", "jsonb", "U"), "string"),
    (pg("a", "mpaa_rating", "mpaa_rating", "E", labels=("G", "PG-13")),
     {"type": "enum", "name": "TA", "symbols": ["G", "PG_13"]}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "avro"), PG_CASES)
def test_postgres_columns_map_as_documented_and_pass_the_start_up_check(
    case: tuple[ColumnInfo, str, str], avro: Any
) -> None:
    info, base, category = case
    mapped = map_column("t", info, pg_base=base, pg_category=category)
    assert mapped.avro == avro
    schema = {"type": "record", "name": "R", "fields": [{"name": "a", "type": mapped.avro}]}
    maps = {"a": mapped.symbol_map} if mapped.symbol_map else {}
    assert check_fields("s", schema, {}, {"a": info}, what="value", symbol_maps=maps) == ([], [])
    compile_record(schema, stream="s", symbol_maps=maps)


MYSQL_CASES = [
    ("bigint(20) unsigned", DECIMAL_20, True),  # beyond long: a decision
    ("int(10) unsigned", "long", False),
    ("smallint(5) unsigned", "int", False),
    ("tinyint(1)", "int", False),
    ("bit(1)", "boolean", False),
    ("bit(5)", "int", False),
    ("double", "double", False),
    ("float", "float", False),
    ("time", "long", True),  # an interval, as signed microseconds
    ("datetime", LOCAL_US, False),
    ("year(4)", "int", False),
    ("set('a','b c')", {"type": "array", "items": "string"}, False),
    ("enum('G','PG-13')", {"type": "enum", "name": "TA", "symbols": ["G", "PG_13"]}, True),
    ("json", "string", True),
    ("binary(16)", "bytes", False),
]


@pytest.mark.parametrize(("column_type", "avro", "decide"), MYSQL_CASES)
def test_mysql_columns_map_as_documented_and_pass_the_start_up_check(
    column_type: str, avro: Any, decide: bool
) -> None:
    info = mysql_column("a", "", nullable=False, column_type=column_type)
    mapped = map_column("t", info)
    assert mapped.avro == avro
    assert bool(mapped.notes) is decide, mapped.notes
    schema = {"type": "record", "name": "R", "fields": [{"name": "a", "type": mapped.avro}]}
    maps = {"a": mapped.symbol_map} if mapped.symbol_map else {}
    problems, _ = check_fields("s", schema, {}, {"a": info}, what="value", symbol_maps=maps)
    assert problems == []


def test_a_polling_interval_is_left_out_with_the_reason() -> None:
    info = ColumnInfo("a", "INTERVAL", False, python_type=dt.timedelta)
    mapped = map_column("t", info)
    assert mapped.skip and "no exact Avro type" in mapped.notes[0]


def test_driver_types_without_a_special_rule() -> None:
    assert map_column("t", ColumnInfo("a", "VARCHAR(5)", True, python_type=str)).avro == "string"
    assert map_column("t", ColumnInfo("a", "UUID", True, python_type=uuid.UUID)).avro["logicalType"] == "uuid"
    unknown = map_column("t", ColumnInfo("a", "GEOMETRY", True))
    assert unknown.avro == "string" and "unknown" in unknown.notes[0]
    number = map_column("t", ColumnInfo("a", "NUMERIC", True, python_type=decimal.Decimal))
    assert number.avro == "string" and "unconstrained" in number.notes[0]


def test_names() -> None:
    assert record_name("film_actor") == "FilmActor"
    assert record_name("2fa codes") == "_2faCodes"
    assert identifier("Sakila-CDC") == "sakila_cdc"
    assert identifier("9lives") == "c_9lives"


def test_selection_globs() -> None:
    assert matches("public", "film", ["film*"])
    assert matches("public", "film_actor", ["film*"])
    assert not matches("public", "payment", ["film*"])
    assert matches("sales", "orders", ["sales.*"]) and not matches("public", "orders", ["sales.*"])


def test_write_never_overwrites_without_force(tmp_path: Path) -> None:
    write(tmp_path, {"connector.yaml": "a\n", "schemas/x.avsc": "{}\n"}, force=False)
    with pytest.raises(LocalResourceError) as err:
        write(tmp_path, {"connector.yaml": "b\n", "schemas/y.avsc": "{}\n"}, force=False)
    assert "connector.yaml" in err.value.message and err.value.exit_code == 9
    assert (tmp_path / "connector.yaml").read_text() == "a\n" and not (tmp_path / "schemas/y.avsc").exists()
    write(tmp_path, {"connector.yaml": "b\n"}, force=True)
    assert (tmp_path / "connector.yaml").read_text() == "b\n"
