"""Exact conversion of driver row values onto an explicit Avro record schema.

Drivers (psycopg 3, pymysql, sqlite3) hand us Python objects; fastavro would happily coerce
many of them on its own, some wrongly: a NAIVE datetime in a ``timestamp-*`` field is converted
with the process's *local* time zone (``time.mktime``), and ``timestamp-millis`` truncates
microseconds. So every logical type is pre-converted here, with integer arithmetic, to the
primitive fastavro writes unchanged (ints, bytes, str). Nothing is rounded, shifted or coerced
silently: a value that does not fit raises :class:`~cdc.errors.RowError` (stream, key, field
path, reason). Converters are compiled once per schema into per-field closures.

Unions: the value goes to the first branch whose converter accepts it - branches that take the
value's Python type natively are tried before those that would coerce it (an int into
``["string", "long"]`` is a long). ``["null", X]`` returns the bare value (fastavro cannot pick
wrongly); every other union returns fastavro's tuple notation ``(branch_name, value)`` so that
fastavro never re-guesses a branch from a pre-converted primitive (an int could be a long, a
date or a timestamp). Writers must therefore keep fastavro's tuple notation enabled.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import struct
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cdc.errors import RowError, SchemaError

__all__ = ["RecordConverter", "compile_record"]

Conv = Callable[[Any], Any]
_MISSING: Any = object()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_US = dt.timedelta(microseconds=1)
_ZERO, _DAY = dt.timedelta(0), dt.timedelta(days=1)
_F32 = struct.Struct("<f")
# Enough precision and exponent range that scaleb() below is always exact.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_INTERVAL_FIELDS = ("months", "days", "micros")


class _Reject(Exception):  # noqa: N818 - internal signal, never escapes this module
    """A value does not fit; ``path`` grows (``.field``, ``[3]``) while it unwinds."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason, self.path = reason, path


class _Node(NamedTuple):
    conv: Conv
    branch: str  # the name fastavro's union tuple notation uses for this type
    native: tuple[type, ...]  # Python types a union tries this branch for first
    coerced: tuple[type, ...] = ()  # ... and after every native branch


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(v: object, expected: str, hint: str = "") -> _Reject:
    if v is None:
        return _Reject("null in a non-nullable field")
    reason = f"expected {expected}, got {type(v).__name__} {_show(v)}"
    return _Reject(f"{reason}; {hint}" if hint else reason)


def _int(bits: int) -> Conv:
    lo, hi, kind = -(1 << (bits - 1)), (1 << (bits - 1)) - 1, "int" if bits == 32 else "long"

    def conv(v: Any) -> int:
        if type(v) is int and lo <= v <= hi:  # the hot path: no isinstance chain
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            if lo <= v <= hi:
                return int(v)
            raise _Reject(f"{v} overflows {kind} (range {lo}..{hi})")
        hint = "declare a decimal or string" if isinstance(v, decimal.Decimal | float) else ""
        raise _bad(v, "an integer", hint)

    return conv


def _boolean(v: Any) -> bool:
    if v is True or v is False:
        return v
    if type(v) is int and v in (0, 1):  # MySQL tinyint(1)
        return v == 1
    raise _bad(v, "a boolean (or 0/1)")


def _float(double: bool) -> Conv:
    kind = "double" if double else "float"

    def conv(v: Any) -> float:
        if type(v) is float:
            if double:
                return v
            try:  # narrowing to 32 bits is what "float" declares; overflowing to inf is not
                _F32.pack(v)
            except OverflowError:
                raise _Reject(f"{v} overflows a 32-bit float; declare double") from None
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                f = float(v) if double else _F32.unpack(_F32.pack(v))[0]
            except OverflowError:
                f = None
            if f == v:
                return float(f)
            raise _Reject(f"{v} is not exactly representable as a {kind}; declare long or decimal")
        if isinstance(v, float):
            return conv(float(v))
        raise _bad(v, f"a {kind}", "declare a decimal or string" if isinstance(v, decimal.Decimal) else "")

    return conv


