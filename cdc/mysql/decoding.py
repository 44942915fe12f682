"""Rows of a binlog row event -> the canonical Python values of the MySQL-family contract.

Each row is decoded with the columns of ITS OWN TABLE_MAP event (``binlog_row_metadata=FULL``
puts names, signedness, charsets and enum/set labels in every TABLE_MAP), never with today's
``information_schema``. A TABLE_MAP is checked against the stream once per table id and shape:
a mapped column that is missing or whose type family changed stops the connector before the
first row of that shape is produced (a column the stream does not map is ignored).

``information_schema`` is read once at start-up only for what a TABLE_MAP cannot say: that a
``BINARY(16)`` column is really a MariaDB ``UUID`` or ``INET6`` (rendering), and the type family
the stream was configured against (the baseline a retype is detected from).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE

from cdc.errors import SchemaError
from cdc.mysql.types import CANONICAL, ZeroDates, column_info
from cdc.mysql.types import normalizer as canonical
from cdc.plugin import ColumnInfo

Normalizer = Callable[[Any], Any]

_INT_TYPES = {
    FIELD_TYPE.TINY: "tinyint",
    FIELD_TYPE.SHORT: "smallint",
    FIELD_TYPE.INT24: "mediumint",
    FIELD_TYPE.LONG: "int",
    FIELD_TYPE.LONGLONG: "bigint",
}
_TEXTUAL = (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING, FIELD_TYPE.BLOB)
_FAMILIES = {
    FIELD_TYPE.NEWDECIMAL: "decimal",
    FIELD_TYPE.FLOAT: "float",
    FIELD_TYPE.DOUBLE: "double",
    FIELD_TYPE.BIT: "bit",
    FIELD_TYPE.DATE: "date",
    FIELD_TYPE.DATETIME: "datetime",
    FIELD_TYPE.DATETIME2: "datetime",
    FIELD_TYPE.TIMESTAMP: "timestamp",
    FIELD_TYPE.TIMESTAMP2: "timestamp",
    FIELD_TYPE.TIME: "time",
    FIELD_TYPE.TIME2: "time",
    FIELD_TYPE.YEAR: "year",
    FIELD_TYPE.JSON: "json",
    FIELD_TYPE.ENUM: "enum",
    FIELD_TYPE.SET: "set",
    FIELD_TYPE.GEOMETRY: "geometry",
}
# information_schema DATA_TYPE -> the binlog families it may arrive as
# information_schema DATA_TYPE -> the binlog families it may arrive as
_EXPECTED = {
    **{t: {t} for t in ("tinyint", "smallint", "mediumint", "int", "bigint")},
    "decimal": {"decimal"},
    "float": {"float"},
    "double": {"double"},
    "bit": {"bit"},
    **{t: {"text"} for t in ("char", "varchar", "tinytext", "text", "mediumtext", "longtext")},
    **{t: {"bytes"} for t in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob")},
    "date": {"date"},
    "datetime": {"datetime"},
    "timestamp": {"timestamp"},
    "time": {"time"},
    "year": {"year"},
    "json": {"json", "text"},  # MariaDB's JSON is LONGTEXT with a check
    "enum": {"enum"},
    "set": {"set"},
    "uuid": {"bytes"},
    "inet6": {"bytes"},
    "inet4": {"int", "bytes"},
}
# binlog family -> the information_schema DATA_TYPE it is described as, when no baseline says
_DATA_TYPE = {"text": "longtext", "bytes": "longblob"}


def family(column: Any) -> str:
    """The type family of a TABLE_MAP column (what a retype is judged by)."""
    kind = column.type
    if kind in _INT_TYPES:
        return _INT_TYPES[kind]
    if kind in _TEXTUAL:
        return "bytes" if column.character_set_name in (None, "binary") else "text"
    return _FAMILIES.get(kind, f"type {kind}")


def _unsigned(base: ColumnInfo) -> bool:
    return base.value_range is not None and base.value_range[0] == 0


def incompatibility(column: Any, base: ColumnInfo) -> str | None:
    """Why a TABLE_MAP column no longer fits the stream's start-up description, or None."""
    got = family(column)
    data_type = base.data_type or ""
    expected = _EXPECTED.get(data_type, {got})
    if got not in expected:
        return f"type changed: was {data_type}, the binlog now carries {got}"
    if got in _INT_TYPES.values() and bool(column.unsigned) != _unsigned(base):
        return f"signedness changed: was {'unsigned' if _unsigned(base) else 'signed'}"
    if got == "decimal" and (column.precision, column.decimals) != (base.precision, base.scale):
        return (
            f"type changed: was decimal({base.precision},{base.scale}), "
            f"the binlog now carries decimal({column.precision},{column.decimals})"
        )
    return None


