"""cdc.schemas.convert: exact mapping of driver values onto Avro schemas, checked through fastavro.

The whole module runs under America/New_York (see ``_new_york``) so that any accidental use of
the process's local time zone - fastavro's trap for naive datetimes - shows up as a wrong value.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import os
import struct
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, cast

import fastavro
import pytest

from cdc.errors import RowError, SchemaError
from cdc.schemas.convert import RecordConverter, compile_record

UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))
STREAM, KEY = "films", {"id": 7}


@pytest.fixture(scope="module", autouse=True)
def _new_york() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def record(*fields: dict[str, Any], name: str = "Row") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test", "fields": list(fields)}


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def logical(base: str, lt: str, **extra: Any) -> dict[str, Any]:
    return {"type": base, "logicalType": lt, **extra}


def dec(precision: int, scale: int, size: int | None = None) -> dict[str, Any]:
    if size is None:
        return logical("bytes", "decimal", precision=precision, scale=scale)
    return {
        "type": "fixed",
        "name": "Dec",
        "size": size,
        "logicalType": "decimal",
        "precision": precision,
        "scale": scale,
    }


def conv1(type_: Any, value: Any, **kw: Any) -> Any:
    """Convert one value through a one-field record."""
    return compile_record(record(fld("f", type_)), stream=STREAM, **kw)({"f": value}, KEY)["f"]


def err1(type_: Any, value: Any, field: str = "f", **kw: Any) -> RowError:
    with pytest.raises(RowError) as info:
        conv1(type_, value, **kw)
    err = info.value
    assert (err.stream, err.key, err.field) == (STREAM, KEY, field)
    assert STREAM in str(err)
    assert "'id': 7" in str(err)
    assert repr(field) in str(err)
    return err


def encode(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), datum)
    return buf.getvalue()


def decode(schema: dict[str, Any], data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


def roundtrip(schema: dict[str, Any], row: dict[str, Any], **kw: Any) -> Any:
    out = compile_record(schema, stream=STREAM, **kw)(row, KEY)
    return decode(schema, encode(schema, out))


def strip_logical(schema: Any) -> Any:
    """The same schema with every logicalType removed: what fastavro writes without conversion."""
    if isinstance(schema, list):
        return [strip_logical(s) for s in schema]
    if isinstance(schema, dict):
        return {k: strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    return schema


# --- null, primitives ------------------------------------------------------------------------


def test_null_only_in_a_nullable_union() -> None:
    assert conv1(["null", "long"], None) is None
    assert conv1(["long", "null"], None) is None
    assert "null in a non-nullable field" in err1("long", None).reason
    assert "null in a non-nullable field" in err1("string", None).reason
    assert "null in a non-nullable field" in err1(["long", "string"], None).reason


def test_boolean_accepts_bool_and_mysql_tinyint() -> None:
    assert conv1("boolean", True) is True
    assert conv1("boolean", False) is False
    assert conv1("boolean", 1) is True
    assert conv1("boolean", 0) is False
    for bad in (2, -1, "true", 1.0, None):
        err1("boolean", bad)


def test_int_and_long_ranges() -> None:
    assert conv1("int", 2**31 - 1) == 2**31 - 1
    assert conv1("int", -(2**31)) == -(2**31)
    assert conv1("long", 2**63 - 1) == 2**63 - 1
    assert "range -2147483648..2147483647" in err1("int", 2**31).reason
    assert "overflows long" in err1("long", -(2**63) - 1).reason


def test_int_is_strict() -> None:
    class Big(int):
        pass

    assert type(conv1("long", Big(5))) is int
    for bad in (True, Decimal("1"), Decimal("1.0"), 1.0, "1"):
        err1("long", bad)
    assert "declare a decimal" in err1("int", Decimal("2")).reason


def test_float_and_double() -> None:
    assert conv1("double", 1.5) == 1.5
    assert conv1("double", 3) == 3.0
    assert conv1("float", 0.25) == 0.25
    assert conv1("double", float("inf")) == float("inf")
    assert "not exactly a double" in err1("double", 2**53 + 1).reason
    assert "not exactly a float" in err1("float", 2**24 + 1).reason
    assert "overflows a float" in err1("float", 1e39).reason
    assert "overflows a double" in err1("double", 2**1100).reason
    assert conv1("float", 0.1) == struct.unpack("<f", struct.pack("<f", 0.1))[0]  # narrowed, as declared
    assert "declare a decimal or string" in err1("double", Decimal("1.5")).reason
    err1("double", True)


def test_string_conversions() -> None:
    class Color(enum.Enum):
        RED = "red"

    class Size(enum.StrEnum):
        XL = "xl"

    u = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert conv1("string", "Ünïcode") == "Ünïcode"
    assert conv1("string", u) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert conv1("string", {"b": [1, 2], "a": "é"}) == '{"b":[1,2],"a":"é"}'  # key order kept, compact
    assert conv1("string", [1, None]) == "[1,null]"
    assert conv1("string", Decimal("1.10")) == "1.10"
    assert conv1("string", Decimal("NaN")) == "NaN"
    assert conv1("string", Decimal("-Infinity")) == "-Infinity"
    assert conv1("string", Decimal("0.0000001")) == "0.0000001"  # as the database prints it, not 1E-7
    assert conv1("string", 42) == "42"
    assert conv1("string", Color.RED) == "red"
    assert type(conv1("string", Size.XL)) is str


def test_string_rejects_inexact_or_ambiguous_values() -> None:
    assert "timestamp logical type" in err1("string", dt.datetime(2024, 1, 1, tzinfo=UTC)).reason
    assert "date/timestamp" in err1("string", dt.date(2024, 1, 1)).reason
    assert "declare bytes" in err1("string", b"x").reason
    err1("string", True)
    assert "serialized exactly" in err1("string", {"x": Decimal("1")}).reason
    assert "serialized exactly" in err1("string", {"x": float("nan")}).reason


def test_bytes() -> None:
    assert conv1("bytes", b"\x00\xff") == b"\x00\xff"
    assert type(conv1("bytes", bytearray(b"ab"))) is bytes
    assert conv1("bytes", memoryview(b"cd")) == b"cd"
    err1("bytes", "ab")


def test_fixed_needs_the_exact_size() -> None:
    f = {"type": "fixed", "name": "Hash", "size": 4}
    assert conv1(f, b"abcd") == b"abcd"
    assert "3 bytes for fixed test.Hash of size 4" in err1(f, b"abc").reason


# --- enums ---------------------------------------------------------------------------------------

RATING = {"type": "enum", "name": "Rating", "symbols": ["G", "PG", "PG_13", "R"]}


def test_enum_symbols_and_symbol_maps() -> None:
    class Rating(enum.Enum):
        R = "R"

    assert conv1(RATING, "PG") == "PG"
    assert conv1(RATING, Rating.R) == "R"
    assert conv1(RATING, "PG-13", symbol_maps={"f": {"PG-13": "PG_13"}}) == "PG_13"
    reason = err1(RATING, "NC-17", symbol_maps={"f": {"PG-13": "PG_13"}}).reason
    assert "'NC-17'" in reason
    assert "G, PG, PG_13, R" in reason
    err1(RATING, 3)


def test_symbol_maps_are_checked_at_compile_time() -> None:
    with pytest.raises(SchemaError, match="not symbols"):
        compile_record(record(fld("f", RATING)), stream=STREAM, symbol_maps={"f": {"PG-13": "PG-13"}})
    with pytest.raises(SchemaError, match="no enum field"):
        compile_record(record(fld("f", RATING)), stream=STREAM, symbol_maps={"rating": {"x": "G"}})


def test_symbol_map_of_a_nested_enum_by_dotted_path() -> None:
    inner = {"type": "record", "name": "Meta", "fields": [fld("rating", RATING)]}
    convert = compile_record(
        record(fld("meta", inner)), stream=STREAM, symbol_maps={"meta.rating": {"PG-13": "PG_13"}}
    )
    assert convert({"meta": {"rating": "PG-13"}}) == {"meta": {"rating": "PG_13"}}


# --- decimals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unscaled", "expected"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (-1, b"\xff"),
        (127, b"\x7f"),
        (128, b"\x00\x80"),
        (-128, b"\x80"),
        (-129, b"\xff\x7f"),
    ],
)
def test_decimal_bytes_are_minimal_twos_complement(unscaled: int, expected: bytes) -> None:
    assert conv1(dec(10, 0), unscaled) == expected
    assert conv1(dec(10, 2), Decimal(unscaled).scaleb(-2)) == expected


def test_decimal_scaling_is_exact() -> None:
    assert conv1(dec(10, 2), Decimal("123.45")) == (12345).to_bytes(2, "big", signed=True)
    assert conv1(dec(10, 1), Decimal("1.50")) == b"\x0f"  # trailing zero: nothing lost
    assert conv1(dec(10, 2), Decimal("5")) == (500).to_bytes(2, "big")  # fewer digits: scaled up
    assert conv1(dec(10, 2), 7) == (700).to_bytes(2, "big")
    assert conv1(dec(10, 2), Decimal("-0.00")) == b"\x00"
    assert conv1(dec(10, 2), Decimal("0E+1000")) == b"\x00"
    assert conv1(dec(10, 2), Decimal("99999999.99")) == (9999999999).to_bytes(5, "big", signed=True)


def test_decimal_never_rounds_or_overflows() -> None:
    assert "would be rounded" in err1(dec(10, 2), Decimal("1.234")).reason
    assert "would be rounded" in err1(dec(10, 2), Decimal("1E-1000000")).reason
    assert "overflow decimal(10,2)" in err1(dec(10, 2), Decimal("100000000.00")).reason
    assert "overflow decimal(10,2)" in err1(dec(10, 2), Decimal("1E+1000000")).reason
    assert "overflow decimal(4,0)" in err1(dec(4, 0), -10000).reason
    for special in ("NaN", "sNaN", "Infinity", "-Infinity"):
        assert special in err1(dec(10, 2), Decimal(special)).reason
    assert "float is not exact" in err1(dec(10, 2), 1.5).reason
    err1(dec(10, 2), True)
    err1(dec(10, 2), "1.5")


def test_fixed_decimal_is_sign_extended() -> None:
    assert conv1(dec(18, 4, size=8), Decimal("-0.0001")) == b"\xff" * 8
    assert conv1(dec(18, 4, size=8), Decimal("1")) == (10000).to_bytes(8, "big")
    with pytest.raises(SchemaError, match="does not fit fixed size 8"):
        compile_record(record(fld("f", dec(19, 0, size=8))), stream=STREAM)


@pytest.mark.parametrize(("precision", "scale"), [(0, 0), (5, 6), (5, -1), ("5", 2)])
def test_invalid_decimal_schemas(precision: Any, scale: Any) -> None:
    with pytest.raises(SchemaError, match="invalid decimal"):
        compile_record(
            record(fld("f", logical("bytes", "decimal", precision=precision, scale=scale))), stream=STREAM
        )


# --- timestamps, dates, times --------------------------------------------------------------------

TS_US, TS_MS = logical("long", "timestamp-micros"), logical("long", "timestamp-millis")
LTS_US, LTS_MS = logical("long", "local-timestamp-micros"), logical("long", "local-timestamp-millis")


def test_the_module_runs_in_new_york() -> None:
    assert time.strftime("%Z", time.localtime(0)) in ("EST", "EDT")


def test_aware_timestamps_are_exact_in_any_zone() -> None:
    instant = dt.datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC)
    expected = 1704110400_000001
    assert conv1(TS_US, instant) == expected
    assert conv1(TS_US, instant.astimezone(PLUS2)) == expected
    assert conv1(TS_US, instant.astimezone(zoneinfo.ZoneInfo("Asia/Kolkata"))) == expected
    assert conv1(TS_US, dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    assert conv1(TS_US, dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == 253402300799999999
    assert conv1(TS_MS, dt.datetime(2024, 1, 1, 14, 0, 0, 5000, tzinfo=PLUS2)) == 1704110400_005
    assert conv1(logical("long", "timestamp-nanos"), instant) == expected * 1000


def test_timestamp_rejects_naive_and_truncation() -> None:
    reason = err1(TS_US, dt.datetime(2024, 1, 1, 12)).reason
    assert "naive datetime for timestamp-micros" in reason
    assert "time zone" in reason
    assert "local-timestamp-micros" in reason
    assert "truncate" in err1(TS_MS, dt.datetime(2024, 1, 1, 0, 0, 0, 1500, tzinfo=UTC)).reason
    assert "zero or invalid date '0000-00-00 00:00:00'" in err1(TS_US, "0000-00-00 00:00:00").reason
    assert "epoch" in err1(TS_US, 1704110400000000).reason
    err1(TS_US, dt.date(2024, 1, 1))


def test_local_timestamps_keep_the_wall_clock() -> None:
    # 02:30 on 2024-03-10 does not exist in New York (DST gap): no local zone may be consulted.
    naive = dt.datetime(2024, 3, 10, 2, 30, 0, 123456)
    assert conv1(LTS_US, naive) == 1710037800_123456
    assert conv1(LTS_MS, dt.datetime(1970, 1, 1, 0, 0, 1)) == 1000
    assert conv1(LTS_US, dt.datetime(1969, 12, 31, 23, 59, 59)) == -1_000_000
    assert "aware datetime into local-timestamp" in err1(LTS_US, naive.replace(tzinfo=UTC)).reason
    assert "declare timestamp-micros" in err1(LTS_US, naive.replace(tzinfo=UTC)).reason
    assert "truncate" in err1(LTS_MS, dt.datetime(2024, 1, 1, 0, 0, 0, 1)).reason


def test_fastavro_would_shift_a_naive_datetime_but_we_do_not() -> None:
    """The trap: fastavro converts a naive datetime in timestamp-* with time.mktime (local zone)."""
    schema = record(fld("ts", TS_US))
    naive = dt.datetime(2024, 1, 1, 12, 0)
    shifted = decode(schema, encode(schema, {"ts": naive}))["ts"]
    assert shifted == dt.datetime(2024, 1, 1, 17, 0, tzinfo=UTC)  # New York's -5h crept in
    with pytest.raises(RowError, match="naive datetime"):
        compile_record(schema, stream=STREAM)({"ts": naive})
    # The zone-less column declared as local-timestamp keeps its wall clock exactly.
    local = record(fld("ts", LTS_US))
    assert roundtrip(local, {"ts": naive}) == {"ts": naive}


def test_date() -> None:
    assert conv1(logical("int", "date"), dt.date(1970, 1, 2)) == 1
    assert conv1(logical("int", "date"), dt.date(1969, 12, 31)) == -1
    assert conv1(logical("int", "date"), dt.date(1, 1, 1)) == -719162
    assert "datetime" in err1(logical("int", "date"), dt.datetime(2024, 1, 1)).reason
    assert "zero or invalid date '0000-00-00'" in err1(logical("int", "date"), "0000-00-00").reason
    err1(logical("int", "date"), 19000)


def test_double_into_string_is_repr_exact() -> None:
    for v in (
        -2.2250738585072014e-308,
        1.7976931348623157e308,
        -0.0,
        0.1,
        5e-324,
        float("inf"),
        float("nan"),
    ):
        text = roundtrip(record(fld("d", "string")), {"d": v})["d"]
        assert text == repr(v)
        assert struct.pack("<d", float(text)) == struct.pack("<d", v)  # the same bits back
    assert roundtrip(record(fld("d", ["null", "long", "string"])), {"d": 1.5})["d"] == "1.5"


def test_mysql_time_into_long_is_signed_microseconds() -> None:
    cases = {
        dt.timedelta(hours=-838, minutes=-59, seconds=-59): -3020399000000,
        dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999): 3020399999999,
        dt.timedelta(hours=25, microseconds=1): 90000000001,
        dt.timedelta(hours=24): 86400000000,
        dt.timedelta(microseconds=-1): -1,
    }
    for v, us in cases.items():
        assert roundtrip(record(fld("t", "long")), {"t": v})["t"] == us
        assert roundtrip(record(fld("t", ["null", "long"])), {"t": v})["t"] == us
    assert conv1(["null", "string", "long"], dt.timedelta(hours=-1)) == ("long", -3600000000)
    assert "expected an integer" in err1("int", dt.timedelta(hours=1)).reason  # int cannot hold 838 h in us


def test_time_of_day_never_wraps_an_interval() -> None:
    t_us = logical("long", "time-micros")
    for v, shown in (
        (dt.timedelta(hours=-838, minutes=-59, seconds=-59), "-838:59:59"),
        (dt.timedelta(hours=25, microseconds=1), "25:00:00.000001"),
        (dt.timedelta(hours=24), "24:00:00"),
        (dt.timedelta(microseconds=-1), "-00:00:00.000001"),
    ):
        reason = err1(t_us, v).reason
        assert shown in reason and "outside [00:00, 24:00)" in reason and "declare long" in reason


def test_long_overflow_names_the_wider_types() -> None:
    assert "decimal(20,0) or string" in err1("long", 18446744073709551615).reason
    assert roundtrip(record(fld("u", dec(20, 0))), {"u": 18446744073709551615})["u"] == Decimal(
        18446744073709551615
    )
    assert roundtrip(record(fld("u", "string")), {"u": 18446744073709551615})["u"] == "18446744073709551615"


def test_time_from_time_and_mysql_timedelta() -> None:
    t_us, t_ms = logical("long", "time-micros"), logical("int", "time-millis")
    assert conv1(t_us, dt.time(13, 14, 15, 161718)) == 47655161718
    assert conv1(t_us, dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)) == 86399999999
    assert conv1(t_ms, dt.timedelta(seconds=1, milliseconds=5)) == 1005
    assert conv1(t_ms, dt.time(0, 0, 1, 5000)) == 1005
    assert "outside" in err1(t_us, dt.timedelta(hours=838)).reason
    assert "outside" in err1(t_us, dt.timedelta(seconds=-1)).reason
    assert "outside" in err1(t_us, dt.timedelta(days=1)).reason
    assert "aware time" in err1(t_us, dt.time(12, tzinfo=UTC)).reason
    assert "truncate" in err1(t_ms, dt.time(0, 0, 0, 1)).reason
    err1(t_us, "12:00")


def test_uuid() -> None:
    u = logical("string", "uuid")
    canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert conv1(u, uuid.UUID(canonical)) == canonical
    assert conv1(u, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11") == canonical
    assert conv1(u, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}") == canonical
    assert "not a UUID" in err1(u, "nope").reason
    err1(u, 5)


# --- PostgreSQL intervals, records, arrays, maps -----------------------------------------------

INTERVAL = {
    "type": "record",
    "name": "Interval",
    "fields": [fld("months", "int"), fld("days", "int"), fld("micros", "long")],
}


def test_interval_convention() -> None:
    assert conv1(INTERVAL, (14, 3, 5_000_000)) == {"months": 14, "days": 3, "micros": 5_000_000}
    assert conv1(INTERVAL, {"months": 1, "days": 0, "micros": 0}) == {"months": 1, "days": 0, "micros": 0}
    reason = err1(INTERVAL, dt.timedelta(days=40)).reason
    assert "folds months into days" in reason
    assert "(months, days, micros)" in reason
    assert "overflows int" in err1(INTERVAL, (2**31, 0, 0), field="f.months").reason
    err1(INTERVAL, (1, 2))


def test_nested_records_defaults_and_error_paths() -> None:
    address = {
        "type": "record",
        "name": "Address",
        "fields": [fld("city", "string"), fld("zip", "int"), fld("country", "string", default="DE")],
    }
    assert conv1(address, {"city": "Bonn", "zip": 53111}) == {"city": "Bonn", "zip": 53111, "country": "DE"}
    assert "'5311x'" in err1(address, {"city": "Bonn", "zip": "5311x"}, field="f.zip").reason
    assert "'zip' missing" in err1(address, {"city": "Bonn"}, field="f.zip").reason
    assert "a mapping for record test.Address" in err1(address, ["Bonn", 53111]).reason


def test_arrays_and_maps() -> None:
    assert conv1({"type": "array", "items": "long"}, (1, 2)) == [1, 2]
    assert conv1({"type": "array", "items": TS_US}, [dt.datetime(1970, 1, 1, tzinfo=UTC)]) == [0]
    assert conv1({"type": "map", "values": "int"}, {"a": 1}) == {"a": 1}
    err1({"type": "array", "items": "long"}, [1, "2"], field="f[1]")
    err1({"type": "array", "items": "string"}, "abc")
    err1({"type": "map", "values": "int"}, {"a": 1, "b": 2**40}, field="f['b']")
    assert "not a string" in err1({"type": "map", "values": "int"}, {1: 1}).reason


def test_named_types_resolve_by_name_and_namespace() -> None:
    point = {
        "type": "record",
        "name": "Point",
        "namespace": "geo",
        "fields": [fld("x", "int"), fld("y", "int")],
    }
    schema = record(fld("a", point), fld("b", "geo.Point"), fld("c", ["null", "Point"]), name="Shape")
    schema["namespace"] = "geo"  # the short reference "Point" resolves in the enclosing namespace
    row = {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 4}, "c": {"x": 5, "y": 6}}
    assert roundtrip(schema, row) == row
    parsed = cast(dict[str, Any], fastavro.parse_schema(schema))
    assert compile_record(parsed, stream=STREAM)(row) == row
    with pytest.raises(SchemaError, match="unknown type 'Nope'"):
        compile_record(record(fld("a", "Nope")), stream=STREAM)


def test_recursive_named_type() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [fld("v", "int"), fld("next", ["null", "Node"], default=None)],
    }
    schema = record(fld("head", node))
    row = {"head": {"v": 1, "next": {"v": 2, "next": {"v": 3}}}}
    expected = {"head": {"v": 1, "next": {"v": 2, "next": {"v": 3, "next": None}}}}
    assert roundtrip(schema, row) == expected
    err1(node, {"v": 1, "next": {"v": "2"}}, field="f.next.v")


# --- unions ----------------------------------------------------------------------------------------


def test_union_uses_tuple_notation_and_prefers_native_branches() -> None:
    u = ["null", "long", "string"]
    assert conv1(u, 5) == ("long", 5)
    assert conv1(u, "x") == ("string", "x")
    assert conv1(u, None) is None
    assert conv1(["string", "long"], 5) == ("long", 5)  # native before coerced (int -> str)
    assert conv1(["string", "long"], Decimal("1.5")) == ("string", "1.5")
    assert conv1(["int", "long"], 2**40) == ("long", 2**40)  # int rejects it: next branch
    assert conv1(["long", "boolean"], True) == ("boolean", True)  # a bool is not an int
    assert "overflows int" in err1(["null", "int", "double"], 2**70 + 1).reason  # first failure reported
    assert "no branch" in err1(["long", "string"], b"x").reason


def test_union_branch_is_not_reguessed_by_fastavro() -> None:
    """A pre-converted date is an int: fastavro alone would write it into the long branch."""
    schema = record(fld("f", ["null", "long", logical("int", "date"), RATING]))
    assert roundtrip(schema, {"f": dt.date(2024, 5, 3)}) == {"f": dt.date(2024, 5, 3)}
    assert roundtrip(schema, {"f": 19846}) == {"f": 19846}
    assert roundtrip(schema, {"f": "PG"}) == {"f": "PG"}
    assert roundtrip(schema, {"f": None}) == {"f": None}


def test_union_with_named_record_branch() -> None:
    schema = record(fld("f", ["null", "string", INTERVAL]))
    assert roundtrip(schema, {"f": (1, 2, 3)}) == {"f": {"months": 1, "days": 2, "micros": 3}}
    assert roundtrip(schema, {"f": "x"}) == {"f": "x"}


def test_invalid_unions_are_schema_errors() -> None:
    with pytest.raises(SchemaError, match="one type twice"):
        compile_record(record(fld("f", ["null", "long", TS_US])), stream=STREAM)
    with pytest.raises(SchemaError, match="one type twice"):
        compile_record(record(fld("f", ["null", ["long"]])), stream=STREAM)


# --- rows: field_map, missing columns, defaults --------------------------------------------------


def test_field_map_and_source_columns() -> None:
    schema = record(fld("id", "long"), fld("title", "string"))
    convert = compile_record(schema, stream=STREAM, field_map={"title": "film_title", "other": "x"})
    assert isinstance(convert, RecordConverter)
    assert convert.fields == ("id", "title")
    assert convert.source_columns == ("id", "film_title")
    assert convert({"id": 1, "film_title": "Alien", "extra": 0}) == {"id": 1, "title": "Alien"}


def test_missing_columns_use_defaults_or_fail() -> None:
    schema = record(
        fld("id", "long"),
        fld("n", "int", default=5),
        fld("blob", "bytes", default="\u00ff\u0000"),
        fld("note", ["null", "string"], default=None),
        fld("either", ["long", "string"], default=3),
    )
    convert = compile_record(schema, stream=STREAM, field_map={"id": "film_id"})
    out = convert({"film_id": 1})
    assert out == {"id": 1, "n": 5, "blob": b"\xff\x00", "note": None, "either": ("long", 3)}
    assert decode(schema, encode(schema, out)) == {
        "id": 1,
        "n": 5,
        "blob": b"\xff\x00",
        "note": None,
        "either": 3,
    }
    with pytest.raises(RowError, match="column 'film_id' missing from the row") as info:
        convert({"id": 1}, KEY)
    assert (info.value.stream, info.value.key, info.value.field) == (STREAM, KEY, "id")


def test_schema_must_be_a_record() -> None:
    with pytest.raises(SchemaError, match="must be an Avro record"):
        compile_record({"type": "enum", "name": "E", "symbols": ["A"]}, stream=STREAM)
    with pytest.raises(SchemaError, match="invalid Avro schema"):
        compile_record({"type": "record", "name": "R"}, stream=STREAM)


# --- the full round trip ----------------------------------------------------------------------------

FULL = record(
    fld("id", "long"),
    fld("small", "int"),
    fld("flag", "boolean"),
    fld("ratio", "double"),
    fld("name", "string"),
    fld("raw", "bytes"),
    fld("rating", RATING),
    fld("price", dec(10, 2)),
    fld("big", dec(38, 9, size=16)),
    fld("created", TS_US),
    fld("created_ms", TS_MS),
    fld("local", LTS_US),
    fld("local_ms", LTS_MS),
    fld("day", logical("int", "date")),
    fld("at", logical("long", "time-micros")),
    fld("at_ms", logical("int", "time-millis")),
    fld("uid", logical("string", "uuid")),
    fld("tags", {"type": "array", "items": "string"}),
    fld("attrs", {"type": "map", "values": ["null", "long"]}),
    fld("span", INTERVAL),
    fld("maybe_ts", ["null", TS_US]),
)
ROW = {
    "id": 2**40,
    "small": -5,
    "flag": 1,
    "ratio": 0.1,
    "name": "Æsir",
    "raw": memoryview(b"\x00\x01"),
    "rating": "PG-13",
    "price": Decimal("-12.5"),
    "big": Decimal("-12345678901234567890.123456789"),
    "created": dt.datetime(2024, 7, 1, 9, 30, 15, 123456, tzinfo=zoneinfo.ZoneInfo("America/Los_Angeles")),
    "created_ms": dt.datetime(1960, 2, 29, 23, 59, 59, 999000, tzinfo=PLUS2),
    "local": dt.datetime(2024, 3, 10, 2, 30, 0, 7),
    "local_ms": dt.datetime(1900, 1, 1, 0, 0, 0, 1000),
    "day": dt.date(2000, 2, 29),
    "at": dt.timedelta(hours=23, microseconds=1),
    "at_ms": dt.time(6, 7, 8, 9000),
    "uid": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
    "tags": ("a", "b"),
    "attrs": {"x": 1, "y": None},
    "span": (1, -2, 3),
    "maybe_ts": None,
}


def test_full_round_trip_through_fastavro() -> None:
    out = compile_record(FULL, stream=STREAM, symbol_maps={"rating": {"PG-13": "PG_13"}})(ROW, KEY)
    # Only primitives leave the converter, so fastavro has nothing left to convert on its own.
    assert all(type(v) in (int, float, str, bytes, bool, list, dict, type(None)) for v in out.values())
    data = encode(FULL, out)
    assert data == encode(strip_logical(FULL), out)  # fastavro passed our primitives through unchanged
    back = decode(FULL, data)
    assert back == {
        **ROW,
        "flag": True,
        "raw": b"\x00\x01",
        "rating": "PG_13",
        "price": Decimal("-12.50"),
        "uid": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        "at": dt.time(23, 0, 0, 1),
        "tags": ["a", "b"],
        "span": {"months": 1, "days": -2, "micros": 3},
    }
    # Aware timestamps come back in UTC, as the same instant; local ones naive with the same wall clock.
    assert back["created"].tzinfo == UTC
    assert back["created"] == ROW["created"]
    assert back["created"].hour == 16
    assert back["created_ms"] == dt.datetime(1960, 2, 29, 21, 59, 59, 999000, tzinfo=UTC)
    assert back["local"].tzinfo is None
    assert back["local"] == ROW["local"]
    assert back["local_ms"] == dt.datetime(1900, 1, 1, 0, 0, 0, 1000)


def test_parsed_schema_input_gives_the_same_record() -> None:
    symbol_maps = {"rating": {"PG-13": "PG_13"}}
    plain = compile_record(FULL, stream=STREAM, symbol_maps=symbol_maps)(ROW)
    parsed = compile_record(
        cast(dict[str, Any], fastavro.parse_schema(FULL)), stream=STREAM, symbol_maps=symbol_maps
    )(ROW)
    assert parsed == plain


def _outcome(convert: Any, row: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "record", convert(row, KEY)
    except RowError as err:
        return "error", (err.stream, err.key, err.field, err.reason)


def test_the_generated_fast_path_gives_what_the_general_path_gives() -> None:
    """Every field kind with a fast check (int, long, string, bytes, boolean, each nullable) and
    some without, fed fitting values, misfits of each kind, nulls and a missing column: the
    generated function (through __call__) and the field-by-field loop agree on every row,
    record for record and error for error."""
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "i", "type": "int"},
            {"name": "l", "type": "long"},
            {"name": "s", "type": "string"},
            {"name": "b", "type": "bytes"},
            {"name": "flag", "type": "boolean"},
            {"name": "ni", "type": ["null", "int"]},
            {"name": "ns", "type": ["null", "string"]},
            {"name": "nb", "type": ["null", "boolean"]},
            {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {
                "name": "nd",
                "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 0}],
            },
            {"name": "nat", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
            {
                "name": "fd",
                "type": {
                    "type": "fixed",
                    "name": "F",
                    "size": 4,
                    "logicalType": "decimal",
                    "precision": 6,
                    "scale": 1,
                },
            },
            {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "u", "type": ["string", "long"]},
            {"name": "dflt", "type": "long", "default": 5},
            {"name": "renamed", "type": "string"},
        ],
    }
    convert = compile_record(schema, stream=STREAM, field_map={"renamed": "source_name"})
    good: dict[str, Any] = {
        "i": 7, "l": 1 << 40, "s": "text", "b": b"\x00\x01", "flag": True, "ni": None, "ns": "x", "nb": False,
        "d": Decimal("123.45"), "at": dt.datetime(2024, 5, 6, tzinfo=UTC), "u": 3, "dflt": 9, "source_name": "n",
        "nd": Decimal("-123456789012345678901234567890"), "nat": dt.datetime(1, 1, 1, tzinfo=UTC),
        "fd": Decimal("-12345.6"), "ms": dt.datetime(2024, 5, 6, 1, 2, 3, 4000, tzinfo=UTC),
    }  # fmt: skip
    variants: dict[str, list[Any]] = {
        "i": [0, -(2**31), 2**31 - 1, 2**31, -(2**31) - 1, True, 1.0, "7", None, Decimal(7)],
        "l": [2**63 - 1, -(2**63), 2**63, False, None, dt.timedelta(seconds=1)],
        "s": ["", "ü", 5, uuid.UUID(int=1), Decimal("0.0000001"), None, b"x"],
        "b": [b"", bytearray(b"ab"), memoryview(b"cd"), "text", None],
        "flag": [False, 0, 1, 2, None, "true"],
        "ni": [5, 2**31, True, "5"],
        "ns": [None, "", 5],
        "nb": [None, True, 1, 3],
        "d": [
            Decimal("999.99"),
            Decimal("1000.00"),
            Decimal("0.001"),
            12,
            1.5,
            None,
            Decimal("-999.99"),
            Decimal("0"),
            Decimal("-0.00"),
            Decimal("0E+9"),
            Decimal("1E+999999"),
            Decimal("NaN"),
            Decimal("-Infinity"),
            Decimal("1.230"),
            Decimal("1.2345"),
            Decimal("99.9"),
            Decimal("-0.01"),
        ],
        "at": [
            dt.datetime(2024, 5, 6),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=PLUS2),
            None,
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            dt.datetime(9999, 12, 31, tzinfo=UTC),
            dt.date(2024, 5, 6),
            "0000-00-00",
            1700000000,
        ],
        "nd": [None, Decimal("1E+30"), Decimal("-999999999999999999999999999999"), Decimal("0.5"), 7],
        "nat": [None, dt.datetime(2024, 5, 6), dt.datetime(2024, 5, 6, tzinfo=PLUS2)],
        "fd": [Decimal("99999.9"), Decimal("100000.0"), Decimal("0.05")],
        "ms": [dt.datetime(2024, 5, 6, 1, 2, 3, 4001, tzinfo=UTC)],
        "u": ["s", 2**63, None],
        "source_name": [None, 1],
    }
    rows = [good]
    for column, values in variants.items():
        rows += [{**good, column: value} for value in values]
    rows += [{k: v for k, v in good.items() if k != missing} for missing in ("dflt", "i", "source_name")]
    for row in rows:
        assert _outcome(convert, row) == _outcome(convert.convert_checked, row), row
    outcomes = [_outcome(convert, row)[0] for row in rows]
    assert outcomes.count("record") > 20 and outcomes.count("error") > 20  # both ways were taken
    # the inline decimal and timestamp paths really ran (a converter call would show here)
    source = convert._fast.__code__.co_names if convert._fast is not None else ()
    assert {"EPOCH", "US", "EXACT", "DECIMAL"} <= set(source)
