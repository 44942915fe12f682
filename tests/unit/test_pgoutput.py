"""cdc.pg.pgoutput: decoding of hand-built pgoutput messages, every type, v1 and v2 (streaming).

The messages are built here with struct, field by field in the order of the PostgreSQL docs
("Logical Replication Message Formats"), independently of the decoder's own Structs; a few are
spelled out as literal hex so encoder and decoder cannot share a mistake.
"""

from __future__ import annotations

import copy
import pickle
import struct
from datetime import UTC, datetime, timedelta

import pytest

from cdc.pg.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    BinaryValue,
    ColumnValue,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgOutputDecoder,
    Relation,
    RelColumn,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
    decode,
    format_lsn,
    parse_lsn,
    pg_timestamp_to_datetime,
    pg_timestamp_to_unix_ms,
)
from cdc.pg.types import parse_interval

XID = 0x01020304
# 2024-05-06 07:08:09.123456 UTC in µs since 2000-01-01.
TS = (datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC) - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(
    microseconds=1
)


def u8(v: int) -> bytes:
    return struct.pack("!B", v)


def i16(v: int) -> bytes:
    return struct.pack("!h", v)


def i32(v: int) -> bytes:
    return struct.pack("!i", v)


def u32(v: int) -> bytes:
    return struct.pack("!I", v)


def i64(v: int) -> bytes:
    return struct.pack("!q", v)


def u64(v: int) -> bytes:
    return struct.pack("!Q", v)


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def tup(*cols: ColumnValue) -> bytes:
    out = i16(len(cols))
    for c in cols:
        if c is None:
            out += b"n"
        elif c is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(c, BinaryValue):
            out += b"b" + i32(len(c.data)) + c.data
        else:
            assert isinstance(c, bytes)
            out += b"t" + i32(len(c)) + c
    return out


def xidp(xid: int | None) -> bytes:
    return b"" if xid is None else u32(xid)


# --------------------------------------------------------------------------- transaction framing


def test_begin_literal_bytes() -> None:
    payload = bytes.fromhex("42 00000016B374D848 0002B6D0A0F1E2C3 000004D2")
    msg = decode(payload)
    assert msg == Begin(final_lsn=0x16B374D848, commit_ts_us=0x0002B6D0A0F1E2C3, xid=1234)
    assert format_lsn(msg.final_lsn) == "16/B374D848"


def test_begin_commit_times() -> None:
    msg = decode(b"B" + u64(100) + i64(TS) + u32(XID))
    assert isinstance(msg, Begin)
    assert msg.commit_time == datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert msg.commit_unix_ms == int(datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC).timestamp() * 1000)
    assert msg.xid == XID


def test_commit() -> None:
    msg = decode(b"C" + u8(0) + u64(0x10) + u64(0x20) + i64(TS))
    assert msg == Commit(flags=0, commit_lsn=0x10, end_lsn=0x20, commit_ts_us=TS)
    assert isinstance(msg, Commit)
    assert msg.commit_time.year == 2024


def test_origin() -> None:
    assert decode(b"O" + u64(0xABCDEF) + cstr("node_a")) == Origin(origin_lsn=0xABCDEF, name="node_a")


def test_timestamp_helpers_before_epoch_and_rounding() -> None:
    assert pg_timestamp_to_datetime(0) == datetime(2000, 1, 1, tzinfo=UTC)
    assert pg_timestamp_to_unix_ms(0) == 946_684_800_000
    assert pg_timestamp_to_unix_ms(-1) == 946_684_799_999  # floored, not truncated toward zero
    assert pg_timestamp_to_datetime(-1_000_000) == datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)


# --------------------------------------------------------------------------- schema messages


def _relation_body(namespace: str = "public") -> bytes:
    return (
        u32(16385)
        + cstr(namespace)
        + cstr("orders")
        + b"d"
        + i16(3)
        + u8(1)
        + cstr("id")
        + u32(23)
        + i32(-1)
        + u8(0)
        + cstr("amount")
        + u32(1700)
        + i32((10 << 16 | 2) + 4)
        + u8(0)
        + cstr("note ü")
        + u32(25)
        + i32(-1)
    )


def test_relation() -> None:
    msg = decode(b"R" + _relation_body())
    assert msg == Relation(
        relation_id=16385,
        namespace="public",
        name="orders",
        replica_identity="d",
        columns=(
            RelColumn(1, "id", 23, -1),
            RelColumn(0, "amount", 1700, (10 << 16 | 2) + 4),
            RelColumn(0, "note ü", 25, -1),
        ),
    )
    assert isinstance(msg, Relation)
    assert [c.is_key for c in msg.columns] == [True, False, False]
    assert msg.xid is None


