"""Row-event bodies decoded by readers compiled once per table shape, and the exact value codecs
(TIME2, DECIMAL) they share with :mod:`cdc.mysql.rowevents`.

mysql-replication decodes a row value by value: for every column of every row it reads the
column's attributes through the table map, dispatches on the type in a long ``if`` chain and
reads a few bytes through two layers of packet wrappers. That was about a quarter of the
binlog reader's time, and much of the rest of its packet layer. Here a TABLE_MAP's columns (with
the event's present-columns bitmap) are turned once into one straight-line Python function per
shape - generated source, one statement per column, runs of fixed-width little-endian columns
unpacked by one :class:`struct.Struct` when a row has no NULL - and an event's rows are read
from its body with plain slicing.

The output is exactly the library's: the same row dicts (``values`` / ``none_sources``, or the
``before_``/``after_`` pairs of an update), the same Python values and types, including its
quirks the mapping in :mod:`cdc.mysql.decoding` relies on (BIT as a string of binary digits,
YEAR + 1900, binary strings as bytes and the empty one as ``""``, SET as a Python set, zero
dates as None with their reason). Only the types below are compiled; a table with any other
column type (pre-5.6 temporal formats, VAR_STRING, a column without a name or ENUM/SET without
labels) keeps the library's decoder. Any exception, or a body whose rows do not end exactly at
the end of the event, also hands the event back to the library untouched, so a value is either
the library's own or its error - never a different one.
"""

from __future__ import annotations

import codecs
import datetime as dt
import decimal
import functools
import struct
from collections.abc import Callable, Sequence
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE
from pymysqlreplication.json_binary import parse_json
from pymysqlreplication.row_event import RowsEvent

_INT_OFS = 0x800000
_INT_OFS_6 = 0x800000000000


def time2(raw: bytes, fsp: int) -> dt.timedelta:
    """A TIME2 value (3 bytes of integer part + (fsp+1)//2 bytes of fraction) as a signed interval.

    MySQL stores the two parts together as one signed packed number
    (``my_time_packed_from_binary``): the library reads them separately and gets a negative
    time with a fraction wrong (``-00:00:00.000001`` as ``-00:00:00.999999``)."""
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


@functools.lru_cache(maxsize=256)
def _decimal_plan(
    precision: int, scale: int
) -> tuple[int, int, int, tuple[tuple[int, int], ...], tuple[tuple[int, int, int], ...]]:
    """(sign bit, all bits, size, (shift, mask) of the integer groups, (shift, mask, 10**digits)
    of the fraction groups) in the value's bytes read as one big-endian number."""
    size, whole, frac = _decimal_layout(precision, scale)
    shift = size * 8
    whole_plan: list[tuple[int, int]] = []
    for n in whole:
        shift -= n * 8
        whole_plan.append((shift, (1 << (n * 8)) - 1))
    frac_plan: list[tuple[int, int, int]] = []
    for n, digits in frac:
        shift -= n * 8
        frac_plan.append((shift, (1 << (n * 8)) - 1, 10**digits))
    return 1 << (size * 8 - 1), (1 << (size * 8)) - 1, size, tuple(whole_plan), tuple(frac_plan)


def new_decimal(raw: bytes, precision: int, scale: int) -> decimal.Decimal:
    """A DECIMAL in MySQL's binary format: groups of 9 digits in 4 big-endian bytes (a shorter
    leading/trailing group for the rest), the sign in the inverted top bit, negatives stored
    with every bit flipped. One pass over the bytes as one integer (the library unreads and
    re-reads them)."""
    sign_bit, all_bits, size, whole_plan, frac_plan = _decimal_plan(precision, scale)
    if len(raw) != size:
        raise ValueError(f"DECIMAL({precision},{scale}) takes {size} bytes, not {len(raw)}")
    x = int.from_bytes(raw, "big")
    negative = not x & sign_bit
    x ^= all_bits ^ sign_bit if negative else sign_bit
    whole = frac = 0
    for shift, mask in whole_plan:
        whole = whole * 1_000_000_000 + ((x >> shift) & mask)
    for shift, mask, scale_by in frac_plan:
        frac = frac * scale_by + ((x >> shift) & mask)
    text = (
        f"{'-' if negative else ''}{whole}.{frac:0{scale}d}" if scale else f"{'-' if negative else ''}{whole}"
    )
    return decimal.Decimal(text)


