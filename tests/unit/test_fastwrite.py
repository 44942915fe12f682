"""The compiled flat-record writer gives fastavro's bytes, and hands fastavro what it does not model."""

from __future__ import annotations

import collections
import datetime as dt
import math
import random
import struct
import uuid
import zoneinfo
from decimal import Decimal
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from cdc import _avrowrite, accel
from cdc.schemas.fastwrite import RecordWriter, compile_record_writer
from cdc.schemas.wire import WireEncoder

HEADER = b"\0\0\0\0\x07"
ZONES = [dt.UTC, zoneinfo.ZoneInfo("America/New_York"), zoneinfo.ZoneInfo("Asia/Kolkata"),
         zoneinfo.ZoneInfo("Pacific/Chatham"), dt.timezone(dt.timedelta(hours=-11, minutes=-30))]  # fmt: skip
LONG_EDGES = [0, 1, -1, 63, -64, 64, -65, 127, 128, 8191, 8192, -8193, 2**31 - 1, -(2**31), 2**31,
              -(2**31) - 1, 2**53 + 1, 2**62, -(2**62) - 1, 2**63 - 1, -(2**63)]  # fmt: skip
INT_EDGES = [v for v in LONG_EDGES if -(2**31) <= v < 2**31]


@pytest.fixture(params=[True, False], ids=["c", "python"])
def accelerated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both writers on the same records: the C accelerator (which must be built: `make venv` builds
    it, and a missing one fails here) and the pure-Python one it must match exactly. The pure-Python
    run sets CDC_PURE_PYTHON, so that WireEncoder's own writer is the pure-Python one as well."""
    if request.param:
        monkeypatch.delenv(accel.PURE_PYTHON_ENV, raising=False)
    else:
        monkeypatch.setenv(accel.PURE_PYTHON_ENV, "1")
    return bool(request.param)


def writer_of(schema: Any, accelerated: bool, prefix: bytes = b"") -> RecordWriter:
    writer = compile_record_writer(schema, prefix, accelerated=accelerated)
    assert writer is not None
    assert isinstance(writer, _avrowrite.Writer) is accelerated
    return writer


def ts(type_: str, logical: str) -> dict[str, str]:
    return {"type": type_, "logicalType": logical}


def dec(precision: int, scale: int, fixed_size: int | None = None, name: str = "F") -> dict[str, Any]:
    if fixed_size is None:
        return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    return {"type": "fixed", "name": name, "size": fixed_size, "logicalType": "decimal",
            "precision": precision, "scale": scale}  # fmt: skip


def datetimes(rng: random.Random, aware: bool) -> list[dt.datetime]:
    base = [dt.datetime(1970, 1, 1), dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
            dt.datetime(1900, 1, 1, 0, 0, 0, 1), dt.datetime(2024, 2, 29, 12, 30, 45, 123456),
            dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
            dt.datetime(1960, 6, 15, 1, 2, 3, 999)]  # fmt: skip
    base += [dt.datetime(1, 1, 1) + dt.timedelta(microseconds=rng.randint(0, 3 * 10**17)) for _ in range(20)]
    if not aware:
        return base
    out = []
    for i, d in enumerate(base):
        zone = ZONES[i % len(ZONES)]
        if d.year in (1, 9999):
            zone = dt.UTC  # the zone's offset would leave datetime's range
        out.append(d.replace(tzinfo=zone))
    return out


