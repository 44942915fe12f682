"""Compiled pure-Python writers for flat Avro records (the producer's keys and most row values).

fastavro's ``schemaless_writer`` is Cython, but each call pays a fixed set-up cost (a writer
object, an options dict, dispatch on type names and logical types per field, a union's branch
found by validating the value against each candidate) that dominates for small records. A record
whose fields are all primitives, ``[null, X]`` unions of them, enums, fixed or the common logical
types is compiled once per schema into one straight-line function that appends the Avro binary
encoding to a bytearray.

Exactness is the contract: the compiled function only writes a value whose type it models
exactly (``type(v) is int`` in range, a ``str``, an aware ``datetime`` ...) and raises on anything
else -- a bool for an int, an int for a double, a naive datetime for ``timestamp-*`` (fastavro
reads it in the process's local zone), a decimal fastavro would reject or write oddly, a missing
field, a dict subclass. The caller (:class:`cdc.schemas.wire.WireEncoder`) then encodes that record
with fastavro, so such records get fastavro's bytes or fastavro's error, exactly as before. Tests
compare both writers on the same records, edge values included.

Any other schema (nested records, arrays, maps, other unions, named-type references, logical types
fastavro prepares that are not modelled here) returns None and keeps fastavro for every record.

Where the C accelerator ``cdc._avrowrite`` was built (see :mod:`cdc.accel`), the same schemas are
written by its twin of the compiled function, built from a plan the compiler records as it emits
the Python source (the same decisions, made once): the same bytes, and an exception of the same
class in the same cases, at a fraction of the CPU. The unit tests run both on the same records.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import uuid
from collections.abc import Callable
from typing import Any

from fastavro.write import LOGICAL_WRITERS

from cdc import accel

__all__ = ["RecordWriter", "compile_record_writer"]

#: the record as a dict -> its Avro body after the prefix; raises on any value not modelled here
RecordWriter = Callable[[dict[str, Any]], bytes]

_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Precision and exponent range so large that scaleb() never rounds: scaling is exact.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)

#: (base type, logical type) pairs modelled here; other pairs fastavro prepares keep fastavro
_LOGICAL = {
    ("int", "date"),
    ("int", "time-millis"),
    ("long", "time-micros"),
    ("long", "timestamp-millis"),
    ("long", "timestamp-micros"),
    ("long", "local-timestamp-millis"),
    ("long", "local-timestamp-micros"),
    ("string", "uuid"),
    ("bytes", "decimal"),
    ("fixed", "decimal"),
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


class _Unmodelled(Exception):  # noqa: N818 - a signal to the caller, never shown to users
    """A value the compiled writer does not model: the caller encodes the record with fastavro."""


def _bytes_decimal(precision: int, scale: int) -> Callable[[decimal.Decimal], bytes]:
    """fastavro's bytes decimal: the unscaled value in two's complement, one sign byte to spare.

    fastavro sizes it as ``(magnitude.bit_length() + 8) // 8`` (so -128 takes two bytes, unlike
    the minimal encoding), and refuses more digits than the precision or more places than the scale.
    """

    def encode(v: decimal.Decimal) -> bytes:
        if not v.is_finite():
            raise _Unmodelled
        _, digits, exp = v.as_tuple()
        assert isinstance(exp, int)  # finite
        if len(digits) > precision or exp + scale < 0:
            raise _Unmodelled
        n = int(v.scaleb(scale, _EXACT))
        return n.to_bytes((abs(n).bit_length() + 8) // 8, "big", signed=True)

    return encode


def _fixed_decimal(precision: int, scale: int, size: int) -> Callable[[decimal.Decimal], bytes]:
    """fastavro's fixed decimal where it is plain two's complement sign-extended to ``size``.

    fastavro writes a negative zero as ...FE and a value too wide for ``size`` with the wrong
    length: both are left to it.
    """

    def encode(v: decimal.Decimal) -> bytes:
        if not v.is_finite():
            raise _Unmodelled
        sign, digits, exp = v.as_tuple()
        assert isinstance(exp, int)
        if len(digits) > precision or exp + scale < 0:
            raise _Unmodelled
        n = int(v.scaleb(scale, _EXACT))
        if (sign and n == 0) or abs(n).bit_length() + 1 > size * 8:
            raise _Unmodelled
        return n.to_bytes(size, "big", signed=True)

    return encode


#: the logical type of an int or a long -> the C writer's kind (``cdc._avrowrite``'s constants)
_C_INTEGER_KINDS = {
    "date": "DATE",
    "time-millis": "TIME_MILLIS",
    "time-micros": "TIME_MICROS",
    "timestamp-millis": "TIMESTAMP_MILLIS",
    "timestamp-micros": "TIMESTAMP_MICROS",
    "local-timestamp-millis": "LOCAL_TIMESTAMP_MILLIS",
    "local-timestamp-micros": "LOCAL_TIMESTAMP_MICROS",
}


class _Emitter:
    """Straight-line Python source for one record; ``v`` holds the value being written.

    Beside the source it records the C writer's plan of the field being emitted: ``c_kind`` (the
    name of a ``cdc._avrowrite`` constant), ``c_size`` (a fixed's size), ``c_extra`` (the decimal
    encoder or the enum's symbols, the very objects the Python source uses) and ``c_null`` (the
    null branch of a ``[null, X]`` union, or -1)."""

    def __init__(self) -> None:
        self.c_kind = ""
        self.c_size = 0
        self.c_extra: Any = None
        self.c_null = -1
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "_Unmodelled": _Unmodelled,
            "_pack_f": struct.Struct("<f").pack,
            "_pack_d": struct.Struct("<d").pack,
            "_datetime": dt.datetime,
            "_date": dt.date,
            "_time": dt.time,
            "_UUID": uuid.UUID,
            "_Decimal": decimal.Decimal,
            "_EPOCH": _EPOCH,
            "_UTC": dt.UTC,
            "_US": dt.timedelta(microseconds=1),
            "_MS": dt.timedelta(milliseconds=1),
        }

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def varint(self, indent: int, source: str, signed: bool = True) -> None:
        """The zig-zag varint of ``source`` (an int already known to be within the long range;
        ``signed=False``: known not negative, a length, so zig-zag is a shift).

        One byte (-64..63: union branches, lengths up to 63, small numbers) and two bytes skip
        the loop."""
        zigzag = f"({source} << 1) ^ ({source} >> 63)" if signed else f"{source} << 1"
        for line in (
            f"n = {zigzag}",
            "if n < 0x80:",
            "    ap(n)",
            "elif n < 0x4000:",
            "    ap((n & 0x7F) | 0x80)",
            "    ap(n >> 7)",
            "else:",
            "    while n >= 0x80:",
            "        ap((n & 0x7F) | 0x80)",
            "        n >>= 7",
            "    ap(n)",
        ):
            self.emit(indent, line)

    def unmodelled(self, indent: int) -> None:
        self.emit(indent, "raise _Unmodelled")

    def integer(self, indent: int, low: int, high: int, logical: str | None) -> None:
        """int and long, with the datetime objects their logical types accept converted first."""
        self.c_kind = _C_INTEGER_KINDS[logical] if logical else "INT" if high == _INT_MAX else "LONG"
        self.emit(indent, "t = type(v)")
        self.emit(indent, "if t is int:")
        self.emit(indent + 1, f"if not {low} <= v <= {high}:")
        self.unmodelled(indent + 2)
        if logical == "date":
            # Exactly a date: a datetime is a date subclass that fastavro would also take.
            self.emit(indent, "elif t is _date:")
            self.emit(indent + 1, f"v = v.toordinal() - {_DAYS_SHIFT}")
        elif logical in ("time-millis", "time-micros"):
            # fastavro ignores a time's zone; so does this.
            us = "((v.hour * 60 + v.minute) * 60 + v.second) * 1000000 + v.microsecond"
            self.emit(indent, "elif t is _time:")
            self.emit(indent + 1, f"v = ({us}) // 1000" if logical == "time-millis" else f"v = {us}")
        elif logical is not None and logical.startswith("timestamp-"):
            # A naive datetime fastavro converts in the process's local zone (mktime): not here.
            # timedelta // timedelta is exact and floors, as fastavro's days/seconds/micros sum.
            unit = "_MS" if logical.endswith("millis") else "_US"
            self.emit(indent, "elif t is _datetime and v.tzinfo is not None:")
            self.emit(indent + 1, f"v = (v - _EPOCH) // {unit}")
        elif logical is not None and logical.startswith("local-timestamp-"):
            # fastavro takes the wall clock, any zone dropped.
            unit = "_MS" if logical.endswith("millis") else "_US"
            self.emit(indent, "elif t is _datetime:")
            self.emit(indent + 1, f"v = (v.replace(tzinfo=_UTC) - _EPOCH) // {unit}")
        self.emit(indent, "else:")
        self.unmodelled(indent + 1)
        self.varint(indent, "v")

    def sized(self, indent: int, source: str) -> None:
        """A length-prefixed byte string."""
        self.varint(indent, f"len({source})", signed=False)
        self.emit(indent, f"out += {source}")

    def value(self, indent: int, avro_type: Any, tag: str, in_union: bool) -> bool:
        """Emit the writing of ``v``; False when the type is not compiled here."""
        if isinstance(avro_type, list):
            return not in_union and self.union(indent, avro_type, tag)
        logical: str | None = None
        if isinstance(avro_type, dict):
            base = avro_type.get("type")
            logical = avro_type.get("logicalType")
            if not isinstance(base, str):
                return False
            if logical is not None and (base, logical) not in _LOGICAL:
                if f"{base}-{logical}" in LOGICAL_WRITERS:
                    return False  # fastavro prepares it in a way not modelled here
                logical = None  # a logical type fastavro does not know: written as its base
        elif isinstance(avro_type, str):
            base = avro_type
        else:
            return False
        if base not in _PRIMITIVES and base not in ("enum", "fixed"):
            return False  # a record, array, map or a named-type reference
        self.c_kind, self.c_size, self.c_extra = base.upper(), 0, None
        if base == "null":
            self.emit(indent, "if v is not None:")
            self.unmodelled(indent + 1)
        elif base == "boolean":
            self.emit(indent, "if v is True:")
            self.emit(indent + 1, "ap(1)")
            self.emit(indent, "elif v is False:")
            self.emit(indent + 1, "ap(0)")
            self.emit(indent, "else:")
            self.unmodelled(indent + 1)
        elif base == "int":
            self.integer(indent, _INT_MIN, _INT_MAX, logical)
        elif base == "long":
            self.integer(indent, _LONG_MIN, _LONG_MAX, logical)
        elif base in ("float", "double"):
            # struct raises OverflowError for a double too large for a float (fastavro writes
            # inf): the record then goes to fastavro.
            self.emit(indent, "if type(v) is not float:")
            self.unmodelled(indent + 1)
            self.emit(indent, f"out += {'_pack_f' if base == 'float' else '_pack_d'}(v)")
        elif base == "string":
            self.emit(indent, "t = type(v)")
            if logical == "uuid":
                self.c_kind = "UUID"
                self.emit(indent, "if t is _UUID:")
                self.emit(indent + 1, "v = str(v)")
                self.emit(indent, "elif t is not str:")
            else:
                self.emit(indent, "if t is not str:")
            self.unmodelled(indent + 1)
            self.emit(indent, "b = v.encode()")  # a lone surrogate raises: fastavro's turn
            self.sized(indent, "b")
        elif base == "bytes":
            self.emit(indent, "t = type(v)")
            if logical == "decimal":
                assert isinstance(avro_type, dict)
                name = f"_dec_{tag}"
                self.env[name] = _bytes_decimal(int(avro_type["precision"]), int(avro_type.get("scale", 0)))
                self.c_kind, self.c_extra = "BYTES_DECIMAL", self.env[name]
                self.emit(indent, "if t is _Decimal:")
                self.emit(indent + 1, f"v = {name}(v)")
                self.emit(indent, "elif t is not bytes:")
            else:
                self.emit(indent, "if t is not bytes:")
            self.unmodelled(indent + 1)
            self.sized(indent, "v")
        elif base == "fixed":
            assert isinstance(avro_type, dict)
            size = int(avro_type["size"])
            self.c_size = size
            self.emit(indent, "t = type(v)")
            if logical == "decimal" and not in_union:
                # (In a union fastavro refuses a Decimal there: its branch check wants bytes and
                # its decimal gives a bytearray. Only bytes are compiled then.)
                name = f"_dec_{tag}"
                self.env[name] = _fixed_decimal(
                    int(avro_type["precision"]), int(avro_type.get("scale", 0)), size
                )
                self.c_kind, self.c_extra = "FIXED_DECIMAL", self.env[name]
                self.emit(indent, "if t is _Decimal:")
                self.emit(indent + 1, f"v = {name}(v)")
                self.emit(indent, f"elif t is not bytes or len(v) != {size}:")
            else:
                self.emit(indent, f"if t is not bytes or len(v) != {size}:")
            self.unmodelled(indent + 1)
            self.emit(indent, "out += v")
        else:  # enum
            assert isinstance(avro_type, dict)
            name = f"_sym_{tag}"
            symbols: dict[str, int] = {}
            for i, symbol in enumerate(avro_type["symbols"]):
                symbols.setdefault(symbol, i)  # list.index(): the first one
            self.env[name] = symbols
            self.c_extra = symbols
            self.emit(indent, f"n = {name}.get(v) if type(v) is str else None")
            self.emit(indent, "if n is None:")
            self.unmodelled(indent + 1)
            if len(symbols) <= 64:
                self.emit(indent, "ap(n << 1)")  # an index below 64 is one byte
            else:
                self.varint(indent, "n", signed=False)
        return True

    def union(self, indent: int, branches: list[Any], tag: str) -> bool:
        """Only ``[null, X]`` and ``[X, null]``: the branch index (one byte), then X unless null."""
        if len(branches) != 2 or branches.count("null") != 1:
            return False
        null_index = branches.index("null")
        self.c_null = null_index
        self.emit(indent, "if v is None:")
        self.emit(indent + 1, f"ap({null_index * 2})")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"ap({(1 - null_index) * 2})")
        return self.value(indent + 1, branches[1 - null_index], tag, in_union=True)


def _c_writer(plan: list[tuple[str, str, int, int, Any]], prefix: bytes) -> RecordWriter | None:
    """The C twin of the compiled writer, or None where the accelerator is not available."""
    module = accel.load("_avrowrite")
    if module is None:
        return None
    fields = [(name, getattr(module, kind), null, size, extra) for name, kind, null, size, extra in plan]
    writer: RecordWriter = module.make_writer(
        fields, prefix, _Unmodelled, uuid.UUID, decimal.Decimal, _EPOCH, _DAYS_SHIFT
    )
    return writer


def compile_record_writer(
    schema: Any, prefix: bytes = b"", *, accelerated: bool = True
) -> RecordWriter | None:
    """A writer of ``prefix`` + the Avro body for a flat record schema as ``parse_schema`` returns
    it (see the module doc), or None to keep fastavro. The writer raises on a record it does not
    model; its caller then encodes that record with fastavro.

    ``accelerated``: use the C writer where it is available (``False``: the pure-Python one)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    fields = schema.get("fields")
    if not isinstance(fields, list) or not fields:
        return None
    out = _Emitter()
    out.env["_PREFIX"] = bytes(prefix)
    # A dict exactly: fastavro also takes other mappings, and a missing key means its default.
    out.emit(1, "if type(record) is not dict:")
    out.unmodelled(2)
    out.emit(1, "out = bytearray(_PREFIX)")
    out.emit(1, "ap = out.append")
    plan: list[tuple[str, str, int, int, Any]] = []
    for i, f in enumerate(fields):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            return None
        out.emit(1, f"v = record[{f['name']!r}]")  # KeyError: fastavro handles defaults
        out.c_null = -1
        if not out.value(1, f.get("type"), str(i), in_union=False):
            return None
        plan.append((f["name"], out.c_kind, out.c_null, out.c_size, out.c_extra))
    if accelerated:
        fast = _c_writer(plan, bytes(prefix))
        if fast is not None:
            return fast
    out.emit(1, "return bytes(out)")
    source = "\n".join(["def write(record):", *out.lines])
    namespace = dict(out.env)
    exec(compile(source, f"<avro writer {schema.get('name', '?')}>", "exec"), namespace)  # noqa: S102
    writer: RecordWriter = namespace["write"]
    return writer
