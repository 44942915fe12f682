"""Row events with an exact TIME decoder (a small subclass of the library's row events).

mysql-replication 1.0 reads a TIME(fsp) value's integer part and its fraction separately, so a
negative time with a fraction comes out wrong (``-00:00:00.000001`` as ``-00:00:00.999999``):
MySQL stores the two together as one signed packed number. These subclasses decode TIME2 the
way the server does (``my_time_packed_from_binary``) and are registered, for this process, in
the library's event-type map in place of the originals; everything else is inherited.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymysqlreplication import constants, packet, row_event

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


class _ExactTime:
    """Overrides RowsEvent's private TIME2 reader (its mangled name) with :func:`time2`."""

    packet: Any

    def _RowsEvent__read_time2(self, column: Any) -> dt.timedelta:  # noqa: N802 - the library's mangled name
        fsp = int(getattr(column, "fsp", 0) or 0)
        return time2(self.packet.read(3 + (fsp + 1) // 2), fsp)


class WriteRows(_ExactTime, row_event.WriteRowsEvent):  # type: ignore[misc]
    """WRITE_ROWS with exact TIME values."""


class UpdateRows(_ExactTime, row_event.UpdateRowsEvent):  # type: ignore[misc]
    """UPDATE_ROWS with exact TIME values."""


class DeleteRows(_ExactTime, row_event.DeleteRowsEvent):  # type: ignore[misc]
    """DELETE_ROWS with exact TIME values."""


_REPLACED = {
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