def test_relation_empty_namespace_is_pg_catalog() -> None:
    msg = decode(b"R" + _relation_body(namespace=""))
    assert isinstance(msg, Relation)
    assert msg.namespace == "pg_catalog"


def test_relation_without_columns() -> None:
    msg = decode(b"R" + u32(1) + cstr("s") + cstr("t") + b"n" + i16(0))
    assert msg == Relation(1, "s", "t", "n", ())


def test_type() -> None:
    assert decode(b"Y" + u32(70000) + cstr("public") + cstr("mood")) == Type(70000, "public", "mood")


# --------------------------------------------------------------------------- row changes


def test_insert_literal_bytes() -> None:
    payload = bytes.fromhex(
        "49 00004001 4e 0003"  # I, relid 16385, N, 3 columns
        " 74 00000002 3432"  # t '42'
        " 6e"  # n (NULL)
        " 74 00000000"  # t '' (empty string, not NULL)
    )
    msg = decode(payload)
    assert msg == Insert(relation_id=16385, new=(b"42", None, b""))
    assert isinstance(msg, Insert)
    assert type(msg.new[0]) is bytes


def test_insert_from_memoryview_and_bytearray() -> None:
    payload = b"I" + u32(7) + b"N" + tup(b"a", None, b"\xc3\xbc")
    expected = Insert(7, (b"a", None, b"\xc3\xbc"))
    assert decode(memoryview(payload)) == expected
    assert decode(memoryview(b"xx" + payload)[2:]) == expected
    assert decode(memoryview(bytearray(payload))) == expected
    result = decode(memoryview(bytearray(payload)))
    assert isinstance(result, Insert)
    assert all(type(v) is bytes for v in result.new if v is not None)


def test_insert_binary_value() -> None:
    msg = decode(b"I" + u32(7) + b"N" + tup(BinaryValue(b"\x00\x00\x00\x2a"), b"x"))
    assert msg == Insert(7, (BinaryValue(b"\x00\x00\x00\x2a"), b"x"))


def test_update_new_only_with_unchanged_toast() -> None:
    msg = decode(b"U" + u32(9) + b"N" + tup(b"1", UNCHANGED_TOAST, None, b"u"))
    assert msg == Update(relation_id=9, new=(b"1", UNCHANGED_TOAST, None, b"u"))
    assert isinstance(msg, Update)
    assert msg.old is None
    assert msg.old_kind is None
    # The sentinel is one distinct object: not NULL, not the text value "u", not b"".
    assert msg.new[1] is UNCHANGED_TOAST
    assert msg.new[2] is None
    assert msg.new[3] == b"u"
    assert msg.new[1] is not None


def test_update_with_old_key() -> None:
    msg = decode(b"U" + u32(9) + b"K" + tup(b"1", None) + b"N" + tup(b"2", b"x"))
    assert msg == Update(9, new=(b"2", b"x"), old=(b"1", None), old_kind="K")


def test_update_with_old_row() -> None:
    msg = decode(b"U" + u32(9) + b"O" + tup(b"1", b"old") + b"N" + tup(b"1", b"new"))
    assert msg == Update(9, new=(b"1", b"new"), old=(b"1", b"old"), old_kind="O")


def test_delete_key_and_full() -> None:
    assert decode(b"D" + u32(9) + b"K" + tup(b"1", None)) == Delete(9, "K", (b"1", None))
    assert decode(b"D" + u32(9) + b"O" + tup(b"1", b"x")) == Delete(9, "O", (b"1", b"x"))


def test_truncate() -> None:
    msg = decode(b"T" + u32(2) + u8(3) + u32(100) + u32(200))
    assert msg == Truncate(options=3, relation_ids=(100, 200))
    assert isinstance(msg, Truncate)
    assert msg.cascade
    assert msg.restart_identity
    plain = decode(b"T" + u32(1) + u8(0) + u32(100))
    assert isinstance(plain, Truncate)
    assert not plain.cascade
    assert not plain.restart_identity


def test_logical_message() -> None:
    msg = decode(b"M" + u8(1) + u64(0x55) + cstr("outbox") + i32(5) + b"a\0b\xffc")
    assert msg == LogicalMessage(flags=1, lsn=0x55, prefix="outbox", content=b"a\0b\xffc")
    assert isinstance(msg, LogicalMessage)
    assert msg.transactional
    nontx = decode(b"M" + u8(0) + u64(0x55) + cstr("p") + i32(0))
    assert isinstance(nontx, LogicalMessage)
    assert not nontx.transactional
    assert nontx.content == b""


