"""Exact conversion of driver row values onto an explicit Avro record schema.

Drivers (psycopg 3, pymysql, sqlite3) hand us Python objects. fastavro would coerce many of them
itself, some wrongly: it converts a NAIVE datetime in a ``timestamp-*`` field with the process's
*local* time zone (``time.mktime``) and truncates microseconds into ``timestamp-millis``. So every
logical type is pre-converted here, with integer arithmetic, to the primitive fastavro writes
unchanged (int, bytes, str). Nothing is rounded, shifted or coerced silently: a value that does
not fit raises :class:`~cdc.errors.RowError` (stream, key, field path, reason). A schema is
compiled once into per-field closures.

Unions: a value goes to the first branch that accepts it; branches taking its Python type natively
are tried before branches that would coerce it (an int into ``["string", "long"]`` is a long).
``["null", X]`` yields the bare value (fastavro cannot pick wrongly); every other union yields
fastavro's tuple notation ``(branch_name, value)``, so fastavro never re-guesses the branch of a
pre-converted primitive (an int could be a long, a date, a timestamp). Writers must therefore
leave fastavro's tuple notation enabled (its default).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import struct
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cdc.errors import RowError, SchemaError

__all__ = ["RecordConverter", "compile_record"]

Conv = Callable[[Any], Any]
_MISSING: Any = object()
_EPOCH, _EPOCH_NAIVE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(1970, 1, 1)
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_US, _ZERO, _DAY = dt.timedelta(microseconds=1), dt.timedelta(0), dt.timedelta(days=1)
_F32 = struct.Struct("<f")
# Precision and exponent range so large that scaleb() can never round.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_COMPLEX = frozenset({"record", "error", "enum", "fixed", "array", "map"})
_INTERVAL = ("months", "days", "micros")  # PostgreSQL interval, losslessly


class _Reject(Exception):  # noqa: N818 - internal signal, always turned into a RowError
    """A value does not fit; ``path`` grows (``.field``, ``[3]``) while the error unwinds."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason, self.path = reason, path


class _Node(NamedTuple):
    conv: Conv
    branch: str  # fastavro's union name of the type (a union node: its first branch's)
    base: str  # the Avro type (a union node: its first branch's), for JSON defaults
    native: tuple[type, ...] = ()  # Python types a union tries this branch for first ...
    coerced: tuple[type, ...] = ()  # ... and these after every native branch
    wrap: bool = False  # a union whose values use tuple notation


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(v: object, expected: str, hint: str = "") -> _Reject:
    if v is None:
        return _Reject("null in a non-nullable field")
    reason = f"expected {expected}, got {type(v).__name__} {_show(v)}"
    return _Reject(f"{reason}; {hint}" if hint else reason)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(bits: int) -> Conv:
    lo, hi, kind = -(1 << (bits - 1)), (1 << (bits - 1)) - 1, "int" if bits == 32 else "long"

    def conv(v: Any) -> int:
        if type(v) is int and lo <= v <= hi:  # the hot path: one type check, no isinstance chain
            return v
        if _is_int(v):
            if lo <= v <= hi:
                return int(v)
            hint = "; declare decimal(20,0) or string" if v > hi and bits == 64 else ""
            raise _Reject(f"{v} overflows {kind} (range {lo}..{hi}){hint}")
        if bits == 64 and isinstance(v, dt.timedelta):
            # MySQL TIME is a signed interval (-838:59:59..838:59:59): exact signed microseconds,
            # like Debezium's MicroTime. Never folded into a time of day.
            return v // _US
        raise _bad(v, "an integer", "declare a decimal" if isinstance(v, decimal.Decimal | float) else "")

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
        if type(v) is float and double:
            return v
        if isinstance(v, float) or _is_int(v):
            try:
                f: float = float(v) if double else _F32.unpack(_F32.pack(v))[0]
            except OverflowError:
                raise _Reject(f"{v} overflows a {kind}; declare double or decimal") from None
            # A float narrows to 32 bits because "float" says so (never into inf, see above);
            # an int must be exact (int == float compares exactly).
            if isinstance(v, float) or f == v:
                return f
            raise _Reject(f"{v} is not exactly a {kind}; declare long or decimal")
        raise _bad(v, f"a {kind}", "declare a decimal or string" if isinstance(v, decimal.Decimal) else "")

    return conv


