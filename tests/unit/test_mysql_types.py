"""cdc.mysql.types (column descriptions, canonical values) and the start-up check built on them."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal
from typing import Any

import pytest

from cdc.mysql.types import column_info, decode_text, normalizer, parse_column_type, row_normalizer
from cdc.plugin import ColumnInfo
from cdc.schemas.sourcecheck import check_fields

U64 = 18446744073709551615


def col(column_type: str, name: str = "c", nullable: bool = True, **kw: Any) -> ColumnInfo:
    base = parse_column_type(column_type)[0]
    return column_info(name, base, column_type=column_type, nullable=nullable, **kw)


def norm(info: ColumnInfo, value: Any, zero_dates: Any = "error") -> Any:
    f = normalizer(info, zero_dates)
    return value if f is None else f(value)


def check(info: ColumnInfo, avro: Any, **kw: Any) -> tuple[list[str], list[str]]:
    schema = {"type": "record", "name": "R", "fields": [{"name": info.name, "type": avro}]}
    return check_fields("s", schema, {}, {info.name: info}, what="value", **kw)


# --- descriptions ---------------------------------------------------------------------------


def test_parse_column_type() -> None:
    assert parse_column_type("bigint(20) unsigned") == ("bigint", ["20"], True)
    assert parse_column_type("int(10) unsigned zerofill") == ("int", ["10"], True)
    assert parse_column_type("decimal(65,30)") == ("decimal", ["65", "30"], False)
    assert parse_column_type("set('Trailers','it''s','a,b')") == ("set", ["Trailers", "it's", "a,b"], False)
    assert parse_column_type("ENUM('G','PG-13')") == ("enum", ["G", "PG-13"], False)
    assert parse_column_type("double precision") == ("double precision", [], False)


def test_integer_ranges_and_types() -> None:
    assert col("bigint(20) unsigned").value_range == (0, U64)
    assert col("bigint(20)").value_range == (-(2**63), 2**63 - 1)
    assert col("tinyint(3) unsigned").value_range == (0, 255)
    assert col("mediumint(9)").value_range == (-(2**23), 2**23 - 1)
    assert col("bit(3)").value_range == (0, 7) and col("bit(3)").length == 3
    assert col("bit(64)").value_range == (0, U64)
    assert col("year(4)").value_range == (0, 2155) and col("year(4)").python_type is int
    # a binlog source has no column type string, only the flags
    assert column_info("c", "bigint", nullable=False, unsigned=True).value_range == (0, U64)
    assert column_info("c", "bigint", nullable=False, unsigned=True).type_name == "bigint unsigned"


def test_other_descriptions() -> None:
    d = col("decimal(65,30)")
    assert (d.python_type, d.precision, d.scale) == (Decimal, 65, 30)
    t = col("time(6)")
    assert (t.python_type, t.fsp, t.data_type) == (dt.timedelta, 6, "time")
    assert col("timestamp(3)").timezone_aware is True and col("datetime").timezone_aware is False
    s = col("set('a','b')")
    assert (s.python_type, s.enum_labels) == (list, ("a", "b"))
    assert col("enum('x','y')").enum_labels == ("x", "y")
    assert (col("binary(4)").length, col("binary(4)").python_type) == (4, bytes)
    assert col("float").python_type is float and col("double").python_type is float
    assert col("uuid").python_type is str and col("inet6").python_type is str
    assert col("varchar(10)", charset="UTF8MB4").charset == "utf8mb4"
    assert col("boolean").value_range == (-128, 127)


# --- canonical values ------------------------------------------------------------------------


def test_set_members_in_declared_order() -> None:
    s = col("set('Trailers','Commentaries','Deleted Scenes','Behind the Scenes')")
    assert norm(s, "Deleted Scenes,Trailers") == ["Trailers", "Deleted Scenes"]
    assert norm(s, "") == []
    assert norm(s, {"Behind the Scenes", "Commentaries"}) == ["Commentaries", "Behind the Scenes"]
    assert norm(s, 0b1001) == ["Trailers", "Behind the Scenes"]  # the stored bitmask
    assert norm(s, b"Commentaries") == ["Commentaries"]
    assert norm(s, ["trailers"]) == ["Trailers"]  # MySQL matches members case-insensitively
    with pytest.raises(ValueError, match="not among"):
        norm(s, "Bloopers")


def test_bit_float_binary_enum_uuid_text() -> None:
    assert norm(col("bit(3)"), b"\x05") == 5
    assert norm(col("bit(64)"), b"\xff" * 8) == U64
    assert norm(col("bit(1)"), True) == 1
    assert norm(col("bit(1)"), 1) == 1
    assert norm(col("bit(3)"), "101") == 5  # python-mysql-replication's rendering
    with pytest.raises(ValueError, match="binary digits"):
        norm(col("bit(3)"), "12")
    f32 = norm(col("float"), 3.40282e38)  # what the text protocol shows: rounded to the float32 value
    assert struct.unpack("<f", struct.pack("<f", f32))[0] == f32
    assert norm(col("float"), 3.4028234663852886e38) == 3.4028234663852886e38
    assert norm(col("binary(4)"), b"ab") == b"ab\x00\x00"  # the binlog strips the padding
    assert norm(col("enum('x','y')"), 2) == "y" and norm(col("enum('x','y')"), 0) == ""
    u = uuid.UUID("123E4567-E89B-12D3-A456-426614174000")
    assert norm(col("uuid"), u) == str(u) and norm(col("uuid"), str(u).upper()) == str(u)
    assert norm(col("varchar(5)", charset="latin1"), b"\x80\x81\xe9") == "€\x81é"
    assert norm(col("text", charset="utf8mb4"), "😀".encode()) == "😀"
    assert decode_text("é".encode("utf-16-be"), "ucs2") == "é"
    with pytest.raises(ValueError, match="no Python codec"):
        decode_text(b"x", "nonsense")
    assert normalizer(col("time(6)")) is None and normalizer(col("bigint(20) unsigned")) is None


def test_zero_dates_and_timestamps() -> None:
    for t in ("date", "datetime(6)", "timestamp"):
        assert norm(col(t), "0000-00-00") == "0000-00-00"  # the converter turns it into a row error
        assert norm(col(t), "0000-00-00", "null") is None
    assert norm(col("timestamp(6)"), dt.datetime(2020, 1, 1)) == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert norm(col("datetime"), dt.datetime(2020, 1, 1)).tzinfo is None


def test_row_normalizer_touches_only_what_needs_it() -> None:
    cols = {"s": col("set('a','b')", "s"), "n": col("int", "n"), "t": col("time", "t")}
    row = {"s": "b,a", "n": 5, "t": dt.timedelta(hours=-1), "x": "extra"}
    assert row_normalizer(cols)(row) == {"s": ["a", "b"], "n": 5, "t": dt.timedelta(hours=-1), "x": "extra"}
    assert row_normalizer(cols)({"s": None}) == {"s": None}


# --- the start-up check ----------------------------------------------------------------------


def test_check_integers() -> None:
    u64 = col("bigint(20) unsigned", nullable=False)
    problems, _ = check(u64, "long")
    assert problems and "decimal(20,0) or string" in problems[0] and "18446744073709551615" in problems[0]
    assert check(u64, {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0}) == ([], [])
    assert check(u64, {"type": "bytes", "logicalType": "decimal", "precision": 19, "scale": 0})[0]
    assert check(u64, "string") == ([], [])
    assert "declare long" in check(col("int(10) unsigned", nullable=False), "int")[0][0]
    assert check(col("int(10) unsigned", nullable=False), "long") == ([], [])
    assert check(col("year(4)", nullable=False), "int") == ([], [])


def test_check_bit() -> None:
    assert check(col("bit(1)", nullable=False), "boolean") == ([], [])
    assert check(col("bit(3)", nullable=False), "long") == ([], [])
    assert check(col("bit(3)", nullable=False), "boolean")[0]
    assert check(col("bit(3)", nullable=False), "bytes")[0]
    problems, warnings = check(col("tinyint(1)", nullable=False), "boolean")
    assert not problems and "0/1" in warnings[0]


def test_check_time() -> None:
    t = col("time(6)", nullable=False)
    assert check(t, "long") == ([], [])
    problems, warnings = check(t, {"type": "long", "logicalType": "time-micros"})
    assert not problems and "interval" in warnings[0]
    assert check(t, "int")[0]
    assert check(t, "string")[0]
    _, warnings = check(t, {"type": "int", "logicalType": "time-millis"})
    assert any("sub-millisecond" in w for w in warnings)


def test_check_set_enum_float_fixed() -> None:
    s = col("set('a','b')", nullable=False)
    assert check(s, {"type": "array", "items": "string"}) == ([], [])
    items = {"type": "enum", "name": "E", "symbols": ["a", "b"]}
    assert check(s, {"type": "array", "items": items}) == ([], [])
    assert "['b']" in check(s, {"type": "array", "items": {**items, "symbols": ["a"]}})[0][0]
    assert check(s, {"type": "array", "items": "long"})[0]
    assert check(s, {"type": "enum", "name": "E", "symbols": ["a", "b"]})[0]
    e = col("enum('G','PG-13')", nullable=False)
    assert check(
        e, {"type": "enum", "name": "E", "symbols": ["G", "PG_13"]}, symbol_maps={"c": {"PG-13": "PG_13"}}
    ) == ([], [])
    assert check(col("double", nullable=False), "double") == ([], [])
    assert "declare double" in check(col("double", nullable=False), "float")[0][0]
    assert check(col("double", nullable=False), "string") == ([], [])  # rendered with repr()
    assert check(col("float", nullable=False), "float") == ([], [])
    assert check(col("binary(4)", nullable=False), {"type": "fixed", "name": "F", "size": 4}) == ([], [])
    assert check(col("binary(4)", nullable=False), {"type": "fixed", "name": "F", "size": 3})[0]
    assert check(col("varbinary(4)", nullable=False), {"type": "fixed", "name": "F", "size": 4})[0]


def test_check_a_postgres_interval_is_not_microseconds() -> None:
    interval = ColumnInfo("c", "interval", False, python_type=dt.timedelta)
    (problem,) = check(interval, "long")[0]
    assert "folds months into days" in problem
