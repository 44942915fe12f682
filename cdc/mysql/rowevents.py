"""Row events with an exact TIME decoder and a one-pass DECIMAL decoder, and TABLE_MAP events parsed once per shape (small
subclasses of the library's events).

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
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from typing import Any, ClassVar

from pymysqlreplication import constants, packet, row_event
from pymysqlreplication.event import BinLogEvent

_INT_OFS = 0x800000
_INT_OFS_6 = 0x800000000000


def time2(raw: bytes, fsp: int) -> dt.timedelta:
    """A TIME2 value (3 bytes of integer part + (fsp+1)//2 bytes of fraction) as a signed interval."""
    intpart = int.from_bytes(raw[:3], "big") - _INT_OFS
    if fsp in (1, 2):
        frac = raw[3]
        if intpart < 0 and frac:
            intpart, frac = intpart + 1, frac - 0x100
        packed = (intpart << 24) + frac * 10000
    elif fsp in (3, 4):
        frac = int.from_bytes(raw[3:5], "big")
        if intpart < 0 and frac:
            intpart, frac = intpart + 1, frac - 0x10000
        packed = (intpart << 24) + frac * 100
    elif fsp in (5, 6):
        packed = int.from_bytes(raw[:6], "big") - _INT_OFS_6
    else:
        packed = intpart << 24
    magnitude = abs(packed)
    hms, micros = magnitude >> 24, magnitude % (1 << 24)
    value = dt.timedelta(
        hours=(hms >> 12) % (1 << 10),
        minutes=(hms >> 6) % (1 << 6),
        seconds=hms % (1 << 6),
        microseconds=micros,
    )
    return -value if packed < 0 else value


_DIGIT_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)  # bytes of a group of 0..9 decimal digits


@functools.lru_cache(maxsize=256)
def _decimal_layout(precision: int, scale: int) -> tuple[int, tuple[int, ...], tuple[tuple[int, int], ...]]:
    """(total bytes, byte sizes of the integer groups, (bytes, digits) of the fraction groups)."""
    whole_full, whole_rest = divmod(precision - scale, 9)
    frac_full, frac_rest = divmod(scale, 9)
    whole = ((_DIGIT_BYTES[whole_rest],) if whole_rest else ()) + (4,) * whole_full
    frac = ((4, 9),) * frac_full + (((_DIGIT_BYTES[frac_rest], frac_rest),) if frac_rest else ())
    return sum(whole) + sum(n for n, _ in frac), whole, frac


def decimal_size(precision: int, scale: int) -> int:
    """Bytes of a DECIMAL(precision, scale) value in MySQL's binary format."""
    return _decimal_layout(precision, scale)[0]


def new_decimal(raw: bytes, precision: int, scale: int) -> decimal.Decimal:
    """A DECIMAL in MySQL's binary format: groups of 9 digits in 4 big-endian bytes (a shorter
    leading/trailing group for the rest), the sign in the inverted top bit, negatives stored
    with every bit flipped. One pass over the bytes (the library unreads and re-reads them)."""
    _, whole_groups, frac_groups = _decimal_layout(precision, scale)
    data = bytearray(raw)
    negative = not data[0] & 0x80
    data[0] ^= 0x80
    if negative:
        data = bytearray(b ^ 0xFF for b in data)
    pos = whole = frac = 0
    for size in whole_groups:
        whole = whole * 1_000_000_000 + int.from_bytes(data[pos : pos + size], "big")
        pos += size
    for size, digits in frac_groups:
        frac = frac * 10**digits + int.from_bytes(data[pos : pos + size], "big")
        pos += size
    text = (
        f"{'-' if negative else ''}{whole}.{frac:0{scale}d}" if scale else f"{'-' if negative else ''}{whole}"
    )
    return decimal.Decimal(text)


class _ExactTime:
    """Overrides RowsEvent's private TIME2 and DECIMAL readers (by their mangled names)."""

    packet: Any

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
