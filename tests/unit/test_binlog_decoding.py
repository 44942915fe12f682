"""The binlog source's pure parts: positions, TIME2 decoding, value rendering, and transaction
assembly on recorded MySQL 8 events (GTID sets, BEGIN/XID, binary JSON) without a server."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, localcontext
from typing import Any

import pytest
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.event import GtidEvent, QueryEvent, XidEvent
from pymysqlreplication.table import Table

from cdc.errors import SchemaError
from cdc.mysql import decoding, rowevents
from cdc.mysql.positions import (
    FilePositions,
    MariadbGtids,
    MysqlGtids,
    Resume,
    resume_of,
)
from cdc.mysql.types import column_info
from cdc.plugin import Op, StreamSpec
from connectors.sources.mysql_binlog.config import BinlogConfig
from connectors.sources.mysql_binlog.source import MysqlBinlogSource, _Table, _TxnAssembler

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


def test_mariadb_gtid_state_moves_per_domain_and_knows_replays() -> None:
    state = MariadbGtids("0-1-10,1-2-5")
    assert state.start() == "0-1-10,1-2-5"
    assert state.applied("0-1-10") and state.applied("1-1-3") and not state.applied("0-1-11")
    state.commit("0-1-11")
    state.commit("2-1-1")
    assert state.start() == "0-1-11,1-2-5,2-1-1"
    assert MariadbGtids("0-1-15,1-2-5,2-1-1").distance(state) == 4


def test_mysql_gtid_set_and_file_positions() -> None:
    state = MysqlGtids(f"{UUID}:1-100")
    assert state.applied(f"{UUID}:100") and not state.applied(f"{UUID}:101")
    state.commit(f"{UUID}:101")
    assert state.start() == f"{UUID}:1-101"
    files = FilePositions("binlog.000002", 400)
    assert files.applied("binlog.000001:900") and not files.applied("binlog.000002:400")
    files.next_at("binlog.000003", 4)
    files.next_at("binlog.000001", 4)  # a replay never moves the position back
    assert files.start() == "binlog.000003:4"


def test_resume_drops_only_replayed_events_of_the_stored_transaction() -> None:
    resume = resume_of({"phase": "stream", "start": "0-1-9", "txn": "0-1-10", "i": 41})
    assert resume == Resume("0-1-10", 41)
    assert resume.drops("0-1-10", 0) and resume.drops("0-1-10", 41)
    assert not resume.drops("0-1-10", 42) and not resume.drops("0-1-11", 0)
    assert resume_of({"phase": "snapshot", "start": "0-1-9"}) is None


def _time2(value: dt.timedelta, fsp: int) -> bytes:
    """MySQL's my_time_packed_to_binary, written from its definition (for round trips)."""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, frac = divmod(micros, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    hms = (hours << 12) | ((rest // 60) << 6) | (rest % 60)
    packed = (hms << 24) + frac
    if value < dt.timedelta(0):
        packed = -packed
    # C semantics: >> is an arithmetic shift (floor), % keeps the dividend's sign, / truncates
    intpart = packed >> 24
    fracpart = -((-packed) % (1 << 24)) if packed < 0 else packed % (1 << 24)
    if fsp == 0:
        return (intpart + 0x800000).to_bytes(3, "big")
    if fsp in (5, 6):
        return (packed + 0x800000000000).to_bytes(6, "big")
    if fsp in (1, 2):
        return (intpart + 0x800000).to_bytes(3, "big") + (int(fracpart / 10000) & 0xFF).to_bytes(1, "big")
    return (intpart + 0x800000).to_bytes(3, "big") + (int(fracpart / 100) & 0xFFFF).to_bytes(2, "big")


