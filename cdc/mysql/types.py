"""MySQL/MariaDB column descriptions and the canonical Python value of every column type.

Every MySQL-family source (polling, binlog, audit relay) describes its columns with
:func:`column_info` and passes each captured value through :func:`normalizer`, so one row gives
byte-identical Avro whatever the capture method. The canonical values:

========================  =====================================================================
column type               canonical Python value
========================  =====================================================================
integer types, YEAR       int (the true unsigned value; ``value_range`` says the column's range)
BIT(n)                    int: the unsigned value of the n bits
DECIMAL(p,s)              decimal.Decimal
FLOAT                     float holding the exact IEEE-754 32-bit value
DOUBLE                    float
CHAR/VARCHAR/TEXT, JSON   str (bytes are decoded with the column's character set)
ENUM                      str: the label ('' for MySQL's invalid-value index 0)
SET                       list[str]: the members, in the column's DECLARED order
BINARY(n)                 bytes right-padded with 0x00 to n bytes
VARBINARY/BLOB            bytes
DATE                      datetime.date
DATETIME(fsp)             naive datetime.datetime (the wall clock as stored)
TIMESTAMP(fsp)            aware datetime.datetime in UTC (a naive value is read as UTC)
TIME(fsp)                 datetime.timedelta, signed, -838:59:59.999999 .. 838:59:59.999999
UUID (MariaDB)            str, lower case 8-4-4-4-12
INET4/INET6 (MariaDB)     str as MariaDB renders it
zero/invalid dates        the str as MySQL renders it (``0000-00-00``), which the converter
                          turns into a row error naming the field; None with ``zero_dates: null``
========================  =====================================================================
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from cdc.plugin import ColumnInfo

__all__ = [
    "ZeroDates",
    "column_info",
    "decode_text",
    "normalizer",
    "parse_column_type",
    "row_normalizer",
]

#: what a zero or invalid date (``0000-00-00``, ``2020-00-00``) becomes: a row error or None
ZeroDates = Literal["error", "null"]
Normalize = Callable[[Any], Any]

_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}
_DECIMALS = frozenset({"decimal", "numeric", "dec", "fixed"})
_DOUBLES = frozenset({"double", "real", "double precision"})
_TEXTS = frozenset(
    {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "json", "enum", "inet4", "inet6"}
)
_BYTES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_TEMPORAL = frozenset({"time", "datetime", "timestamp"})
_PYTHON: dict[str, type] = {
    **dict.fromkeys(_INT_BITS, int),
    "year": int,
    "bit": int,
    **dict.fromkeys(_DECIMALS, decimal.Decimal),
    "float": float,
    **dict.fromkeys(_DOUBLES, float),
    **dict.fromkeys(_TEXTS, str),
    "uuid": str,
    "set": list,
    **dict.fromkeys(_BYTES, bytes),
    "date": dt.date,
    "datetime": dt.datetime,
    "timestamp": dt.datetime,
    "time": dt.timedelta,
}
_TYPE = re.compile(
    r"^\s*([a-z][a-z0-9_ ]*?)\s*(?:\((.*)\))?\s*((?:\s*(?:unsigned|signed|zerofill))*)\s*$", re.S
)
_LABEL = re.compile(r"'((?:[^'\\]|''|\\.)*)'", re.S)
_F32 = struct.Struct("<f")

# MySQL's "latin1" is Windows-1252, except that the five bytes cp1252 leaves undefined map to
# the C1 control characters of the same code (as in ISO 8859-1).
_CP1252_TAIL = bytes(range(0x80, 0xA0)).decode("cp1252", errors="replace")
_LATIN1 = {0x80 + i: (c if c != "\ufffd" else chr(0x80 + i)) for i, c in enumerate(_CP1252_TAIL)}
_CODECS = {
    "utf8mb4": "utf-8",
    "utf8mb3": "utf-8",
    "utf8": "utf-8",
    "ascii": "ascii",
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
    "latin2": "iso8859-2",
    "greek": "iso8859-7",
    "hebrew": "iso8859-8",
    "latin5": "iso8859-9",
    "latin7": "iso8859-13",
    "cp1250": "cp1250",
    "cp1251": "cp1251",
    "cp1256": "cp1256",
    "cp1257": "cp1257",
    "cp850": "cp850",
    "cp852": "cp852",
    "cp866": "cp866",
    "koi8r": "koi8-r",
    "koi8u": "koi8-u",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "ujis": "euc-jp",
    "eucjpms": "euc-jp",
    "euckr": "euc-kr",
    "gb2312": "gb2312",
    "gbk": "gbk",
    "gb18030": "gb18030",
    "big5": "big5",
    "tis620": "tis-620",
}


def parse_column_type(column_type: str) -> tuple[str, list[str], bool]:
    """Split a full column type (``bigint(20) unsigned``, ``set('a','b')``) into
    (base type in lower case, the raw parenthesized arguments, unsigned)."""
    m = _TYPE.match(column_type.lower()) if column_type else None
    if m is None:
        return column_type.strip().lower(), [], False
    base, args, flags = m.group(1).strip(), m.group(2), m.group(3)
    if base in ("enum", "set"):
        # labels keep their case: parse them from the original text
        raw = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
        return base, [_unquote(x) for x in _LABEL.findall(raw)], False
    return base, [a.strip() for a in args.split(",")] if args else [], "unsigned" in flags


def _unquote(label: str) -> str:
    # information_schema doubles a quote inside a label; SHOW CREATE may backslash-escape it
    return re.sub(r"\\(.)", r"\1", label.replace("''", "'"))


def column_info(
    name: str,
    data_type: str,
    *,
    nullable: bool,
    column_type: str | None = None,
    unsigned: bool | None = None,
    precision: int | None = None,
    scale: int | None = None,
    fsp: int | None = None,
    length: int | None = None,
    charset: str | None = None,
    labels: Sequence[str] | None = None,
) -> ColumnInfo:
    """Describe a MySQL/MariaDB column from whatever descriptors the source has.

    The polling source passes ``information_schema.columns`` (DATA_TYPE, COLUMN_TYPE,
    NUMERIC_PRECISION/SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME); a binlog source passes
    what its TABLE_MAP metadata says (type, unsigned flag, ENUM/SET labels, charset). Values
    parsed from ``column_type`` fill in what the keyword arguments leave out.
    """
    base = data_type.strip().lower()
    args: list[str] = []
    parsed_unsigned = False
    if column_type:
        parsed_base, args, parsed_unsigned = parse_column_type(column_type)
        base = base or parsed_base
        if base in ("enum", "set") and labels is None:
            labels = args
    if base in ("bool", "boolean"):
        base, args = "tinyint", ["1"]
    unsigned = parsed_unsigned if unsigned is None else unsigned
    numbers = [int(a) for a in args if a.isdigit()] if base not in ("enum", "set") else []
    value_range: tuple[int, int] | None = None
    if base in _INT_BITS:
        bits = _INT_BITS[base]
        value_range = (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    elif base == "bit":
        length = length if length is not None else (numbers[0] if numbers else 1)
        value_range = (0, (1 << length) - 1)
    elif base == "year":
        value_range = (0, 2155)  # 1901..2155, and 0 for MySQL's zero year
    if base in _DECIMALS:
        precision = precision if precision is not None else (numbers[0] if numbers else 10)
        scale = scale if scale is not None else (numbers[1] if len(numbers) > 1 else 0)
    else:
        precision = scale = None
    if base not in _TEMPORAL:
        fsp = None
    elif fsp is None:
        fsp = numbers[0] if numbers else 0
    if length is None and base in ("char", "varchar", "binary", "varbinary") and numbers:
        length = numbers[0]
    if base == "binary" and length is None:
        length = 1
    shown = column_type or base
    if column_type is None and unsigned and value_range is not None and base != "bit":
        shown = f"{base} unsigned"
    return ColumnInfo(
        name=name,
        type_name=shown,
        nullable=nullable,
        python_type=_PYTHON.get(base),
        precision=precision,
        scale=scale,
        timezone_aware=True if base == "timestamp" else False if base == "datetime" else None,
        enum_labels=tuple(labels) if base in ("enum", "set") and labels is not None else None,
        data_type=base,
        value_range=value_range,
        length=length,
        fsp=fsp,
        charset=charset.lower() if charset else None,
    )


def decode_text(raw: bytes, charset: str | None) -> str:
    """Decode a text column's bytes with its MySQL character set (``latin1`` is cp1252-like)."""
    cs = (charset or "utf8mb4").lower()
    if cs == "latin1":
        return raw.decode("latin-1").translate(_LATIN1)
    try:
        return raw.decode(_CODECS.get(cs, cs))
    except LookupError:
        raise ValueError(f"character set {charset!r} has no Python codec") from None


