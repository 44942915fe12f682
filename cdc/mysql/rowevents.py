"""Row events with an exact TIME decoder, a one-pass DECIMAL decoder and compiled row readers,
and TABLE_MAP events parsed once per shape (small subclasses of the library's events).

mysql-replication 1.0 reads a TIME(fsp) value's integer part and its fraction separately, so a
negative time with a fraction comes out wrong (``-00:00:00.000001`` as ``-00:00:00.999999``):
MySQL stores the two together as one signed packed number. These subclasses decode TIME2 the
way the server does (``my_time_packed_from_binary``) and are registered, for this process, in
the library's event-type map in place of the originals; everything else is inherited.

The library parses every TABLE_MAP event in full (column types, then the optional metadata:
names, signedness, charsets, enum/set labels) although a server writes the same TABLE_MAP
before every transaction on a table: with many small transactions that parse was the largest
cost. :class:`CachedTableMap` keys the parsed table by the event's raw bytes (table id, names
and all metadata), so an unchanged table is parsed once and any change (a DDL, a new table id)
is parsed anew - decoding still uses each transaction's own TABLE_MAP.

Rows are read by the readers :mod:`cdc.mysql.rowdecoder` compiles per table shape (the
library's values exactly, much faster); a shape they do not cover keeps the library's decoder
with the TIME2/DECIMAL fixes above. :class:`cdc.mysql.reader.FastStreamReader` builds the hot
events from the packet bytes without these constructors at all.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, ClassVar

from pymysqlreplication import constants, packet, row_event
from pymysqlreplication.event import BinLogEvent

from cdc.mysql.rowdecoder import decimal_size, decode_rows, new_decimal, time2

__all__ = [
    "CachedTableMap",
    "DeleteRows",
    "UpdateRows",
    "WriteRows",
    "decimal_size",
    "install",
    "new_decimal",
    "time2",
]


class _ExactTime:
    """Overrides RowsEvent's private TIME2 and DECIMAL readers (by their mangled names), and
    reads the rows with :mod:`cdc.mysql.rowdecoder`'s compiled readers when it can."""

    packet: Any
    _UPDATE: ClassVar[bool] = False

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The event's rows, as the library's ``rows`` gives them (and cached where it caches them)."""
        rows: list[dict[str, Any]] | None = self.__dict__.get("_RowsEvent__rows")
        if rows is None:
            rows = decode_rows(self, self._UPDATE)
            if rows is None:  # a type the compiled readers leave to the library
                return row_event.RowsEvent.rows.fget(self)  # type: ignore[no-any-return]
            self.__dict__["_RowsEvent__rows"] = rows
        return rows

    def _RowsEvent__read_time2(self, column: Any) -> dt.timedelta:  # noqa: N802 - the library's mangled name
        fsp = int(getattr(column, "fsp", 0) or 0)
        return time2(self.packet.read(3 + (fsp + 1) // 2), fsp)

    def _RowsEvent__read_new_decimal(self, column: Any) -> decimal.Decimal:  # noqa: N802 - as above
        precision, scale = int(column.precision), int(column.decimals)
        return new_decimal(self.packet.read(decimal_size(precision, scale)), precision, scale)


class WriteRows(_ExactTime, row_event.WriteRowsEvent):  # type: ignore[misc]
    """WRITE_ROWS with exact TIME values."""


class UpdateRows(_ExactTime, row_event.UpdateRowsEvent):  # type: ignore[misc]
    """UPDATE_ROWS with exact TIME values."""

    _UPDATE = True


class DeleteRows(_ExactTime, row_event.DeleteRowsEvent):  # type: ignore[misc]
    """DELETE_ROWS with exact TIME values."""


class CachedTableMap(row_event.TableMapEvent):  # type: ignore[misc]
    """TABLE_MAP parsed once per distinct raw event body."""

    table_obj: Any
    _parsed: ClassVar[dict[bytes, Any]] = {}
    _LIMIT = 4096  # distinct shapes kept (table ids change on DDL and table cache reloads)

    def __init__(
        self, from_packet: Any, event_size: int, table_map: Any, ctl_connection: Any, **kwargs: Any
    ) -> None:
        # Peek at the body without consuming it (the library's parser measures what is left
        # of the underlying packet, so a read + unread would hide the optional metadata).
        inner = from_packet.packet
        raw = bytes(inner._data[inner._position : inner._position + event_size])
        table = self._parsed.get(raw)
        if table is None:
            super().__init__(from_packet, event_size, table_map, ctl_connection, **kwargs)
            if self._processed:  # a table the stream captures (others are filtered unparsed)
                if len(self._parsed) >= self._LIMIT:
                    self._parsed.clear()
                self._parsed[raw] = self.table_obj
            return
        BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        self.table_id, self.schema, self.table = table.table_id, table.schema, table.table
        self.columns, self.table_obj = table.columns, table
        table_map[self.table_id] = table


_REPLACED = {
    constants.TABLE_MAP_EVENT: CachedTableMap,
    constants.WRITE_ROWS_EVENT_V1: WriteRows,
    constants.WRITE_ROWS_EVENT_V2: WriteRows,
    constants.UPDATE_ROWS_EVENT_V1: UpdateRows,
    constants.UPDATE_ROWS_EVENT_V2: UpdateRows,
    constants.DELETE_ROWS_EVENT_V1: DeleteRows,
    constants.DELETE_ROWS_EVENT_V2: DeleteRows,
}


def install() -> None:
    """Make the library build these classes for row events (idempotent, this process only)."""
    packet.BinLogPacketWrapper._BinLogPacketWrapper__event_map.update(_REPLACED)