def decimals(rng: random.Random, precision: int, scale: int) -> list[Decimal]:
    """Values that fit decimal(precision, scale), written at the scale and at fewer places."""
    out = [Decimal(0), Decimal("-0"), Decimal(1).scaleb(-scale), -Decimal(1).scaleb(-scale)]
    for _ in range(15):
        digits = rng.randint(1, precision)
        unscaled = rng.randint(-(10**digits) + 1, 10**digits - 1)
        out.append(Decimal(unscaled).scaleb(-scale))
        places = rng.randint(0, scale)
        out.append(
            Decimal(unscaled // 10 ** (scale - places) if places < scale else unscaled).scaleb(-places)
        )
    out.append(Decimal(10**precision - 1).scaleb(-scale))
    out.append(-Decimal(10**precision - 1).scaleb(-scale))
    out += [Decimal(-128).scaleb(-scale), Decimal(128).scaleb(-scale), Decimal(-32768).scaleb(-scale)]
    return [d for d in out if len(d.as_tuple().digits) <= precision]


def fastavro_bytes(parsed: Any, record: Any) -> bytes:
    buf = BytesIO()
    schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def outcome(fn: Any, record: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(record)
    except Exception as exc:
        return "error", type(exc)


def record_schema(*types: Any) -> dict[str, Any]:
    return {"type": "record", "name": "R", "namespace": "t",
            "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(types)]}  # fmt: skip


def check(schema: dict[str, Any], record: Any) -> bool:
    """Compiled bytes equal fastavro's whenever the compiled writer writes at all, and the
    encoder's result (compiled or fallback) equals fastavro's, errors included. True: compiled."""
    parsed = parse_schema(schema)
    accelerated = not accel.pure_python()  # set by the accelerated fixture
    writer = writer_of(parsed, accelerated)
    reference = outcome(lambda r: fastavro_bytes(parsed, r), record)
    compiled = outcome(writer, record)
    if compiled[0] == "ok":
        assert reference == compiled, (record, reference, compiled)
    encoder = WireEncoder(schema, 7)
    assert isinstance(encoder._compiled, _avrowrite.Writer) is accelerated
    got = outcome(encoder.encode, record)
    want = reference if reference[0] == "error" else ("ok", HEADER + reference[1])
    assert got == want, (record, got, want)
    return compiled[0] == "ok"


def check_values(avro_type: Any, values: list[Any], compiled: bool = True) -> None:
    """Each value alone, then in ``[null, X]`` and ``[X, null]`` (None included there)."""
    for v in values:
        assert check(record_schema(avro_type), {"f0": v}) is compiled, v
    for union in (["null", avro_type], [avro_type, "null"]):
        for v in [None, *values]:
            handled = check(record_schema(union), {"f0": v})
            assert handled is (compiled or v is None), (union, v)


def test_integers_at_their_edges(accelerated: bool) -> None:
    check_values("long", LONG_EDGES)
    check_values("int", INT_EDGES)
    check_values({"type": "long"}, LONG_EDGES)
    check_values("long", [2**63, -(2**63) - 1, 10**30], compiled=False)
    check_values("int", [2**31, -(2**31) - 1], compiled=False)
    check_values("int", [True, False, 1.0, "1", Decimal(1)], compiled=False)
    check_values("long", [True, 2.5, None.__class__], compiled=False)


def test_floats_and_doubles_bit_for_bit(accelerated: bool) -> None:
    values = [0.0, -0.0, 1.0, -1.5, 1e-45, 1e-320, 3.4028234663852886e38, 1e300, -1e300,
              math.inf, -math.inf, math.nan, -math.nan, 0.1, 2.0**-149, 123456.789,
              struct.unpack("<d", b"\x01\0\0\0\0\0\xf8\x7f")[0]]  # fmt: skip
    check_values("double", values)
    check_values("float", [v for v in values if not math.isfinite(v) or abs(v) < 3.4e38])
    # a double too large for a float: struct refuses, fastavro writes inf
    check_values("float", [1e300, -1e39], compiled=False)
    check_values("double", [1, 0, True, "1.5", Decimal("1.5")], compiled=False)
    check_values("float", [1, True], compiled=False)


def test_strings_bytes_and_booleans(accelerated: bool) -> None:
    strings = ["", "a", "ünïcødé ✓", "𝔘", "\0", "x" * 63, "x" * 64, "y" * 8200, "日本語" * 1000]
    check_values("string", strings)
    check_values("bytes", [b"", b"\0", b"\xff" * 64, bytes(range(256)) * 40])
    check_values("boolean", [True, False])
    check_values("string", [b"abc", 1, uuid.UUID(int=5), "\ud800"], compiled=False)
    check_values("bytes", [bytearray(b"ab"), memoryview(b"ab"), "ab"], compiled=False)
    check_values("boolean", [1, 0, "true"], compiled=False)


def test_dates_and_times(accelerated: bool) -> None:
    day = ts("int", "date")
    check_values(day, [dt.date(1970, 1, 1), dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1969, 12, 31),
                       dt.date(2024, 2, 29), 0, -1, 2**31 - 1])  # fmt: skip
    check_values(day, [dt.datetime(2024, 1, 1, 5), "2024-01-01", 2**31], compiled=False)
    times = [dt.time(0), dt.time(23, 59, 59, 999999), dt.time(12, 0, 0, 1), dt.time(1, 2, 3, 999),
             dt.time(5, tzinfo=ZONES[1]), 0, 86399999]  # fmt: skip
    check_values(ts("int", "time-millis"), times)
    check_values(ts("long", "time-micros"), [*times, 86_399_999_999])
    check_values(ts("int", "time-millis"), [dt.timedelta(seconds=1)], compiled=False)


@pytest.mark.parametrize("logical", ["timestamp-millis", "timestamp-micros"])
def test_timestamps_of_aware_datetimes(logical: str, accelerated: bool) -> None:
    rng = random.Random(logical)
    check_values(ts("long", logical), [*datetimes(rng, aware=True), 0, -1, 2**63 - 1])
    # naive: fastavro reads it in the process's local zone (mktime); it keeps that
    check_values(ts("long", logical), datetimes(rng, aware=False)[:4], compiled=False)


@pytest.mark.parametrize("logical", ["local-timestamp-millis", "local-timestamp-micros"])
def test_local_timestamps_of_naive_and_aware_datetimes(logical: str, accelerated: bool) -> None:
    rng = random.Random(logical)
    check_values(ts("long", logical), [*datetimes(rng, aware=False), *datetimes(rng, aware=True), -5])
    check_values(ts("long", logical), [dt.date(2020, 1, 1), "2020-01-01T00:00:00"], compiled=False)


def test_uuids(accelerated: bool) -> None:
    u = ts("string", "uuid")
    check_values(
        u, [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4(), str(uuid.uuid4()), "not-a-uuid"]
    )
    check_values(u, [uuid.uuid4().bytes, 5], compiled=False)


@pytest.mark.parametrize("scale", [0, 1, 2, 5, 10, 18, 29, 30])
def test_bytes_decimals_of_every_scale(scale: int, accelerated: bool) -> None:
    rng = random.Random(scale)
    for precision in sorted({max(scale, 1), scale + 3, 38, 65}):
        if precision < scale or precision < 1:
            continue
        check_values(dec(precision, scale), decimals(rng, precision, scale))


def test_bytes_decimals_fastavro_refuses_or_that_arrive_encoded(accelerated: bool) -> None:
    d = dec(12, 2)
    check_values(d, [(12345).to_bytes(3, "big", signed=True), b"", b"\xff"])  # pre-converted by convert.py
    check_values(d, [Decimal("1.234"), Decimal("1234567890123"), Decimal("NaN"), Decimal("Infinity"),
                     Decimal("-Infinity"), Decimal("sNaN"), 5, 1.5, "1.50"], compiled=False)  # fmt: skip
    check_values(dec(65, 30), [Decimal("9" * 35 + "." + "9" * 30), Decimal("-" + "9" * 35 + "." + "9" * 30)])
    check_values(dec(65, 0), [Decimal("1E+64"), Decimal("-1E+64"), Decimal("123E+10")])
    check_values(dec(65, 0), [Decimal("9" * 66)], compiled=False)


@pytest.mark.parametrize(
    ("precision", "scale", "size"), [(4, 2, 2), (9, 0, 4), (12, 2, 8), (38, 10, 16), (65, 30, 28)]
)
def test_fixed_decimals(precision: int, scale: int, size: int, accelerated: bool) -> None:
    rng = random.Random(precision)
    values = [d for d in decimals(rng, precision, scale) if d != 0 or not d.is_signed()]
    values = [d for d in values if abs(int(d.scaleb(scale))).bit_length() < size * 8]
    assert len(values) > 10
    schema = dec(precision, scale, size)
    for v in values:
        assert check(record_schema(schema), {"f0": v}), v
        assert check(record_schema(["null", schema]), {"f0": None})
        # fastavro's union check wants bytes where its decimal gives a bytearray: not compiled
        assert not check(record_schema(["null", schema]), {"f0": v})
    for v in [Decimal("-0"), Decimal("-0.00"), Decimal("NaN"), Decimal(1).scaleb(-scale - 1), 5]:
        assert not check(record_schema(schema), {"f0": v}), v
    assert check(record_schema(schema), {"f0": b"\x01" * size})
    assert not check(record_schema(schema), {"f0": b"\x01" * (size + 1)})


def test_fixed_decimal_wider_than_its_size_is_fastavros(accelerated: bool) -> None:
    """parse_schema bounds the precision by the size, but an exponent still widens the value."""
    schema = record_schema(dec(4, 0, 2))
    assert not check(schema, {"f0": Decimal("1E+10")})
    assert not check(schema, {"f0": Decimal("-4E+4")})
    assert check(schema, {"f0": Decimal("-3E+4")})
    assert check(schema, {"f0": Decimal("9999")})


def test_enums_and_fixed(accelerated: bool) -> None:
    enum = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
    check_values(enum, ["A", "B", "C"])
    check_values(enum, ["D", "", 1, b"A"], compiled=False)
    many = {"type": "enum", "name": "M", "symbols": [f"S{i}" for i in range(200)]}
    check_values(many, ["S0", "S63", "S64", "S199"])
    fixed = {"type": "fixed", "name": "X", "size": 4}
    check_values(fixed, [b"\0\0\0\0", b"abcd"])
    check_values(fixed, [b"abc", b"abcde", bytearray(b"abcd"), "abcd"], compiled=False)


def test_a_null_field_and_unknown_logical_types(accelerated: bool) -> None:
    assert check(record_schema("null", "long"), {"f0": None, "f1": 5})
    assert not check(record_schema("null", "long"), {"f0": 3, "f1": 5})
    check_values(ts("string", "something-new"), ["x", ""])
    check_values(ts("long", "date"), [5, -(2**40)])  # not a pair fastavro converts: a plain long
    check_values(ts("long", "date"), [dt.date(2020, 1, 1)], compiled=False)


def test_records_fastavro_reads_differently_keep_it(accelerated: bool) -> None:
    schema = record_schema("long", ["null", "string"])
    assert check(schema, {"f0": 1, "f1": "x", "extra": object()})  # extra keys: ignored by both
    assert not check(schema, {"f0": 1})  # a missing nullable field: fastavro writes null
    assert not check(schema, {"f1": "x"})  # fastavro raises
    assert not check(schema, collections.OrderedDict(f0=1, f1="x"))
    assert not check(schema, [1, "x"])
    with_default = {"type": "record", "name": "D", "fields": [{"name": "a", "type": "long", "default": 7}]}
    assert not check(with_default, {})


FLAT = record_schema(
    "long", "int", "boolean", "float", "double", "string", "bytes", dec(12, 2), dec(38, 9, 16),
    ts("long", "timestamp-millis"), ts("long", "timestamp-micros"), ts("long", "local-timestamp-millis"),
    ts("long", "local-timestamp-micros"), ts("int", "date"), ts("int", "time-millis"),
    ts("long", "time-micros"), ts("string", "uuid"), {"type": "enum", "name": "E", "symbols": ["A", "B"]},
    {"type": "fixed", "name": "X", "size": 3}, ["null", "string"], [ts("long", "timestamp-micros"), "null"],
    ["null", dec(10, 3)], ["null", "double"], ["int", "null"],
)  # fmt: skip


def flat_record(rng: random.Random, i: int) -> dict[str, Any]:
    aware = datetimes(rng, aware=True)
    naive = datetimes(rng, aware=False)
    values: list[Any] = [
        rng.choice(LONG_EDGES) if i % 2 else rng.randint(-(2**40), 2**40),
        rng.choice(INT_EDGES),
        i % 3 == 0,
        rng.uniform(-1e6, 1e6),
        rng.choice([rng.uniform(-1e300, 1e300), math.nan, -0.0]),
        rng.choice(["", "a", "ünïcødé ✓", "x" * 300]),
        rng.randbytes(rng.choice([0, 1, 200])),
        rng.choice([*decimals(rng, 12, 2), rng.randint(-(10**11), 10**11).to_bytes(6, "big", signed=True)]),
        rng.choice([d for d in decimals(rng, 38, 9) if d != 0 or not d.is_signed()]),
        rng.choice([*aware, rng.randint(-(10**14), 10**14)]),
        rng.choice([*aware, rng.randint(-(10**17), 10**17)]),
        rng.choice(naive + aware),
        rng.choice([*naive, rng.randint(-(10**17), 10**17)]),
        dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-700_000, 2_000_000)),
        dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999)),
        rng.randint(0, 86_399_999_999),
        uuid.UUID(int=rng.getrandbits(128)),
        rng.choice("AB"),
        rng.randbytes(3),
        None if i % 2 else f"note {i}",
        None if i % 3 else rng.choice(aware),
        None if i % 4 == 1 else rng.choice(decimals(rng, 10, 3)),
        rng.choice([None, 1.5, math.inf]),
        rng.choice([None, 0, -(2**31)]),
    ]
    return {f"f{n}": v for n, v in enumerate(values)}


