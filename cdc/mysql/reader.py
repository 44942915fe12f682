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

One handler per hot kind does this; which kinds get one (the reader's event filters, the
stream's checksum setting and post-header lengths) is derived once per connection and format,
not asked per packet. A consumer that registers an :class:`EventSink`
(:meth:`FastStreamReader.deliver_to`) receives the GTID, rows and XID events as calls instead:
no GTID or XID event object, and one return from ``fetchone`` per transaction.

Anything else - another event type, a filter or option the fast path does not model (checksum
verification, ``skip_to_timestamp``, an end position, extra row-event data, a declared
post-header length other than the standard one, a table the library would filter), or rows the
compiled readers decline - goes through the library's own wrapper and event classes, from the
untouched packet. The loop around it is the library's ``fetchone`` of the pinned version
(1.0.x); with another version the reader falls back to the library's loop entirely.

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
from typing import Any, Protocol

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
_ROWS_HEAD = struct.Struct("<IHH")  # a rows event's table id (low 4 bytes, high 2 bytes), flags
_SIZE_POS = struct.Struct("<II")  # the header's event size and next position (at offset 10)
_LOG_POS = struct.Struct("<I")  # the header's next position (at offset 14)
_TIME_SIZE_POS = struct.Struct("<xI5xII")  # timestamp, event size, next position
_INT = struct.Struct("=i")  # a C int in native order (FIONREAD's answer)
_PACKET_HEADER = struct.Struct("<HBB")  # MySQL protocol packet: length (3 bytes), sequence number
_MAX_PACKET = 2**24 - 1  # a packet this long continues in the next one
_LOST = "Lost connection to MySQL server during query"
_READ_PACKET = pymysql.connections.Connection._read_packet  # the method read_packet reproduces
_ROWS_V1 = {BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V1}
_ROWS_V2 = {BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2}
_UPDATES = {BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2}
_SKIP = object()  # the packet was consumed and yields no event
_TURN = object()  # the packet went to the event sink: fetchone returns None (the caller's turn)
_EVENT_MAP: dict[int, type] = BinLogPacketWrapper._BinLogPacketWrapper__event_map
#: the loop below reproduces the fetchone of mysql-replication 1.0.x (1.0.17 pinned)
LOOP_MATCHES = importlib.metadata.version("mysql-replication").startswith("1.0.")
#: read_packet reproduces Connection._read_packet of PyMySQL 1.2.x (1.2.4 pinned)
PACKETS_MATCH = importlib.metadata.version("PyMySQL").startswith("1.2.")


class EventSink(Protocol):
    """Receives the hot events a :class:`FastStreamReader` reads (see
    :meth:`FastStreamReader.deliver_to`), with the reader's position already past each."""

    def mariadb_gtid(self, gtid: str, domain: int, server: int, seq: int, timestamp: int) -> None:
        """A MariaDB GTID event: a transaction ``domain-server-seq`` starts (binlog timestamp
        in seconds)."""

    def rows(self, event: Any) -> bool:
        """A rows event (the library's WriteRows, UpdateRows or DeleteRows), decoded. True:
        fetchone returns None now (the caller's loop turns: a stop request inside a large
        transaction is seen at its next rows event, not at its end)."""

    def xid(self) -> None:
        """An XID event: the transaction commits."""


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
    # what _shared() gives until the reader's state changes (None: build it anew)
    _cdc_shared: dict[str, Any] | None = None
    # the fast handler per event kind (see _handlers), and the same while fetchone's own loop
    # may read (a raw-read connection, no end position, timestamp skip or checksum check)
    _cdc_handlers: dict[int, Any] | None = None
    _cdc_hot: dict[int, Any] | None = None
    _cdc_overhead = 19  # event header bytes (19) + checksum (4) when the server sends checksums
    _cdc_sink: EventSink | None = None  # see deliver_to
    # table id -> (its table map entry, whether the filters capture it), set with the handlers
    _cdc_tables: dict[int, tuple[Any, bool]]

    def fetchone(self) -> Any:
        if not LOOP_MATCHES:
            return super().fetchone()
        # The library's fetchone (1.0.17), with the fast path in front of its packet wrapper.
        while True:
            handlers = self._cdc_hot
            if handlers is not None:  # the usual state: no check the handlers do not need
                try:
                    data = read_packet(self._cdc_raw)
                except pymysql.OperationalError as error:
                    if self._reconnecting(error):
                        continue
                    raise
                n = len(data)
                self._cdc_taken += n + 4 * (n // 0xFFFFFF + 1)
                if n >= 20 and data[0] == 0:
                    handler = handlers.get(data[5])
                    if handler is not None:
                        event = handler(self, data)
                        if event is _SKIP:
                            continue
                        if event is not None:
                            return None if event is _TURN else event
                event = self._general(data, None, tried=True)
            else:
                event = self._general_read()
            if event is not _SKIP:
                return None if event is _TURN else event

    def deliver_to(self, sink: EventSink | None) -> None:
        """Hand MariaDB GTID, rows and XID events the fast path reads to ``sink`` instead of
        returning them: no GTID or XID event object, and one return to the caller's loop per
        transaction, at its XID (fetchone then returns None, so a stop request is seen even when
        no captured row comes), and after a rows event when the sink asks for it. None: return
        them as events again. What the library's own path reads (another server's GTID events,
        a packet the fast handlers decline, heartbeats, DDL) is still returned as events."""
        self._cdc_sink = sink

    def close(self) -> None:
        super().close()
        self._cdc_stale()  # the next fetchone reconnects

    def _cdc_stale(self) -> None:
        """Forget what was derived from the connection and the stream's format (both replaced)."""
        self._cdc_shared = self._cdc_handlers = self._cdc_hot = None

    def _general_read(self) -> Any:
        """One turn of the library's loop: (re)connect when needed, read a packet, handle it."""
        if self.end_log_pos and self.is_past_end_log_pos:
            return None
        if not self._BinLogStreamReader__connected_stream:
            self._BinLogStreamReader__connect_to_stream()
            self._cdc_stale()
        if not self._BinLogStreamReader__connected_ctl:
            self._BinLogStreamReader__connect_to_ctl()
            self._cdc_stale()
        conn = self._stream_connection
        if conn is not self._cdc_raw and _reads_raw(conn):  # asked once per connection
            self._cdc_raw = conn
            self._cdc_stale()
        if (
            conn is self._cdc_raw
            and not self.end_log_pos
            and not self.skip_to_timestamp
            and not self._BinLogStreamReader__verify_checksum
        ):
            self._cdc_hot = self._handlers()  # the next turns read in fetchone's own loop
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
            if self._reconnecting(error):
                return _SKIP
            raise
        return self._general(data, pkt, tried=False)

    def _reconnecting(self, error: pymysql.OperationalError) -> bool:
        """The library's answer to a lost stream: True when it reconnects (on the next turn)."""
        code, _message = error.args
        if code not in binlogstream.MYSQL_EXPECTED_ERROR_CODES:
            return False
        self._stream_connection.close()
        self._BinLogStreamReader__connected_stream = False
        self._cdc_stale()
        # the library's warning, on the library's logger (a reconnect stays visible)
        library_log.warning("A pymysql.OperationalError error occurred, Re-request the connection.")
        return True

    def _general(self, data: bytes, pkt: Any, *, tried: bool) -> Any:
        """A packet read: the event, _SKIP, or None at the end of the stream (``tried``: the
        fast handlers already declined it)."""
        first = data[0]  # MysqlPacket's is_eof_packet and is_ok_packet
        if first == 0xFE and len(data) < 9:
            self.close()
            return None
        if first != 0 or len(data) < 7:
            return _SKIP
        if not tried:
            event = self._fast(data)
            if event is not None:
                return event
        return self._library(pkt if pkt is not None else MysqlPacket(data, self._stream_connection.encoding))

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
        if binlog_event.event_type in (BINLOG.ROTATE_EVENT, BINLOG.FORMAT_DESCRIPTION_EVENT):
            self._cdc_stale()  # a new table map, format or checksum setting
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
        if self.skip_to_timestamp or self._BinLogStreamReader__verify_checksum:
            return None
        handler = self._handlers().get(data[5])
        if handler is None:
            return None
        event = handler(self, data)
        if event is not None and self.end_log_pos and self.log_pos >= self.end_log_pos:
            self.is_past_end_log_pos = True
        return event

    def _handlers(self) -> dict[int, Any]:
        """The fast handler of each hot event kind under the reader's filters and the stream's
        format (a kind without one goes the library's way), derived once per connection and
        format: ``handler(reader, packet) -> event | _SKIP | None``."""
        handlers = self._cdc_handlers
        if handlers is not None:
            return handlers
        self._cdc_overhead = 23 if self._BinLogStreamReader__use_checksum else 19  # header + checksum
        self._cdc_tables = {}
        in_packet = self._BinLogStreamReader__allowed_events_in_packet
        wanted = self._BinLogStreamReader__allowed_events
        lengths = self._BinLogStreamReader__post_header_lengths
        handlers = {}
        for kind in _FAST_KINDS:
            cls = _EVENT_MAP[kind]
            if cls not in in_packet:
                handlers[kind] = _skipped  # a kind the consumer did not ask for: skipped unparsed
            elif kind == _TABLE_MAP:
                handlers[kind] = _table_map
            elif cls not in wanted:
                handlers[kind] = _skipped  # read by the library only to be dropped
            elif kind == _XID_KIND:
                handlers[kind] = _xid
            elif kind == _GTID_KIND:
                handlers[kind] = _gtid
            elif not self._BinLogStreamReader__ignore_decode_errors:
                known = 10 if kind in _ROWS_V2 else 8  # the post-header length the reader expects
                if not (lengths and kind - 1 < len(lengths) and lengths[kind - 1] != known):
                    handlers[kind] = _rows_event
        self._cdc_handlers = handlers
        return handlers

    def _shared(self) -> dict[str, Any]:
        """The attributes every event built here shares with the reader's state, built anew
        after anything that may replace one of them: a (re)connection, or a packet the library
        handled (FORMAT_DESCRIPTION sets the version and post-header lengths, ROTATE a new
        table map)."""
        shared = self._cdc_shared
        if shared is None:
            shared = self._cdc_shared = dict(
                packet=None, table_map=self.table_map, _post_header_lengths=self._BinLogStreamReader__post_header_lengths,
                _ctl_connection=self._ctl_connection, mysql_version=self.mysql_version,
                _ignore_decode_errors=self._BinLogStreamReader__ignore_decode_errors,
                _verify_checksum=False, _is_event_valid=None, _processed=True, complete=True,
                dbms=self._ctl_connection._get_dbms(),
            )  # fmt: skip
        return shared

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


# --- the fast handlers: reader, packet -> event, _SKIP, or None (not handled, nothing consumed) ---


def _skipped(reader: FastStreamReader, data: bytes) -> Any:
    log_pos = _LOG_POS.unpack_from(data, 14)[0]
    if log_pos:  # as the library's loop does for every event but ROTATE
        reader.log_pos = log_pos
    return _SKIP


def _table_map(reader: FastStreamReader, data: bytes) -> Any:
    """A TABLE_MAP whose exact bytes were parsed before: the known table applied to the table
    map, as the library does (None: the library parses and caches it)."""
    event_size, log_pos = _SIZE_POS.unpack_from(data, 10)
    end = 20 + event_size - reader._cdc_overhead
    if end < 20 or end > len(data):
        return None
    table = _PARSED_MAPS.get(data[20:end])
    if table is None:
        return None
    if log_pos:
        reader.log_pos = log_pos
    reader.table_map[table.table_id] = table
    return _SKIP


def _new_event(reader: FastStreamReader, cls: type, kind: int, timestamp: int, size: int) -> Any:
    """An instance of the library's event class ``cls`` with BinLogEvent's attributes (and no
    packet: the event is complete)."""
    event: Any = object.__new__(cls)
    fields = event.__dict__
    fields.update(reader._cdc_shared or reader._shared())  # the cache, without a call
    fields["event_type"] = kind
    fields["timestamp"] = timestamp
    fields["event_size"] = size
    return event


def _gtid(reader: FastStreamReader, data: bytes) -> Any:
    """A MariaDB GTID event with the fields consumers read."""
    timestamp, _, server_id, event_size, log_pos, _flags = _HEADER.unpack_from(data)
    size = event_size - reader._cdc_overhead
    if size < 13 or 20 + size > len(data):
        return None
    seq, domain, flags = _GTID.unpack_from(data, 20)
    sink = reader._cdc_sink
    if sink is not None:
        if log_pos:
            reader.log_pos = log_pos
        sink.mariadb_gtid(f"{domain}-{server_id}-{seq}", domain, server_id, seq, timestamp)
        return _SKIP
    event = _new_event(reader, MariadbGtidEvent, _GTID_KIND, timestamp, size)
    fields = event.__dict__
    fields["server_id"] = server_id
    fields["gtid_seq_no"] = seq
    fields["domain_id"] = domain
    fields["flags"] = flags
    fields["gtid"] = f"{domain}-{server_id}-{seq}"
    if log_pos:
        reader.log_pos = log_pos
    return event


def _xid(reader: FastStreamReader, data: bytes) -> Any:
    """An XID (commit) event with the fields consumers read."""
    timestamp, event_size, log_pos = _TIME_SIZE_POS.unpack_from(data)
    size = event_size - reader._cdc_overhead
    if size < 8 or 20 + size > len(data):
        return None
    sink = reader._cdc_sink
    if sink is not None:
        if log_pos:
            reader.log_pos = log_pos
        sink.xid()
        return _TURN
    event = _new_event(reader, XidEvent, _XID_KIND, timestamp, size)
    event.__dict__["xid"] = _XID.unpack_from(data, 20)[0]
    if log_pos:
        reader.log_pos = log_pos
    return event


def _rows_event(reader: FastStreamReader, data: bytes) -> Any:
    """A rows event on a captured table in the table map, its rows decoded whole (None: the
    library builds it)."""
    kind = data[5]
    timestamp, event_size, log_pos = _TIME_SIZE_POS.unpack_from(data)
    size = event_size - reader._cdc_overhead
    if size < 0 or 20 + size > len(data):
        return None
    v2 = kind in _ROWS_V2  # (the post-header length and decode-error mode: see _handlers)
    low, high, flags = _ROWS_HEAD.unpack_from(data, 20)
    table_id = low | high << 32
    table: Any = reader.table_map.get(table_id)
    known = reader._cdc_tables.get(table_id)
    if known is None or known[0] is not table:  # a table map entry not seen yet
        known = reader._cdc_tables[table_id] = (table, table is not None and reader._captured(table))
    if not known[1]:
        return None  # the library filters it
    pos = 28
    extra = 0
    if v2:
        extra = data[28] | data[29] << 8
        if extra != 2:  # NDB or partition information follows
            return None
        pos = 30
    ncols = data[pos]
    columns = table.columns
    if ncols >= 251 or ncols != len(columns):
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
    event = _new_event(reader, _EVENT_MAP[kind], kind, timestamp, size)
    fields = event.__dict__
    fields.update(
        _RowsEvent__rows=rows, _RowsEvent__none_sources={}, table_id=table_id,
        primary_key=table.primary_key, schema=table.schema, table=table.table, flags=flags,
        number_of_columns=ncols, columns=columns, columns_present_bitmap=present,
    )  # fmt: skip
    if v2:
        fields["extra_data_length"] = extra
    if present_after is not None:
        fields["columns_present_bitmap2"] = present_after
    if log_pos:
        reader.log_pos = log_pos
    sink = reader._cdc_sink
    if sink is not None:
        return _TURN if sink.rows(event) else _SKIP
    return event


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
    parts: list[bytes] = []
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
        conn._next_seq_id = (number + 1) & 0xFF
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
