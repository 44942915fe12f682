"""Compiled pure-Python readers for flat Avro records (the sink's keys and most row values).

fastavro's ``schemaless_reader`` is Cython, but each call pays a fixed set-up cost (a BytesIO,
re-injecting the parsed schema's named types, an options dict, dispatch on type names per
field) that dominates for small records: decoding a one-field key cost about as much as the
seven-field value. A record whose fields are all primitives, ``[null, X]`` unions of them or
the common logical types is compiled once per schema id into one straight-line function that
reads the wire bytes in place. Its results are those of fastavro (tests compare both on the
same bytes, including the types and the exact decimal representation); any other schema
(nested records, enums, fixed, maps, arrays, other unions, unknown logical types) returns
None here and keeps fastavro.

Where the C accelerator ``cdc._avroread`` was built (see :mod:`cdc.accel`), the same schemas are
read by its twin of the compiled function: the same values and types, at a fraction of the CPU.
The unit tests read the same bytes with both.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Any

from cdc import accel

#: (bytes, position) -> (the record as a dict, the position after it); raises on bad bytes
RecordReader = Callable[[bytes, int], tuple[dict[str, Any], int]]

_SIMPLE = {"boolean", "int", "long", "float", "double", "string", "bytes"}
#: logical types and the base type each needs (as fastavro: other pairs are read as the base)
_LOGICAL = {
    "decimal": "bytes",
    "timestamp-millis": "long",
    "timestamp-micros": "long",
    "local-timestamp-millis": "long",
    "local-timestamp-micros": "long",
    "date": "int",
    "uuid": "string",
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()


def _decimal(context: Context, scale: int) -> Callable[[bytes], Decimal]:
    """fastavro's decimal: the unscaled integer rounded to the precision, then scaled."""

    def read(raw: bytes) -> Decimal:
        return context.create_decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale, context)

    return read


def _base_and_logical(avro_type: Any) -> tuple[str, str | None] | None:
    """The base type and logical type of a non-union field type compiled here; None otherwise
    (a complex or named type, an unknown logical type, or one fastavro would not apply)."""
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        base = avro_type.get("type")
        if not isinstance(base, str) or base not in _SIMPLE:
            return None
        if logical is not None and _LOGICAL.get(logical) != base:
            return None
        return base, logical
    if isinstance(avro_type, str) and avro_type in _SIMPLE:
        return avro_type, None
    return None


def _null_branch(branches: list[Any]) -> int | None:
    """The index of null in a ``[null, X]`` or ``[X, null]`` union; None for any other union."""
    if len(branches) != 2 or branches.count("null") != 1:
        return None
    return branches.index("null")