# --- the library's value semantics, one helper per type that needs more than an expression ---

_EPOCH = dt.datetime(1970, 1, 1)
_MICRO = 1_000_000


def _fsp_micros(frac: int, fsp: int) -> int:
    # RowsEvent.__read_fsp: the fraction's bytes read as a signed big-endian number, an odd
    # precision stored with one more digit (int() truncates toward zero, as the library's does)
    if fsp % 2:
        frac = int(frac / 10)
    return int(frac * 10 ** (6 - fsp))


def _date(packed: int) -> dt.date | None:
    # RowsEvent.__read_date: a zero date or one with a zero part is None (out of date range)
    if packed == 0:
        return None
    year, month, day = (packed >> 9) & 0x7FFF, (packed >> 5) & 0xF, packed & 0x1F
    if year == 0 or month == 0 or day == 0:
        return None
    return dt.date(year, month, day)


def _datetime2(packed: int, frac: int, fsp: int) -> dt.datetime | None:
    # RowsEvent.__read_datetime2: 1 sign bit, 17 bits year*13+month, 5 day, 5 hour, 6 minute,
    # 6 second; an impossible date (a zero one) is None
    year_month = (packed >> 22) & 0x1FFFF
    micro = _fsp_micros(frac, fsp) if fsp else 0
    fields = (year_month // 13, year_month % 13, (packed >> 17) & 0x1F, (packed >> 12) & 0x1F,
              (packed >> 6) & 0x3F, packed & 0x3F)  # fmt: skip
    if 0 <= micro < _MICRO:
        try:
            return dt.datetime(*fields, micro)
        except ValueError:
            return None
    try:
        value = dt.datetime(*fields)
    except ValueError:
        return None
    return value.replace(microsecond=micro) if micro > 0 else value  # out of range: its error


def _timestamp2(seconds: int, frac: int, fsp: int) -> dt.datetime:
    # utcfromtimestamp(seconds) (naive UTC), then the fraction
    micro = _fsp_micros(frac, fsp) if fsp else 0
    if 0 <= micro < _MICRO:
        return _EPOCH + dt.timedelta(0, seconds, micro)
    value = _EPOCH + dt.timedelta(0, seconds)
    return value.replace(microsecond=micro) if micro > 0 else value


def _set(mask: int, labels: Sequence[str]) -> set[str] | None:
    return {label for i, label in enumerate(labels) if mask & (1 << i)} or None


_COMPILED_TYPES = frozenset(
    {FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG,
     FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE, FIELD_TYPE.YEAR, FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING,
     FIELD_TYPE.BLOB, FIELD_TYPE.GEOMETRY, FIELD_TYPE.JSON, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DATE,
     FIELD_TYPE.DATETIME2, FIELD_TYPE.TIMESTAMP2, FIELD_TYPE.TIME2, FIELD_TYPE.ENUM, FIELD_TYPE.SET,
     FIELD_TYPE.BIT}
)  # fmt: skip
# little-endian fixed-width types: (signed format, unsigned format)
_FIXED = {
    FIELD_TYPE.TINY: ("b", "B"),
    FIELD_TYPE.SHORT: ("h", "H"),
    FIELD_TYPE.LONG: ("i", "I"),
    FIELD_TYPE.LONGLONG: ("q", "Q"),
    FIELD_TYPE.FLOAT: ("f", "f"),
    FIELD_TYPE.DOUBLE: ("d", "d"),
}
_GLOBALS: dict[str, Any] = {
    "__builtins__": {"int": int, "format": format},
    "_ifb": int.from_bytes,
    "_i32be": struct.Struct(">i").unpack_from,
    "_D": decimal.Decimal,
    "_EPOCH": _EPOCH,
    "_td": dt.timedelta,
    "_time2": time2,
    "_date": _date,
    "_dt2": _datetime2,
    "_ts2": _timestamp2,
    "_set": _set,
    "_json": parse_json,
    "NULL": NONE_SOURCE.NULL,
    "COLS": NONE_SOURCE.COLS_BITMAP,
    "NODATE": NONE_SOURCE.OUT_OF_DATE_RANGE,
    "NODT2": NONE_SOURCE.OUT_OF_DATETIME2_RANGE,
    "NOSET": NONE_SOURCE.EMPTY_SET,
}
#: one row image: (data, position) -> (values, none sources, position after the row)
RowReader = Callable[[bytes, int], tuple[dict[str, Any], dict[str, str], int]]