def test_random_flat_records_give_fastavros_bytes(accelerated: bool) -> None:
    rng = random.Random(9)
    compiled = 0
    for i in range(600):
        compiled += check(FLAT, flat_record(rng, i))
    assert compiled > 550  # the fast path is taken: only non-finite decimals etc. fall back


def test_random_records_with_one_bad_value_fall_back_to_fastavro(accelerated: bool) -> None:
    rng = random.Random(11)
    bad: list[tuple[int, Any]] = [(0, True), (1, 2**31), (3, 1), (4, 7), (5, b"x"), (6, "x"),
                                  (7, Decimal("0.001")), (9, dt.datetime(2020, 1, 1)), (13, dt.datetime(2020, 1, 1)),
                                  (16, 5), (17, "C"), (18, b"ab"), (19, 5), (20, 5.5), (23, 2**40)]  # fmt: skip
    for i in range(200):
        record = flat_record(rng, i)
        field, value = rng.choice(bad)
        record[f"f{field}"] = value
        assert not check(FLAT, record), (field, value)


@pytest.mark.parametrize(
    "avro_type",
    [
        {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "int"}]},
        {"type": "array", "items": "int"},
        {"type": "map", "values": "int"},
        ["null", "string", "long"],
        ["string", "long"],
        ["null", {"type": "array", "items": "long"}],
    ],
)
def test_other_schemas_keep_fastavro(avro_type: Any, accelerated: bool) -> None:
    assert (
        compile_record_writer(parse_schema(record_schema("long", avro_type)), accelerated=accelerated) is None
    )