class _Emitter:
    """Straight-line Python source for one record; ``v<i>`` holds field i's value."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "_unpack_from": struct.unpack_from,
            "_td": dt.timedelta,
            "_EPOCH": _EPOCH,
            "_EPOCH_NAIVE": _EPOCH_NAIVE,
            "_fromordinal": dt.date.fromordinal,
            "_UUID": uuid.UUID,
            "_DAYS_SHIFT": _DAYS_SHIFT,
        }

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, indent: int, target: str) -> None:
        """A zig-zag varint; IndexError at the end of the bytes (the caller's DecodeError).

        One byte (-64..63: union branches, most lengths and small numbers) skips the loop."""
        for line in (
            "b = data[pos]",
            "pos += 1",
            "if b < 0x80:",
            f"    {target} = (b >> 1) ^ -(b & 1)",
            "else:",
            "    n = b & 0x7F",
            "    shift = 7",
            "    while b & 0x80:",
            "        b = data[pos]",
            "        pos += 1",
            "        n |= (b & 0x7F) << shift",
            "        shift += 7",
            # Longer than Avro's ten bytes, or past 64 bits: garbage, as the C reader says.
            "    if shift > 70 or n >> 64:",
            "        raise ValueError('a varint longer than 64 bits')",
            f"    {target} = (n >> 1) ^ -(n & 1)",
        ):
            self.emit(indent, line)

    def sized(self, indent: int, target: str) -> None:
        """A length-prefixed byte string (bytes and string); EOFError when it is cut short."""
        self.long(indent, "size")
        self.emit(indent, "end = pos + size")
        self.emit(indent, "if size < 0 or end > len(data):")
        self.emit(indent + 1, "raise EOFError(f'expected {size} bytes')")
        self.emit(indent, f"{target} = data[pos:end]")
        self.emit(indent, "pos = end")

    def value(self, indent: int, target: str, avro_type: Any, tag: str) -> bool:
        """Emit the reading of one value; False when the type is not supported here."""
        if isinstance(avro_type, list):
            return self.union(indent, target, avro_type, tag)
        found = _base_and_logical(avro_type)
        if found is None:
            return False
        base, logical = found
        if base == "boolean":
            self.emit(indent, f"{target} = data[pos] != 0")
            self.emit(indent, "pos += 1")
        elif base in ("int", "long"):
            self.long(indent, target)
        elif base in ("float", "double"):
            fmt, size = ("<f", 4) if base == "float" else ("<d", 8)
            self.emit(indent, f"{target} = _unpack_from({fmt!r}, data, pos)[0]")
            self.emit(indent, f"pos += {size}")
        elif base == "bytes":
            self.sized(indent, target)
        else:
            self.sized(indent, target)
            self.emit(indent, f"{target} = {target}.decode()")
        if logical is None:
            return True
        assert isinstance(avro_type, dict)
        if logical == "decimal":
            name = f"_dec_{tag}"
            self.env[name] = _decimal(
                Context(prec=int(avro_type["precision"])), int(avro_type.get("scale", 0))
            )
            self.emit(indent, f"{target} = {name}({target})")
        elif logical == "timestamp-millis":
            self.emit(indent, f"{target} = _EPOCH + _td(microseconds={target} * 1000)")
        elif logical == "timestamp-micros":
            self.emit(indent, f"{target} = _EPOCH + _td(microseconds={target})")
        elif logical == "local-timestamp-millis":
            self.emit(indent, f"{target} = _EPOCH_NAIVE + _td(microseconds={target} * 1000)")
        elif logical == "local-timestamp-micros":
            self.emit(indent, f"{target} = _EPOCH_NAIVE + _td(microseconds={target})")
        elif logical == "date":
            self.emit(indent, f"{target} = _fromordinal({target} + _DAYS_SHIFT)")
        else:  # uuid
            self.emit(indent, f"{target} = _UUID({target})")
        return True

    def union(self, indent: int, target: str, branches: list[Any], tag: str) -> bool:
        """Only ``[null, X]`` and ``[X, null]``: the branch index, then X unless it is null."""
        null_index = _null_branch(branches)
        if null_index is None:
            return False
        self.long(indent, "branch")
        self.emit(indent, f"if branch == {null_index}:")
        self.emit(indent + 1, f"{target} = None")
        self.emit(indent, f"elif branch == {1 - null_index}:")
        if not self.value(indent + 1, target, branches[1 - null_index], tag):
            return False
        self.emit(indent, "else:")
        self.emit(indent + 1, "raise IndexError(f'union branch {branch} of 2')")
        return True


#: Avro base type (or base/logical pair) -> the C reader's kind (``cdc._avroread``'s constants)
_C_KINDS = {
    "boolean": "BOOLEAN",
    "int": "LONG",
    "long": "LONG",
    "float": "FLOAT",
    "double": "DOUBLE",
    "bytes": "BYTES",
    "string": "STRING",
    "timestamp-millis": "TIMESTAMP_MILLIS",
    "timestamp-micros": "TIMESTAMP_MICROS",
    "local-timestamp-millis": "LOCAL_TIMESTAMP_MILLIS",
    "local-timestamp-micros": "LOCAL_TIMESTAMP_MICROS",
    "date": "DATE",
    "decimal": "DECIMAL",
    "uuid": "STRING",  # then uuid.UUID
}


def _c_field(avro_type: Any) -> tuple[str, int, Callable[[Any], Any] | None, int, int] | None:
    """(kind, null branch or -1, conversion, decimal precision, decimal scale) of one field for
    the C reader; None when the pure-Python emitter would not compile it either (the same rules
    as :meth:`_Emitter.value`)."""
    null_index = -1
    if isinstance(avro_type, list):
        found_null = _null_branch(avro_type)
        if found_null is None:
            return None
        null_index = found_null
        avro_type = avro_type[1 - null_index]
    found = _base_and_logical(avro_type)
    if found is None:
        return None
    base, logical = found
    convert: Callable[[Any], Any] | None = None
    precision = scale = 0
    if logical == "decimal":
        assert isinstance(avro_type, dict)
        precision, scale = int(avro_type["precision"]), int(avro_type.get("scale", 0))
        convert = _decimal(Context(prec=precision), scale)  # for what the C fast path leaves
    elif logical == "uuid":
        convert = uuid.UUID
    return _C_KINDS[logical or base], null_index, convert, precision, scale


def _c_reader(fields: list[Any]) -> RecordReader | None:
    """The C twin of the compiled reader, or None where the accelerator is not available."""
    module = accel.load("_avroread")
    if module is None:
        return None
    plan = []
    for f in fields:
        found = _c_field(f.get("type"))
        if found is None:
            return None
        kind, null_index, convert, precision, scale = found
        plan.append((f["name"], getattr(module, kind), null_index, convert, precision, scale))
    reader: RecordReader = module.make_reader(plan, dt.date.fromordinal, _DAYS_SHIFT, Decimal)
    return reader


def compile_record_reader(schema: Any, *, accelerated: bool = True) -> RecordReader | None:
    """A reader for a flat record schema (see the module doc), or None to keep fastavro.

    ``accelerated``: use the C reader where it is available (``False``: the pure-Python one)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    fields = schema.get("fields")
    if not isinstance(fields, list) or not fields:
        return None
    out = _Emitter()
    names: list[str] = []
    for i, f in enumerate(fields):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            return None
        if not out.value(1, f"v{i}", f.get("type"), str(i)):
            return None
        names.append(f["name"])
    if accelerated:
        fast = _c_reader(fields)
        if fast is not None:
            return fast
    # Field names are Avro names (fastavro's parse_schema validated them); repr() quotes them anyway.
    record = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
    source = "\n".join(["def read(data, pos):", *out.lines, f"    return {{{record}}}, pos"])
    namespace = dict(out.env)
    exec(compile(source, f"<avro reader {schema.get('name', '?')}>", "exec"), namespace)  # noqa: S102
    reader: RecordReader = namespace["read"]
    return reader