# --------------------------------------------------------------------------- the sentinel


def test_unchanged_toast_is_a_singleton() -> None:
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    assert pickle.loads(pickle.dumps(UNCHANGED_TOAST)) is UNCHANGED_TOAST  # noqa: S301 - our own bytes
    assert copy.deepcopy(UNCHANGED_TOAST) is UNCHANGED_TOAST
    a = decode(b"U" + u32(1) + b"N" + tup(UNCHANGED_TOAST))
    b = decode(b"U" + u32(2) + b"N" + tup(UNCHANGED_TOAST))
    assert isinstance(a, Update)
    assert isinstance(b, Update)
    assert a.new[0] is b.new[0] is UNCHANGED_TOAST


# --------------------------------------------------------------------------- protocol 2: streaming


def test_stream_framing() -> None:
    assert decode(b"S" + u32(XID) + u8(1)) == StreamStart(xid=XID, first_segment=True)
    assert decode(b"S" + u32(XID) + u8(0)) == StreamStart(xid=XID, first_segment=False)
    assert decode(b"E") == StreamStop()
    commit = decode(b"c" + u32(XID) + u8(0) + u64(0x30) + u64(0x40) + i64(TS))
    assert commit == StreamCommit(xid=XID, flags=0, commit_lsn=0x30, end_lsn=0x40, commit_ts_us=TS)
    assert isinstance(commit, StreamCommit)
    assert commit.commit_time == datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert decode(b"A" + u32(XID) + u32(XID + 1)) == StreamAbort(xid=XID, subxid=XID + 1)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"R" + u32(XID) + _relation_body(), "relation"),
        (b"Y" + u32(XID) + u32(70000) + cstr("public") + cstr("mood"), Type(70000, "public", "mood", XID)),
        (b"I" + u32(XID) + u32(7) + b"N" + tup(b"1"), Insert(7, (b"1",), XID)),
        (
            b"U" + u32(XID) + u32(7) + b"K" + tup(b"1") + b"N" + tup(b"2"),
            Update(7, (b"2",), (b"1",), "K", XID),
        ),
        (b"U" + u32(XID) + u32(7) + b"N" + tup(UNCHANGED_TOAST), Update(7, (UNCHANGED_TOAST,), xid=XID)),
        (b"D" + u32(XID) + u32(7) + b"K" + tup(b"1"), Delete(7, "K", (b"1",), XID)),
        (b"T" + u32(XID) + u32(1) + u8(0) + u32(7), Truncate(0, (7,), XID)),
        (b"M" + u32(XID) + u8(1) + u64(9) + cstr("p") + i32(1) + b"x", LogicalMessage(1, 9, "p", b"x", XID)),
    ],
)
def test_streamed_changes_carry_xid(payload: bytes, expected: object) -> None:
    msg = decode(payload, streaming=True)
    if expected == "relation":
        assert isinstance(msg, Relation)
        assert msg.xid == XID
        assert msg.relation_id == 16385
        assert len(msg.columns) == 3
    else:
        assert msg == expected


def test_streaming_flag_does_not_affect_framing_messages() -> None:
    # Begin/Commit/Origin/Stream* never carry the extra xid, even while streaming.
    assert decode(b"E", streaming=True) == StreamStop()
    assert decode(b"O" + u64(1) + cstr("n"), streaming=True) == Origin(1, "n")
    assert decode(b"C" + u8(0) + u64(1) + u64(2) + i64(3), streaming=True) == Commit(0, 1, 2, 3)


def test_streamed_insert_without_streaming_flag_is_an_error() -> None:
    payload = b"I" + u32(XID) + u32(7) + b"N" + tup(b"1")
    with pytest.raises(ValueError, match="new tuple marker 'N'"):
        decode(payload)


def test_decoder_tracks_stream_blocks() -> None:
    d = PgOutputDecoder()
    seq = [
        b"S" + u32(XID) + u8(1),
        b"I" + u32(XID) + u32(7) + b"N" + tup(b"1"),
        b"E",
        b"B" + u64(100) + i64(TS) + u32(77),
        b"I" + u32(7) + b"N" + tup(b"2"),
        b"C" + u8(0) + u64(100) + u64(108) + i64(TS),
        b"S" + u32(XID) + u8(0),
        b"D" + u32(XID) + u32(7) + b"K" + tup(b"1"),
        b"E",
        b"c" + u32(XID) + u8(0) + u64(200) + u64(208) + i64(TS),
    ]
    out = [d.decode(p) for p in seq]
    assert out[1] == Insert(7, (b"1",), XID)
    assert out[4] == Insert(7, (b"2",), None)
    assert out[7] == Delete(7, "K", (b"1",), XID)
    assert isinstance(out[9], StreamCommit)
    assert not d.in_stream


