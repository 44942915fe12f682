"""The compiled flat-record reader gives fastavro's results on the same bytes (and fails on poison)."""

from __future__ import annotations

import datetime as dt
import random
import struct
import uuid
from decimal import Decimal
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from cdc import _avroread
from cdc.sink.decode import DecodeError, Decoder, WriterSchema
from cdc.sink.fastread import RecordReader, compile_record_reader

# Both readers, on the same bytes: the C accelerator (which must be built: `make venv` builds it,
# and a missing one fails here) and the pure-Python one it must match exactly.
BOTH = pytest.mark.parametrize("accelerated", [True, False], ids=["c", "python"])


def compiled(schema: Any, accelerated: bool) -> RecordReader:
    reader = compile_record_reader(schema, accelerated=accelerated)
    assert reader is not None
    assert isinstance(reader, _avroread.Reader) is accelerated
    return reader


DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}
FLAT = {
    "type": "record",
    "name": "Flat",
    "namespace": "t",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "small", "type": "int"},
        {"name": "flag", "type": "boolean"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "total", "type": DECIMAL},
        {"name": "whole", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20}},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "plain", "type": {"type": "long"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "late", "type": [{"type": "long", "logicalType": "timestamp-micros"}, "null"]},
        {"name": "amount", "type": ["null", DECIMAL]},
    ],
}


def encode(schema: Any, record: dict[str, Any]) -> bytes:
    buf = BytesIO()
    schemaless_writer(buf, parse_schema(schema), record)
    return buf.getvalue()


def fastavro_read(schema: Any, body: bytes) -> Any:
    return schemaless_reader(BytesIO(body), parse_schema(schema), None)


def flat_record(rng: random.Random, i: int) -> dict[str, Any]:
    big = rng.choice([0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)])
    return {
        "id": big if i % 2 else rng.randint(-(2**40), 2**40),
        "small": rng.randint(-(2**31), 2**31 - 1),
        "flag": i % 3 == 0,
        "f": rng.uniform(-1e6, 1e6),
        "d": rng.uniform(-1e300, 1e300),
        "s": rng.choice(["", "a", "ünïcødé ✓", "x" * 300]),
        "b": rng.randbytes(rng.choice([0, 1, 200])),
        "total": Decimal(rng.randint(-(10**10) + 1, 10**10 - 1)) / 100,
        "whole": Decimal(rng.randint(-(10**20) + 1, 10**20 - 1)),
        "ts_ms": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        + dt.timedelta(milliseconds=rng.randint(-(10**12), 10**12)),
        "ts_us": dt.datetime(1969, 12, 31, tzinfo=dt.UTC) + dt.timedelta(microseconds=rng.randint(0, 10**15)),
        "local_ms": dt.datetime(2000, 2, 29) + dt.timedelta(milliseconds=rng.randint(-(10**9), 10**9)),
        "local_us": dt.datetime(1900, 1, 1) + dt.timedelta(microseconds=rng.randint(0, 10**16)),
        "day": dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-700_000, 2_000_000)),
        "u": uuid.UUID(int=rng.getrandbits(128)),
        "plain": -i,
        "note": None if i % 2 else f"note {i}",
        "late": None if i % 3 else dt.datetime(2030, 5, 5, 5, 5, 5, 5, tzinfo=dt.UTC),
        "amount": None if i % 4 == 1 else Decimal("-0.01") * i,
    }


def same(ours: Any, theirs: Any) -> None:
    """Equal values of the same types; decimals with the same digits and exponent too."""
    assert ours == theirs
    assert list(ours) == list(theirs)  # field order
    for name, value in theirs.items():
        assert type(ours[name]) is type(value), name
        if isinstance(value, Decimal):
            assert ours[name].as_tuple() == value.as_tuple(), name
        if isinstance(value, dt.datetime):
            assert ours[name].tzinfo == value.tzinfo, name