def test_a_named_type_used_twice_keeps_fastavro(accelerated: bool) -> None:
    enum = {"type": "enum", "name": "E", "symbols": ["A"]}
    assert compile_record_writer(parse_schema(record_schema(enum, "t.E")), accelerated=accelerated) is None


def test_only_records_are_compiled(accelerated: bool) -> None:
    assert compile_record_writer(parse_schema("string"), accelerated=accelerated) is None
    assert (
        compile_record_writer(parse_schema({"type": "array", "items": "long"}), accelerated=accelerated)
        is None
    )
    empty = {"type": "record", "name": "Empty", "fields": []}
    assert compile_record_writer(empty, accelerated=accelerated) is None


def test_the_encoder_prefixes_the_header_and_uses_the_compiled_writer(accelerated: bool) -> None:
    encoder = WireEncoder(record_schema("long", "string"), 258)
    assert isinstance(encoder._compiled, _avrowrite.Writer) is accelerated
    assert encoder.encode({"f0": -1, "f1": "é"}) == b"\0\0\0\x01\x02" + b"\x01" + b"\x04\xc3\xa9"
    assert encoder.encode({"f0": -1, "f1": "é"}) == encoder.encode_fastavro({"f0": -1, "f1": "é"})
    nested = WireEncoder(record_schema({"type": "array", "items": "long"}), 1)
    assert nested._compiled is None
    assert nested.encode({"f0": [1, 2]}) == b"\0\0\0\0\x01" + b"\x04\x02\x04\x00"