def _set_members(labels: tuple[str, ...]) -> Normalize:
    order = {label: i for i, label in enumerate(labels)}
    lowered = {label.lower(): label for label in labels}

    def norm(v: Any) -> Any:
        if (
            isinstance(v, list)
            and all(type(x) is str and x in order for x in v)
            and v == sorted(v, key=order.__getitem__)
        ):
            return v  # already canonical
        if isinstance(v, int) and not isinstance(v, bool):  # the stored bitmask
            return [label for i, label in enumerate(labels) if v >> i & 1]
        if isinstance(v, bytes):
            v = v.decode()
        members: Iterable[Any] = (v.split(",") if v else []) if isinstance(v, str) else v
        found = set()
        for m in members:
            text = m if isinstance(m, str) else str(m)
            # MySQL compares SET members case-insensitively and stores the declared spelling
            found.add(text if text in order else lowered.get(text.lower(), text))
        unknown = sorted(m for m in found if m not in order)
        if unknown:
            raise ValueError(f"SET members {unknown} are not among {list(labels)}")
        return sorted(found, key=order.__getitem__)

    return norm


def _bit(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        return int.from_bytes(v, "big")
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):  # python-mysql-replication renders BIT as a string of 0/1 digits
        if not v or v.strip("01"):
            raise ValueError(f"BIT value {v!r} is not a string of binary digits")
        return int(v, 2)
    return v


