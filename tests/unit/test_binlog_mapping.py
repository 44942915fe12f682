"""The binlog source's fast paths against their references on the same input: the compiled
row mapping (``RowMapper.mapped`` / ``key_of``) against ``RowMapper.values``, the assembler's
insert/delete loop against its per-row ``_add`` path, the MariaDB GTID state's parse cache, and
the reader's socket check (``more_waiting``) on a real socket pair."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE
from pymysqlreplication.event import MariadbGtidEvent, XidEvent
from pymysqlreplication.table import Table

from cdc.mysql import rowevents
from cdc.mysql.decoding import build_mapper
from cdc.mysql.positions import MariadbGtids, Resume
from cdc.mysql.reader import FastStreamReader
from cdc.mysql.types import column_info
from cdc.plugin import ColumnInfo, StreamSpec
from connectors.sources.mysql_binlog.config import BinlogConfig
from connectors.sources.mysql_binlog.source import MysqlBinlogSource, _Table, _TxnAssembler


def _column(name: str, kind: int, **attrs: Any) -> Column:
    base = {"type": kind, "name": name, "unsigned": False, "character_set_name": None, "is_primary": False}
    return Column(**{**base, **attrs})


# (TABLE_MAP column, start-up description) of every kind of normalization the mapping has
_COLUMNS: list[tuple[Column, ColumnInfo]] = [
    (_column("id", FIELD_TYPE.LONGLONG), column_info("id", "bigint", nullable=False)),
    (_column("n", FIELD_TYPE.LONG, unsigned=True), column_info("n", "int", nullable=True, unsigned=True)),
    (_column("name", FIELD_TYPE.VARCHAR, character_set_name="utf8mb4", max_length=80),
     column_info("name", "varchar", nullable=True)),
    (_column("amount", FIELD_TYPE.NEWDECIMAL, precision=12, decimals=2),
     column_info("amount", "decimal", nullable=True, precision=12, scale=2)),
    (_column("ts", FIELD_TYPE.TIMESTAMP2, fsp=6), column_info("ts", "timestamp", nullable=True, fsp=6)),
    (_column("at", FIELD_TYPE.DATETIME2, fsp=0), column_info("at", "datetime", nullable=True)),
    (_column("day", FIELD_TYPE.DATE), column_info("day", "date", nullable=True)),
    (_column("f", FIELD_TYPE.FLOAT), column_info("f", "float", nullable=True)),
    (_column("flags", FIELD_TYPE.SET, set_values=["a", "b"]), column_info("flags", "set", nullable=True)),
    (_column("color", FIELD_TYPE.ENUM, enum_values=["", "red", "blue"]), column_info("color", "enum", nullable=True)),
    (_column("bits", FIELD_TYPE.BIT, bits=3, bytes=1), column_info("bits", "bit", nullable=True)),
    (_column("u", FIELD_TYPE.STRING, character_set_name="binary", max_length=16),
     column_info("u", "uuid", nullable=True)),
    (_column("blob", FIELD_TYPE.BLOB, character_set_name="binary", length_size=2),
     column_info("blob", "blob", nullable=True)),
    (_column("doc", FIELD_TYPE.JSON, length_size=4), column_info("doc", "json", nullable=True)),
    (_column("y", FIELD_TYPE.YEAR), column_info("y", "year", nullable=True)),
    (_column("ignored", FIELD_TYPE.LONG), column_info("ignored", "int", nullable=True)),
]  # fmt: skip
_MAPPED = [c.name for c, _ in _COLUMNS if c.name != "ignored"]

_TYPICAL = {
    "id": 7, "n": 4_000_000_000, "name": "é x", "amount": Decimal("-12.50"),
    "ts": dt.datetime(2026, 12, 3, 11, 0, 0, 123456), "at": dt.datetime(2026, 1, 2, 3, 4, 5),
    "day": dt.date(2026, 2, 28), "f": 1.100000023841858, "flags": {"b"}, "color": "blue", "bits": "101",
    "u": uuid.UUID(int=1).bytes.rstrip(b"\0"), "blob": b"\x00\xff", "doc": {b"k": [1, "é"]}, "y": 2026,
    "ignored": 3,
}  # fmt: skip
_ROWS: list[tuple[dict[str, Any], dict[str, str] | None]] = [
    (_TYPICAL, {}),
    (_TYPICAL, None),
    ({**_TYPICAL, **{c: None for c in _MAPPED if c != "id"}}, {c: NONE_SOURCE.NULL for c in _MAPPED if c != "id"}),
    # the library's stand-ins: zero dates, an empty SET, the zero timestamp (the epoch), b"" as ""
    ({**_TYPICAL, "day": None, "at": None, "flags": None, "ts": dt.datetime(1970, 1, 1), "blob": "", "y": 1900},
     {"day": NONE_SOURCE.OUT_OF_DATE_RANGE, "at": NONE_SOURCE.OUT_OF_DATETIME2_RANGE, "flags": NONE_SOURCE.EMPTY_SET}),
    # values of other types than the binlog's (the slow path of each step)
    ({**_TYPICAL, "ts": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "name": b"bytes", "day": "0000-00-00",
      "at": "0000-00-00 00:00:00", "color": 2, "doc": '{"a": 1}'}, {}),
    ({**_TYPICAL, "ts": dt.datetime(1970, 1, 1, 0, 0, 0, 1), "at": dt.datetime(1970, 1, 1)}, None),
]  # fmt: skip


def _shape() -> tuple[Table, dict[str, ColumnInfo]]:
    table = Table(42, "shop", "t", [c for c, _ in _COLUMNS])
    return table, {info.name: info for _, info in _COLUMNS}


def _typed(values: dict[str, Any]) -> list[tuple[str, type, Any]]:
    return [(k, type(v), v) for k, v in values.items()]


@pytest.mark.parametrize("zero_dates", ["error", "null"])
@pytest.mark.parametrize("row", range(len(_ROWS)))
def test_the_compiled_mapping_equals_the_reference(zero_dates: Any, row: int) -> None:
    table, baselines = _shape()
    mapper = build_mapper("s", "shop.t", table, _MAPPED, ("id", "name"), baselines, zero_dates)
    values, none_sources = _ROWS[row]

    def outcome(f: Any) -> Any:
        try:
            return _typed(f(dict(values), dict(none_sources) if none_sources is not None else None))
        except Exception as exc:  # the same error, or the same values
            return (type(exc), str(exc))

    expected = outcome(mapper.values)
    assert outcome(mapper.mapped) == expected
    assert isinstance(expected, list) or row >= 4  # the binlog's own values map without an error
    if isinstance(expected, list):
        out = mapper.values(values, none_sources)
        assert _typed(mapper.key_of(out)) == _typed({"id": out["id"], "name": out["name"]})


def test_mappers_built_without_plans_compile_the_generic_calls() -> None:
    table, baselines = _shape()
    full = build_mapper("s", "shop.t", table, _MAPPED, ("id",), baselines)
    bare = type(full)(
        full.stream, full.table, full.columns, full.key_columns, full.normalizers, full.stand_ins
    )
    for values, none_sources in _ROWS[:4]:
        assert _typed(bare.mapped(values, none_sources)) == _typed(full.values(values, none_sources))


class _Incremental:
    """An idle incremental snapshot: makes the assembler take its per-row reference path."""

    busy = False

    def on_change(self, stream: str, key: tuple[Any, ...]) -> None:
        """Nothing to do while idle."""


def _assembler(incremental: bool, resume: Resume | None) -> tuple[MysqlBinlogSource, _TxnAssembler]:
    spec = StreamSpec("s", ("id", "name"), tuple(_MAPPED), {"table": "shop.t"})
    source = MysqlBinlogSource(
        BinlogConfig.model_validate({"url": "mysql://u:p@h/shop", "server_id": 7}), [spec]
    )
    table, baselines = _shape()
    source.tables = {"s": _Table("s", "shop", "t", baselines)}
    source.incremental = _Incremental() if incremental else None  # type: ignore[assignment]
    reader = SimpleNamespace(table_map={42: table}, log_file="b.1", log_pos=4)
    return source, _TxnAssembler(source, MariadbGtids("0-1-9"), resume, reader)  # type: ignore[arg-type]


def _event(cls: type, **attrs: Any) -> Any:
    made = object.__new__(cls)
    made.__dict__.update({"timestamp": 1_700_000_000, **attrs})
    return made


def _rows(cls: type, images: list[tuple[dict[str, Any], dict[str, str] | None]]) -> Any:
    made = [{"values": dict(v), "none_sources": dict(s or {})} for v, s in images]
    return _event(cls, table_id=42, schema="shop", table="t", _RowsEvent__rows=made)


def _assembled(incremental: bool, resume: Resume | None) -> list[Any]:
    source, assembler = _assembler(incremental, resume)
    for seq in (10, 11, 9):  # 9: a replay, dropped whole
        assembler.handle(_event(MariadbGtidEvent, gtid=f"0-1-{seq}"))
        assembler.handle(_rows(rowevents.WriteRows, _ROWS[:4]))
        assembler.handle(_rows(rowevents.DeleteRows, _ROWS[3:4] + _ROWS[:1]))
        assembler.handle(_event(XidEvent))
    assembler._flush()
    return source._handoff.take(0.1)


@pytest.mark.parametrize("resume", [None, Resume("0-1-10", 2), Resume("0-1-11", 0)])
def test_the_insert_and_delete_loop_equals_the_per_row_path(resume: Resume | None) -> None:
    fast, reference = _assembled(False, resume), _assembled(True, resume)
    assert len(reference) == (12 if resume is None else 9 if resume.txn.endswith("10") else 11)
    assert [(e.stream, e.op, _typed(e.key), e.after and _typed(e.after), e.partition, e.offset,
             e.before and _typed(e.before), e.ts_ms, e.txid, e.source) for e in fast] == [
        (e.stream, e.op, _typed(e.key), e.after and _typed(e.after), e.partition, e.offset,
         e.before and _typed(e.before), e.ts_ms, e.txid, e.source) for e in reference
    ]  # fmt: skip


def test_the_gtid_parse_cache_keeps_the_answers_and_the_errors() -> None:
    state = MariadbGtids("0-1-10,1-2-5")
    assert state.applied("0-1-10") and not state.applied("0-1-11")
    state.commit("0-1-11")
    assert state.start() == "0-1-11,1-2-5" and state.applied("0-1-11")
    single = MariadbGtids("0-1-10")
    assert not single.applied("0-2-12")
    single.commit("0-2-12")
    assert single.start() == "0-2-12"
    for bad in ("", "0-1", "x-1-2"):
        with pytest.raises(ValueError, match="not a MariaDB GTID"):
            single.applied(bad)
        with pytest.raises(ValueError, match="not a MariaDB GTID"):
            single.commit(bad)


def test_more_waiting_counts_the_bytes_the_kernel_reported() -> None:
    ours, server = socket.socketpair()
    try:
        reader: Any = object.__new__(FastStreamReader)
        reader._stream_connection = SimpleNamespace(_sock=ours)
        assert not reader.more_waiting()  # nothing sent
        server.sendall(b"x" * 100)
        assert reader.more_waiting()  # the kernel holds 100 bytes
        reader._cdc_taken = 60
        assert reader.more_waiting()  # 40 of them are certainly still waiting
        ours.recv(100)
        reader._cdc_taken = 100
        assert not reader.more_waiting()  # all taken: asked again, nothing there
        server.sendall(b"y")
        assert reader.more_waiting()
        reader._stream_connection = SimpleNamespace(_sock=None)
        assert not reader.more_waiting()
    finally:
        ours.close()
        server.close()


@pytest.mark.parametrize("waiting", [False, True])
def test_the_reader_pauses_only_after_handing_over_everything_that_had_arrived(
    monkeypatch: pytest.MonkeyPatch, waiting: bool
) -> None:
    """A commit with nothing more on the socket hands the chunk over and pauses the reader (the
    next read then takes every transaction committed meanwhile); with more waiting, neither."""
    from cdc.mysql import stream
    from connectors.sources.mysql_binlog import source as binlog_source

    pauses: list[str] = []
    monkeypatch.setattr(stream, "more_waiting", lambda reader: waiting)
    monkeypatch.setattr(binlog_source, "pause_caught_up", lambda: pauses.append("pause"))
    source, assembler = _assembler(False, None)
    for seq in (10, 11):
        assembler.handle(_event(MariadbGtidEvent, gtid=f"0-1-{seq}"))
        assembler.handle(_rows(rowevents.WriteRows, _ROWS[:1]))
        assembler.handle(_event(XidEvent))
    handed = source._handoff.take(0.1)
    if waiting:
        assert (pauses, handed, len(assembler.chunk)) == ([], [], 2)  # still collecting
    else:
        assert pauses == ["pause", "pause"]  # one per hand-off
        assert [e.txid for e in handed] == ["0-1-10", "0-1-11"]