class _NoOffset(dt.tzinfo):
    """A tzinfo that makes a datetime naive in effect: aware by its attribute, not by its offset."""

    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta | None:
        return None

    def dst(self, d: dt.datetime | None) -> dt.timedelta | None:
        return None

    def tzname(self, d: dt.datetime | None) -> str | None:
        return None


class _BadZone(_NoOffset):
    """A tzinfo whose offset is refused by datetime (not a timedelta)."""

    def utcoffset(self, d: dt.datetime | None) -> Any:
        return 5


class _Str(str):
    pass


class _Bytes(bytes):
    pass


class _Dict(dict[str, Any]):
    pass


class _UUID(uuid.UUID):
    pass


def fuzz_values(rng: random.Random) -> list[Any]:
    """Values valid and invalid for any modelled type: every field gets the same mixed pool, so each
    one sees ints out of range, bools, floats, strings, bytes, datetimes, Decimals and None."""
    new_york = zoneinfo.ZoneInfo("America/New_York")
    ambiguous = dt.datetime(2024, 11, 3, 1, 30, tzinfo=new_york)  # an hour that happens twice
    values: list[Any] = [
        None, True, False, 0, -1, rng.choice(LONG_EDGES), rng.randint(-(2**70), 2**70), 2**63, -(2**63) - 1,
        2**31, -(2**31) - 1, rng.uniform(-1e6, 1e6), 1e300, -1e39, math.nan, math.inf, -0.0, 3.4028235e38,
        "", "a", "ünï ✓", "𝔘" * rng.randint(1, 300), "\ud800", "x\udfffy", _Str("A"), "A", "B", "C",
        b"", b"abc", b"\xff" * rng.choice([3, 4, 16, 300]), bytearray(b"abc"), _Bytes(b"abc"),
        memoryview(b"abc"), uuid.UUID(int=rng.getrandbits(128)), _UUID(int=5),
        str(uuid.UUID(int=rng.getrandbits(128))), Decimal("1.5"), Decimal("-0"), Decimal("NaN"),
        Decimal(rng.randint(-(10**12), 10**12)).scaleb(-rng.randint(0, 12)), Decimal("1E+40"),
        dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-700_000, 2_900_000)),
        dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999)),
        dt.time(5, tzinfo=new_york), dt.timedelta(seconds=3), ambiguous, ambiguous.replace(fold=1),
        rng.choice(datetimes(rng, aware=True)), rng.choice(datetimes(rng, aware=False)),
        dt.datetime(2020, 1, 1, tzinfo=_NoOffset()), dt.datetime(2020, 1, 1, tzinfo=_BadZone()),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=23, minutes=59))),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(-dt.timedelta(hours=23))),
        object(), [1], {"a": 1},
    ]  # fmt: skip
    return values