def _string(v: Any) -> str:
    if type(v) is str:
        return v
    if isinstance(v, enum.Enum):
        if isinstance(v.value, str):
            return v.value
        raise _bad(v, "a string", "an enum member with a non-string value")
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, uuid.UUID | decimal.Decimal):
        return str(v)  # exact (a Decimal keeps its digits, NaN/Infinity included)
    if isinstance(v, int) and not isinstance(v, bool):
        return int.__repr__(v)
    if isinstance(v, dict | list):
        try:
            return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _Reject(f"JSON value cannot be serialized exactly: {exc}") from None
    hints = {
        dt.date: "declare a date/timestamp logical type",
        bytes: "declare bytes",
        bool: "declare boolean",
    }
    hint = next((h for t, h in hints.items() if isinstance(v, t)), "")
    raise _bad(v, "a string", hint or ("declare double" if isinstance(v, float) else ""))


def _bytes(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise _bad(v, "bytes")


def _fixed(size: int, name: str) -> Conv:
    def conv(v: Any) -> bytes:
        b = _bytes(v)
        if len(b) == size:
            return b
        raise _Reject(f"{len(b)} bytes for fixed {name} of size {size}")

    return conv


def _enum(name: str, symbols: list[str], labels: Mapping[str, str]) -> Conv:
    known = frozenset(symbols)

    def conv(v: Any) -> str:
        if isinstance(v, enum.Enum) and isinstance(v.value, str):
            v = v.value
        if isinstance(v, str):
            s = labels.get(v, v)
            if s in known:
                return str.__str__(s)
            raise _Reject(f"{v!r} is not a symbol of enum {name} ({', '.join(symbols)})")
        raise _bad(v, f"a symbol of enum {name}")

    return conv


def _decimal(precision: int, scale: int, size: int | None) -> Conv:
    label, limit, factor = f"decimal({precision},{scale})", 10**precision, 10**scale

    def conv(v: Any) -> bytes:
        if isinstance(v, decimal.Decimal):
            if not v.is_finite():
                raise _Reject(f"{v} is not a finite number; {label} cannot hold it")
            # Digits of the unscaled integer: adjusted() is the exponent of the leading digit.
            # Checked before scaling so a huge exponent never builds a huge int.
            if not v.is_zero() and v.adjusted() + 1 + scale > precision:
                raise _Reject(f"{v} would overflow {label}")
            q = v.scaleb(scale, _EXACT)
            n = int(q)
            if q != n:
                raise _Reject(
                    f"{v} has more than {scale} fractional digits; it would be rounded into {label}"
                )
        elif isinstance(v, int) and not isinstance(v, bool):
            n = v * factor
            if not -limit < n < limit:
                raise _Reject(f"{v} would overflow {label}")
        else:
            hint = "a float is not exact; have the driver return Decimal" if isinstance(v, float) else ""
            raise _bad(v, "a Decimal or int", hint)
        if size is not None:  # fixed: sign-extended to the declared size
            return n.to_bytes(size, "big", signed=True)
        # Minimal two's complement, as Java's BigInteger.toByteArray() writes it.
        return n.to_bytes((n + (n < 0)).bit_length() // 8 + 1, "big", signed=True)

    return conv


def _zero_date(v: str) -> _Reject:
    return _Reject(f"zero or invalid date {v!r}")


def _timestamp(logical: str) -> Conv:
    local = logical.startswith("local-")
    unit = logical.rsplit("-", 1)[1]
    epoch = _EPOCH_NAIVE if local else _EPOCH
    lo, hi = -(1 << 63), (1 << 63) - 1

    def conv(v: Any) -> int:
        if isinstance(v, dt.datetime):
            naive = v.utcoffset() is None
            if naive and not local:
                raise _Reject(
                    f"naive datetime {v} for {logical}; the source must supply a time zone "
                    f"(declare local-{logical} for a column without zone)"
                )
            if local and not naive:
                raise _Reject(f"aware datetime {v} into {logical} (declare {logical[6:]} for a zoned column)")
            # timedelta // timedelta is exact integer arithmetic; never mktime / the local zone.
            us = (v - epoch) // _US
            if unit == "micros":
                return us
            if unit == "nanos":
                if lo <= us * 1000 <= hi:
                    return us * 1000
                raise _Reject(f"{v} is out of the range of {logical}")
            ms, rest = divmod(us, 1000)
            if rest:
                raise _Reject(
                    f"{v} has sub-millisecond digits that {logical} would truncate; declare -micros"
                )
            return ms
        if isinstance(v, str):
            raise _zero_date(v)
        raise _bad(v, "a datetime", "an epoch number is not accepted; convert it in the source")

    return conv


def _date(v: Any) -> int:
    if type(v) is dt.date:
        return v.toordinal() - _EPOCH_ORDINAL
    if isinstance(v, dt.datetime):
        raise _Reject(
            f"datetime {v} into a date field (cast it to date in the source, or declare a timestamp)"
        )
    if isinstance(v, dt.date):
        return v.toordinal() - _EPOCH_ORDINAL
    if isinstance(v, str):
        raise _zero_date(v)
    raise _bad(v, "a date")


def _time(millis: bool) -> Conv:
    def conv(v: Any) -> int:
        if isinstance(v, dt.time):
            if v.tzinfo is not None:  # a zone on a time of day has no unambiguous meaning
                raise _Reject(f"aware time {v} into a time field (cast it to time without time zone)")
            us = ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
        elif isinstance(v, dt.timedelta):  # pymysql returns TIME as timedelta
            if not _ZERO <= v < _DAY:
                raise _Reject(f"time {v} is outside [00:00, 24:00)")
            us = v // _US
        else:
            raise _bad(v, "a time or timedelta")
        if not millis:
            return us
        ms, rest = divmod(us, 1000)
        if rest:
            raise _Reject(
                f"{v} has sub-millisecond digits that time-millis would truncate; declare time-micros"
            )
        return ms

    return conv


def _uuid(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, str):
        try:
            return str(uuid.UUID(v))
        except ValueError:
            raise _Reject(f"{v!r} is not a UUID") from None
    raise _bad(v, "a UUID")


_Field = tuple[str, Conv, Any]  # name, converter, default (or _MISSING)


def _record(name: str, fields: list[_Field], interval: bool) -> Conv:
    def conv(v: Any) -> dict[str, Any]:
        if not isinstance(v, Mapping):
            if interval and isinstance(v, tuple) and len(v) == 3:
                return conv(dict(zip(_INTERVAL_FIELDS, v, strict=True)))
            if interval and isinstance(v, dt.timedelta):
                raise _Reject(
                    f"timedelta {v} for interval record {name}: psycopg folds months into days (lossy); "
                    "load intervals as (months, days, micros)"
                )
            raise _bad(v, f"a mapping for record {name}")
        out: dict[str, Any] = {}
        for fname, fconv, default in fields:
            if fname not in v:
                if default is _MISSING:
                    raise _Reject(f"field {fname!r} missing from the value", f".{fname}")
                out[fname] = default
                continue
            try:
                out[fname] = fconv(v[fname])
            except _Reject as e:
                raise _Reject(e.reason, f".{fname}{e.path}") from None
        return out

    return conv


def _array(item: Conv) -> Conv:
    def conv(v: Any) -> list[Any]:
        if not isinstance(v, list | tuple):
            raise _bad(v, "a list")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Reject as e:
                raise _Reject(e.reason, f"[{i}]{e.path}") from None
        return out

    return conv


def _map(values: Conv) -> Conv:
    def conv(v: Any) -> dict[str, Any]:
        if not isinstance(v, Mapping):
            raise _bad(v, "a mapping")
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise _Reject(f"map key {k!r} is not a string")
            try:
                out[k] = values(x)
            except _Reject as e:
                raise _Reject(e.reason, f"[{k!r}]{e.path}") from None
        return out

    return conv


def _union(branches: list[_Node]) -> Conv:
    others = [b for b in branches if b.branch != "null"]
    nullable = len(others) < len(branches)
    if nullable and len(others) == 1:  # ["null", X]: the common case, a bare value
        inner = others[0].conv

        def nullable_conv(v: Any) -> Any:
            return None if v is None else inner(v)

        return nullable_conv

    names = ", ".join(b.branch for b in branches)
    cache: dict[type, list[_Node]] = {}  # Python type -> branches to try, in order

    def candidates(t: type) -> list[_Node]:
        def takes(types: tuple[type, ...]) -> bool:  # a bool is no int here unless named
            return any(issubclass(t, c) for c in types) and (t is not bool or bool in types)

        return [b for b in others if takes(b.native)] + [b for b in others if takes(b.coerced)]

    def conv(v: Any) -> Any:
        if v is None:
            if nullable:
                return None
            raise _Reject(f"null in a non-nullable field (union [{names}])")
        t = type(v)
        tries = cache.get(t)
        if tries is None:
            tries = cache[t] = candidates(t)
        first: _Reject | None = None
        for b in tries:
            try:
                return (b.branch, b.conv(v))
            except _Reject as e:
                first = first or e
        raise first or _Reject(f"no branch of union [{names}] takes a {t.__name__} {_show(v)}")

    return conv


def _null(v: Any) -> None:
    if v is not None:
        raise _bad(v, "null")


_D, _DT = (dt.date,), (dt.datetime,)
_LEAVES: dict[str, tuple[Conv, tuple[type, ...], tuple[type, ...]]] = {
    "null": (_null, (type(None),), ()),
    "boolean": (_boolean, (bool,), (int,)),
    "int": (_int(32), (int,), ()),
    "long": (_int(64), (int,), ()),
    "float": (_float(False), (float,), (int,)),
    "double": (_float(True), (float,), (int,)),
    "string": (_string, (str,), (uuid.UUID, decimal.Decimal, int, dict, list, enum.Enum)),
    "bytes": (_bytes, (bytes,), (bytearray, memoryview)),
    "int/date": (_date, _D, (str,)),
    "int/time-millis": (_time(True), (dt.time, dt.timedelta), ()),
    "long/time-micros": (_time(False), (dt.time, dt.timedelta), ()),
    "string/uuid": (_uuid, (uuid.UUID,), (str,)),
}
for _lt in ("timestamp-millis", "timestamp-micros", "timestamp-nanos"):
    for _name in (_lt, f"local-{_lt}"):
        _LEAVES[f"long/{_name}"] = (_timestamp(_name), _DT, (str,))


class _Compiler:
    """Walks a schema once; named types resolve Avro-style (full names, enclosing namespace)."""

    def __init__(self, schema: Mapping[str, Any], symbol_maps: Mapping[str, Mapping[str, str]]) -> None:
        self.named: dict[str, Any] = dict(schema.get("__named_schemas") or {})  # parse_schema output
        self.building: dict[str, _Node] = {}  # records being compiled: recursive references
        self.symbol_maps, self.used = symbol_maps, set[str]()

    def resolve(self, ref: str, ns: str) -> tuple[str, Any]:
        for full in (f"{ns}.{ref}" if ns and "." not in ref else ref, ref):
            if full in self.named:
                return full, self.named[full]
        raise SchemaError(f"unknown type {ref!r}")

    def node(self, s: Any, ns: str, path: str) -> _Node:
        if isinstance(s, list):
            branches = [self.node(b, ns, path) for b in s]
            names = [b.branch for b in branches]
            if any(isinstance(b, list) for b in s) or len(set(names)) < len(names):
                raise SchemaError(
                    f"field {path}: a union may not hold a union or the same type twice: {names}"
                )
            return _Node(_union(branches), "union", ())
        if isinstance(s, str):
            if s in _PRIMITIVES:
                return self.leaf(s, {}, path)
            full, target = self.resolve(s, ns)
            if full in self.building:
                return self.building[full]
            return self.node(target, full.rpartition(".")[0], path)
        if not isinstance(s, Mapping) or "type" not in s:
            raise SchemaError(f"field {path}: invalid schema {_show(s)}")
        t = s["type"]
        if not isinstance(t, str) or (
            t not in _PRIMITIVES and t not in ("record", "error", "enum", "fixed", "array", "map")
        ):
            return self.node(t, ns, path)  # {"type": {...}}, {"type": [...]} or {"type": "Name"}
        if t == "array":
            return _Node(_array(self.node(s["items"], ns, path).conv), "array", (list, tuple))
        if t == "map":
            return _Node(_map(self.node(s["values"], ns, path).conv), "map", (Mapping,))
        if t in _PRIMITIVES:
            return self.leaf(t, s, path)
        name = str(s["name"])
        full = name if "." in name or not s.get("namespace", ns) else f"{s.get('namespace', ns)}.{name}"
        self.named[full] = s
        if t == "enum":
            labels = self.symbol_maps.get(path, {})
            if path in self.symbol_maps:
                self.used.add(path)
            bad = sorted(set(labels.values()) - set(s["symbols"]))
            if bad:
                raise SchemaError(f"symbol_maps[{path!r}] maps to non-symbols {bad} of enum {full}")
            return _Node(_enum(full, list(s["symbols"]), labels), full, (str, enum.Enum))
        if t == "fixed":
            if s.get("logicalType") == "decimal":
                return self.decimal(s, path, full, int(s["size"]))
            return _Node(_fixed(int(s["size"]), full), full, (bytes,), (bytearray, memoryview))
        fields: list[_Field] = []
        names = frozenset(f["name"] for f in s["fields"])
        node = _Node(_record(full, fields, names == frozenset(_INTERVAL_FIELDS)), full, (Mapping,), (tuple,))
        self.building[full] = node
        inner_ns = full.rpartition(".")[0]
        for f in s["fields"]:
            sub = self.node(f["type"], inner_ns, f"{path}.{f['name']}")
            fields.append((f["name"], sub.conv, self.default(f, inner_ns)))
        del self.building[full]
        return node

    def leaf(self, t: str, s: Mapping[str, Any], path: str) -> _Node:
        logical = s.get("logicalType")
        if t == "bytes" and logical == "decimal":
            return self.decimal(s, path, "bytes", None)
        # An unknown logical type (or one on the wrong base type) is ignored, as the spec says.
        conv, native, coerced = _LEAVES.get(f"{t}/{logical}") or _LEAVES[t]
        return _Node(conv, t, native, coerced)

    def decimal(self, s: Mapping[str, Any], path: str, branch: str, size: int | None) -> _Node:
        p, sc = s.get("precision"), s.get("scale", 0)
        if not isinstance(p, int) or not isinstance(sc, int) or not 0 <= sc <= p or p < 1:
            raise SchemaError(f"field {path}: invalid decimal precision {p!r} / scale {sc!r}")
        if size is not None and p > len(str(2 ** (8 * size - 1) - 1)) - 1:
            raise SchemaError(f"field {path}: decimal({p},{sc}) does not fit fixed size {size}")
        return _Node(_decimal(p, sc, size), branch, (decimal.Decimal,), (int,))

    def kind(self, s: Any, ns: str) -> tuple[str, str]:
        """(Avro type, union branch name) of a schema, without compiling it."""
        if isinstance(s, str) and s not in _PRIMITIVES:
            full, target = self.resolve(s, ns)
            return self.kind(target, full.rpartition(".")[0])[0], full
        if isinstance(s, str) or isinstance(s, list):
            return (s, s) if isinstance(s, str) else ("union", "union")
        t = s["type"]
        if not isinstance(t, str) or t not in _PRIMITIVES | {
            "record",
            "error",
            "enum",
            "fixed",
            "array",
            "map",
        }:
            return self.kind(t, ns)
        name = str(s.get("name", t))
        return t, name if t in ("array", "map") or "." in name or not s.get(
            "namespace", ns
        ) else f"{s.get('namespace', ns)}.{name}"

    def default(self, f: Mapping[str, Any], ns: str) -> Any:
        """A field's JSON default as fastavro writes it (bytes from JSON's latin-1 text)."""
        if "default" not in f:
            return _MISSING
        s, value = f["type"], f["default"]
        t, branch = self.kind(s[0] if isinstance(s, list) else s, ns)
        if t in ("bytes", "fixed") and isinstance(value, str):
            value = value.encode("latin-1")
        if isinstance(s, list) and value is not None and not (len(s) == 2 and "null" in s):
            return (branch, value)  # the union's tuple notation, like every converted value
        return value


class RecordConverter:
    """Maps one source row onto one Avro record; compiled by :func:`compile_record`."""

    __slots__ = ("_plan", "fields", "source_columns", "stream")

    def __init__(self, stream: str, plan: list[tuple[str, str, Conv, Any]]) -> None:
        self.stream = stream
        self._plan = plan
        self.fields: tuple[str, ...] = tuple(p[0] for p in plan)
        self.source_columns: tuple[str, ...] = tuple(p[1] for p in plan)

    def __call__(self, row: Mapping[str, Any], key: object = None) -> dict[str, Any]:
        """Return the record for ``row`` (ready for fastavro); raise RowError naming ``key``."""
        out: dict[str, Any] = {}
        for name, column, conv, default in self._plan:
            try:
                v = row[column]
            except KeyError:
                if default is _MISSING:
                    raise RowError(
                        self.stream, key, name, f"column {column!r} missing from the row"
                    ) from None
                out[name] = default
                continue
            try:
                out[name] = conv(v)
            except _Reject as e:
                raise RowError(self.stream, key, name + e.path, e.reason) from None
        return out


def compile_record(
    schema: Mapping[str, Any],
    *,
    stream: str,
    field_map: Mapping[str, str] | None = None,
    symbol_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> RecordConverter:
    """Compile a converter for a record schema (plain JSON dict or ``fastavro.parse_schema`` output).

    ``field_map`` maps Avro field -> source column (default: the same name; entries for fields
    of other schemas are ignored, so one map can serve a stream's key and value). ``symbol_maps``
    maps an enum field's dotted path (``rating``, ``address.kind``) to {source label: symbol}.
    Raises SchemaError for a schema this module cannot convert exactly.
    """
    if not isinstance(schema, Mapping) or schema.get("type") not in ("record", "error"):
        raise SchemaError(f"stream {stream!r}: a row schema must be an Avro record")
    symbol_maps = symbol_maps or {}
    field_map = field_map or {}
    comp = _Compiler(schema, symbol_maps)
    try:
        name = str(schema["name"])
        ns = name.rpartition(".")[0] if "." in name else str(schema.get("namespace") or "")
        comp.named[f"{ns}.{name}" if ns and "." not in name else name] = schema
        plan = []
        for f in schema["fields"]:
            conv = comp.node(f["type"], ns, f["name"]).conv
            plan.append((f["name"], field_map.get(f["name"], f["name"]), conv, comp.default(f, ns)))
    except SchemaError as exc:
        raise SchemaError(f"stream {stream!r}: {exc.message}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"stream {stream!r}: invalid Avro schema: {exc!r}") from None
    unused = sorted(set(symbol_maps) - comp.used)
    if unused:
        raise SchemaError(f"stream {stream!r}: symbol_maps name no enum field of the schema: {unused}")
    return RecordConverter(stream, plan)