def describe(column: Any, base: ColumnInfo | None) -> ColumnInfo:
    """The contract's description of a TABLE_MAP column (labels, signedness, sizes from the
    TABLE_MAP; the start-up description only tells UUID/INET6/JSON from the types they are
    stored as)."""
    got = family(column)
    data_type = base.data_type if base is not None and base.data_type in _EXPECTED else None
    if data_type is None or got not in _EXPECTED[data_type]:
        data_type = _DATA_TYPE.get(got, got)
    if data_type == "binary" and column.type != FIELD_TYPE.STRING:
        data_type = "varbinary"
    labels = column.set_values if column.type == FIELD_TYPE.SET else None
    if column.type == FIELD_TYPE.ENUM and column.enum_values:
        labels = column.enum_values[1:]  # the library puts MySQL's invalid-value '' first
    return column_info(
        str(column.name),
        data_type,
        nullable=True,
        unsigned=bool(column.unsigned),
        precision=getattr(column, "precision", None) if got == "decimal" else None,
        scale=getattr(column, "decimals", None) if got == "decimal" else None,
        fsp=getattr(column, "fsp", None),
        length=int(column.max_length) if data_type == "binary" else getattr(column, "bits", None),
        labels=labels,
    )


_ZERO_TIMESTAMP = "0000-00-00 00:00:00"


def _utc_or_zero(value: dt.datetime) -> Any:
    # The library reads TIMESTAMP's epoch seconds into a naive UTC value; 0 is MySQL's zero
    # timestamp (1970-01-01 00:00:00 UTC itself is outside TIMESTAMP's range).
    if value == _EPOCH:
        return _ZERO_TIMESTAMP
    return value


_EPOCH = dt.datetime(1970, 1, 1)


def _bytes(value: Any) -> Any:
    # The library "decodes" binary strings with the codec "binary", which Python only accepts
    # for an empty input: b"" arrives as "".
    return b"" if value == "" else value


def _uuid(value: Any) -> Any:
    value = _bytes(value)
    # Fixed-size binary types reach the binlog without their trailing zero bytes.
    return uuid.UUID(bytes=bytes(value).ljust(16, b"\x00")) if isinstance(value, bytes | bytearray) else value


def inet6_text(value: bytes) -> str:
    """An INET6 value as MariaDB renders it (inet_ntop: IPv4-mapped and -compatible addresses
    end in dotted quads)."""
    if value[:10] == bytes(10) and value[10:12] == b"\xff\xff":
        return "::ffff:" + str(ipaddress.IPv4Address(value[12:]))
    if value[:12] == bytes(12) and int.from_bytes(value[12:], "big") > 1:
        return "::" + str(ipaddress.IPv4Address(value[12:]))
    return ipaddress.IPv6Address(value).compressed


def _inet6(value: Any) -> Any:
    value = _bytes(value)
    return inet6_text(bytes(value).ljust(16, b"\x00")) if isinstance(value, bytes | bytearray) else value


def _inet4(value: Any) -> Any:
    value = _bytes(value)
    if isinstance(value, bytes | bytearray):
        return str(ipaddress.IPv4Address(bytes(value).ljust(4, b"\x00")))
    if isinstance(value, int):
        return str(ipaddress.IPv4Address(value))
    return value


def _year(value: Any) -> Any:
    return 0 if value == 1900 else value  # the library adds 1900 to the stored 0 of YEAR 0000


def render_mysql_json(value: Any) -> str:
    """MySQL's binary JSON as MySQL renders it: ``", "`` and ``": "`` separators, keys in their
    stored order, non-ASCII characters as they are."""
    return json.dumps(_json_plain(value), separators=(", ", ": "), ensure_ascii=False)