@pytest.mark.parametrize(
    ("text", "fsp"),
    [("-00:00:00.000001", 6), ("838:59:59", 0), ("-838:59:59.999999", 6), ("25:00:00.5", 1), ("-00:00:01.25", 2),
     ("-12:34:56.789", 3), ("-00:00:00.0001", 4), ("-1:00:00", 0), ("00:00:00", 6)],
)  # fmt: skip
def test_time2_decodes_negative_fractions_exactly(text: str, fsp: int) -> None:
    negative = text.startswith("-")
    h, m, s = text.lstrip("-").split(":")
    value = dt.timedelta(hours=int(h), minutes=int(m), seconds=float(s))
    value = -value if negative else value
    assert rowevents.time2(_time2(value, fsp), fsp) == value


def test_recorded_negative_time_bytes() -> None:
    # -00:00:00.000001 as TIME(6): the packed value -1 plus the 0x800000000000 offset
    assert rowevents.time2(bytes.fromhex("7fffffffffff"), 6) == -dt.timedelta(microseconds=1)


def test_value_rendering() -> None:
    assert decoding.inet6_text(bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])) == "::ffff:10.0.0.1"
    assert decoding.inet6_text(bytes(16)) == "::" and decoding.inet6_text(bytes(15) + b"\x01") == "::1"
    assert decoding.inet6_text(bytes.fromhex("20010db8000000000000000000000001")) == "2001:db8::1"
    # MySQL's binary JSON, as the library parses it (keys as bytes), rendered like MySQL does
    parsed = {b"a": [1, 2.5, "é", True, None], b"b": {b"c": "x"}}
    assert decoding.render_mysql_json(parsed) == '{"a": [1, 2.5, "é", true, null], "b": {"c": "x"}}'


def _column(name: str, kind: int, **attrs: Any) -> Column:
    base: dict[str, Any] = {
        "type": kind,
        "name": name,
        "unsigned": False,
        "character_set_name": None,
        "is_primary": False,
    }
    return Column(**{**base, **attrs})


class _Reader:
    """What the assembler reads of a BinLogStreamReader."""

    def __init__(self, table_map: dict[int, Table]) -> None:
        self.table_map = table_map
        self.log_file = "binlog.000001"
        self.log_pos = 4


def _event(cls: type, **attrs: Any) -> Any:
    event = object.__new__(cls)
    event.__dict__.update({"timestamp": 1_700_000_000, **attrs})
    return event


def _source() -> MysqlBinlogSource:
    spec = StreamSpec("docs", ("id",), ("id", "title", "meta"), {"table": "shop.docs"})
    source = MysqlBinlogSource(
        BinlogConfig.model_validate({"url": "mysql://u:p@h/shop", "server_id": 7}), [spec]
    )
    columns = {
        "id": column_info("id", "bigint", nullable=False),
        "title": column_info("title", "varchar", nullable=False, column_type="varchar(20)"),
        "meta": column_info("meta", "json", nullable=True),
    }
    source.tables = {"docs": _Table("docs", "shop", "docs", columns)}
    source.mariadb = False
    return source


def _docs_table(table_id: int, *, drop_title: bool = False) -> Table:
    cols = [_column("id", FIELD_TYPE.LONGLONG), _column("title", FIELD_TYPE.VARCHAR, character_set_name="utf8mb4"),
            _column("meta", FIELD_TYPE.JSON), _column("added", FIELD_TYPE.LONG)]  # fmt: skip
    if drop_title:
        cols.pop(1)
    return Table(table_id, "shop", "docs", cols)


def _rows(cls: type, table_id: int, rows: list[dict[str, Any]]) -> Any:
    # the decoded rows, where the library's ``rows`` property keeps them once parsed
    return _event(cls, table_id=table_id, schema="shop", table="docs", _RowsEvent__rows=rows)


