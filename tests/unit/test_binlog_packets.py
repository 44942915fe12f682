"""The replication stream's packet reads (cdc.mysql.reader.read_packet) against pymysql's own
Connection._read_packet on the same bytes: payloads, sequence numbers, continuation packets,
timeouts, error packets and lost connections; and the fast event loop reading a real pymysql
connection yields what the library's loop yields from the same stream."""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

import pymysql
import pymysql.connections
import pytest

from cdc.mysql import reader as fast_reader
from cdc.mysql import rowevents
from tests.unit.test_binlog_rowdecoder import (
    ALL_TYPES,
    TABLE_ID,
    WRITE_V2,
    Spec,
    _CtlConn,
    _drain,
    _full,
    _nulls,
    _packet,
    _rows_body,
    _table,
)

MAX = 2**24 - 1


class _Sock:
    """The socket under the buffered reader: records the timeouts set on it."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []
        self.closed = False

    def settimeout(self, value: float | None) -> None:
        self.timeouts.append(value)

    def close(self) -> None:
        self.closed = True


class _Failing(io.RawIOBase):
    """A raw stream that fails with ``error`` once its bytes are read."""

    def __init__(self, raw: bytes, error: BaseException) -> None:
        self.raw, self.error = raw, error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.raw:
            raise self.error
        n = min(len(buffer), len(self.raw))
        buffer[:n] = self.raw[:n]
        self.raw = self.raw[n:]
        return n


def _frame(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq % 256]) + payload


def _framed(payloads: list[bytes], first_seq: int = 1) -> bytes:
    """Payloads as the server sends them: one packet each, 16 MB ones split in continuations."""
    out, seq = bytearray(), first_seq
    for payload in payloads:
        while True:
            part, payload = payload[:MAX], payload[MAX:]
            out += _frame(part, seq)
            seq += 1
            if len(part) < MAX:
                break
    return bytes(out)


def _connection(raw: bytes | io.RawIOBase, next_seq: int = 1) -> Any:
    """A pymysql Connection in the state the replication stream leaves it, reading ``raw``."""
    conn: Any = object.__new__(pymysql.connections.Connection)
    source = raw if isinstance(raw, io.RawIOBase) else io.BytesIO(raw)
    conn._rfile = io.BufferedReader(source)
    conn._sock = _Sock()
    conn._read_timeout = 30
    conn._current_timeout = None
    conn._next_seq_id = next_seq
    conn._result = None
    conn.encoding = "utf8"
    return conn


def _state(conn: Any) -> tuple[Any, ...]:
    sock = conn._sock
    return conn._next_seq_id, conn._current_timeout, sock is None, conn._rfile is None


def _outcome(read: Any, make: Any) -> tuple[list[Any], tuple[Any, ...], tuple[Any, ...] | None]:
    """Payloads read until an error: (payloads, connection state, (error type, args) or None)."""
    conn = make()
    sock = conn._sock
    got: list[Any] = []
    error = None
    try:
        for _ in range(1000):
            got.append(read(conn))
    except BaseException as exc:  # the error itself is compared
        error = (type(exc), exc.args, type(exc.__context__))
    return got, (*_state(conn), tuple(sock.timeouts), sock.closed), error


def _same(make: Any) -> tuple[list[Any], tuple[Any, ...], tuple[Any, ...] | None]:
    expected = _outcome(lambda c: c._read_packet()._data, make)
    got = _outcome(fast_reader.read_packet, make)
    assert got == expected
    return got


def test_payloads_sequence_numbers_and_the_lazy_timeout_are_pymysqls() -> None:
    payloads = [b"\x00" + bytes(range(200)) * i for i in range(1, 300)]  # the sequence number wraps
    got, state, error = _same(lambda: _connection(_framed(payloads)))
    assert got[: len(payloads)] == payloads
    assert state[4] == (30,)  # the read timeout set once, before the first read
    assert error is not None and error[0] is pymysql.OperationalError  # the stream ended


def test_continuation_packets_are_joined_as_pymysql_joins_them() -> None:
    big = b"\x00" + b"x" * (MAX - 1)  # exactly one full packet, then an empty continuation
    bigger = b"\x00" + bytes(range(256)) * (2 * MAX // 256 + 3)  # two full packets and a tail
    payloads = [b"\x00small", big, bigger, b"\x00after"]
    got, _, _ = _same(lambda: _connection(_framed(payloads)))
    assert got[:4] == payloads


def test_error_packets_raise_pymysqls_exception() -> None:
    error = b"\xff" + struct.pack("<H", 1236) + b"#HY000" + b"Could not find first log file name"
    got, _, raised = _same(lambda: _connection(_framed([b"\x00ok....", error])))
    assert raised is not None and raised[0] is pymysql.OperationalError and raised[1][0] == 1236
    assert got == [b"\x00ok...."]


@pytest.mark.parametrize(
    ("raw", "next_seq"),
    [
        (_frame(b"\x00late", 3), 1),  # a packet out of sequence
        (_frame(b"\xff\x1d\x05#HY000shutdown", 0), 1),  # MariaDB's error with sequence 0 at shutdown
        (_frame(b"\x00short", 1)[:-2], 1),  # the connection closed inside a payload
        (b"\x05\x00", 1),  # ... inside a header
        (_frame(b"", 1), 1),  # an empty payload: pymysql's IndexError
        (b"", 1),
    ],
)
def test_broken_streams_fail_as_pymysql_fails(raw: bytes, next_seq: int) -> None:
    _same(lambda: _connection(raw, next_seq))


@pytest.mark.parametrize(
    "error", [OSError(104, "Connection reset by peer"), TimeoutError("timed out"), KeyboardInterrupt()]
)
def test_read_errors_close_the_connection_as_pymysql_does(error: BaseException) -> None:
    head = _framed([b"\x00first packet"])
    _, state, raised = _same(lambda: _connection(_Failing(head, error)))
    assert raised is not None and state[2] and state[3]  # socket and reader dropped


def test_a_socket_timeout_is_pymysqls_lost_connection() -> None:
    ours, server = socket.socketpair()
    try:
        conn = _connection(b"")
        conn._rfile = ours.makefile("rb")
        conn._sock = ours
        conn._read_timeout = 0.05
        server.sendall(_framed([b"\x00one"]))
        assert fast_reader.read_packet(conn) == b"\x00one"
        assert ours.gettimeout() == 0.05
        with pytest.raises(pymysql.OperationalError) as raised:
            fast_reader.read_packet(conn)
        assert raised.value.args[0] == 2013 and "timed out" in raised.value.args[1]
        assert conn._sock is None
    finally:
        ours.close()
        server.close()


# --- the event loop on a real pymysql connection ---


def _stream(cls: type, raw: bytes, events: list[type]) -> Any:
    rowevents.install()
    reader = cls(connection_settings={}, server_id=5, blocking=True, only_events=events,
                 only_schemas=["shop"], only_tables=["t"])  # fmt: skip
    reader._stream_connection = _connection(raw)
    reader._ctl_connection = _CtlConn()
    reader._BinLogStreamReader__connected_stream = True
    reader._BinLogStreamReader__connected_ctl = True
    reader._BinLogStreamReader__use_checksum = False
    return reader


def test_the_fast_loop_reads_a_pymysql_connection_as_the_library_does() -> None:
    from pymysqlreplication import BinLogStreamReader

    from cdc.mysql import stream

    spec: list[Spec] = [s for s in ALL_TYPES if s[0] in ("bi", "vc", "d1", "ba")]
    table = _table(spec)
    table.primary_key = "bi"
    raw_map = b"raw TABLE_MAP body of shop.t, read from a connection"
    rowevents.CachedTableMap._parsed[raw_map] = table
    n = len(spec)
    row = _nulls(n, set()) + b"".join(s[3] for s in spec)
    payloads = []
    for i in range(70):  # 280 packets: the sequence number wraps
        pos = 1000 + 400 * i
        payloads += [
            _packet(162, struct.pack("<QIB", 41 + i, 0, 0) + b"\x00" * 6, pos),
            _packet(19, raw_map, pos + 100),
            _packet(WRITE_V2, _rows_body(TABLE_ID, n, row * (1 + i % 3), _full(n)), pos + 200),
            b"\x00" if i == 5 else _packet(16, struct.pack("<Q", i), pos + 300),  # a short OK: skipped
        ]
    # a rows event of an unmapped table (skipped) in continuation packets, then a small one
    payloads.append(_packet(WRITE_V2, _rows_body(99, n, b"\x00" * (MAX + 100), _full(n)), 90000))
    payloads.append(_packet(WRITE_V2, _rows_body(TABLE_ID, n, row, _full(n)), 90100))
    payloads.append(b"\xfe\x00\x00\x02\x00")  # EOF: the stream ends
    raw = _framed(payloads)

    def drained(cls: type) -> list[Any]:
        reader = _stream(cls, raw, stream.EVENTS)
        return [e for e in _drain(reader) if e[0] is not rowevents.CachedTableMap]

    fast = _stream(fast_reader.FastStreamReader, raw, stream.EVENTS)
    got = [e for e in _drain(fast) if e[0] is not rowevents.CachedTableMap]
    assert fast._cdc_taken == len(raw)  # more_waiting's accounting: every byte taken
    assert fast._cdc_raw is not None  # the packets were read by read_packet
    assert got == drained(BinLogStreamReader)
    assert len(got) == 70 * 3 - 1 + 1 and got[-1][3] == 90100


def test_a_lost_connection_reconnects_as_the_library_does(caplog: pytest.LogCaptureFixture) -> None:
    from cdc.mysql import stream

    first = _framed([_packet(162, struct.pack("<QIB", 7, 0, 0) + b"\x00" * 6, 500)])
    reader = _stream(fast_reader.FastStreamReader, first, stream.EVENTS)
    reconnects: list[Any] = []

    def connect() -> None:  # what __connect_to_stream does: a new connection, registered again
        reconnects.append(1)
        again = _framed([_packet(16, struct.pack("<Q", 3), 600), b"\xfe\x00\x00\x02\x00"])
        reader._stream_connection = _connection(again)
        reader._BinLogStreamReader__connected_stream = True

    reader._BinLogStreamReader__connect_to_stream = connect
    with caplog.at_level("WARNING", logger="pymysqlreplication"):
        events = [type(e).__name__ for e in iter(reader.fetchone, None)]
    assert events == ["MariadbGtidEvent", "XidEvent"] and reconnects == [1]
    assert "Re-request the connection" in caplog.text


def test_another_connection_class_or_pymysql_version_keeps_its_own_read_packet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Wrapped(pymysql.connections.Connection):  # type: ignore[misc]
        def _read_packet(self, packet_type: Any = pymysql.connections.MysqlPacket) -> Any:
            self.calls = getattr(self, "calls", 0) + 1
            return super()._read_packet(packet_type)

    conn: Any = _connection(_framed([b"\x00" * 7]))
    conn.__class__ = Wrapped
    assert not fast_reader._reads_raw(conn)
    assert fast_reader._reads_raw(_connection(b""))
    monkeypatch.setattr(fast_reader, "PACKETS_MATCH", False)
    assert not fast_reader._reads_raw(_connection(b""))


# --- transaction boundaries: the GTID event's numbers instead of its parsed text ---


class _Parsing:
    """A MariadbGtids that must parse every GTID's text (the reference)."""

    @staticmethod
    def make(state: str) -> Any:
        from cdc.mysql.positions import MariadbGtids

        class Reference(MariadbGtids):
            def known(self, txn: str, domain: int, server: int, seq: int) -> None:
                raise AssertionError("the reference parses")

        return Reference(state)