def _text_mode(column: Any) -> str | None:
    """How the library turns a string column's bytes into its value: the codec it decodes with,
    or None when Python has no such codec (the library then keeps the bytes)."""
    name = column.character_set_name
    encoding = "utf-8" if name is None else RowsEvent.charset_to_encoding(name)
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None
    return str(encoding)


class _Compiler:
    """Generates the source of one row image's reader (one column at a time)."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}

    def const(self, value: Any) -> str:
        name = f"k{len(self.consts)}"
        self.consts[name] = value
        return name

    def value(self, i: int, column: Any) -> list[str]:
        """Statements setting ``v{i}`` from the bytes at ``p`` and moving ``p`` past them (a
        None value also gets its reason in ``s``)."""
        v, kind = f"v{i}", column.type
        if kind in _FIXED:
            fmt = _FIXED[kind][1 if column.unsigned else 0]
            size = struct.calcsize("<" + fmt)
            return [f"{v} = {self.const(struct.Struct('<' + fmt).unpack_from)}(d, p)[0]", f"p += {size}"]
        if kind == FIELD_TYPE.INT24:
            return [f"{v} = _ifb(d[p:p + 3], 'little', signed={not column.unsigned})", "p += 3"]
        if kind == FIELD_TYPE.YEAR:
            return [f"{v} = d[p] + 1900", "p += 1"]
        if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING, FIELD_TYPE.BLOB, FIELD_TYPE.GEOMETRY):
            if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
                width = 2 if column.max_length > 255 else 1
            else:
                width = int(column.length_size)
            length = {1: "d[p]", 2: "(d[p] | d[p + 1] << 8)"}.get(width, f"_ifb(d[p:p + {width}], 'little')")
            out = [f"n = {length}", f"{v} = d[p + {width}:p + {width} + n]", f"p += {width} + n"]
            if kind == FIELD_TYPE.GEOMETRY:
                return out
            encoding = _text_mode(column)
            if encoding is None:  # bytes; b"".decode(<unknown>) is "" without a codec lookup
                return [*out, f"if not {v}:", f"    {v} = ''"]
            return [*out, f"{v} = {v}.decode({self.const(encoding)})"]
        if kind == FIELD_TYPE.JSON:
            width = int(column.length_size)
            return [f"n = _ifb(d[p:p + {width}], 'little')", f"p += {width}",
                    f"{v} = _json(d[p], d[p + 1:p + n]) if n else None", "p += n",
                    f"if {v} is None:", f"    s[N{i}] = NULL"]  # fmt: skip
        if kind == FIELD_TYPE.NEWDECIMAL:
            return self.new_decimal(v, int(column.precision), int(column.decimals))
        if kind == FIELD_TYPE.DATE:
            return [f"{v} = _date(_ifb(d[p:p + 3], 'little'))", "p += 3",
                    f"if {v} is None:", f"    s[N{i}] = NODATE"]  # fmt: skip
        fsp = int(getattr(column, "fsp", 0) or 0)
        frac_size = (fsp + 1) // 2
        if kind in (FIELD_TYPE.DATETIME2, FIELD_TYPE.TIMESTAMP2):
            size = 5 if kind == FIELD_TYPE.DATETIME2 else 4
            whole = "_i32be(d, p)[0]" if size == 4 else f"_ifb(d[p:p + {size}], 'big')"
            frac = f"_ifb(d[p + {size}:p + {size + frac_size}], 'big', signed=True)" if frac_size else "0"
            if kind == FIELD_TYPE.TIMESTAMP2:
                return self.timestamp2(v, whole, frac, fsp, size + frac_size)
            return [f"{v} = _dt2({whole}, {frac}, {fsp})", f"p += {size + frac_size}",
                    f"if {v} is None:", f"    s[N{i}] = NODT2"]  # fmt: skip
        if kind == FIELD_TYPE.TIME2:
            return [f"{v} = _time2(d[p:p + {3 + frac_size}], {fsp})", f"p += {3 + frac_size}"]
        if kind in (FIELD_TYPE.ENUM, FIELD_TYPE.SET):
            size = int(column.size)
            index = "d[p]" if size == 1 else f"_ifb(d[p:p + {size}], 'little')"
            if kind == FIELD_TYPE.ENUM:
                return [f"{v} = {self.const(list(column.enum_values))}[{index}]", f"p += {size}"]
            return [f"{v} = _set({index}, {self.const(tuple(column.set_values))})", f"p += {size}",
                    f"if {v} is None:", f"    s[N{i}] = NOSET"]  # fmt: skip
        if kind == FIELD_TYPE.BIT:
            size, bits = int(column.bytes), int(column.bits)
            return [f"{v} = format(_ifb(d[p:p + {size}], 'big') & {(1 << bits) - 1}, '0{bits}b')",
                    f"p += {size}"]  # fmt: skip
        raise AssertionError(f"type {kind} is not compiled")  # _supported() said it was

    def new_decimal(self, v: str, precision: int, scale: int) -> list[str]:
        """:func:`new_decimal` unrolled for one column's precision and scale: the groups' shifts
        and masks become constants of the source (the same value, without a call and a plan
        lookup per value)."""
        sign_bit, all_bits, size, whole_plan, frac_plan = _decimal_plan(precision, scale)
        whole = "0"
        for n, (shift, mask) in enumerate(whole_plan):
            group = f"((x >> {shift}) & {mask})"
            whole = group if n == 0 else f"({whole}) * 1000000000 + {group}"
        frac = "0"
        for n, (shift, mask, scale_by) in enumerate(frac_plan):
            group = f"((x >> {shift}) & {mask})"
            frac = group if n == 0 else f"({frac}) * {scale_by} + {group}"
        text = f'f"{{g}}{{{whole}}}.{{{frac}:0{scale}d}}"' if scale else f'f"{{g}}{{{whole}}}"'
        return [
            f"x = _ifb(d[p:p + {size}], 'big')",
            f"if x & {sign_bit}:",  # the inverted sign bit set: not negative
            f"    x ^= {sign_bit}",
            "    g = ''",
            "else:",
            f"    x ^= {all_bits ^ sign_bit}",
            "    g = '-'",
            f"{v} = _D({text})",
            f"p += {size}",
        ]

    def timestamp2(self, v: str, whole: str, frac: str, fsp: int, size: int) -> list[str]:
        """:func:`_timestamp2` inline where the fraction is a whole number of microseconds in
        range (always, for what a server writes); the helper otherwise."""
        if not fsp:
            return [f"{v} = _EPOCH + _td(0, {whole})", f"p += {size}"]
        scale = "" if fsp == 6 else f" * {10 ** (6 - fsp)}"
        micros = f"{frac}{scale}" if fsp % 2 == 0 else f"int({frac} / 10){scale}"
        return [
            f"m = {micros}",
            "if 0 <= m < 1000000:",
            f"    {v} = _EPOCH + _td(0, {whole}, m)",
            "else:",
            f"    {v} = _ts2({whole}, {frac}, {fsp})",
            f"p += {size}",
        ]

    def fixed_run(self, indexes: list[int], columns: Sequence[Any]) -> list[str]:
        """One unpack for consecutive fixed-width little-endian columns (a row without NULLs)."""
        fmt = "<" + "".join(_FIXED[columns[i].type][1 if columns[i].unsigned else 0] for i in indexes)
        unpack = self.const(struct.Struct(fmt).unpack_from)
        targets = ", ".join(f"v{i}" for i in indexes)
        return [
            f"{targets}{',' if len(indexes) == 1 else ''} = {unpack}(d, p)",
            f"p += {struct.calcsize(fmt)}",
        ]


def _supported(column: Any) -> bool:
    kind = column.type
    if kind not in _COMPILED_TYPES or not column.name:
        return False
    if kind == FIELD_TYPE.ENUM:
        return bool(column.enum_values)
    if kind == FIELD_TYPE.SET:
        return bool(column.set_values)
    return True


def compile_reader(columns: Sequence[Any], present: bytes) -> RowReader | None:
    """The reader of one row image of these TABLE_MAP columns with the given present-columns
    bitmap, or None when a column's type is not compiled (the library decodes those)."""
    if not all(_supported(c) for c in columns) or len(present) * 8 < len(columns):
        return None
    names = [str(c.name) for c in columns]
    if len(set(names)) != len(names):
        return None
    shown = [bool(present[i >> 3] & (1 << (i & 7))) for i in range(len(columns))]
    # the NULL bitmap has a bit per column set in the present bitmap (as the library counts them)
    null_size = (sum(bin(b).count("1") for b in present) + 7) // 8
    comp = _Compiler()
    general: list[str] = []
    fast: list[str] = []
    run: list[int] = []
    bit = 0
    for i, column in enumerate(columns):
        if not shown[i]:  # binlog_row_image MINIMAL/NOBLOB: the column is not in this image
            general += [f"v{i} = None", f"s[N{i}] = COLS"]
            fast += general[-2:]
            continue
        reads = comp.value(i, column)
        general += [f"if nb >> {bit} & 1:", f"    v{i} = None", f"    s[N{i}] = NULL", "else:"]
        general += [f"    {line}" for line in reads]
        bit += 1
        if column.type in _FIXED:
            run.append(i)
            continue
        if run:
            fast += comp.fixed_run(run, columns)
            run = []
        fast += reads
    if run:
        fast += comp.fixed_run(run, columns)
    values = "{" + ", ".join(f"N{i}: v{i}" for i in range(len(columns))) + "}"
    body = [
        "def read(d, p):",
        "    s = {}",
        {0: "    nb = 0", 1: "    nb = d[p]"}.get(
            null_size, f"    nb = _ifb(d[p:p + {null_size}], 'little')"
        ),
        f"    p += {null_size}",
        "    if not nb:",
        *(f"        {line}" for line in fast),
        f"        return {values}, s, p",
        *(f"    {line}" for line in general),
        f"    return {values}, s, p",
    ]
    namespace = {**_GLOBALS, **comp.consts, **{f"N{i}": name for i, name in enumerate(names)}}
    # The source is generated from column types and sizes only: names, labels and codecs reach
    # it as values in the namespace, never as text.
    code = compile("\n".join(body), f"<binlog row reader {len(columns)} columns>", "exec")
    exec(code, namespace)  # noqa: S102
    reader: RowReader = namespace["read"]
    return reader