def _json_plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_json_plain(k): _json_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_plain(v) for v in value]
    return value


def _json(value: Any) -> Any:
    return value if isinstance(value, str) else render_mysql_json(value)


#: binlog value -> the driver value cdc.mysql.types makes canonical, by data type
_PRE: dict[str, Normalizer] = {
    "timestamp": _utc_or_zero,
    "uuid": _uuid,
    "inet6": _inet6,
    "inet4": _inet4,
    "year": _year,
    "json": _json,
    **dict.fromkeys(("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"), _bytes),
}


def normalizer(info: ColumnInfo, zero_dates: ZeroDates) -> Normalizer | None:
    """The library's value of a column -> the contract's canonical value (None: as is)."""
    pre = _PRE.get(info.data_type or "")
    shared = canonical(info, zero_dates)
    if pre is None:
        return shared
    if shared is None:
        return pre
    return lambda value: shared(pre(value))


#: how build_mapper normalizes one mapped column: (name, the binlog-specific step, the shared
#: canonical step, data type); either step may be None
ColumnPlan = tuple[str, Normalizer | None, Normalizer | None, str]
MappedValues = Callable[[dict[str, Any], dict[str, str] | None], dict[str, Any]]


@dataclass(slots=True)
class RowMapper:
    """Turns one TABLE_MAP shape's row dicts into the stream's columns (mapped ones only).

    :meth:`values` is the reference; :attr:`mapped` is the same function compiled for this
    shape (straight-line code, no per-column loop or lambda), and :attr:`key_of` takes the key
    columns out of its result."""

    stream: str
    table: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    normalizers: tuple[tuple[str, Normalizer], ...]
    #: columns whose None may stand for something else: name -> (none source, its value)
    stand_ins: dict[str, tuple[Normalizer | None, dict[str, Any]]]
    #: the normalizers' parts (lets the compiled mapping skip calls that return their input)
    plans: tuple[ColumnPlan, ...] = ()
    mapped: MappedValues = field(init=False)
    key_of: Callable[[dict[str, Any]], dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.mapped, self.key_of = _compile_mapping(self)

    def values(self, row: dict[str, Any], none_sources: dict[str, str] | None = None) -> dict[str, Any]:
        out = {c: row[c] for c in self.columns}
        for name, convert in self.normalizers:
            value = out[name]
            if value is not None:
                out[name] = convert(value)
        if none_sources:
            self.put_back(out, none_sources)
        return out

    def put_back(self, out: dict[str, Any], none_sources: dict[str, str]) -> None:
        """The library returns None for a zero or invalid date and for an empty SET, and says
        why in none_sources: put back what the column really holds."""
        for name in self.stand_ins.keys() & none_sources.keys():
            stand_in_convert, by_source = self.stand_ins[name]
            if none_sources[name] in by_source:
                value = by_source[none_sources[name]]
                out[name] = value if stand_in_convert is None else stand_in_convert(value)


def _compile_mapping(mapper: RowMapper) -> tuple[MappedValues, Callable[[dict[str, Any]], dict[str, Any]]]:
    """The mapper's ``values`` and key extraction as generated straight-line functions; every
    call they make is one the reference makes, in the same order, on the same values, except
    those the canonical-type table (:data:`cdc.mysql.types.CANONICAL`) or the timestamp test
    below show to return their input or a known value."""
    consts: dict[str, Any] = {"UTC": dt.UTC}
    names = {c: f"N{i}" for i, c in enumerate(mapper.columns)}
    plans = {p[0]: p for p in mapper.plans}
    steps = dict(mapper.normalizers)
    lines = ["def mapped(row, none_sources=None):"]
    for c, n in names.items():
        consts[n] = c
        v = f"v{n[1:]}"
        lines.append(f"    {v} = row[{n}]")
        convert = steps.get(c)
        if convert is None:
            continue
        consts[f"C{n}"] = convert
        _, pre, shared, data_type = plans.get(c, (c, None, None, ""))
        if pre is _utc_or_zero and data_type == "timestamp" and shared is not None:
            # Only "attach UTC" is left to do for a naive datetime that is not the zero
            # timestamp (the pre step returns it as is, the shared one replaces its tzinfo).
            lines += [f"    if {v} is not None:",
                      f"        if type({v}) is DATETIME and {v}.tzinfo is None and {v} != EPOCH:",
                      f"            {v} = {v}.replace(tzinfo=UTC)",
                      "        else:", f"            {v} = C{n}({v})"]  # fmt: skip
            consts.update(DATETIME=dt.datetime, EPOCH=_EPOCH)
        elif pre is None and shared is convert and data_type in CANONICAL:
            consts[f"T{n}"] = CANONICAL[data_type]
            lines += [f"    if {v} is not None and type({v}) is not T{n}:", f"        {v} = C{n}({v})"]
        else:
            lines += [f"    if {v} is not None:", f"        {v} = C{n}({v})"]
    lines.append("    out = {" + ", ".join(f"{n}: v{n[1:]}" for n in names.values()) + "}")
    if mapper.stand_ins:
        consts["put_back"] = mapper.put_back
        lines += ["    if none_sources:", "        put_back(out, none_sources)"]
    lines.append("    return out")
    keys = {k: f"K{i}" for i, k in enumerate(mapper.key_columns)}
    consts.update({n: k for k, n in keys.items()})
    lines += [
        "def key_of(values):",
        "    return {" + ", ".join(f"{n}: values[{n}]" for n in keys.values()) + "}",
    ]
    namespace: dict[str, Any] = {"__builtins__": {"type": type}, **consts}
    # Column names reach the code as values in the namespace, never as text.
    exec(compile("\n".join(lines), f"<binlog mapping of {mapper.table}>", "exec"), namespace)  # noqa: S102
    return namespace["mapped"], namespace["key_of"]


_STAND_INS: dict[str, dict[str, Any]] = {
    "date": {NONE_SOURCE.OUT_OF_DATE_RANGE: "0000-00-00"},
    "datetime": {
        NONE_SOURCE.OUT_OF_DATETIME_RANGE: _ZERO_TIMESTAMP,
        NONE_SOURCE.OUT_OF_DATETIME2_RANGE: _ZERO_TIMESTAMP,
    },
    "set": {NONE_SOURCE.EMPTY_SET: []},
}


def build_mapper(
    stream: str,
    table_name: str,
    table_map: Any,
    columns: Sequence[str],
    key_columns: Sequence[str],
    baselines: dict[str, ColumnInfo],
    zero_dates: ZeroDates = "error",
) -> RowMapper:
    """Check a TABLE_MAP against the stream and build the row mapper (SchemaError if it no
    longer fits: a mapped column dropped, renamed or retyped)."""
    by_name = {c.name: c for c in table_map.columns}
    if any(c.name is None for c in table_map.columns):
        raise SchemaError(
            f"stream {stream!r}: the binlog's TABLE_MAP of {table_name} carries no column names",
            hint="SET GLOBAL binlog_row_metadata = FULL (MySQL 8.0.1+, MariaDB 10.5+), "
            "then restart the connector",
        )
    normalizers: list[tuple[str, Normalizer]] = []
    plans: list[ColumnPlan] = []
    stand_ins: dict[str, tuple[Normalizer | None, dict[str, Any]]] = {}
    for name in columns:
        column = by_name.get(name)
        if column is None:
            raise SchemaError(
                f"stream {stream!r}, table {table_name}: mapped column {name!r} was dropped (or renamed) "
                "in the binlog; its next change cannot be produced",
                hint="restore the column, or change the stream's mapping and schema, then restart",
            )
        base = baselines.get(name)
        if base is not None:
            problem = incompatibility(column, base)
            if problem:
                raise SchemaError(
                    f"stream {stream!r}, table {table_name}, column {name!r}: {problem}",
                    hint="change the stream's schema (and register it), or revert the column's type",
                )
        info = describe(column, base)
        convert = normalizer(info, zero_dates)
        if convert is not None:
            normalizers.append((name, convert))
            pre = _PRE.get(info.data_type or "")
            plans.append(
                (name, pre, convert if pre is None else canonical(info, zero_dates), info.data_type or "")
            )
        stand_in = _STAND_INS.get(info.data_type or "")
        if stand_in is not None:
            stand_ins[name] = (convert, stand_in)
    return RowMapper(
        stream, table_name, tuple(columns), tuple(key_columns), tuple(normalizers), stand_ins, tuple(plans)
    )