@BOTH
def test_flat_records_read_exactly_as_fastavro_reads_them(accelerated: bool) -> None:
    reader = compiled(FLAT, accelerated)
    rng = random.Random(15)
    for i in range(500):
        body = encode(FLAT, flat_record(rng, i))
        ours, end = reader(b"\0\0\0\0\7" + body, 5)
        assert end == 5 + len(body)
        same(ours, fastavro_read(FLAT, body))


@BOTH
def test_decimal_rounding_to_the_precision_matches_fastavro(accelerated: bool) -> None:
    """An unscaled value with more digits than the precision is rounded the way fastavro rounds it."""
    schema = {"type": "record", "name": "D", "fields": [{"name": "x", "type": DECIMAL}]}
    reader = compiled(schema, accelerated)
    for unscaled in (0, 5, -5, 10**10 - 1, 10**12 + 5, -(10**15) - 7, 123456789012345):
        body = bytes([16 * 2]) + unscaled.to_bytes(16, "big", signed=True)  # zig-zag length, then bytes
        ours, end = reader(b"\0" + body, 1)
        assert end == 1 + len(body)
        same(ours, fastavro_read(schema, body))


@pytest.mark.parametrize(
    "avro_type",
    [
        {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "int"}]},
        {"type": "enum", "name": "E", "symbols": ["A"]},
        {"type": "fixed", "name": "F", "size": 2},
        {"type": "array", "items": "int"},
        {"type": "map", "values": "int"},
        ["null", "string", "long"],
        ["string", "long"],
        {"type": "int", "logicalType": "time-millis"},
        {"type": "long", "logicalType": "time-micros"},
        {"type": "string", "logicalType": "something-new"},
        {"type": "long", "logicalType": "date"},  # a logical type on a base it does not apply to
        "SomeNamedType",
    ],
)
@BOTH
def test_other_schemas_keep_fastavro(avro_type: Any, accelerated: bool) -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "id", "type": "long"}, {"name": "x", "type": avro_type}],
    }
    assert compile_record_reader(schema, accelerated=accelerated) is None


@BOTH
def test_only_records_are_compiled(accelerated: bool) -> None:
    assert compile_record_reader("string", accelerated=accelerated) is None
    assert compile_record_reader({"type": "long"}, accelerated=accelerated) is None
    assert (
        compile_record_reader({"type": "record", "name": "Empty", "fields": []}, accelerated=accelerated)
        is None
    )


