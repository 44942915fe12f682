"""The compiled row readers (cdc.mysql.rowdecoder) on constructed rows-event bodies: every value
equals the library's own decoding of the same bytes (and the expected value), NULLs, partial
images, updates, and the fall-backs to the library."""

from __future__ import annotations

import datetime as dt
import json
import random
import struct
import zlib
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.protocol import MysqlPacket
from pymysqlreplication import row_event
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.table import Table

from cdc.mysql import rowdecoder, rowevents
from tests.unit.test_binlog_decoding import _time2  # MySQL's TIME2 packing, for round trips

WRITE_V2, UPDATE_V2, DELETE_V2 = 30, 31, 32
TABLE_ID = 77


def _column(name: str, kind: int, **attrs: Any) -> Column:
    base = {"type": kind, "name": name, "unsigned": False, "character_set_name": None, "is_primary": False}
    return Column(**{**base, **attrs})


class _Ctl:
    charset = "utf8mb4"

    def _get_dbms(self) -> str:
        return "mysql"


def _lenenc(n: int) -> bytes:
    assert n < 251
    return bytes([n])


def _event(event_type: int, table: Table, rows: bytes, present: bytes, present2: bytes | None = None) -> Any:
    """A rows event as the library builds it from a replication packet (V2, no extra data)."""
    body = TABLE_ID.to_bytes(6, "little") + struct.pack("<HH", 1, 2) + _lenenc(len(table.columns))
    body += present + (present2 if present2 is not None else b"") + rows
    header = struct.pack("<cIBIIIH", b"\x00", 1_700_000_000, event_type, 1, 19 + len(body), 4321, 0)
    rowevents.install()
    wrapper = BinLogPacketWrapper(
        MysqlPacket(header + body, "utf8"), {TABLE_ID: table}, _Ctl(), (8, 0, 0), False,
        frozenset({rowevents.WriteRows, rowevents.UpdateRows, rowevents.DeleteRows}),
        None, None, None, None, False, False, False, True, False,
    )  # fmt: skip
    assert wrapper.event is not None
    return wrapper.event


def _library_rows(
    event_type: int, table: Table, rows: bytes, present: bytes, present2: bytes | None = None
) -> Any:
    """The same bytes decoded by the library's own value-by-value reader (with our TIME2/DECIMAL)."""
    event = _event(event_type, table, rows, present, present2)
    return row_event.RowsEvent.rows.fget(event)


def _both(event_type: int, table: Table, rows: bytes, present: bytes, present2: bytes | None = None) -> Any:
    event = _event(event_type, table, rows, present, present2)
    fast = rowdecoder.decode_rows(event, event_type == UPDATE_V2)
    assert fast is not None, "the compiled reader declined"
    assert event.packet.read_bytes == event.event_size  # the body consumed as the library would
    expected = _library_rows(event_type, table, rows, present, present2)
    assert fast == expected
    for got, want in zip(fast, expected, strict=True):  # same types too (True == 1, 1 == 1.0)
        for part in got:
            assert [type(v) for v in got[part].values()] == [type(v) for v in want[part].values()]
    return fast


# --- encoders written from MySQL's storage formats ---


def _decimal(value: Decimal, precision: int, scale: int) -> bytes:
    with localcontext() as ctx:
        ctx.prec = 100
        sign, digits, _ = value.quantize(Decimal(1).scaleb(-scale)).as_tuple()
    text = "".join(map(str, digits)).rjust(precision, "0")
    whole, frac = text[: precision - scale], text[precision - scale :]
    sizes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    out = bytearray()
    rest = len(whole) % 9
    for g in ([whole[:rest]] if rest else []) + [whole[i : i + 9] for i in range(rest, len(whole), 9)]:
        out += int(g).to_bytes(sizes[len(g)] if len(g) < 9 else 4, "big")
    for i in range(0, len(frac), 9):
        g = frac[i : i + 9]
        out += int(g).to_bytes(4 if len(g) == 9 else sizes[len(g)], "big")
    if sign:
        out = bytearray(b ^ 0xFF for b in out)
    out[0] ^= 0x80
    return bytes(out)