def _float32(v: Any) -> Any:
    if isinstance(v, float):
        return _F32.unpack(_F32.pack(v))[0]
    return v


def _padded(size: int) -> Normalize:
    def norm(v: Any) -> Any:
        if isinstance(v, bytes | bytearray) and len(v) < size:
            return bytes(v).ljust(size, b"\x00")
        return v

    return norm


def _text(charset: str | None) -> Normalize:
    def norm(v: Any) -> Any:
        if isinstance(v, bytes | bytearray):
            return decode_text(bytes(v), charset)
        return v

    return norm


def _enum(labels: tuple[str, ...]) -> Normalize:
    def norm(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):  # the stored index; 0 is the '' error value
            return labels[v - 1] if 0 < v <= len(labels) else ""
        if isinstance(v, bytes):
            return v.decode()
        return v

    return norm


def _uuid(v: Any) -> Any:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, str):
        return v.lower()
    return v


def _zero(zero_dates: ZeroDates, then: Normalize | None = None) -> Normalize:
    def norm(v: Any) -> Any:
        if isinstance(v, str | bytes):  # drivers hand zero/invalid dates over as text
            return None if zero_dates == "null" else (v.decode() if isinstance(v, bytes) else v)
        return v if then is None else then(v)

    return norm


def _utc(v: Any) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=dt.UTC)
    return v


class _Never:
    """No value has this type: the value is always passed to the normalizer."""


#: The type whose values a normalizer returns unchanged (row_normalizer skips the call for them).
CANONICAL: dict[str, type] = {
    **dict.fromkeys(_TEXTS - {"inet4", "inet6"}, str),
    "inet4": str,
    "inet6": str,
    "bit": int,
    "date": dt.date,
    "datetime": dt.datetime,
}


def normalizer(info: ColumnInfo, zero_dates: ZeroDates = "error") -> Normalize | None:
    """The function turning a driver's value of this column into the canonical value (None:
    the driver's value already is canonical). A value that cannot be made canonical (a SET
    member the column does not declare) raises ValueError."""
    base, labels = info.data_type, info.enum_labels or ()
    if base == "set":
        return _set_members(labels)
    if base == "enum":
        return _enum(labels)
    if base == "bit":
        return _bit
    if base == "float":
        return _float32
    if base == "binary" and info.length:
        return _padded(info.length)
    if base in _TEXTS and base != "enum":
        return _text(info.charset)
    if base == "uuid":
        return _uuid
    if base == "timestamp":
        return _zero(zero_dates, _utc)
    if base in ("date", "datetime"):
        return _zero(zero_dates)
    return None


def row_normalizer(
    columns: Mapping[str, ColumnInfo], zero_dates: ZeroDates = "error"
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """One function normalizing a whole row dict in place (columns absent from the row are
    left alone), for the columns whose driver values need it."""
    steps = [
        (name, f, CANONICAL.get(info.data_type or "", _Never))
        for name, info in columns.items()
        if (f := normalizer(info, zero_dates)) is not None
    ]

    def norm(row: dict[str, Any]) -> dict[str, Any]:
        for name, f, canonical in steps:
            # a value of the canonical type needs no call (the common case: a few microseconds
            # per row for a wide table otherwise)
            if name in row and (v := row[name]) is not None and type(v) is not canonical:
                row[name] = f(v)
        return row

    return norm