FUZZ_TYPES: list[Any] = [
    "null", "boolean", "int", "long", "float", "double", "string", "bytes", ts("string", "uuid"),
    dec(12, 2), dec(38, 9, 16, name="D16"), dec(4, 2, 2, name="D2"), ts("int", "date"),
    ts("int", "time-millis"), ts("long", "time-micros"), ts("long", "timestamp-millis"),
    ts("long", "timestamp-micros"), ts("long", "local-timestamp-millis"),
    ts("long", "local-timestamp-micros"), {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]},
    {"type": "enum", "name": "M", "symbols": ["A"] + [f"S{i}" for i in range(199)]},
    {"type": "fixed", "name": "X3", "size": 3}, ["null", "string"], ["long", "null"],
    ["null", {"type": "fixed", "name": "X16", "size": 16}], ["null", dec(10, 3)],
    [ts("long", "timestamp-micros"), "null"], ["null", "float"], ["null", "boolean"],
]  # fmt: skip


def result_of(writer: RecordWriter, record: Any) -> tuple[str, Any]:
    """A writer's bytes, or the class of what it raised (the caller falls back on any of them)."""
    try:
        return "ok", writer(record)
    except Exception as exc:
        return "error", type(exc)


def test_the_c_and_python_writers_agree_on_random_valid_and_invalid_values() -> None:
    """Records of every modelled type with values drawn from one mixed pool (valid, out of range,
    of the wrong type, in odd zones), records with keys missing and records that are not dicts:
    the C writer returns exactly the Python writer's bytes, or raises the same exception class."""
    schema = parse_schema(record_schema(*FUZZ_TYPES))
    c_writer = writer_of(schema, True, HEADER)
    py_writer = writer_of(schema, False, HEADER)
    rng = random.Random(2026)
    pools = [fuzz_values(rng) for _ in FUZZ_TYPES]
    outcomes: collections.Counter[Any] = collections.Counter()
    for i in range(4000):
        record: Any = {}
        for n, pool in enumerate(pools):
            record[f"f{n}"] = pool[rng.randrange(len(pool))]
        if i % 3:  # mostly valid values, so that records get far (or all the way) before failing
            record = flat_like(rng, record)
        if i % 50 == 1:
            del record[f"f{rng.randrange(len(pools))}"]
        if i % 50 == 2:
            record = _Dict(record)
        expected = result_of(py_writer, record)
        assert result_of(c_writer, record) == expected, record
        outcomes[expected[0] if expected[0] == "ok" else expected[1]] += 1
    # every path was taken: written records and each kind of refusal
    assert outcomes["ok"] > 300, outcomes
    assert {KeyError, OverflowError, UnicodeEncodeError, TypeError} <= set(outcomes), outcomes
    assert sum(n for k, n in outcomes.items() if getattr(k, "__name__", "") == "_Unmodelled") > 300


