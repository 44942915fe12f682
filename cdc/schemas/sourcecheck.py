"""Start-up check of a stream's schemas against the source's columns.

A mismatch (a missing key column, a zoned timestamp into a local-timestamp field, a numeric
wider than its decimal) fails before the first event, not at row 1,000,000.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from typing import Any

from cdc.plugin import ColumnInfo

# Which Python value types (as drivers return them) each Avro type/logical type accepts.
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "boolean": (bool, int),
    "int": (int,),
    "long": (int, dt.timedelta),  # a MySQL TIME as signed microseconds
    "float": (float, int),
    "double": (float, int),
    "string": (str, uuid.UUID, dict, list, decimal.Decimal, int, float),  # a float via repr()
    "bytes": (bytes, bytearray, memoryview),
    "enum": (str,),
    "decimal": (decimal.Decimal, int),
    "timestamp-millis": (dt.datetime,),
    "timestamp-micros": (dt.datetime,),
    "local-timestamp-millis": (dt.datetime,),
    "local-timestamp-micros": (dt.datetime,),
    "date": (dt.date,),
    "time-millis": (dt.time, dt.timedelta),
    "time-micros": (dt.time, dt.timedelta),
    "uuid": (uuid.UUID, str),
    "array": (list, tuple),
    "record": (dict, tuple),
    "map": (dict,),
    "fixed": (bytes,),
}


def _unwrap(avro_type: Any) -> tuple[Any, bool]:
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        return (branches[0] if len(branches) == 1 else branches), len(branches) != len(avro_type)
    return avro_type, False


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        return str(avro_type.get("logicalType") or avro_type.get("type"))
    return str(avro_type)


_INT_LIMITS = {
    "int": (-(1 << 31), (1 << 31) - 1),
    "long": (-(1 << 63), (1 << 63) - 1),
    "boolean": (0, 1),
}


def _mysql_checks(
    where: str,
    column: str,
    info: ColumnInfo,
    avro_type: Any,
    kind: str,
    symbol_map: Mapping[str, str],
) -> tuple[list[str], list[str]]:
    """Checks that need what the source knows beyond the Python type: an integer column's range,
    a DOUBLE's width, a TIME's interval semantics, a SET's members, a BINARY's size."""
    problems: list[str] = []
    warnings: list[str] = []
    what = f"column {column!r} ({info.type_name})"
    lo_hi = info.value_range
    if lo_hi is not None and kind in _INT_LIMITS:
        lo, hi = _INT_LIMITS[kind]
        if lo_hi[0] < lo or lo_hi[1] > hi:
            if kind == "boolean" and info.type_name.lower().startswith("tinyint(1)"):
                warnings.append(f"{where}: {what} may hold values other than 0/1; those are row errors")
            else:
                wider = "long" if kind == "int" and lo_hi[1] < 1 << 63 else "decimal(20,0) or string"
                problems.append(
                    f"{where}: {what} holds {lo_hi[0]}..{lo_hi[1]}, beyond Avro {kind}; declare {wider}"
                )
    if lo_hi is not None and kind == "decimal" and isinstance(avro_type, dict):
        p, s = int(avro_type["precision"]), int(avro_type.get("scale", 0))
        if len(str(max(-lo_hi[0], lo_hi[1]))) > p - s:
            problems.append(f"{where}: {what} holds {lo_hi[0]}..{lo_hi[1]}, beyond decimal({p},{s})")
    if info.data_type in ("double", "real", "double precision") and kind == "float":
        problems.append(f"{where}: {what} is 64-bit; Avro float would round it, declare double")
    if info.python_type is dt.timedelta and kind == "long" and info.data_type != "time":
        problems.append(
            f"{where}: {what} is an interval whose driver value folds months into days; "
            "declare the {months, days, micros} record (long is for a MySQL TIME)"
        )
    if info.data_type == "time" and kind in ("time-micros", "time-millis"):
        warnings.append(
            f"{where}: {what} is an interval (-838:59:59..838:59:59); values outside [00:00, 24:00) "
            "are row errors in a time-of-day field (declare long for signed microseconds)"
        )
    if kind.endswith("-millis") and (info.fsp or 0) > 3:
        warnings.append(
            f"{where}: {what} keeps {info.fsp} fractional digits; values with sub-millisecond digits "
            f"are row errors in {kind} (declare the -micros type)"
        )
    if info.data_type == "set" and kind == "array" and isinstance(avro_type, dict):
        items, _ = _unwrap(avro_type["items"])
        item_kind = _kind(items)
        if item_kind == "enum" and isinstance(items, dict):
            symbols = set(items["symbols"])
            missing = [m for m in info.enum_labels or () if symbol_map.get(m, m) not in symbols]
            if missing:
                problems.append(f"{where}: SET members {missing} are not symbols of the items' enum")
        elif item_kind != "string":
            problems.append(f"{where}: {what} is a SET; declare an array of string (or of enum)")
    if kind == "fixed" and isinstance(avro_type, dict) and info.python_type is bytes:
        size = int(avro_type["size"])
        if info.data_type != "binary" or info.length != size:
            problems.append(f"{where}: {what} does not always hold exactly {size} bytes; declare bytes")
    return problems, warnings


def check_fields(
    stream: str,
    schema: Mapping[str, Any],
    field_map: Mapping[str, str],
    columns: Mapping[str, ColumnInfo],
    *,
    what: str,
    symbol_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) for one record schema against the source columns."""
    problems: list[str] = []
    warnings: list[str] = []
    loose: list[str] = []
    for field in schema["fields"]:
        name = field["name"]
        column = field_map.get(name, name)
        info = columns.get(column)
        where = f"stream {stream!r} {what} field {name!r}"
        if info is None:
            if "default" not in field:
                problems.append(
                    f"{where}: source column {column!r} does not exist (columns: {', '.join(columns)})"
                )
            continue
        avro_type, nullable = _unwrap(field["type"])
        kind = _kind(avro_type)
        if info.nullable and not nullable:
            loose.append(name)
        if (
            info.python_type is not None
            and kind in _ACCEPTS
            and not issubclass(info.python_type, _ACCEPTS[kind])
        ):
            problems.append(
                f"{where}: column {column!r} ({info.type_name}) cannot be written as Avro {kind} exactly"
            )
            continue
        found, warned = _mysql_checks(where, column, info, avro_type, kind, (symbol_maps or {}).get(name, {}))
        problems += found
        warnings += warned
        if kind.startswith("timestamp-") and info.timezone_aware is False:
            problems.append(
                f"{where}: column {column!r} ({info.type_name}) has no time zone; declare local-{kind} "
                "(a naive value must never be shifted into an instant)"
            )
        if kind.startswith("local-timestamp-") and info.timezone_aware is True:
            problems.append(f"{where}: column {column!r} ({info.type_name}) is zoned; declare {kind[6:]}")
        if kind == "decimal" and isinstance(avro_type, dict):
            p, s = int(avro_type["precision"]), int(avro_type.get("scale", 0))
            if info.precision is None and info.python_type is decimal.Decimal:
                warnings.append(
                    f"{where}: column {column!r} is unconstrained numeric; out-of-range values are row errors"
                )
            elif info.precision is not None:
                cs = info.scale or 0
                if cs > s or info.precision - cs > p - s:
                    problems.append(
                        f"{where}: column {column!r} ({info.type_name}) does not fit decimal({p},{s}) "
                        "without rounding or overflow"
                    )
        if kind == "enum" and info.enum_labels and isinstance(avro_type, dict):
            symbols = set(avro_type["symbols"])
            mapping = (symbol_maps or {}).get(name, {})
            missing = [label for label in info.enum_labels if mapping.get(label, label) not in symbols]
            if missing:
                problems.append(
                    f"{where}: enum labels {missing} are not Avro symbols; add a symbol_maps entry or use a string"
                )
    if loose:
        warnings.append(
            f"stream {stream!r} {what} fields {loose}: the source columns are nullable (views often say so) "
            "but the fields are not; a NULL would be a row error"
        )
    return problems, warnings