class _Registry:
    """A registry client stand-in that serves schemas by id (a unit test needs no HTTP)."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas

    def get_schema(self, schema_id: int) -> Any:
        import json
        from types import SimpleNamespace

        return SimpleNamespace(schema_type="AVRO", schema_str=json.dumps(self.schemas[schema_id]))


def wire(schema_id: int, body: bytes) -> bytes:
    return bytes([0]) + schema_id.to_bytes(4, "big") + body


def test_the_decoder_uses_the_compiled_reader_and_refuses_poison_alike() -> None:
    key = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
    decoder = Decoder(_Registry({1: key, 2: FLAT}))  # type: ignore[arg-type]
    writer, datum = decoder.decode(wire(1, encode(key, {"id": -123456789})))
    assert isinstance(writer, WriterSchema) and writer.reader is not None
    assert datum == {"id": -123456789}
    record = flat_record(random.Random(1), 3)
    body = encode(FLAT, record)
    _, datum = decoder.decode(wire(2, body))
    same(datum, fastavro_read(FLAT, body))
    with pytest.raises(DecodeError, match="does not fit schema id 2"):
        decoder.decode(wire(2, body[:-3]))  # cut short
    with pytest.raises(DecodeError, match="does not fit schema id 1"):
        decoder.decode(wire(1, b"\x80"))  # a varint that never ends
    with pytest.raises(DecodeError, match="2 trailing byte"):
        decoder.decode(wire(1, encode(key, {"id": 1}) + b"\0\0"))
    with pytest.raises(DecodeError, match="Confluent wire format"):
        decoder.decode(b"\x01\0\0\0\1\2")
    with pytest.raises(DecodeError):
        decoder.decode(wire(2, b"\x05"))


def test_a_bad_union_branch_and_bad_utf8_are_decode_errors() -> None:
    schema = {"type": "record", "name": "U", "fields": [{"name": "n", "type": ["null", "string"]}]}
    decoder = Decoder(_Registry({3: schema}))  # type: ignore[arg-type]
    assert decoder.decode(wire(3, b"\x00"))[1] == {"n": None}
    assert decoder.decode(wire(3, b"\x02\x02a"))[1] == {"n": "a"}
    with pytest.raises(DecodeError):
        decoder.decode(wire(3, b"\x04"))  # branch 2 of 2
    with pytest.raises(DecodeError):
        decoder.decode(wire(3, b"\x02\x02\xff"))  # not UTF-8


def outcome(reader: RecordReader, data: bytes) -> Any:
    """What a reader makes of the bytes: its record and end, or that it refused them."""
    try:
        record, end = reader(data, 5)
    except Exception:
        return "refused"
    return [(name, type(v), comparable(v)) for name, v in record.items()], end


def comparable(value: Any) -> Any:
    """Decimals by digits and exponent, floats by their bits (a NaN is not equal to itself)."""
    if isinstance(value, Decimal):
        return value.as_tuple()
    if isinstance(value, float):
        return struct.pack("<d", value)
    return value


def test_the_c_and_python_readers_agree_on_every_cut_and_corruption() -> None:
    """Valid records cut at every byte, and with bytes overwritten at random: the C reader returns
    exactly what the Python reader returns, or refuses exactly where it refuses."""
    c_reader, py_reader = compiled(FLAT, True), compiled(FLAT, False)
    rng = random.Random(2026)
    checked = refused = 0
    for i in range(60):
        data = b"\0\0\0\0\7" + encode(FLAT, flat_record(rng, i))
        variants = [data[:cut] for cut in range(5, len(data))]
        for _ in range(40):
            corrupt = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                corrupt[rng.randrange(5, len(corrupt))] = rng.choice(
                    [0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)]
                )
            variants.append(bytes(corrupt))
        for variant in variants:
            expected = outcome(py_reader, variant)
            assert outcome(c_reader, variant) == expected, variant.hex()
            checked += 1
            refused += expected == "refused"
    assert refused > checked // 3  # the corruptions did reach the error paths


@BOTH
@pytest.mark.parametrize(
    ("avro_type", "body"),
    [
        ("long", b"\x80" * 10 + b"\x01"),  # eleven bytes
        ("long", b"\xff" * 9 + b"\x02"),  # 65 bits
        ("string", b"\x01"),  # a negative length
        ("string", b"\x08ab"),  # cut short
        ({"type": "long", "logicalType": "timestamp-millis"}, b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
        ({"type": "long", "logicalType": "timestamp-micros"}, b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
        ({"type": "int", "logicalType": "date"}, b"\xfe\xff\xff\xff\x1f"),
        ({"type": "string", "logicalType": "uuid"}, b"\x06abc"),
        ("double", b"\0\0\0"),
    ],
)
def test_garbage_is_refused_by_both_readers(avro_type: Any, body: bytes, accelerated: bool) -> None:
    reader = compiled(
        {"type": "record", "name": "G", "fields": [{"name": "x", "type": avro_type}]}, accelerated
    )
    with pytest.raises((ValueError, IndexError, EOFError, OverflowError, struct.error)):
        reader(b"\0" + body, 1)


def test_the_c_reader_takes_any_buffer_and_checks_its_arguments() -> None:
    reader = compiled({"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}, True)
    assert reader(bytearray(b"\0\x04"), 1) == ({"id": 2}, 2)
    assert reader(memoryview(b"\0\x04"), 1) == ({"id": 2}, 2)
    with pytest.raises(TypeError):
        reader(b"\x04")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="negative"):
        reader(b"\x04", -1)
    with pytest.raises(TypeError):
        type(reader)()  # built by make_reader only


def zigzag(n: int) -> bytes:
    """The Avro varint of ``n`` (a long)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_FIRST_US = (dt.datetime(1, 1, 1) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
_LAST_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999) - dt.datetime(1970, 1, 1)) // dt.timedelta(
    microseconds=1
)