def _frac(micro: int, fsp: int) -> bytes:
    if fsp in (1, 2):
        return (micro // 10000).to_bytes(1, "big")
    if fsp in (3, 4):
        return (micro // 100).to_bytes(2, "big")
    if fsp in (5, 6):
        return micro.to_bytes(3, "big")
    return b""


def _datetime2(v: dt.datetime, fsp: int) -> bytes:
    packed = ((v.year * 13 + v.month) << 22) | (v.day << 17) | (v.hour << 12) | (v.minute << 6) | v.second
    return (packed | 1 << 39).to_bytes(5, "big") + _frac(v.microsecond, fsp)


def _zero_datetime2(fsp: int) -> bytes:
    return (1 << 39).to_bytes(5, "big") + bytes((fsp + 1) // 2)


def _timestamp2(v: dt.datetime, fsp: int) -> bytes:
    seconds = (v.replace(microsecond=0) - dt.datetime(1970, 1, 1)) // dt.timedelta(seconds=1)
    return seconds.to_bytes(4, "big") + _frac(v.microsecond, fsp)


def _date(v: dt.date) -> bytes:
    return (v.year << 9 | v.month << 5 | v.day).to_bytes(3, "little")


def _var(raw: bytes, width: int = 1) -> bytes:
    return len(raw).to_bytes(width, "little") + raw


# MySQL binary JSON {"a": 1}: small object, one key entry, one inlined int16 value, the key
_JSON_OBJECT = bytes.fromhex("0001000c000b00010005010061")
# the string "é" (JSONB string: type 0x0c, a variable-length size, the UTF-8 bytes)
_JSON_STRING = b"\x0c" + _var("é".encode())

Spec = tuple[str, int, dict[str, Any], bytes, Any]  # name, type, column attributes, stored bytes, value

ALL_TYPES: list[Spec] = [
    ("ti", FIELD_TYPE.TINY, {}, struct.pack("<b", -128), -128),
    ("tu", FIELD_TYPE.TINY, {"unsigned": True}, struct.pack("<B", 255), 255),
    ("si", FIELD_TYPE.SHORT, {}, struct.pack("<h", -32768), -32768),
    ("su", FIELD_TYPE.SHORT, {"unsigned": True}, struct.pack("<H", 65535), 65535),
    ("mi", FIELD_TYPE.INT24, {}, (-8388608 & 0xFFFFFF).to_bytes(3, "little"), -8388608),
    ("mu", FIELD_TYPE.INT24, {"unsigned": True}, (16777215).to_bytes(3, "little"), 16777215),
    ("ii", FIELD_TYPE.LONG, {}, struct.pack("<i", -(2**31)), -(2**31)),
    ("iu", FIELD_TYPE.LONG, {"unsigned": True}, struct.pack("<I", 2**32 - 1), 2**32 - 1),
    ("bi", FIELD_TYPE.LONGLONG, {}, struct.pack("<q", -(2**63)), -(2**63)),
    ("bu", FIELD_TYPE.LONGLONG, {"unsigned": True}, struct.pack("<Q", 2**64 - 1), 2**64 - 1),
    ("fl", FIELD_TYPE.FLOAT, {"size": 4}, struct.pack("<f", 1.1), struct.unpack("<f", struct.pack("<f", 1.1))[0]),
    ("db", FIELD_TYPE.DOUBLE, {"size": 8}, struct.pack("<d", -2.5e300), -2.5e300),
    ("yr", FIELD_TYPE.YEAR, {}, bytes([125]), 2025),
    ("y0", FIELD_TYPE.YEAR, {}, bytes([0]), 1900),  # the library's YEAR 0000 (decoding.py maps it back)
    ("vc", FIELD_TYPE.VARCHAR, {"max_length": 80, "character_set_name": "utf8mb4"}, _var("héllo 😀".encode()), "héllo 😀"),
    ("vl", FIELD_TYPE.VARCHAR, {"max_length": 1200, "character_set_name": "utf8mb4"}, _var(b"x" * 300, 2), "x" * 300),
    ("l1", FIELD_TYPE.VARCHAR, {"max_length": 20, "character_set_name": "latin1"}, _var(b"caf\xe9 \x80"), "café €"),
    ("ch", FIELD_TYPE.STRING, {"max_length": 12, "character_set_name": "utf8mb4"}, _var(b"ab"), "ab"),
    ("vb", FIELD_TYPE.VARCHAR, {"max_length": 10, "character_set_name": "binary"}, _var(b"\x00\xff"), b"\x00\xff"),
    ("eb", FIELD_TYPE.VARCHAR, {"max_length": 10, "character_set_name": "binary"}, _var(b""), ""),
    ("bn", FIELD_TYPE.STRING, {"max_length": 16, "character_set_name": "binary"}, _var(b"\x01\x02"), b"\x01\x02"),
    ("tx", FIELD_TYPE.BLOB, {"length_size": 2, "character_set_name": "utf8mb4"}, _var("ü" .encode() * 200, 2), "ü" * 200),
    ("bl", FIELD_TYPE.BLOB, {"length_size": 4, "character_set_name": "binary"}, _var(bytes(range(256)), 4), bytes(range(256))),
    ("b3", FIELD_TYPE.BLOB, {"length_size": 3, "character_set_name": "binary"}, _var(b"abc", 3), b"abc"),
    ("jo", FIELD_TYPE.JSON, {"length_size": 4}, _var(_JSON_OBJECT, 4), {b"a": 1}),
    ("js", FIELD_TYPE.JSON, {"length_size": 4}, _var(_JSON_STRING, 4), "é".encode()),  # as bytes: decoding.py renders it
    ("d1", FIELD_TYPE.NEWDECIMAL, {"precision": 12, "decimals": 2}, _decimal(Decimal("-1234567890.12"), 12, 2), Decimal("-1234567890.12")),
    ("d2", FIELD_TYPE.NEWDECIMAL, {"precision": 65, "decimals": 30},
     _decimal(Decimal("9" * 35 + "." + "9" * 30), 65, 30), Decimal("9" * 35 + "." + "9" * 30)),
    ("d3", FIELD_TYPE.NEWDECIMAL, {"precision": 20, "decimals": 0},
     _decimal(Decimal("18446744073709551615"), 20, 0), Decimal("18446744073709551615")),
    ("dt", FIELD_TYPE.DATE, {}, _date(dt.date(2024, 2, 29)), dt.date(2024, 2, 29)),
    ("t0", FIELD_TYPE.DATETIME2, {"fsp": 0}, _datetime2(dt.datetime(9999, 12, 31, 23, 59, 59), 0), dt.datetime(9999, 12, 31, 23, 59, 59)),
    ("t3", FIELD_TYPE.DATETIME2, {"fsp": 3}, _datetime2(dt.datetime(2021, 1, 2, 3, 4, 5, 678000), 3), dt.datetime(2021, 1, 2, 3, 4, 5, 678000)),
    ("t5", FIELD_TYPE.DATETIME2, {"fsp": 5}, _datetime2(dt.datetime(1000, 1, 1, 0, 0, 0, 12340), 5), dt.datetime(1000, 1, 1, 0, 0, 0, 12340)),
    ("t6", FIELD_TYPE.DATETIME2, {"fsp": 6}, _datetime2(dt.datetime(2021, 1, 2, 3, 4, 5, 999999), 6), dt.datetime(2021, 1, 2, 3, 4, 5, 999999)),
    ("s0", FIELD_TYPE.TIMESTAMP2, {"fsp": 0}, _timestamp2(dt.datetime(2038, 1, 19, 3, 14, 7), 0), dt.datetime(2038, 1, 19, 3, 14, 7)),
    ("s1", FIELD_TYPE.TIMESTAMP2, {"fsp": 1}, _timestamp2(dt.datetime(2020, 5, 6, 7, 8, 9, 500000), 1), dt.datetime(2020, 5, 6, 7, 8, 9, 500000)),
    ("s2", FIELD_TYPE.TIMESTAMP2, {"fsp": 2}, _timestamp2(dt.datetime(2020, 5, 6, 7, 8, 9, 10000), 2), dt.datetime(2020, 5, 6, 7, 8, 9, 10000)),
    ("s4", FIELD_TYPE.TIMESTAMP2, {"fsp": 4}, _timestamp2(dt.datetime(1970, 1, 1, 0, 0, 1, 1200), 4), dt.datetime(1970, 1, 1, 0, 0, 1, 1200)),
    ("s6", FIELD_TYPE.TIMESTAMP2, {"fsp": 6}, _timestamp2(dt.datetime(2024, 12, 3, 8, 0, 0, 123456), 6), dt.datetime(2024, 12, 3, 8, 0, 0, 123456)),
    ("z0", FIELD_TYPE.TIMESTAMP2, {"fsp": 6}, bytes(7), dt.datetime(1970, 1, 1)),  # MySQL's zero timestamp
    ("h0", FIELD_TYPE.TIME2, {"fsp": 0}, _time2(dt.timedelta(hours=838, minutes=59, seconds=59), 0), dt.timedelta(hours=838, minutes=59, seconds=59)),
    ("hn", FIELD_TYPE.TIME2, {"fsp": 6}, _time2(-dt.timedelta(microseconds=1), 6), -dt.timedelta(microseconds=1)),
    ("h2", FIELD_TYPE.TIME2, {"fsp": 2}, _time2(-dt.timedelta(seconds=1, microseconds=250000), 2), -dt.timedelta(seconds=1, microseconds=250000)),
    ("h3", FIELD_TYPE.TIME2, {"fsp": 3}, _time2(-dt.timedelta(hours=12, minutes=34, seconds=56, microseconds=789000), 3),
     -dt.timedelta(hours=12, minutes=34, seconds=56, microseconds=789000)),
    ("en", FIELD_TYPE.ENUM, {"size": 1, "enum_values": ["", "small", "large"]}, bytes([2]), "large"),
    ("e0", FIELD_TYPE.ENUM, {"size": 1, "enum_values": ["", "small", "large"]}, bytes([0]), ""),
    ("e2", FIELD_TYPE.ENUM, {"size": 2, "enum_values": ["", *[f"v{i}" for i in range(300)]]}, (300).to_bytes(2, "little"), "v299"),
    ("st", FIELD_TYPE.SET, {"size": 1, "set_values": ["a", "b", "c"]}, bytes([0b101]), {"a", "c"}),
    ("s8", FIELD_TYPE.SET, {"size": 8, "set_values": [f"m{i}" for i in range(64)]}, (1 << 63 | 1).to_bytes(8, "little"), {"m0", "m63"}),
    ("b1", FIELD_TYPE.BIT, {"bits": 1, "bytes": 1}, bytes([1]), "1"),
    ("ba", FIELD_TYPE.BIT, {"bits": 10, "bytes": 2}, (0b1000000001).to_bytes(2, "big"), "1000000001"),
    ("b8", FIELD_TYPE.BIT, {"bits": 64, "bytes": 8}, (2**64 - 2).to_bytes(8, "big"), "1" * 63 + "0"),
    ("gm", FIELD_TYPE.GEOMETRY, {"length_size": 4}, _var(b"\x00\x00\x00\x00\x01\x01", 4), b"\x00\x00\x00\x00\x01\x01"),
]  # fmt: skip


def _table(spec: list[Spec]) -> Table:
    return Table(TABLE_ID, "shop", "t", [_column(name, kind, **attrs) for name, kind, attrs, _, _ in spec])


def _full(n: int) -> bytes:
    return b"\xff" * ((n + 7) // 8)


def _nulls(n: int, null: set[int]) -> bytes:
    return sum(1 << i for i in null).to_bytes((n + 7) // 8, "little")


def test_every_compiled_type_equals_the_library_and_the_expected_value() -> None:
    table = _table(ALL_TYPES)
    n = len(ALL_TYPES)
    row = _nulls(n, set()) + b"".join(raw for _, _, _, raw, _ in ALL_TYPES)
    (got,) = _both(WRITE_V2, table, row, _full(n))
    assert got["values"] == {name: value for name, _, _, _, value in ALL_TYPES}
    assert got["none_sources"] == {}


@pytest.mark.parametrize("event_type", [WRITE_V2, DELETE_V2])
def test_nulls_in_every_column_and_several_rows(event_type: int) -> None:
    table = _table(ALL_TYPES)
    n = len(ALL_TYPES)
    values = [raw for _, _, _, raw, _ in ALL_TYPES]
    every_other = {i for i in range(n) if i % 2}
    rows = (
        _nulls(n, set(range(n)))
        + _nulls(n, every_other)
        + b"".join(v for i, v in enumerate(values) if i not in every_other)
    )
    rows += _nulls(n, set()) + b"".join(values)
    got = _both(event_type, table, rows, _full(n))
    assert len(got) == 3
    assert all(v is None for v in got[0]["values"].values())
    assert got[0]["none_sources"] == dict.fromkeys(got[0]["values"], "null")
    assert [k for k, v in got[1]["values"].items() if v is None] == [
        ALL_TYPES[i][0] for i in sorted(every_other)
    ]


def test_zero_dates_empty_sets_and_empty_json_say_why_they_are_none() -> None:
    spec: list[Spec] = [
        ("d", FIELD_TYPE.DATE, {}, bytes(3), None),
        ("dm", FIELD_TYPE.DATE, {}, (2020 << 9 | 0 << 5 | 1).to_bytes(3, "little"), None),  # 2020-00-01
        ("t", FIELD_TYPE.DATETIME2, {"fsp": 6}, _zero_datetime2(6), None),
        ("t0", FIELD_TYPE.DATETIME2, {"fsp": 0}, _zero_datetime2(0), None),
        ("s", FIELD_TYPE.SET, {"size": 1, "set_values": ["a", "b"]}, bytes([0]), None),
        ("j", FIELD_TYPE.JSON, {"length_size": 4}, bytes(4), None),
        ("k", FIELD_TYPE.LONG, {}, struct.pack("<i", 7), 7),
    ]
    (got,) = _both(
        WRITE_V2, _table(spec), _nulls(len(spec), set()) + b"".join(s[3] for s in spec), _full(len(spec))
    )
    assert got["none_sources"] == {
        "d": "out of date range", "dm": "out of date range", "t": "out of datetime2 range",
        "t0": "out of datetime2 range", "s": "empty set", "j": "null",
    }  # fmt: skip


def test_update_before_and_after_images() -> None:
    spec: list[Spec] = [s for s in ALL_TYPES if s[0] in ("bi", "vc", "d1", "s6", "hn", "st", "dt")]
    table = _table(spec)
    n = len(spec)
    before = _nulls(n, {2, 6}) + b"".join(s[3] for i, s in enumerate(spec) if i not in (2, 6))
    after = _nulls(n, set()) + b"".join(s[3] for s in spec)
    got = _both(UPDATE_V2, table, before + after + after + before, _full(n), _full(n))
    assert len(got) == 2
    first = got[0]
    assert first["before_values"]["d1"] is None and first["before_none_sources"] == {
        "d1": "null",
        "st": "null",
    }
    assert first["after_values"] == {name: value for name, _, _, _, value in spec}
    assert first["after_none_sources"] == {}
    assert got[1]["before_values"] == first["after_values"]


def test_partial_images_leave_absent_columns_none() -> None:
    # binlog_row_image=MINIMAL: the before image has the key only, the after image the changes
    spec: list[Spec] = [s for s in ALL_TYPES if s[0] in ("bi", "vc", "d1", "s6")]
    table = _table(spec)
    key_only, changed = bytes([0b0001]), bytes([0b1010])
    before = _nulls(1, set()) + spec[0][3]
    after = _nulls(2, {1}) + spec[1][3]  # vc set, s6 set to NULL
    (got,) = _both(UPDATE_V2, table, before + after, key_only, changed)
    assert got["before_values"] == {"bi": -(2**63), "vc": None, "d1": None, "s6": None}
    assert got["before_none_sources"] == {"vc": "cols bitmap", "d1": "cols bitmap", "s6": "cols bitmap"}
    assert got["after_values"] == {"bi": None, "vc": "héllo 😀", "d1": None, "s6": None}
    assert got["after_none_sources"] == {"bi": "cols bitmap", "d1": "cols bitmap", "s6": "null"}


def test_the_reader_is_compiled_once_per_table_shape() -> None:
    spec: list[Spec] = [s for s in ALL_TYPES if s[0] in ("bi", "ii", "vc", "d1", "s6")]
    table = _table(spec)
    row = _nulls(len(spec), set()) + b"".join(s[3] for s in spec)
    for _ in range(3):
        _both(WRITE_V2, table, row, _full(len(spec)))
    assert list(table._cdc_readers) == [_full(len(spec))]


def _through_rows(event_type: int, table: Table, rows: bytes, present: bytes) -> Any:
    return _event(event_type, table, rows, present).rows


def test_other_types_and_damaged_bodies_fall_back_to_the_library() -> None:
    # DATETIME (the pre-5.6 format) is not compiled: the whole table keeps the library's reader
    old: list[Spec] = [("id", FIELD_TYPE.LONG, {}, struct.pack("<i", 1), 1),
           ("at", FIELD_TYPE.DATETIME, {}, struct.pack("<Q", 20240102030405), dt.datetime(2024, 1, 2, 3, 4, 5))]  # fmt: skip
    table = _table(old)
    row = _nulls(2, set()) + b"".join(s[3] for s in old)
    event = _event(WRITE_V2, table, row, _full(2))
    assert rowdecoder.decode_rows(event, False) is None
    assert event.packet.read_bytes < event.event_size  # nothing consumed
    assert event.rows == [{"values": {"id": 1, "at": dt.datetime(2024, 1, 2, 3, 4, 5)}, "none_sources": {}}]
    assert table._cdc_readers == {_full(2): None}
    # ENUM without labels (no binlog_row_metadata=FULL) is the library's too
    assert (
        rowdecoder.compile_reader([_column("e", FIELD_TYPE.ENUM, size=1, enum_values=None)], b"\x01") is None
    )
    assert rowdecoder.compile_reader([_column(None, FIELD_TYPE.LONG)], b"\x01") is None  # type: ignore[arg-type]
    # an impossible date: the library's own error, not a value
    bad: list[Spec] = [
        (
            "d",
            FIELD_TYPE.DATE,
            {},
            _date(dt.date(2021, 2, 1))[:0] + (2021 << 9 | 2 << 5 | 30).to_bytes(3, "little"),
            None,
        )
    ]
    with pytest.raises(ValueError, match="day is out of range"):
        _through_rows(WRITE_V2, _table(bad), _nulls(1, set()) + bad[0][3], _full(1))
    # a body that does not end where the rows do: the library reads it (and fails its own way)
    ints: list[Spec] = [("i", FIELD_TYPE.LONG, {}, struct.pack("<i", 5), 5)]
    short = _event(WRITE_V2, _table(ints), _nulls(1, set()) + b"\x05\x00", _full(1))
    assert rowdecoder.decode_rows(short, False) is None
    with pytest.raises(AssertionError, match="Result length not requested length"):
        short.rows  # noqa: B018


def test_rows_property_serves_the_compiled_rows_and_keeps_them() -> None:
    spec: list[Spec] = [s for s in ALL_TYPES if s[0] in ("bi", "vc", "s6")]
    table = _table(spec)
    row = _nulls(len(spec), set()) + b"".join(s[3] for s in spec)
    event = _event(WRITE_V2, table, row, _full(len(spec)))
    rows = event.rows
    assert rows == [{"values": {s[0]: s[4] for s in spec}, "none_sources": {}}]
    assert event.rows is rows  # parsed once
    assert event.packet.read_bytes == event.event_size


# --- the fast event loop (cdc.mysql.reader) against the library's, on the same packets ---


class _Stream:
    """The replication connection: hands out the given packets, then an EOF packet."""

    def __init__(self, packets: list[bytes]) -> None:
        self.packets = list(packets)

    def _read_packet(self) -> MysqlPacket:
        return MysqlPacket(self.packets.pop(0) if self.packets else b"\xfe\x00\x00\x02\x00", "utf8")

    def close(self) -> None:
        pass


class _CtlConn(_Ctl):
    def close(self) -> None:
        pass


def _packet(
    event_type: int, body: bytes, log_pos: int, timestamp: int = 1_700_000_123, server_id: int = 3
) -> bytes:
    return (
        struct.pack("<cIBIIIH", b"\x00", timestamp, event_type, server_id, 19 + len(body), log_pos, 0) + body
    )


def _rows_body(
    table_id: int, ncols: int, rows: bytes, present: bytes, present2: bytes | None = None
) -> bytes:
    return (
        table_id.to_bytes(6, "little")
        + struct.pack("<HH", 1, 2)
        + _lenenc(ncols)
        + present
        + (present2 or b"")
        + rows
    )


def _with_checksum(packet: bytes) -> bytes:
    """The packet as a server with binlog_checksum=CRC32 sends it (4 more bytes, counted in the size)."""
    size = struct.unpack_from("<I", packet, 10)[0] + 4
    return packet[:10] + struct.pack("<I", size) + packet[14:] + zlib.crc32(packet[1:]).to_bytes(4, "little")


def _stream_reader(cls: type, packets: list[bytes], events: list[type], checksum: bool = False) -> Any:
    rowevents.install()
    if checksum:
        packets = [_with_checksum(p) for p in packets]
    reader = cls(connection_settings={}, server_id=5, blocking=True, only_events=events,
                 only_schemas=["shop"], only_tables=["t", "old"])  # fmt: skip
    reader._stream_connection = _Stream(packets)
    reader._ctl_connection = _CtlConn()
    reader._BinLogStreamReader__connected_stream = True
    reader._BinLogStreamReader__connected_ctl = True
    reader._BinLogStreamReader__use_checksum = checksum
    return reader


def _drain(reader: Any) -> list[tuple[Any, ...]]:
    out = []
    while (event := reader.fetchone()) is not None:
        fields = {k: v for k, v in vars(event).items() if k in _COMPARED}
        rows = event.rows if hasattr(type(event), "rows") else None
        out.append((type(event), fields, rows, reader.log_pos, dict(reader.table_map)))
    return out


_COMPARED = {"timestamp", "event_type", "event_size", "gtid", "server_id", "gtid_seq_no", "domain_id", "flags",
             "xid", "table_id", "schema", "table", "primary_key", "number_of_columns", "columns_present_bitmap",
             "columns_present_bitmap2", "extra_data_length"}  # fmt: skip


@pytest.mark.parametrize("checksum", [False, True])
def test_the_fast_loop_yields_what_the_library_yields(checksum: bool) -> None:
    from pymysqlreplication import BinLogStreamReader

    from cdc.mysql import stream
    from cdc.mysql.reader import FastStreamReader

    spec: list[Spec] = [s for s in ALL_TYPES if s[0] in ("bi", "vc", "d1", "s6", "en", "st", "ba")]
    table = _table(spec)
    table.primary_key = "bi"
    old = Table(78, "shop", "old", [_column("id", FIELD_TYPE.LONG), _column("at", FIELD_TYPE.DATETIME)])
    table_map_raw = b"raw TABLE_MAP body of shop.t"  # stands for bytes the library parsed before
    old_map_raw = b"raw TABLE_MAP body of shop.old"
    rowevents.CachedTableMap._parsed[table_map_raw] = table
    rowevents.CachedTableMap._parsed[old_map_raw] = old
    n = len(spec)
    full = _nulls(n, set()) + b"".join(s[3] for s in spec)
    nulls = _nulls(n, {1, 3}) + b"".join(s[3] for i, s in enumerate(spec) if i not in (1, 3))
    packets = [
        _packet(162, struct.pack("<QIB", 41, 0, 0) + b"\x00" * 6, 1000),  # MariaDB GTID 0-3-41
        _packet(19, table_map_raw, 1100),
        _packet(WRITE_V2, _rows_body(TABLE_ID, n, full + nulls, _full(n)), 1200),
        _packet(UPDATE_V2, _rows_body(TABLE_ID, n, full + nulls, _full(n), _full(n)), 1300),
        _packet(DELETE_V2, _rows_body(TABLE_ID, n, nulls, _full(n)), 1400),
        _packet(WRITE_V2, _rows_body(99, n, full, _full(n)), 1450),  # no TABLE_MAP: filtered
        _packet(19, old_map_raw, 1500),
        _packet(WRITE_V2, _rows_body(78, 2, b"\x00" + struct.pack("<iQ", 7, 20240102030405), b"\x03"), 1600),
        _packet(16, struct.pack("<Q", 99), 1700),  # XID
        _packet(162, struct.pack("<QIB", 42, 1, 1), 1800, server_id=9),
    ]
    expected = [e for e in _drain(_stream_reader(BinLogStreamReader, packets, stream.EVENTS, checksum))
                if e[0] is not rowevents.CachedTableMap]  # fmt: skip
    got = _drain(_stream_reader(FastStreamReader, packets, stream.EVENTS, checksum))
    assert [e[0] for e in got] == [e[0] for e in expected]
    # built from the bytes (no packet wrapper) but for the table with a DATETIME column
    fast = _stream_reader(FastStreamReader, packets, stream.EVENTS, checksum)
    built = [vars(e)["packet"] is None for e in iter(fast.fetchone, None)]
    assert built == [True, True, True, True, False, True, True]
    assert got == expected
    assert [e[1].get("gtid") for e in got if "gtid" in e[1]] == ["0-3-41", "1-9-42"]
    assert got[4][2] == [{"values": {"id": 7, "at": dt.datetime(2024, 1, 2, 3, 4, 5)}, "none_sources": {}}]
    # a consumer that asked for inserts only: the other rows events are skipped, positions kept
    inserts = [e for e in stream.EVENTS if e not in (rowevents.UpdateRows, rowevents.DeleteRows)]
    expected = [e for e in _drain(_stream_reader(BinLogStreamReader, packets, inserts, checksum))
                if e[0] is not rowevents.CachedTableMap]  # fmt: skip
    assert _drain(_stream_reader(FastStreamReader, packets, inserts, checksum)) == expected


def _recorded_reader(cls: type, recording: dict[str, Any]) -> Any:
    rowevents.install()
    reader = cls(connection_settings={}, server_id=5, blocking=True, only_events=stream_events(),
                 only_schemas=[recording["schema"]], only_tables=["matrix"])  # fmt: skip
    reader._stream_connection = _Stream([bytes.fromhex(p) for p in recording["packets"]])
    reader._ctl_connection = _CtlConn()
    reader._BinLogStreamReader__connected_stream = True
    reader._BinLogStreamReader__connected_ctl = True
    reader._BinLogStreamReader__use_checksum = recording["use_checksum"]
    reader._BinLogStreamReader__optional_meta_data = True
    return reader


def stream_events() -> list[type]:
    from cdc.mysql import stream

    return list(stream.EVENTS)


def test_recorded_mariadb_packets_of_every_type_read_as_the_library_reads_them() -> None:
    from pymysqlreplication import BinLogStreamReader

    from cdc.mysql.reader import FastStreamReader

    recording = json.loads((Path(__file__).parent / "data" / "binlog_matrix_packets.json").read_text())
    rowevents.CachedTableMap._parsed.clear()
    expected = [e for e in _drain(_recorded_reader(BinLogStreamReader, recording))
                if e[0] is not rowevents.CachedTableMap]  # fmt: skip
    rowevents.CachedTableMap._parsed.clear()  # the fast reader meets the first TABLE_MAP unparsed
    # (which the library parses and returns; the known ones after it are applied, not returned)
    got = [
        e
        for e in _drain(_recorded_reader(FastStreamReader, recording))
        if e[0] is not rowevents.CachedTableMap
    ]
    assert [e[0].__name__ for e in got] == [e[0].__name__ for e in expected]
    assert got == expected
    rows = [e for e in got if e[2] is not None]
    assert [e[0] for e in rows] == [rowevents.WriteRows] * 8 + [rowevents.UpdateRows] * 2 + [
        rowevents.DeleteRows
    ]
    # every rows event was read by the compiled readers, none by the library's decoder
    rowevents.CachedTableMap._parsed.clear()
    fast = _recorded_reader(FastStreamReader, recording)
    built = [type(e) for e in iter(fast.fetchone, None) if vars(e)["packet"] is None]
    assert built.count(rowevents.WriteRows) == 8 and built.count(rowevents.DeleteRows) == 1
    # a few values, as the library gives them (decoding.py makes them canonical)
    first_update = rows[8][2][0]
    assert first_update["after_values"]["t6"] == -dt.timedelta(microseconds=1)
    assert first_update["after_values"]["u8"] == first_update["before_values"]["u8"] + "!"
    emptied = rows[9][2]
    assert all(
        r["after_values"]["s"] is None and r["after_none_sources"]["s"] == "empty set" for r in emptied
    )
    assert all(r["after_values"]["e"] is None and r["after_none_sources"]["e"] == "null" for r in emptied)


def test_an_event_sink_receives_the_hot_events_the_loop_would_return() -> None:
    """deliver_to: GTID, rows and XID events go to the sink (with the reader's position past
    each), everything else is still returned, in the same order; fetchone returns None after
    each XID."""
    from pymysqlreplication.event import MariadbGtidEvent, XidEvent

    from cdc.mysql.reader import FastStreamReader

    recording = json.loads((Path(__file__).parent / "data" / "binlog_matrix_packets.json").read_text())

    def summary(kind: str, event: Any, log_pos: int) -> tuple[Any, ...]:
        fields = {k: v for k, v in vars(event).items() if k in _COMPARED} if event is not None else {}
        rows = event.rows if hasattr(type(event), "rows") else None
        return (kind, fields, rows, log_pos)

    rowevents.CachedTableMap._parsed.clear()
    expected = []
    for event in _drain(_recorded_reader(FastStreamReader, recording)):
        kind, fields, rows, log_pos, _ = event
        if kind is MariadbGtidEvent:
            gtid = (
                fields["gtid"],
                fields["domain_id"],
                fields["server_id"],
                fields["gtid_seq_no"],
                fields["timestamp"],
            )
            expected.append(("gtid", gtid, log_pos))
        elif kind is XidEvent:
            expected += [("xid", log_pos), ("turn",)]
        elif kind in (rowevents.WriteRows, rowevents.UpdateRows, rowevents.DeleteRows):
            expected.append(("rows", summary(kind.__name__, None, log_pos)[0], fields, rows, log_pos))
        else:
            expected.append(("returned", kind.__name__, log_pos))
    assert [e[0] for e in expected].count("gtid") >= 5 and ("turn",) in expected

    rowevents.CachedTableMap._parsed.clear()
    reader = _recorded_reader(FastStreamReader, recording)
    got: list[tuple[Any, ...]] = []

    class Sink:
        def mariadb_gtid(self, gtid: str, domain: int, server: int, seq: int, timestamp: int) -> None:
            got.append(("gtid", (gtid, domain, server, seq, timestamp), reader.log_pos))

        def rows(self, event: Any) -> bool:
            _, fields, rows, log_pos = summary(type(event).__name__, event, reader.log_pos)
            got.append(("rows", type(event).__name__, fields, rows, log_pos))
            return False

        def xid(self) -> None:
            got.append(("xid", reader.log_pos))

    reader.deliver_to(Sink())
    while reader._BinLogStreamReader__connected_stream:
        event = reader.fetchone()
        if event is None:
            if reader._BinLogStreamReader__connected_stream:
                got.append(("turn",))
        else:
            got.append(("returned", type(event).__name__, reader.log_pos))
    assert got == expected

    # a sink that asks for its turn after a rows event gets it there (a stop inside a large
    # transaction): fetchone returns None right after each rows event
    rowevents.CachedTableMap._parsed.clear()
    reader = _recorded_reader(FastStreamReader, recording)
    turns: list[str] = []

    class Stopping(Sink):
        def rows(self, event: Any) -> bool:
            turns.append("rows")
            return True

        def xid(self) -> None:
            turns.append("xid")

    reader.deliver_to(Stopping())
    while reader._BinLogStreamReader__connected_stream:
        if reader.fetchone() is None and reader._BinLogStreamReader__connected_stream:
            turns.append("turn")
    rows_seen = turns.count("rows")
    assert rows_seen == 11 and turns.count("turn") == rows_seen + turns.count("xid")
    assert all(turns[i + 1] == "turn" for i, t in enumerate(turns) if t == "rows")


def test_another_library_version_keeps_the_library_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdc.mysql import reader

    recording = json.loads((Path(__file__).parent / "data" / "binlog_matrix_packets.json").read_text())
    monkeypatch.setattr(reader, "LOOP_MATCHES", False)
    events = list(iter(_recorded_reader(reader.FastStreamReader, recording).fetchone, None))
    assert events and all(vars(e)["packet"] is not None for e in events)  # all built by the library


class _Lost(_Stream):
    """A connection whose read timed out (the server sent nothing for read_timeout seconds)."""

    def _read_packet(self) -> MysqlPacket:
        raise pymysql.OperationalError(2013, "Lost connection to MySQL server during query")


def test_a_lost_stream_reconnects_with_the_library_warning(caplog: pytest.LogCaptureFixture) -> None:
    from cdc.mysql.reader import FastStreamReader

    recording = json.loads((Path(__file__).parent / "data" / "binlog_matrix_packets.json").read_text())
    reader = _recorded_reader(FastStreamReader, recording)
    packets = reader._stream_connection.packets
    reader._stream_connection = _Lost([])
    reconnects = []

    def connect() -> None:  # what __connect_to_stream does: a new connection, registered again
        reconnects.append(1)
        reader._stream_connection = _Stream(packets)
        reader._BinLogStreamReader__connected_stream = True

    reader._BinLogStreamReader__connect_to_stream = connect
    with caplog.at_level("WARNING", logger="pymysqlreplication"):
        first = reader.fetchone()
    assert type(first).__name__ == "MariadbGtidEvent" and reconnects == [1]
    assert "Re-request the connection" in caplog.text


def test_unrolled_decimals_and_timestamps_equal_the_helpers() -> None:
    """The generated code of DECIMAL and TIMESTAMP2 columns (unrolled per precision, scale and
    fsp) gives what new_decimal and the timestamp helper give, on random and edge values."""
    rng = random.Random(20261204)
    for precision in range(1, 66):
        for scale in sorted({0, 1, precision // 2, min(precision, 30)} - {s for s in range(66) if s > 30}):
            if scale > precision:
                continue
            column = _column("d", FIELD_TYPE.NEWDECIMAL, precision=precision, decimals=scale)
            read = rowdecoder.compile_reader([column], b"\x01")
            assert read is not None
            ints = [0, 10**precision - 1, -(10**precision) + 1]
            ints += [rng.randrange(-(10**precision) + 1, 10**precision) for _ in range(20)]
            values = [Decimal(n).scaleb(-scale, context=Context(prec=100)) for n in ints]
            for value in values:
                raw = _decimal(value, precision, scale)
                got, _, end = read(b"\x00" + raw, 0)
                want = rowdecoder.new_decimal(raw, precision, scale)
                assert end == 1 + len(raw)
                assert got["d"] == want == value and str(got["d"]) == str(want), (precision, scale, value)
    for fsp in range(7):
        column = _column("s", FIELD_TYPE.TIMESTAMP2, fsp=fsp)
        read = rowdecoder.compile_reader([column], b"\x01")
        assert read is not None
        size = 4 + (fsp + 1) // 2
        for _ in range(200):
            raw = bytes(rng.randrange(256) for _ in range(size))
            frac = int.from_bytes(raw[4:], "big", signed=True) if fsp else 0
            try:
                want = rowdecoder._timestamp2(int.from_bytes(raw[:4], "big", signed=True), frac, fsp)
            except ValueError:  # a fraction no server writes: both refuse it (the library decodes it)
                with pytest.raises(ValueError, match="microsecond"):
                    read(b"\x00" + raw, 0)
                continue
            got, _, end = read(b"\x00" + raw, 0)
            assert end == 1 + size and got["s"] == want, (fsp, raw.hex())