def test_transactions_on_gtid_numbers_keep_the_parsed_positions() -> None:
    from pymysqlreplication.event import MariadbGtidEvent, XidEvent

    from cdc.mysql import stream
    from cdc.mysql.positions import MariadbGtids

    def gtid(domain: int, server: int, seq: int) -> Any:
        event: Any = object.__new__(MariadbGtidEvent)
        event.__dict__.update(domain_id=domain, server_id=server, gtid_seq_no=seq, timestamp=seq,
                              gtid=f"{domain}-{server}-{seq}")  # fmt: skip
        return event

    xid: Any = object.__new__(XidEvent)
    # new transactions, replays (already applied), other domains, a replay after a jump
    order = [
        (0, 1, 5),
        (0, 1, 6),
        (0, 1, 6),
        (1, 2, 3),
        (0, 2, 4),
        (0, 1, 7),
        (1, 2, 3),
        (2, 9, 1),
        (0, 1, 9),
    ]

    def trace(tracker: Any) -> list[Any]:
        txns = stream.Transactions(tracker, None, by_file=False)  # type: ignore[arg-type]
        out = []
        for numbers in order:
            out.append((txns.handle(gtid(*numbers)), txns.txn, txns.start, txns.skip, txns.timestamp))
            out.append((txns.handle(xid), tracker.start()))
        return out

    primed = MariadbGtids("0-1-5,1-2-2")
    assert trace(primed) == trace(_Parsing.make("0-1-5,1-2-2"))
    assert primed.start() == "0-1-9,1-2-3,2-9-1"
