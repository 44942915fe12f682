"""A leaner event loop for mysql-replication's :class:`BinLogStreamReader`.

The library turns every replication packet into a ``BinLogPacketWrapper`` and an event object
through a dozen-argument constructor chain, reading each header field through two wrapper
layers; for a row event it also rebuilds the table's ``data`` dict. With many small
transactions (four events each: GTID, TABLE_MAP, rows, XID) that construction was about half
of the reader's time. :class:`FastStreamReader` keeps the library for everything it does once
(connection, registration, GTID/position negotiation, FORMAT_DESCRIPTION, ROTATE, heartbeats,
reconnects) and reads the four hot event kinds straight from the packet bytes:

- MariaDB GTID and XID events: the few fields consumers read, in instances of the library's own
  classes (so ``type(event) is XidEvent`` still holds);
- TABLE_MAP events whose exact bytes were parsed before (:class:`~cdc.mysql.rowevents.CachedTableMap`):
  the known table is applied to the table map, as the library does, and no event object is
  built (consumers ignore table maps);
- rows events on a table in the table map whose shape :mod:`cdc.mysql.rowdecoder` compiles: the
  header fields and the rows, decoded at once.

Anything else - another event type, a filter or option the fast path does not model (checksum
verification, ``skip_to_timestamp``, extra row-event data, a declared post-header length other
than the standard one, a table the library would filter), or rows the compiled readers decline -
goes through the library's own wrapper and event classes, from the untouched packet. The loop
around it is the library's ``fetchone`` of the pinned version (1.0.x); with another version the
reader falls back to the library's loop entirely.

The packets themselves are read by :func:`read_packet`: pymysql's ``Connection._read_packet``
(of the pinned 1.2.x) without the ``MysqlPacket`` object it builds per packet - only the
library's path, and an error packet, get one. Another pymysql version, a connection class with
its own ``_read_packet`` or pymysql's debug dumps keep pymysql's own read.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.metadata
import select
import ssl
import struct
import termios
from typing import Any

import pymysql
import pymysql.connections
from pymysql.constants import CR
from pymysql.protocol import MysqlPacket
from pymysqlreplication import BinLogStreamReader, binlogstream
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.event import MariadbGtidEvent, XidEvent
from pymysqlreplication.logger import logger as library_log
from pymysqlreplication.packet import BinLogPacketWrapper

from cdc.mysql import rowdecoder, rowevents

_HEADER = struct.Struct("<xIBIIIH")  # OK byte, timestamp, type, server id, event size, next position, flags
_GTID = struct.Struct("<QIB")  # MariaDB GTID: sequence number, domain id, flags
_XID = struct.Struct("<Q")
_INT = struct.Struct("=i")  # a C int in native order (FIONREAD's answer)
_PACKET_HEADER = struct.Struct("<HBB")  # MySQL protocol packet: length (3 bytes), sequence number
_MAX_PACKET = 2**24 - 1  # a packet this long continues in the next one
_LOST = "Lost connection to MySQL server during query"
_READ_PACKET = pymysql.connections.Connection._read_packet  # the method read_packet reproduces
_ROWS_V1 = {BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V1}
_ROWS_V2 = {BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2}
_UPDATES = {BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2}
_SKIP = object()  # the packet was consumed and yields no event
_EVENT_MAP: dict[int, type] = BinLogPacketWrapper._BinLogPacketWrapper__event_map
#: the loop below reproduces the fetchone of mysql-replication 1.0.x (1.0.17 pinned)
LOOP_MATCHES = importlib.metadata.version("mysql-replication").startswith("1.0.")
#: read_packet reproduces Connection._read_packet of PyMySQL 1.2.x (1.2.4 pinned)
PACKETS_MATCH = importlib.metadata.version("PyMySQL").startswith("1.2.")


class FastStreamReader(BinLogStreamReader):  # type: ignore[misc]
    """BinLogStreamReader whose ``fetchone`` builds the hot events directly from the packet."""

    # the library's attributes this loop reads and writes (it declares no types)
    table_map: dict[int, Any]
    mysql_version: Any
    is_past_end_log_pos: bool
    _BinLogStreamReader__connected_stream: bool
    _BinLogStreamReader__post_header_lengths: Any
    # more_waiting's accounting: the socket it last asked, the unread bytes the kernel then
    # held, and the bytes of packets read since
    _cdc_sock: Any = None
    _cdc_known = 0
    _cdc_taken = 0
    # the stream connection whose packets read_packet reads (a plain pymysql Connection)
    _cdc_raw: Any = None

    def fetchone(self) -> Any:
        if not LOOP_MATCHES:
            return super().fetchone()
        # The library's fetchone (1.0.17), with the fast path in front of its packet wrapper.
        while True:
            if self.end_log_pos and self.is_past_end_log_pos:
                return None
            if not self._BinLogStreamReader__connected_stream:
                self._BinLogStreamReader__connect_to_stream()
            if not self._BinLogStreamReader__connected_ctl:
                self._BinLogStreamReader__connect_to_ctl()
            conn = self._stream_connection
            if conn is not self._cdc_raw and _reads_raw(conn):  # asked once per connection
                self._cdc_raw = conn
            try:
                if conn is self._cdc_raw:
                    pkt = None
                    data = read_packet(conn)
                else:
                    pkt = conn._read_packet()
                    data = pkt._data
                # bytes taken off the stream (each packet of up to 2**24-1 bytes has a 4-byte header)
                self._cdc_taken += len(data) + 4 * (len(data) // 0xFFFFFF + 1)
            except pymysql.OperationalError as error:
                code, _message = error.args
                if code in binlogstream.MYSQL_EXPECTED_ERROR_CODES:  # reconnect, as the library does
                    self._stream_connection.close()
                    self._BinLogStreamReader__connected_stream = False
                    # the library's warning, on the library's logger (a reconnect stays visible)
                    library_log.warning(
                        "A pymysql.OperationalError error occurred, Re-request the connection."
                    )
                    continue
                raise
            first = data[0]  # MysqlPacket's is_eof_packet and is_ok_packet
            if first == 0xFE and len(data) < 9:
                self.close()
                return None
            if first != 0 or len(data) < 7:
                continue
            event = self._fast(data)
            if event is _SKIP:
                continue
            if event is not None:
                return event
            event = self._library(pkt if pkt is not None else MysqlPacket(data, conn.encoding))
            if event is not _SKIP:
                return event

    def more_waiting(self) -> bool:
        """True when more of the stream is certainly already here (so a hand-off can wait for it).

        The kernel's count of unread bytes (FIONREAD) is asked once, and while fewer bytes than
        that have been taken off the stream since, more are certainly waiting: no system call
        per transaction (each one gives the GIL away and waits to get it back). Over TLS (the
        kernel's bytes are records, not packets) or with the library's own loop, the socket is
        asked every time. On any doubt it says False, which only makes a batch smaller."""
        sock = getattr(getattr(self, "_stream_connection", None), "_sock", None)
        if sock is None:
            return False
        if LOOP_MATCHES and not isinstance(sock, ssl.SSLSocket):
            if self._cdc_sock is sock and self._cdc_taken < self._cdc_known:
                return True
            try:
                (known,) = _INT.unpack(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(_INT.size)))
            except (OSError, ValueError):
                return False
            self._cdc_sock, self._cdc_known, self._cdc_taken = sock, int(known), 0
            return bool(known > 0)
        try:
            ready, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(ready)

    def _library(self, pkt: Any) -> Any:
        """The library's handling of one packet (the rest of its fetchone loop body)."""
        binlog_event = BinLogPacketWrapper(
            pkt,
            self.table_map,
            self._ctl_connection,
            self.mysql_version,
            self._BinLogStreamReader__use_checksum,
            self._BinLogStreamReader__allowed_events_in_packet,
            self._BinLogStreamReader__only_tables,
            self._BinLogStreamReader__ignored_tables,
            self._BinLogStreamReader__only_schemas,
            self._BinLogStreamReader__ignored_schemas,
            self._BinLogStreamReader__freeze_schema,
            self._BinLogStreamReader__ignore_decode_errors,
            self._BinLogStreamReader__verify_checksum,
            self._BinLogStreamReader__optional_meta_data,
            self._BinLogStreamReader__enable_logging,
            self._BinLogStreamReader__use_column_name_cache,
            self._BinLogStreamReader__post_header_lengths,
        )
        if binlog_event.event_type == BINLOG.ROTATE_EVENT:
            self.log_pos = binlog_event.event.position
            self.log_file = binlog_event.event.next_binlog
            # table ids are not persistent across server restarts, which rotate the log
            if binlog_event.timestamp != 0:
                self.table_map = {}
        elif binlog_event.log_pos:
            self.log_pos = binlog_event.log_pos
        if self.end_log_pos and self.log_pos >= self.end_log_pos:
            self.is_past_end_log_pos = True
        if binlog_event.event_type == BINLOG.FORMAT_DESCRIPTION_EVENT and binlog_event.event is not None:
            self.mysql_version = binlog_event.event.mysql_version
            self._BinLogStreamReader__post_header_lengths = binlog_event.event.post_header_len
        if self.skip_to_timestamp and binlog_event.timestamp < self.skip_to_timestamp:
            return _SKIP
        if binlog_event.event_type == BINLOG.TABLE_MAP_EVENT and binlog_event.event is not None:
            self.table_map[binlog_event.event.table_id] = binlog_event.event.get_table()
        if binlog_event.event is None or (
            binlog_event.event.__class__ not in self._BinLogStreamReader__allowed_events
        ):
            return _SKIP
        return binlog_event.event

    # --- the fast path ---

    def _fast(self, data: bytes) -> Any:
        """The event of a hot packet built from its bytes, _SKIP, or None: not handled here
        (nothing consumed)."""
        if len(data) < 20 or not isinstance(data, bytes):
            return None
        kind = data[5]
        if kind not in _FAST_KINDS or self.skip_to_timestamp or self._BinLogStreamReader__verify_checksum:
            return None
        cls = _EVENT_MAP[kind]
        timestamp, _, server_id, event_size, log_pos, _flags = _HEADER.unpack_from(data)
        if cls not in self._BinLogStreamReader__allowed_events_in_packet:
            self._position(log_pos)  # a kind the consumer did not ask for: skipped unparsed
            return _SKIP
        size = event_size - (23 if self._BinLogStreamReader__use_checksum else 19)  # the body's
        if size < 0 or 20 + size > len(data):
            return None
        if kind == _TABLE_MAP:
            table = _PARSED_MAPS.get(data[20 : 20 + size])
            if table is None:
                return None  # parsed (and cached) by the library
            self._position(log_pos)
            self.table_map[table.table_id] = table
            return _SKIP
        if kind in (_XID_KIND, _GTID_KIND):
            if size < (8 if kind == _XID_KIND else 13):
                return None
            event: Any = object.__new__(cls)
            fields = event.__dict__
            fields.update(self._shared())
            fields["event_type"] = kind
            fields["timestamp"] = timestamp
            fields["event_size"] = size
            if kind == _XID_KIND:
                fields["xid"] = _XID.unpack_from(data, 20)[0]
            else:
                seq, domain, flags = _GTID.unpack_from(data, 20)
                fields["server_id"] = server_id
                fields["gtid_seq_no"] = seq
                fields["domain_id"] = domain
                fields["flags"] = flags
                fields["gtid"] = f"{domain}-{server_id}-{seq}"
            if log_pos:  # _position, inline
                self.log_pos = log_pos
            if self.end_log_pos and self.log_pos >= self.end_log_pos:
                self.is_past_end_log_pos = True
            return event if cls in self._BinLogStreamReader__allowed_events else _SKIP
        event = self._rows(cls, kind, data, timestamp, size)
        if event is None:
            return None
        self._position(log_pos)
        return event if cls in self._BinLogStreamReader__allowed_events else _SKIP

    def _position(self, log_pos: int) -> None:
        # as the library's loop does for every event but ROTATE
        if log_pos:
            self.log_pos = log_pos
        if self.end_log_pos and self.log_pos >= self.end_log_pos:
            self.is_past_end_log_pos = True

    def _base(self, event: Any, kind: int, timestamp: int, size: int) -> None:
        """BinLogEvent's attributes (without a packet: the event is complete)."""
        event.__dict__.update(self._shared(), event_type=kind, timestamp=timestamp, event_size=size)

    def _shared(self) -> dict[str, Any]:
        """The attributes every event built here shares with the reader's state."""
        shared: dict[str, Any] | None = self.__dict__.get("_cdc_shared")
        if (
            shared is None
            or shared["table_map"] is not self.table_map  # replaced at a rotation
            or shared["_ctl_connection"] is not self._ctl_connection  # a reconnect
            or shared["_post_header_lengths"] is not self._BinLogStreamReader__post_header_lengths
            or shared["mysql_version"] is not self.mysql_version  # both set by FORMAT_DESCRIPTION
        ):
            shared = self._cdc_shared = dict(
                packet=None, table_map=self.table_map, _post_header_lengths=self._BinLogStreamReader__post_header_lengths,
                _ctl_connection=self._ctl_connection, mysql_version=self.mysql_version,
                _ignore_decode_errors=self._BinLogStreamReader__ignore_decode_errors,
                _verify_checksum=False, _is_event_valid=None, _processed=True, complete=True,
                dbms=self._ctl_connection._get_dbms(),
            )  # fmt: skip
        return shared

    def _rows(self, cls: type, kind: int, data: bytes, timestamp: int, size: int) -> Any:
        """A rows event decoded whole, or None when the library must build it."""
        if self._BinLogStreamReader__ignore_decode_errors:
            return None
        v2 = kind in _ROWS_V2
        known = 10 if v2 else 8
        lengths = self._BinLogStreamReader__post_header_lengths
        if lengths and kind - 1 < len(lengths) and lengths[kind - 1] != known:
            return None
        pos = 20
        table_id = int.from_bytes(data[pos : pos + 6], "little")
        table = self.table_map.get(table_id)
        if table is None or not self._captured(table):
            return None  # the library filters it
        flags = int.from_bytes(data[pos + 6 : pos + 8], "little")
        pos += 8
        extra = 0
        if v2:
            extra = int.from_bytes(data[pos : pos + 2], "little")
            if extra != 2:  # NDB or partition information follows
                return None
            pos += 2
        ncols = data[pos]
        if ncols >= 251 or ncols != len(table.columns):
            return None
        pos += 1
        nbytes = (ncols + 7) // 8
        present = data[pos : pos + nbytes]
        pos += nbytes
        present_after = None
        if kind in _UPDATES:
            present_after = data[pos : pos + nbytes]
            pos += nbytes
        rows = rowdecoder.read_rows(table, present, present_after, data, pos, 20 + size)
        if rows is None:
            return None
        event: Any = object.__new__(cls)
        self._base(event, kind, timestamp, size)
        event.__dict__.update(
            _RowsEvent__rows=rows, _RowsEvent__none_sources={}, table_id=table_id,
            primary_key=table.primary_key, schema=table.schema, table=table.table, flags=flags,
            number_of_columns=ncols, columns=table.columns, columns_present_bitmap=present,
        )  # fmt: skip
        if v2:
            event.extra_data_length = extra
        if present_after is not None:
            event.columns_present_bitmap2 = present_after
        return event

    def _captured(self, table: Any) -> bool:
        """The library's table and schema filters of a rows event."""
        only_tables = self._BinLogStreamReader__only_tables
        ignored_tables = self._BinLogStreamReader__ignored_tables
        only_schemas = self._BinLogStreamReader__only_schemas
        ignored_schemas = self._BinLogStreamReader__ignored_schemas
        return not (
            (only_tables is not None and table.table not in only_tables)
            or (ignored_tables is not None and table.table in ignored_tables)
            or (only_schemas is not None and table.schema not in only_schemas)
            or (ignored_schemas is not None and table.schema in ignored_schemas)
        )


def _reads_raw(conn: Any) -> bool:
    """True when :func:`read_packet` may read ``conn``'s packets: a connection whose
    ``_read_packet`` is pymysql's own, with its buffered reader and without debug dumps."""
    return (
        PACKETS_MATCH
        and getattr(type(conn), "_read_packet", None) is _READ_PACKET
        and getattr(conn, "_rfile", None) is not None
        and not pymysql.connections.DEBUG
    )


def read_packet(conn: Any) -> bytes:
    """The payload of the next protocol packet of a pymysql connection: its ``_read_packet``
    (PyMySQL 1.x) without the MysqlPacket it wraps every packet in - the same reads, sequence
    checks, continuation packets, timeouts and errors (an error packet raises through
    pymysql's own MysqlPacket.raise_for_error)."""
    # the read timeout set lazily, as _read_packet does (settimeout gives the GIL away)
    if conn._current_timeout != conn._read_timeout:
        conn._sock.settimeout(conn._read_timeout)
        conn._current_timeout = conn._read_timeout
    rfile = conn._rfile
    parts = []
    data: bytes
    while True:
        # _read_bytes' buffered reads, inline (two per packet); _failed handles their errors
        try:
            header = rfile.read(4)
        except BaseException as exc:
            header = _failed(conn, exc, 4)
        if len(header) < 4:
            _short(conn)
        low, high, number = _PACKET_HEADER.unpack(header)
        length = low + (high << 16)
        if number != conn._next_seq_id:
            conn._force_close()
            if number == 0:  # MariaDB sends its error packet with sequence number 0 when shutting down
                raise pymysql.OperationalError(CR.CR_SERVER_LOST, _LOST)
            raise pymysql.InternalError(
                f"Packet sequence number wrong - got {number:d} expected {conn._next_seq_id:d}"
            )
        conn._next_seq_id = (conn._next_seq_id + 1) % 256
        try:
            data = rfile.read(length)
        except BaseException as exc:
            data = _failed(conn, exc, length)
        if len(data) < length:
            _short(conn)
        if length < _MAX_PACKET:
            break
        parts.append(data)  # a packet of 16 MB or more continues in the next one
    if parts:
        parts.append(data)
        data = b"".join(parts)
    if not data or data[0] == 0xFF:  # pymysql's path (an empty packet raises its IndexError)
        packet = MysqlPacket(data, conn.encoding)
        if packet.is_error_packet():
            if conn._result is not None and conn._result.unbuffered_active is True:
                conn._result.unbuffered_active = False
            packet.raise_for_error()
    return data


def _failed(conn: Any, exc: BaseException, size: int) -> bytes:
    """What pymysql's Connection._read_bytes does when its read raised ``exc`` (called in the
    except clause: a raised error has ``exc`` as its context, as there)."""
    if isinstance(exc, OSError):
        if exc.errno == errno.EINTR:
            again: bytes = conn._read_bytes(size)  # _read_bytes reads again
            return again
        conn._force_close()
        raise pymysql.OperationalError(CR.CR_SERVER_LOST, f"{_LOST} ({exc})")
    conn._force_close()  # an unknown exception stays what it is
    raise exc


def _short(conn: Any) -> None:
    """pymysql's answer to a read that ended early: the server closed the connection."""
    conn._force_close()
    raise pymysql.OperationalError(CR.CR_SERVER_LOST, _LOST)


_TABLE_MAP, _XID_KIND, _GTID_KIND = BINLOG.TABLE_MAP_EVENT, BINLOG.XID_EVENT, BINLOG.MARIADB_GTID_EVENT
_PARSED_MAPS = rowevents.CachedTableMap._parsed  # TABLE_MAP bodies parsed before -> their table
_FAST_KINDS = frozenset(
    {BINLOG.TABLE_MAP_EVENT, BINLOG.MARIADB_GTID_EVENT, BINLOG.XID_EVENT, *_ROWS_V1, *_ROWS_V2}
)
_ = (MariadbGtidEvent, XidEvent)  # the classes the fast GTID/XID events are instances of