def test_mysql8_transactions_from_recorded_events() -> None:
    source = _source()
    reader = _Reader({42: _docs_table(42)})
    assembler = _TxnAssembler(source, MysqlGtids(f"{UUID}:1-7"), Resume(f"{UUID}:8", 0), reader)  # type: ignore[arg-type]
    sid = bytes.fromhex(UUID.replace("-", ""))
    events = [
        _event(GtidEvent, sid=sid, gno=8),
        _event(QueryEvent, query="BEGIN", schema=b"shop"),
        _rows(rowevents.WriteRows, 42, [
            {"values": {"id": 1, "title": "a", "meta": {b"k": [1, "é"]}, "added": 5}},
            {"values": {"id": 2, "title": "b", "meta": None, "added": 5}},
        ]),
        _event(XidEvent),
        _event(GtidEvent, sid=sid, gno=9),
        _event(QueryEvent, query="BEGIN", schema=b"shop"),
        _rows(rowevents.UpdateRows, 42, [{
            "before_values": {"id": 2, "title": "b", "meta": None, "added": 5},
            "after_values": {"id": 3, "title": "b", "meta": None, "added": 5},
        }]),
        _rows(rowevents.DeleteRows, 42, [{"values": {"id": 1, "title": "a", "meta": None, "added": 5}}]),
        _event(XidEvent),
        _event(GtidEvent, sid=sid, gno=8),  # a replay of a transaction already behind: dropped whole
        _event(QueryEvent, query="BEGIN", schema=b"shop"),
        _rows(rowevents.WriteRows, 42, [{"values": {"id": 99, "title": "x", "meta": None, "added": 5}}]),
        _event(XidEvent),
    ]  # fmt: skip
    for event in events:
        assembler.handle(event)
    out = source._handoff.take(0.1)
    got = [(e.op, e.key, e.offset, e.after) for e in out]
    assert got == [
        # index 0 of the first transaction is at or below the stored position: dropped
        (Op.CREATE, {"id": 2}, {"phase": "stream", "start": f"{UUID}:1-7", "txn": f"{UUID}:8", "i": 1},
         {"id": 2, "title": "b", "meta": None}),
        (Op.DELETE, {"id": 2}, {"phase": "stream", "start": f"{UUID}:1-8", "txn": f"{UUID}:9", "i": 0}, None),
        (Op.UPDATE, {"id": 3}, {"phase": "stream", "start": f"{UUID}:1-8", "txn": f"{UUID}:9", "i": 1},
         {"id": 3, "title": "b", "meta": None}),
        (Op.DELETE, {"id": 1}, {"phase": "stream", "start": f"{UUID}:1-8", "txn": f"{UUID}:9", "i": 2}, None),
    ]  # fmt: skip
    assert assembler.tracker.start() == f"{UUID}:1-9"
    # binary JSON of a replayed-but-kept row is rendered as MySQL renders it
    assembler.resume = None
    assembler.handle(_event(GtidEvent, sid=sid, gno=10))
    assembler.handle(
        _rows(
            rowevents.WriteRows,
            42,
            [{"values": {"id": 5, "title": "j", "meta": {b"k": [1, "é"]}, "added": 0}}],
        )
    )
    assembler.handle(_event(XidEvent))
    (event,) = source._handoff.take(0.1)
    assert event.after == {"id": 5, "title": "j", "meta": '{"k": [1, "é"]}'}


def test_a_table_map_without_a_mapped_column_stops_before_its_rows() -> None:
    source = _source()
    reader = _Reader({42: _docs_table(42, drop_title=True)})
    assembler = _TxnAssembler(source, MysqlGtids(f"{UUID}:1-7"), None, reader)  # type: ignore[arg-type]
    assembler.handle(_event(GtidEvent, sid=bytes.fromhex(UUID.replace("-", "")), gno=8))
    with pytest.raises(
        SchemaError, match=r"stream 'docs', table shop.docs: mapped column 'title' was dropped"
    ):
        assembler.handle(_rows(rowevents.WriteRows, 42, [{"values": {"id": 1, "meta": None, "added": 1}}]))
    assert source._handoff.take(0.05) == []