def _reader(table: Any, columns: Sequence[Any], present: bytes) -> RowReader | None:
    """The cached reader of a table's shape (kept on the library's Table object, which the
    TABLE_MAP cache shares between all transactions of an unchanged table)."""
    cache: dict[bytes, RowReader | None] | None = table.__dict__.get("_cdc_readers")
    if cache is None:
        cache = table._cdc_readers = {}
    key = bytes(present)
    if key not in cache:
        cache[key] = compile_reader(columns, key)
    return cache[key]


def read_rows(
    table: Any, present: bytes, present_after: bytes | None, data: bytes, start: int, end: int
) -> list[dict[str, Any]] | None:
    """The rows in ``data[start:end]`` of a rows event on ``table`` (a library Table) with the
    given present-columns bitmap(s) (``present_after`` for an update's after image, else None),
    in the library's row dicts; None when the library must decode them."""
    read = _reader(table, table.columns, present)
    read_after = _reader(table, table.columns, present_after) if present_after is not None else None
    if read is None or (present_after is not None and read_after is None):
        return None
    rows: list[dict[str, Any]] = []
    pos = start
    try:
        if read_after is None:
            while pos < end:
                values, sources, pos = read(data, pos)
                rows.append({"values": values, "none_sources": sources})
        else:
            while pos < end:
                before, before_sources, pos = read(data, pos)
                after, after_sources, pos = read_after(data, pos)
                rows.append({"before_values": before, "before_none_sources": before_sources,
                             "after_values": after, "after_none_sources": after_sources})  # fmt: skip
    except Exception:
        return None
    return rows if pos == end else None


def decode_rows(event: Any, update: bool) -> list[dict[str, Any]] | None:
    """The rows of a library-built WRITE/DELETE (``update`` False) or UPDATE rows event, read from
    its body and the packet advanced past it; None (and nothing consumed) when the library must
    decode it."""
    if not event.complete or event._ignore_decode_errors:
        return None
    table = event.table_map.get(event.table_id)
    if table is None or table.columns is not event.columns or event.number_of_columns != len(event.columns):
        return None
    wrapper = event.packet
    if wrapper._BinLogPacketWrapper__data_buffer:  # bytes pushed back by an unread: not ours
        return None
    inner = wrapper.packet
    data = inner._data
    start = inner._position
    end = start + event.event_size - wrapper.read_bytes
    if not isinstance(data, bytes) or end > len(data):
        return None
    rows = read_rows(table, event.columns_present_bitmap, event.columns_present_bitmap2 if update else None,
                     data, start, end)  # fmt: skip
    if rows is not None:
        inner._position = end
        wrapper.read_bytes = event.event_size
    return rows