# --------------------------------------------------------------------------- errors


def test_unknown_message_type() -> None:
    with pytest.raises(ValueError, match=r"unknown pgoutput message type 'Z' \(0x5a\)"):
        decode(b"Z\x00\x00")
    with pytest.raises(ValueError, match="unknown pgoutput message type"):
        decode(b"P" + u8(0))  # two-phase PREPARE (protocol 3) is not supported


def test_empty_message() -> None:
    with pytest.raises(ValueError, match="empty"):
        decode(b"")


@pytest.mark.parametrize(
    "payload",
    [
        b"B" + u64(1) + i64(2),  # xid missing
        b"C" + u8(0) + u64(1),
        b"I" + u32(7) + b"N" + i16(2) + b"t" + i32(1) + b"a",  # second column missing
        b"I" + u32(7) + b"N" + i16(1) + b"t" + i32(10) + b"abc",  # value shorter than its length
        b"R" + u32(1) + cstr("s") + b"t",  # unterminated name
        b"M" + u8(1) + u64(9) + cstr("p") + i32(10) + b"x",
        b"T" + u32(3) + u8(0) + u32(1),
        b"S" + u32(1),
    ],
)
def test_truncated_messages(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"truncated|malformed"):
        decode(payload)


def test_trailing_bytes() -> None:
    with pytest.raises(ValueError, match="1 trailing byte"):
        decode(b"E\x00")


def test_bad_tuple_kind_and_old_kind() -> None:
    with pytest.raises(ValueError, match="unknown tuple column kind 'x'"):
        decode(b"I" + u32(7) + b"N" + i16(1) + b"x")
    with pytest.raises(ValueError, match="'K' or 'O'"):
        decode(b"D" + u32(7) + b"N" + tup(b"1"))


# --------------------------------------------------------------------------- LSNs


@pytest.mark.parametrize(
    ("text", "value"),
    [("0/0", 0), ("16/B374D848", 0x16_B374D848), ("0/16B3748", 0x16B3748), ("FFFFFFFF/FFFFFFFF", 2**64 - 1)],
)
def test_lsn_round_trip(text: str, value: int) -> None:
    assert parse_lsn(text) == value
    assert format_lsn(value) == text


def test_parse_lsn_accepts_lowercase_and_padding() -> None:
    assert parse_lsn("16/b374d848") == 0x16_B374D848
    assert parse_lsn("00000000/016B3748") == 0x16B3748


@pytest.mark.parametrize(
    "text", ["", "16", "16/", "/1", "x/1", "1/2/3", "123456789/0", "-1/0", "+1/0", "1_0/0", " 1/0x1"]
)
def test_parse_lsn_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn(text)


def test_format_lsn_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        format_lsn(-1)
    with pytest.raises(ValueError, match="out of range"):
        format_lsn(2**64)


# --------------------------------------------------------------------------- interval text (cdc.pg.types)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"00:00:00", (0, 0, 0)),
        (b"1 year", (12, 0, 0)),
        (b"1 mon", (1, 0, 0)),
        (b"1 day", (0, 1, 0)),
        (b"1 year 2 mons 3 days 04:05:06.789", (14, 3, 14_706_789_000)),
        (b"-1 years -2 mons +3 days -04:05:06", (-14, 3, -14_706_000_000)),
        (b"-1 years +2 mons", (-10, 0, 0)),
        (b"3 days -00:00:00.000001", (0, 3, -1)),
        (b"-00:00:01.5", (0, 0, -1_500_000)),
        (b"+00:00:01", (0, 0, 1_000_000)),
        (b"2562047788:00:54.775807", (0, 0, 2**63 - 1)),
        (b"-178956970 years -8 mons", (-(2**31), 0, 0)),
        (b"-2147483648 days", (0, -(2**31), 0)),
    ],
)
def test_parse_interval(text: bytes, expected: tuple[int, int, int]) -> None:
    assert parse_interval(text) == expected
    assert parse_interval(text.decode()) == expected


@pytest.mark.parametrize("text", [b"", b"P1Y2M", b"1 year 2 months", b"@ 1 year", b"infinity", b"1:2:3"])
def test_parse_interval_rejects_other_styles(text: bytes) -> None:
    with pytest.raises(ValueError, match="IntervalStyle 'postgres'"):
        parse_interval(text)