@pytest.mark.parametrize(
    "logical", ["timestamp-micros", "timestamp-millis", "local-timestamp-micros", "local-timestamp-millis"]
)
def test_the_c_timestamps_match_python_at_every_edge(logical: str) -> None:
    """The C reader builds datetimes from their fields: the same values as epoch + timedelta at
    the ends of datetime's range, around leap days and the epoch, and the same refusals past them."""
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": logical}}],
    }
    c_reader, py_reader = compiled(schema, True), compiled(schema, False)
    per_unit = 1000 if "millis" in logical else 1
    days = [
        dt.date(y, m, d)
        for y, m, d in [
            (1900, 2, 28),
            (1900, 3, 1),
            (2000, 2, 29),
            (2000, 3, 1),
            (1600, 2, 29),
            (2100, 3, 1),
            (1969, 12, 31),
        ]
    ]
    values = [0, -1, 1, 86_399_999_999, -86_400_000_000, 2**62, -(2**62), 2**63 - 1, -(2**63)]
    values += [_FIRST_US // per_unit + d for d in (-1, 0, 1)] + [_LAST_US // per_unit + d for d in (-1, 0, 1)]
    values += [
        ((day - dt.date(1970, 1, 1)).days * 86_400_000_000 + s) // per_unit
        for day in days
        for s in (0, 86_399_999_999)
    ]
    rng = random.Random(7)
    values += [rng.randint(_FIRST_US, _LAST_US) // per_unit for _ in range(2000)]
    refused = 0
    for v in values:
        data = b"\0" * 5 + zigzag(v)
        expected = outcome(py_reader, data)
        assert outcome(c_reader, data) == expected, v
        if expected != "refused":
            (record, _end) = c_reader(data, 5)
            assert record["t"].tzinfo is (None if logical.startswith("local") else dt.UTC)
        refused += expected == "refused"
    assert refused >= 6  # both ends and the int64 extremes


@pytest.mark.parametrize(("precision", "scale"), [(1, 0), (10, 2), (18, 0), (18, 18), (19, 4), (38, 9)])
def test_the_c_decimals_match_python_in_digits_and_exponent(precision: int, scale: int) -> None:
    """The C reader parses a decimal that fits 64 bits and its precision from its digits, and
    leaves the rest (rounding to the precision) to Python: both give the same digits and exponent."""
    dec = {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    schema = {"type": "record", "name": "D", "fields": [{"name": "x", "type": dec}]}
    c_reader, py_reader = compiled(schema, True), compiled(schema, False)
    limit = 10**precision
    unscaled = [0, 1, -1, 9, -9, 127, 128, -128, -129, limit - 1, -(limit - 1), limit, -limit, limit + 1]
    unscaled += [2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30 + 7, -(10**30) - 7]
    rng = random.Random(precision * 100 + scale)
    unscaled += [rng.randint(-(limit * 10), limit * 10) for _ in range(500)]
    for n in unscaled:
        for width in sorted({(abs(n).bit_length() + 8) // 8, 8, 9, 16}):
            try:
                raw = n.to_bytes(width, "big", signed=True)
            except OverflowError:
                continue
            data = b"\0" * 5 + zigzag(len(raw)) + raw
            expected = outcome(py_reader, data)
            assert outcome(c_reader, data) == expected, (n, width)
    empty = b"\0" * 5 + zigzag(0)  # no bytes at all: zero, as int.from_bytes reads them
    assert outcome(c_reader, empty) == outcome(py_reader, empty)
    assert c_reader(empty, 5)[0]["x"].as_tuple() == Decimal(0).scaleb(-scale).as_tuple()