def test_a_retyped_mapped_column_stops() -> None:
    source = _source()
    table = _docs_table(42)
    table.columns[0] = _column("id", FIELD_TYPE.LONG)  # bigint -> int
    assembler = _TxnAssembler(source, MysqlGtids(f"{UUID}:1-7"), None, _Reader({42: table}))  # type: ignore[arg-type]
    assembler.handle(_event(GtidEvent, sid=bytes.fromhex(UUID.replace("-", "")), gno=8))
    with pytest.raises(
        SchemaError, match=r"column 'id': type changed: was bigint, the binlog now carries int"
    ):
        assembler.handle(
            _rows(rowevents.WriteRows, 42, [{"values": {"id": 1, "title": "t", "meta": None, "added": 1}}])
        )


def _decimal_binary(value: Decimal, precision: int, scale: int) -> bytes:
    """MySQL's decimal2bin, written from its definition (for round trips)."""
    with localcontext() as ctx:
        ctx.prec = 100
        sign, digits, _ = value.quantize(Decimal(1).scaleb(-scale)).as_tuple()
    text = "".join(map(str, digits)).rjust(precision, "0")
    whole, frac = text[: precision - scale], text[precision - scale :]
    sizes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    out = bytearray()
    rest = len(whole) % 9
    groups = ([whole[:rest]] if rest else []) + [whole[i : i + 9] for i in range(rest, len(whole), 9)]
    for g in groups:
        out += int(g).to_bytes(sizes[len(g)] if len(g) < 9 else 4, "big")
    for i in range(0, len(frac), 9):
        g = frac[i : i + 9]
        out += int(g).to_bytes(4 if len(g) == 9 else sizes[len(g)], "big")
    if sign:
        out = bytearray(b ^ 0xFF for b in out)
    out[0] ^= 0x80
    return bytes(out)


@pytest.mark.parametrize(
    ("text", "precision", "scale"),
    [("0", 10, 0), ("-1.5", 10, 2), ("123.456", 65, 30), ("9" * 35 + "." + "9" * 30, 65, 30),
     ("-" + "9" * 35 + "." + "9" * 30, 65, 30), ("0.000000000000000000000000000001", 65, 30),
     ("-12345678901234567890", 20, 0), ("18446744073709551615", 20, 0), ("-0.01", 12, 2), ("7", 1, 0),
     ("-3.14159", 6, 5), ("99999999.9", 9, 1)],
)  # fmt: skip
def test_decimal_binary_round_trips(text: str, precision: int, scale: int) -> None:
    value = Decimal(text)
    raw = _decimal_binary(value, precision, scale)
    assert len(raw) == rowevents.decimal_size(precision, scale)
    got = rowevents.new_decimal(raw, precision, scale)
    assert got == value and got.as_tuple().exponent == -scale


def test_an_update_keeps_the_zero_dates_and_empty_sets_of_each_image() -> None:
    source = _source()
    source.tables["docs"].columns["title"] = column_info("title", "date", nullable=True)
    table = _docs_table(42)
    table.columns[1] = _column("title", FIELD_TYPE.DATE)
    assembler = _TxnAssembler(source, MysqlGtids(f"{UUID}:1-7"), None, _Reader({42: table}))  # type: ignore[arg-type]
    assembler.handle(_event(GtidEvent, sid=bytes.fromhex(UUID.replace("-", "")), gno=8))
    row = {
        "before_values": {"id": 1, "title": None, "meta": None, "added": 1},
        "before_none_sources": {"title": "null", "meta": "null"},
        "after_values": {"id": 1, "title": None, "meta": None, "added": 1},
        "after_none_sources": {"title": "out of date range", "meta": "null"},
    }
    assembler.handle(_rows(rowevents.UpdateRows, 42, [row]))
    assembler.handle(_event(XidEvent))
    (event,) = source._handoff.take(0.1)
    assert event.before is not None and event.after is not None
    assert event.before["title"] is None  # a real NULL
    assert event.after["title"] == "0000-00-00"  # a zero date: the converter makes it a row error