def flat_like(rng: random.Random, record: dict[str, Any]) -> dict[str, Any]:
    """The record with each field set to a valid value of its type with high probability."""
    valid: dict[int, list[Any]] = {
        0: [None], 1: [True, False], 2: INT_EDGES, 3: LONG_EDGES, 4: [1.5, -0.0, math.nan, 1e38],
        5: [0.1, -1e300, math.inf], 6: ["", "ünï ✓", "x" * 200], 7: [b"", b"\0" * 70],
        8: [uuid.UUID(int=rng.getrandbits(128)), "not-a-uuid"],
        9: [Decimal("12.34"), Decimal("-0.01"), Decimal("9999999999.99"), b"\x01"],
        10: [Decimal("1.5"), Decimal("-12345678901234567890.123456789"), b"\0" * 16],
        11: [Decimal("-1.28"), Decimal("99.99"), b"\0\1"],
        12: [dt.date(2024, 2, 29), dt.date(1, 1, 1), 5], 13: [dt.time(23, 59, 59, 999999), 7],
        14: [dt.time(0, 0, 0, 1), 2**40], 15: datetimes(rng, aware=True), 16: datetimes(rng, aware=True),
        17: datetimes(rng, aware=False) + datetimes(rng, aware=True), 18: datetimes(rng, aware=False),
        19: ["A", "B", "C"], 20: ["A", "S0", "S63", "S64", "S198"], 21: [b"abc"],
        22: [None, "x"], 23: [None, -(2**63)], 24: [None, b"\xff" * 16], 25: [None, Decimal("-1.234")],
        26: [None, *datetimes(rng, aware=True)], 27: [None, 2.5], 28: [None, True],
    }  # fmt: skip
    out = dict(record)
    for n, choices in valid.items():
        if rng.random() < 0.97:
            out[f"f{n}"] = rng.choice(choices)
    return out


def test_the_c_writer_checks_its_arguments() -> None:
    writer = writer_of(parse_schema(record_schema("long")), True, b"\7")
    assert writer({"f0": 1}) == b"\7\2"
    with pytest.raises(TypeError):
        writer()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        writer({"f0": 1}, {"f0": 2})  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        type(writer)()  # type: ignore[misc]  # built by make_writer only


def test_the_c_writer_counts_days_and_microseconds_as_datetime_does() -> None:
    """Dates across the whole calendar (every leap-year rule) and datetimes at every hour of them,
    in the epoch's own zone (done in C), in other zones (datetime subtracts) and naive."""
    types = [ts("int", "date"), ts("long", "timestamp-millis"), ts("long", "timestamp-micros"),
             ts("long", "local-timestamp-millis"), ts("long", "local-timestamp-micros")]  # fmt: skip
    schema = parse_schema(record_schema(*types))
    c_writer, py_writer = writer_of(schema, True), writer_of(schema, False)
    zones = [dt.UTC, dt.timezone(dt.timedelta(hours=-3)), ZONES[1], ZONES[3]]
    for year in range(dt.MINYEAR, dt.MAXYEAR + 1):
        # 1 March and 31 December: the first days counted after a leap day
        for day in (dt.date(year, 3, 1), dt.date(year, 12, 31)):
            moment = dt.datetime.combine(day, dt.time(year % 24, 59, 59, year * 7919 % 10**6))
            zone = zones[year % len(zones)] if dt.MINYEAR < year < dt.MAXYEAR else dt.UTC
            aware = moment.replace(tzinfo=zone)
            record = {"f0": day, "f1": aware, "f2": aware, "f3": moment, "f4": aware}
            assert c_writer(record) == py_writer(record), record