def _string(v: Any) -> str:
    if type(v) is str:
        return v
    if isinstance(v, enum.Enum) and isinstance(v.value, str):
        return v.value
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, decimal.Decimal):
        # Positional notation, as databases print numbers: str() would turn PostgreSQL's
        # '0.0000001' into '1E-7'. Exact either way (NaN, Infinity, trailing zeros kept).
        return format(v, "f")
    if _is_int(v) and not isinstance(v, enum.Enum):
        return int.__repr__(v)
    if isinstance(v, float):
        # repr() is the shortest text that reads back as the same double (-0.0, inf, nan
        # included); never a Decimal with fixed places, which loses small magnitudes.
        return float.__repr__(v)
    if isinstance(v, dict | list):
        try:
            return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _Reject(f"JSON value cannot be serialized exactly: {exc}") from None
    hints = {
        dt.date: "declare a date/timestamp logical type",
        dt.time: "declare time-micros",
        bytes: "declare bytes",
    }
    hint = next((h for t, h in hints.items() if isinstance(v, t)), "")
    raise _bad(v, "a string", hint or ("declare long (microseconds)" if isinstance(v, dt.timedelta) else ""))


def _bytes(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise _bad(v, "bytes")


def _fixed(size: int, name: str) -> Conv:
    def conv(v: Any) -> bytes:
        if len(b := _bytes(v)) == size:
            return b
        raise _Reject(f"{len(b)} bytes for fixed {name} of size {size}")

    return conv


def _enum(name: str, symbols: list[str], labels: Mapping[str, str]) -> Conv:
    known = frozenset(symbols)

    def conv(v: Any) -> str:
        if isinstance(v, enum.Enum) and isinstance(v.value, str):
            v = v.value
        if isinstance(v, str):
            if (s := labels.get(v, v)) in known:
                return str.__str__(s)
            raise _Reject(f"{v!r} is not a symbol of enum {name} ({', '.join(symbols)})")
        raise _bad(v, f"a symbol of enum {name}")

    return conv


#: converters the generated fast path writes inline: conv -> (kind, arguments)
_INLINED: weakref.WeakKeyDictionary[Conv, tuple[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()


def _decimal(precision: int, scale: int, size: int | None) -> Conv:
    label, limit, factor = f"decimal({precision},{scale})", 10**precision, 10**scale

    def conv(v: Any) -> bytes:
        if isinstance(v, decimal.Decimal):
            if not v.is_finite():
                raise _Reject(f"{v} is not a finite number; {label} cannot hold it")
            # adjusted() is the exponent of the leading digit: this counts the unscaled digits
            # before scaling, so a huge exponent never builds a huge int.
            if not v.is_zero() and v.adjusted() + 1 + scale > precision:
                raise _Reject(f"{v} would overflow {label}")
            n = int(q := v.scaleb(scale, _EXACT))
            if q != n:
                raise _Reject(
                    f"{v} has more than {scale} fractional digits; it would be rounded into {label}"
                )
        elif _is_int(v):
            if not -limit < (n := v * factor) < limit:
                raise _Reject(f"{v} would overflow {label}")
        else:
            raise _bad(v, "a Decimal or int", "a float is not exact" if isinstance(v, float) else "")
        if size is not None:  # fixed: sign-extended to the declared size
            return n.to_bytes(size, "big", signed=True)
        # Minimal two's complement, as Java's BigInteger.toByteArray() writes it.
        return n.to_bytes((n + (n < 0)).bit_length() // 8 + 1, "big", signed=True)

    if size is None:
        _INLINED[conv] = ("decimal", (precision, scale))
    return conv


def _millis(us: int, v: object, logical: str) -> int:
    ms, rest = divmod(us, 1000)
    if rest:
        raise _Reject(f"{v} has sub-millisecond digits that {logical} would truncate; declare *-micros")
    return ms


def _timestamp(logical: str) -> Conv:
    local, unit = logical.startswith("local-"), logical.rsplit("-", 1)[1]
    epoch, zoned = (_EPOCH_NAIVE, logical[6:]) if local else (_EPOCH, logical)

    def conv(v: Any) -> int:
        if isinstance(v, dt.datetime):
            naive = v.utcoffset() is None
            if naive and not local:
                raise _Reject(
                    f"naive datetime for {logical}: {v}; the source must supply a time zone "
                    f"(declare local-{logical} for a column without zone)"
                )
            if local and not naive:
                raise _Reject(f"aware datetime into {logical}: {v} (declare {zoned} for a zoned column)")
            us = (v - epoch) // _US  # timedelta // timedelta: exact integers, never the local zone
            if unit == "micros":
                return us
            if unit == "nanos":
                if -(1 << 63) <= us * 1000 < 1 << 63:
                    return us * 1000
                raise _Reject(f"{v} is out of the range of {logical}")
            return _millis(us, v, logical)
        if isinstance(v, str):  # pymysql returns MySQL's zero dates as text
            raise _Reject(f"zero or invalid date {v!r}")
        raise _bad(v, "a datetime", "epoch numbers are not accepted" if _is_int(v) else "")

    if logical == "timestamp-micros":
        _INLINED[conv] = ("utc-micros", ())
    return conv


def _date(v: Any) -> int:
    if type(v) is dt.date or (isinstance(v, dt.date) and not isinstance(v, dt.datetime)):
        return v.toordinal() - _EPOCH_DAY
    if isinstance(v, dt.datetime):
        raise _Reject(f"datetime {v} into a date field (cast it to date in the source, or declare timestamp)")
    if isinstance(v, str):
        raise _Reject(f"zero or invalid date {v!r}")
    raise _bad(v, "a date")


def _time(millis: bool) -> Conv:
    def conv(v: Any) -> int:
        if isinstance(v, dt.time):
            if v.tzinfo is not None:  # a zone on a time of day has no unambiguous meaning
                raise _Reject(f"aware time {v} into a time field (cast it to time without time zone)")
            us = ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
        elif isinstance(v, dt.timedelta):  # MySQL TIME arrives as a (signed) timedelta
            if not _ZERO <= v < _DAY:
                raise _Reject(
                    f"time {_clock(v)} is outside [00:00, 24:00) and would wrap into a time of day; "
                    "declare long (signed microseconds) for a MySQL TIME"
                )
            us = v // _US
        else:
            raise _bad(v, "a time or timedelta")
        return _millis(us, v, "time-millis") if millis else us

    return conv


def _clock(v: dt.timedelta) -> str:
    """MySQL's rendering of a TIME value (``-838:59:59.000000``), for error messages."""
    us = v // _US
    sign, us = ("-" if us < 0 else ""), abs(us)
    s, frac = divmod(us, 1_000_000)
    return f"{sign}{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" + (f".{frac:06d}" if frac else "")


def _uuid(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, str):
        try:
            return str(uuid.UUID(v))
        except ValueError:
            raise _Reject(f"{v!r} is not a UUID") from None
    raise _bad(v, "a UUID")


def _null(v: Any) -> None:
    if v is not None:
        raise _bad(v, "null")


_DTS, _TIMES = (dt.datetime,), (dt.time, dt.timedelta)
_LEAVES: dict[str, tuple[Conv, tuple[type, ...], tuple[type, ...]]] = {
    "null": (_null, (type(None),), ()),
    "boolean": (_boolean, (bool,), (int,)),
    "int": (_int(32), (int,), ()),
    "long": (_int(64), (int,), (dt.timedelta,)),
    "float": (_float(False), (float,), (int,)),
    "double": (_float(True), (float,), (int,)),
    "string": (_string, (str,), (uuid.UUID, decimal.Decimal, int, float, dict, list, enum.Enum)),
    "bytes": (_bytes, (bytes,), (bytearray, memoryview)),
    "int/date": (_date, (dt.date,), (str,)),
    "int/time-millis": (_time(True), _TIMES, ()),
    "long/time-micros": (_time(False), _TIMES, ()),
    "string/uuid": (_uuid, (uuid.UUID,), (str,)),
}
for _unit in ("millis", "micros", "nanos"):
    for _lt in (f"timestamp-{_unit}", f"local-timestamp-{_unit}"):
        _LEAVES[f"long/{_lt}"] = (_timestamp(_lt), _DTS, (str,))

_Field = tuple[str, Conv, Any]  # name, converter, writer-ready default or _MISSING


def _record(name: str, fields: list[_Field], interval: bool) -> Conv:
    def conv(v: Any) -> dict[str, Any]:
        if not isinstance(v, Mapping):
            if interval and isinstance(v, tuple) and len(v) == 3:
                return conv(dict(zip(_INTERVAL, v, strict=True)))
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


def _union(branches: list[_Node]) -> _Node:
    others = [b for b in branches if b.branch != "null"]
    nullable, names = len(others) < len(branches), ", ".join(b.branch for b in branches)
    if nullable and len(others) == 1:  # ["null", X], the common case: a bare value
        inner = others[0].conv

        def bare(v: Any) -> Any:
            return None if v is None else inner(v)

        _NULLABLE_OF[bare] = inner
        return branches[0]._replace(conv=bare)
    tries_by_type: dict[type, list[_Node]] = {}

    def tries(t: type) -> list[_Node]:
        def takes(types: tuple[type, ...]) -> bool:  # a bool is not an int here, unless named
            return any(issubclass(t, c) for c in types) and (t is not bool or bool in types)

        return [b for b in others if takes(b.native)] + [b for b in others if takes(b.coerced)]

    def conv(v: Any) -> Any:
        if v is None:
            if nullable:
                return None
            raise _Reject(f"null in a non-nullable field (union [{names}])")
        if (candidates := tries_by_type.get(type(v))) is None:
            candidates = tries_by_type[type(v)] = tries(type(v))
        first: _Reject | None = None
        for b in candidates:
            try:
                return (b.branch, b.conv(v))
            except _Reject as e:
                first = first or e
        raise first or _Reject(f"no branch of union [{names}] takes a {type(v).__name__} {_show(v)}")

    return branches[0]._replace(conv=conv, wrap=True)


class _Compiler:
    """Walks a schema once; named types resolve as Avro says (full names, enclosing namespace)."""

    def __init__(self, schema: Mapping[str, Any], symbol_maps: Mapping[str, Mapping[str, str]]) -> None:
        self.named: dict[str, Any] = dict(schema.get("__named_schemas") or {})  # parse_schema output
        self.building: dict[str, _Node] = {}  # records being compiled, for recursive references
        self.symbol_maps, self.used = symbol_maps, set[str]()

    def node(self, s: Any, ns: str, path: str) -> _Node:
        if isinstance(s, list):
            branches = [self.node(b, ns, path) for b in s]
            names = [b.branch for b in branches]
            if any(isinstance(b, list) for b in s) or len(set(names)) < len(names):
                raise SchemaError(
                    f"field {path}: a union may hold neither a union nor one type twice: {names}"
                )
            return _union(branches)
        if isinstance(s, str) and s not in _PRIMITIVES:
            for full in (f"{ns}.{s}" if ns and "." not in s else s, s):
                if full in self.building:
                    return self.building[full]
                if full in self.named:
                    return self.node(self.named[full], full.rpartition(".")[0], path)
            raise SchemaError(f"field {path}: unknown type {s!r}")
        t = s if isinstance(s, str) else s["type"]
        if not isinstance(t, str) or (t not in _PRIMITIVES and t not in _COMPLEX):
            return self.node(t, ns, path)  # {"type": {...}}, {"type": [...]} or {"type": "Name"}
        if t in _PRIMITIVES:
            logical = None if isinstance(s, str) else s.get("logicalType")
            if t == "bytes" and logical == "decimal":
                return self.decimal(s, path, "bytes", None)
            # An unknown logical type, or one on the wrong base type, is ignored (as the spec says).
            conv, native, coerced = _LEAVES.get(f"{t}/{logical}") or _LEAVES[t]
            return _Node(conv, t, t, native, coerced)
        if t == "array":
            return _Node(_array(self.node(s["items"], ns, path).conv), t, t, (list, tuple))
        if t == "map":
            return _Node(_map(self.node(s["values"], ns, path).conv), t, t, (Mapping,))
        name, ns = str(s["name"]), str(s.get("namespace", ns) or "")
        full = name if "." in name or not ns else f"{ns}.{name}"
        self.named[full] = s
        ns = full.rpartition(".")[0]
        if t == "enum":
            labels = self.symbol_maps.get(path, {})
            self.used.update([path] if path in self.symbol_maps else [])
            if bad := sorted(set(labels.values()) - set(s["symbols"])):
                raise SchemaError(f"symbol_maps[{path!r}] maps to {bad}, not symbols of enum {full}")
            return _Node(_enum(full, list(s["symbols"]), labels), full, t, (str, enum.Enum))
        if t == "fixed" and s.get("logicalType") == "decimal":
            return self.decimal(s, path, full, int(s["size"]))
        if t == "fixed":
            return _Node(_fixed(int(s["size"]), full), full, t, (bytes,), (bytearray, memoryview))
        fields: list[_Field] = []
        interval = {f["name"] for f in s["fields"]} == set(_INTERVAL)
        node = self.building[full] = _Node(_record(full, fields, interval), full, t, (Mapping,), (tuple,))
        for f in s["fields"]:
            fields.append(self.field(f, ns, f"{path}.{f['name']}"))
        del self.building[full]
        return node

    def field(self, f: Mapping[str, Any], ns: str, path: str) -> _Field:
        """Compile one record field; its JSON default is made writer-ready once, here."""
        node, value = self.node(f["type"], ns, path), f.get("default", _MISSING)
        if node.base in ("bytes", "fixed") and isinstance(value, str):
            value = value.encode("latin-1")  # Avro JSON writes bytes as code points 0-255
        if node.wrap and value is not None and value is not _MISSING:
            value = (node.branch, value)  # a union's default belongs to its first branch
        return f["name"], node.conv, value

    def decimal(self, s: Mapping[str, Any], path: str, branch: str, size: int | None) -> _Node:
        p, sc = s.get("precision"), s.get("scale", 0)
        if not isinstance(p, int) or not isinstance(sc, int) or not 0 <= sc <= p or p < 1:
            raise SchemaError(f"field {path}: invalid decimal precision {p!r} / scale {sc!r}")
        if size is not None and p > len(str(2 ** (8 * size - 1) - 1)) - 1:
            raise SchemaError(f"field {path}: decimal({p},{sc}) does not fit fixed size {size}")
        return _Node(
            _decimal(p, sc, size), branch, "bytes" if size is None else "fixed", (decimal.Decimal,), (int,)
        )


#: the converter of a ["null", X] union -> X's (for RecordConverter's generated fast path)
_NULLABLE_OF: weakref.WeakKeyDictionary[Conv, Conv] = weakref.WeakKeyDictionary()


def _returns_unchanged_when(conv: Conv) -> str | None:
    """A condition on ``{v}`` under which ``conv(v)`` returns ``v`` itself, as Python source: the
    first test each of these converters makes (its hot path). None for every other converter."""
    if conv is _string:
        return "type({v}) is str"
    if conv is _bytes:
        return "type({v}) is bytes"
    if conv is _boolean:
        return "{v} is True or {v} is False"
    for name, bits in (("int", 32), ("long", 64)):
        if conv is _LEAVES[name][0]:
            return f"type({{v}}) is int and {-(1 << (bits - 1))} <= {{v}} <= {(1 << (bits - 1)) - 1}"
    inner = _NULLABLE_OF.get(conv)
    if inner is not None and (check := _returns_unchanged_when(inner)) is not None:
        return f"{{v}} is None or ({check})"
    return None


def _inline(conv: Conv, v: str) -> list[str] | None:
    """Statements doing what ``conv`` does to the variable ``v`` in the usual case, calling it
    otherwise (its checks and errors): a UTC datetime into timestamp-micros, a Decimal that
    fits into a bytes decimal. None when ``conv`` has no inline form."""
    inner, nullable = _NULLABLE_OF.get(conv), True
    if inner is None:
        inner, nullable = conv, False
    kind = _INLINED.get(inner)
    if kind is None:
        return None
    if kind[0] == "utc-micros":
        cond, then = f"type({v}) is DATETIME and {v}.tzinfo is UTC", [f"{v} = ({v} - EPOCH) // US"]
    else:
        precision, scale = kind[1]
        # is_finite and adjusted first: as conv, never an int of a huge exponent; exactly
        # representable (q == n) and in range, else conv raises its error
        cond = f"type({v}) is DECIMAL and {v}.is_finite() and {v}.adjusted() < {precision - scale}"
        then = [
            f"q = {v}.scaleb({scale}, EXACT)",
            "n = int(q)",
            "if q != n:",
            "    raise REJECT('inexact')",  # conv names the problem (the row is converted again)
            f"{v} = n.to_bytes((n + (n < 0)).bit_length() // 8 + 1, 'big', signed=True)",
        ]
    lines = [f"if {v} is None:", "    pass", f"elif {cond}:"] if nullable else [f"if {cond}:"]
    return [*lines, *(f"    {t}" for t in then), "else:", f"    {v} = CONV({v})"]


def _generated(
    stream: str, plan: list[tuple[str, str, Conv, Any]]
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """One straight-line function converting a row that fits ``plan`` exactly: no loop, no
    converter call where the value already is what the field writes (an int in range, a str,
    a bool, bytes, a null in a nullable field), and the usual timestamp and decimal cases
    written inline. A missing column or a value that does not fit raises (KeyError, _Reject),
    and RecordConverter then converts the row the general way, which applies a default or
    names the field. The source holds generated names only: column and field names are values
    of the function's namespace, never text of its code."""
    namespace: dict[str, Any] = {
        "DATETIME": dt.datetime, "UTC": dt.UTC, "EPOCH": _EPOCH, "US": _US, "DECIMAL": decimal.Decimal,
        "EXACT": _EXACT, "REJECT": _Reject, "int": int, "type": type,
    }  # fmt: skip
    lines = ["def convert(row):"]
    for i, (name, column, conv, _default) in enumerate(plan):
        namespace[f"c{i}"], namespace[f"k{i}"], namespace[f"f{i}"] = column, conv, name
        lines.append(f"    v{i} = row[c{i}]")
        check = _returns_unchanged_when(conv)
        inline = _inline(conv, f"v{i}") if check is None else None
        if inline is not None:
            lines += [f"    {line.replace('CONV', f'k{i}')}" for line in inline]
        elif check is None:
            lines.append(f"    v{i} = k{i}(v{i})")
        else:
            lines.append(f"    if not ({check.format(v=f'v{i}')}):")
            lines.append(f"        v{i} = k{i}(v{i})")
    lines.append("    return {" + ", ".join(f"f{i}: v{i}" for i in range(len(plan))) + "}")
    exec(compile("\n".join(lines), f"<converter of stream {stream!r}>", "exec"), namespace)  # noqa: S102
    convert: Callable[[Mapping[str, Any]], dict[str, Any]] = namespace["convert"]
    return convert


def compose(first: Conv, then: Conv) -> Conv:
    """``then`` applied to what ``first`` returns (a column's policy before its conversion, or
    two policies naming one column in turn)."""
    return lambda value: then(first(value))


class RecordConverter:
    """Maps one source row onto one Avro record; built by :func:`compile_record`."""

    __slots__ = ("_fast", "_plan", "fields", "source_columns", "stream")

    def __init__(self, stream: str, plan: list[tuple[str, str, Conv, Any]]) -> None:
        self.stream, self._plan = stream, plan
        self.fields: tuple[str, ...] = tuple(p[0] for p in plan)
        self.source_columns: tuple[str, ...] = tuple(p[1] for p in plan)
        # Generated at the first row: a stream that never sees one (an idle table of many)
        # costs no start-up time (about 180 µs for ten fields).
        self._fast: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None

    def composed(self, before: Mapping[str, Conv]) -> RecordConverter:
        """A converter that first passes the value of each source column named in ``before``
        through its function (a stream's column policies), then converts it as this one does:
        one pass over the row, no copied row. A value that does not fit is reported as the
        function returned it; a missing column still takes the field's default."""
        return RecordConverter(
            self.stream,
            [
                (name, column, conv if column not in before else compose(before[column], conv), default)
                for name, column, conv, default in self._plan
            ],
        )

    def __call__(self, row: Mapping[str, Any], key: object = None) -> dict[str, Any]:
        """Return the record for ``row``, ready for fastavro; a misfit raises RowError naming ``key``."""
        fast = self._fast
        if fast is None:
            fast = self._fast = _generated(self.stream, self._plan)
        try:
            return fast(row)
        except (KeyError, _Reject):
            return self.convert_checked(row, key)

    def convert_checked(self, row: Mapping[str, Any], key: object = None) -> dict[str, Any]:
        """The general way: field by field, a missing column takes its default, a misfit raises
        RowError naming ``key`` and the field. The same record as ``__call__`` for any row."""
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
    """Compile the converter of a record schema (a plain JSON dict or ``fastavro.parse_schema`` output).

    ``field_map`` maps Avro field -> source column (others map by name; entries naming no field of
    this schema are ignored, so one map serves a stream's key and value). ``symbol_maps`` maps an
    enum field's dotted path (``rating``, ``address.kind``) to {source label: Avro symbol}.
    Raises SchemaError for a schema that cannot be converted exactly.
    """
    if not isinstance(schema, Mapping) or schema.get("type") not in ("record", "error"):
        raise SchemaError(f"stream {stream!r}: a row schema must be an Avro record")
    symbol_maps, field_map = symbol_maps or {}, field_map or {}
    comp = _Compiler(schema, symbol_maps)
    try:
        name, ns = str(schema["name"]), str(schema.get("namespace") or "")
        full = name if "." in name or not ns else f"{ns}.{name}"
        comp.named[full] = schema
        fields = [comp.field(f, full.rpartition(".")[0], f["name"]) for f in schema["fields"]]
    except SchemaError as exc:
        raise SchemaError(f"stream {stream!r}: {exc.message}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SchemaError(f"stream {stream!r}: invalid Avro schema: {exc!r}") from None
    if unused := sorted(set(symbol_maps) - comp.used):
        raise SchemaError(f"stream {stream!r}: symbol_maps name no enum field of the schema: {unused}")
    return RecordConverter(stream, [(n, field_map.get(n, n), c, d) for n, c, d in fields])
