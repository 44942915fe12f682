"""Turn pgoutput text values into Python values, with psycopg's own loaders looked up by type OID.

pgoutput sends every column as the text its type's output function produced in the *sending*
session (the walsender, or the backend calling ``pg_logical_slot_*_changes``): timestamptz
in that session's TimeZone, dates in its DateStyle, intervals in its IntervalStyle, text in
its client_encoding. The loaders must parse exactly that format, so both sessions — the one
that decodes and the psycopg connection the :class:`TypeMap` is built from — use
:data:`SESSION_OPTIONS`, and :meth:`TypeMap.load` refuses a connection whose settings differ.

Types are resolved once, at start-up: domains to their base type, enums to ``str`` (labels
kept), arrays to lists of their element type. A type we cannot load (composite,
pseudo, or a base type psycopg has no loader for) is a :class:`SourceConfigError` at start-up,
not a failure at row 1,000,000.

What comes out, by type: integers ``int``; numeric ``Decimal`` (NaN/Infinity included, the
Avro converter rejects them); float4/float8 ``float``; bool ``bool``; text/varchar/bpchar/name
``str``; bytea ``bytes``; date/time/timestamp/timestamptz ``date``/``time``/
``datetime`` (timestamptz aware, in UTC); interval ``timedelta`` (months folded into days by
psycopg; ask for ``interval_as_tuple=True`` to get exact ``(months, days, microseconds)``);
uuid ``uuid.UUID``; json/jsonb/tsvector/xml, inet/cidr/macaddr, money, bit/varbit, timetz,
ranges and multiranges ``str`` (PostgreSQL's own text, unparsed); enums ``str``; arrays ``list``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.abc import Loader as LoaderProtocol
from psycopg.adapt import AdaptersMap, Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg.types.array import register_array
from psycopg.types.string import TextLoader

from cdc.errors import SourceConfigError

__all__ = [
    "SESSION_OPTIONS",
    "IntervalTupleLoader",
    "PgType",
    "TypeMap",
    "parse_interval",
]

#: libpq ``options`` for every session whose text output we parse or that parses it: the
#: replication connection and the connection a :class:`TypeMap` is loaded from.
#: (extra_float_digits=3 is what PostgreSQL 12+ does by default — shortest exact output —
#: but says so explicitly for older servers and odd postgresql.conf files.)
#: lc_monetary=C: money's text ('$1,234.56') must not depend on the server's locale.
SESSION_OPTIONS: Final = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3"
    " -c client_encoding=UTF8 -c lc_monetary=C"
)

Load = Callable[[bytes], Any]

_INTERVAL_OID: Final = 1186
# Loaders whose psycopg implementation raises DataError for values PostgreSQL can hold but
# Python cannot ('infinity', year 10000+, BC dates, 24:00:00, intervals beyond timedelta).
_RANGE_LIMITED: Final = frozenset({1082, 1083, 1114, 1184, _INTERVAL_OID})
# Loaded as the plain text PostgreSQL sent: the Avro contract maps them to strings (README,
# type mapping: a type without an exact Avro mapping is a string with the database's own text).
# Parsing JSON only to serialise it again would be slow and could reorder keys; psycopg's inet
# and cidr objects print differently from PostgreSQL ('::ffff:1.2.3.4' comes back as
# '::ffff:102:304'); an aware time of day (timetz) fits no Avro time type; macaddr, money and
# bit strings have no loader at all. Ranges and multiranges (any OID) are text too.
_JSON_OIDS: Final = frozenset({114, 3802})
_AS_TEXT: Final = frozenset(
    {
        114,  # json
        3802,  # jsonb
        3614,  # tsvector
        142,  # xml
        869,  # inet
        650,  # cidr
        829,  # macaddr
        774,  # macaddr8
        790,  # money
        1560,  # bit
        1562,  # varbit
        1266,  # timetz
    }
)
_TEXT_KINDS: Final = frozenset({"r", "m"})  # range, multirange

_KIND_NAMES: Final = {
    "c": "composite",
    "r": "range",
    "m": "multirange",
    "p": "pseudo-type",
    "d": "domain",
    "e": "enum",
    "b": "base type",
}


# --------------------------------------------------------------------------- interval

# The one hand-written parser of this module: psycopg loads interval as a timedelta, which
# folds months into days (30 days each) — lossy for '1 mon' vs '30 days'. PostgreSQL keeps
# months, days and microseconds apart, and so must we. Format is IntervalStyle 'postgres'
# (EncodeInterval in src/backend/utils/adt/datetime.c): optional "N year(s)", "N mon(s)",
# "N day(s)" parts, each signed, then an optional [+-]HH:MM:SS[.ffffff] part whose sign
# covers all three fields. Hours are not limited to 2 digits. Zero is "00:00:00".
_INTERVAL_RE: Final = re.compile(
    rb"(?:([+-]?\d+) years? ?)?"
    rb"(?:([+-]?\d+) mons? ?)?"
    rb"(?:([+-]?\d+) days? ?)?"
    rb"(?:([+-]?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?)?"
)


def parse_interval(text: bytes | str) -> tuple[int, int, int]:
    """Parse an interval in IntervalStyle 'postgres' into exact ``(months, days, microseconds)``.

    >>> parse_interval(b"1 year 2 mons -3 days +04:05:06.789")
    (14, -3, 14706789000)
    """
    data = text.encode("ascii") if isinstance(text, str) else text
    m = _INTERVAL_RE.fullmatch(data)
    if m is None or not data:
        raise ValueError(
            f"interval {data.decode('utf-8', 'replace')!r} is not in IntervalStyle 'postgres' format"
        )
    years, mons, days, sign, hours, minutes, seconds, frac = m.groups()
    months = (int(years) * 12 if years else 0) + (int(mons) if mons else 0)
    micros = 0
    if hours is not None:
        micros = (int(hours) * 3600 + int(minutes) * 60 + int(seconds)) * 1_000_000
        if frac:
            micros += int(frac.ljust(6, b"0"))
        if sign == b"-":
            micros = -micros
    return months, int(days) if days else 0, micros


class IntervalTupleLoader(Loader):
    """A psycopg text loader for interval returning ``(months, days, microseconds)``."""

    def load(self, data: Buffer) -> tuple[int, int, int]:
        """Parse one interval; see :func:`parse_interval`."""
        return parse_interval(data if isinstance(data, bytes) else bytes(data))


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True)
class PgType:
    """What :meth:`TypeMap.load` learned about one type OID.

    ``base_oid`` is the type a domain (recursively) stands for, else ``oid`` itself;
    ``element_oid`` the element type of an array, or of the array a domain stands for
    (possibly itself a domain or enum).
    ``labels`` are an enum's labels in sort order (also for a domain over an enum).
    ``output`` is the type's output function (schema, name): what pgoutput sends is its result.
    """

    oid: int
    namespace: str
    name: str
    sql_name: str
    kind: Literal["base", "enum", "domain", "array"]
    base_oid: int
    element_oid: int | None
    labels: tuple[str, ...] | None
    output: tuple[str, str] = ("pg_catalog", "textout")

    @property
    def qualified_name(self) -> str:
        """``namespace.name`` as in the catalog, e.g. ``public.mood``."""
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True, slots=True)
class _Row:
    oid: int
    namespace: str
    name: str
    sql_name: str
    typtype: str
    basetype: int
    elem: int
    delim: str
    is_array: bool
    output: tuple[str, str]


_TYPES_SQL: Final = """
SELECT t.oid::int8, n.nspname::text, t.typname::text, pg_catalog.format_type(t.oid, NULL),
       t.typtype::text, t.typbasetype::int8, t.typelem::int8, t.typdelim::text,
       t.typinput = 'pg_catalog.array_in'::pg_catalog.regproc, pn.nspname::text, p.proname::text
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.typoutput JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE t.oid = ANY(%s::int8[]::pg_catalog.oid[])
"""

_ENUMS_SQL: Final = """
SELECT enumtypid::int8, enumlabel::text FROM pg_catalog.pg_enum
WHERE enumtypid = ANY(%s::int8[]::pg_catalog.oid[])
ORDER BY enumtypid, enumsortorder
"""


class _Context:
    """A psycopg AdaptContext: our private adapters map plus the connection loaders read settings from."""

    __slots__ = ("_adapters", "_connection")

    def __init__(self, adapters: AdaptersMap, connection: psycopg.BaseConnection[Any]) -> None:
        self._adapters = adapters
        self._connection = connection

    @property
    def adapters(self) -> AdaptersMap:
        return self._adapters

    @property
    def connection(self) -> psycopg.BaseConnection[Any] | None:
        return self._connection


def _check_session(conn: psycopg.Connection[Any]) -> None:
    info = conn.info
    problems = []
    tz = info.parameter_status("TimeZone")
    if tz not in ("UTC", "Etc/UTC"):
        problems.append(f"TimeZone is {tz!r}, not 'UTC'")
    datestyle = info.parameter_status("DateStyle") or ""
    if not datestyle.startswith("ISO"):
        problems.append(f"DateStyle is {datestyle!r}, not 'ISO'")
    intervalstyle = info.parameter_status("IntervalStyle")
    if intervalstyle != "postgres":
        problems.append(f"IntervalStyle is {intervalstyle!r}, not 'postgres'")
    if info.encoding != "utf-8":
        problems.append(f"client encoding is {info.encoding!r}, not UTF8")
    if problems:
        raise SourceConfigError(
            "the connection used to load column types has session settings that differ from the "
            "replication session's: " + "; ".join(problems),
            hint=f"connect with options={SESSION_OPTIONS!r}",
        )


def _fetch_rows(conn: psycopg.Connection[Any], oids: set[int]) -> dict[int, _Row]:
    """The pg_type rows of ``oids`` and, transitively, of their base and element types."""
    rows: dict[int, _Row] = {}
    wanted = set(oids)
    while wanted:
        for r in conn.execute(_TYPES_SQL, (sorted(wanted),)).fetchall():
            rows[r[0]] = _Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), (r[9], r[10]))
        missing = wanted - rows.keys()
        if missing:
            raise SourceConfigError(
                f"type OID(s) {sorted(missing)} do not exist in the source database",
                hint="a column type was dropped or the relation changed while starting; restart",
            )
        wanted = set()
        for row in rows.values():
            for ref in (row.basetype if row.typtype == "d" else 0, row.elem if row.is_array else 0):
                if ref and ref not in rows:
                    wanted.add(ref)
    return rows


class _UnsupportedTypeError(Exception):
    pass


class TypeMap:
    """Loaders for a fixed set of type OIDs, resolved at start-up. Build with :meth:`load`.

    Read-only after construction and independent of the connection it was loaded from (that
    connection may be closed), so one map can serve a whole replication session.
    """

    __slots__ = ("_exact", "_loaders", "_types")

    def __init__(self, types: dict[int, PgType], loaders: dict[int, Load], exact: dict[int, Load]) -> None:
        """Use :meth:`load`; this constructor takes already-resolved parts."""
        self._types = types
        self._loaders = loaders
        self._exact = exact

    @classmethod
    def load(cls, conn: psycopg.Connection[Any], oids: Iterable[int]) -> TypeMap:
        """Resolve ``oids`` against ``conn``'s catalog and build a loader for each.

        ``conn`` must be a normal (non-replication) connection to the source database opened
        with :data:`SESSION_OPTIONS`; TimeZone, DateStyle, IntervalStyle and client encoding
        are checked. Raises SourceConfigError listing every type that cannot be loaded.
        """
        _check_session(conn)
        requested = set(oids)
        rows = _fetch_rows(conn, requested) if requested else {}
        labels: dict[int, list[str]] = {}
        enum_oids = [o for o, r in rows.items() if r.typtype == "e"]
        if enum_oids:
            for oid, label in conn.execute(_ENUMS_SQL, (enum_oids,)).fetchall():
                labels.setdefault(oid, []).append(label)

        # A private adapters map: our overrides (json as str, enums as str, extra arrays) must
        # not change how the caller's connection loads query results.
        normal = AdaptersMap(conn.adapters)
        ctx = _Context(normal, conn)
        for oid in _AS_TEXT:
            normal.register_loader(oid, TextLoader)
        for oid in enum_oids:
            normal.register_loader(oid, TextLoader)
        for oid, r in rows.items():
            if r.typtype in _TEXT_KINDS:
                normal.register_loader(oid, TextLoader)

        def base_of(oid: int) -> int:
            while rows[oid].typtype == "d":
                oid = rows[oid].basetype
            return oid

        def check(oid: int) -> None:
            """Raise _UnsupportedTypeError unless ``oid`` (a non-domain) can be loaded."""
            row = rows[oid]
            if row.typtype == "e" or row.typtype in _TEXT_KINDS:
                return
            if row.typtype != "b":
                raise _UnsupportedTypeError(
                    f"{row.sql_name} ({_KIND_NAMES.get(row.typtype, row.typtype)}, oid {oid})"
                )
            if row.is_array:
                elem = base_of(row.elem)
                try:
                    check(elem)
                except _UnsupportedTypeError as exc:
                    raise _UnsupportedTypeError(f"{row.sql_name} (array of {exc})") from None
                # Register the array against the element's *base* type so arrays of domains
                # and enums load like arrays of what they stand for; the delimiter is the
                # element type's (',' for everything but box).
                info = TypeInfo(rows[elem].name, elem, oid, delimiter=rows[elem].delim)
                register_array(info, ctx)
                return
            if normal.get_loader(oid, Format.TEXT) is None:
                raise _UnsupportedTypeError(f"{row.sql_name} (base type without a loader, oid {oid})")

        types: dict[int, PgType] = {}
        bases: dict[int, int] = {}
        problems: list[str] = []
        for oid in sorted(requested):
            row = rows[oid]
            base = base_of(oid)
            try:
                check(base)
            except _UnsupportedTypeError as exc:
                where = f"domain {row.namespace}.{row.name} over " if row.typtype == "d" else ""
                problems.append(f"{where}{exc}")
                continue
            bases[oid] = base
            kind: Literal["base", "enum", "domain", "array"]
            if row.typtype == "d":
                kind = "domain"
            elif row.typtype == "e":
                kind = "enum"
            else:
                kind = "array" if row.is_array else "base"
            enum_labels = labels.get(base)
            types[oid] = PgType(
                oid=oid,
                namespace=row.namespace,
                name=row.name,
                sql_name=row.sql_name,
                kind=kind,
                base_oid=base,
                element_oid=rows[base].elem if rows[base].is_array else None,
                labels=tuple(enum_labels) if enum_labels is not None else None,
                output=row.output,
            )
        if problems:
            raise SourceConfigError(
                "column types that cannot be captured: " + "; ".join(problems),
                hint="exclude or cast these columns (e.g. a view or generated text column), "
                "or change their type",
            )

        # The exact map differs only in interval: created after every registration above, so
        # it sees the array loaders too, and array-of-interval loaders built with its context
        # pick up IntervalTupleLoader for their elements.
        exact_map = AdaptersMap(normal)
        exact_map.register_loader(_INTERVAL_OID, IntervalTupleLoader)
        exact_ctx = _Context(exact_map, conn)

        loaders: dict[int, Load] = {}
        exact: dict[int, Load] = {}
        for oid, base in bases.items():
            row = rows[base]
            elem_base = base_of(row.elem) if row.is_array else None
            name = types[oid].sql_name
            limited = base in _RANGE_LIMITED or elem_base in _RANGE_LIMITED
            loaders[oid] = _make_load(normal, ctx, base, name, limited)
            if _INTERVAL_OID in (base, elem_base):
                exact[oid] = _make_load(exact_map, exact_ctx, base, name, limited)
            else:
                exact[oid] = loaders[oid]
        return cls(types, loaders, exact)

    def loader(self, oid: int, *, interval_as_tuple: bool = False) -> Load:
        """The fast callable turning one text value (bytes) of type ``oid`` into a Python value.

        Values Python cannot represent ('infinity', year 10000+, BC, 24:00:00) come out as
        PostgreSQL's text, for the converter to turn into a RowError. With
        ``interval_as_tuple`` interval values (also in arrays and domains) come out as exact
        ``(months, days, microseconds)`` tuples instead of timedelta.
        """
        table = self._exact if interval_as_tuple else self._loaders
        try:
            return table[oid]
        except KeyError:
            raise KeyError(f"type OID {oid} was not loaded; pass it to TypeMap.load at start-up") from None

    def info(self, oid: int) -> PgType:
        """What is known about type ``oid`` (KeyError if it was not loaded)."""
        return self._types[oid]

    def enum_labels(self, oid: int) -> tuple[str, ...] | None:
        """The labels of enum ``oid`` (or of the enum a domain stands for) in order; None otherwise."""
        return self._types[oid].labels

    def type_name(self, oid: int) -> str:
        """The type's SQL name for messages, e.g. ``integer[]`` or ``mood`` (a domain keeps its own)."""
        t = self._types.get(oid)
        return t.sql_name if t is not None else f"type OID {oid}"

    def __contains__(self, oid: object) -> bool:
        return oid in self._types

    def as_text(self, column: str, oid: int) -> sql.Composable:
        """``column`` selected as the text the walsender would send for it, byte for byte.

        pgoutput sends what the column type's output function returns; ``::text`` is not always
        that: for types with their own cast to text it strips the blanks of ``char(n)``, spells
        booleans ``true``/``false`` and adds ``/128`` to an ``inet`` host. So the output
        function is called itself, and snapshot, incremental snapshot, TOAST re-select and
        stream agree for every type.
        """
        ident = sql.Identifier(column)
        t = self._types.get(oid)
        if t is None:
            return sql.SQL("{}::text").format(ident)
        return sql.SQL("pg_catalog.textin({}({}))").format(sql.Identifier(*t.output), ident)

    @property
    def oids(self) -> frozenset[int]:
        """Every type OID this map can load."""
        return frozenset(self._types)


def _make_load(adapters: AdaptersMap, ctx: _Context, base: int, type_name: str, limited: bool) -> Load:
    cls = adapters.get_loader(base, Format.TEXT)
    if cls is None:  # check() made sure there is one; this is for mypy and for safety
        raise SourceConfigError(f"no loader for type {type_name} (oid {base})")
    # Instantiate now, while the connection is open: date/time loaders read its settings here.
    load: Load = cls(base, ctx).load
    return _guarded(load, type_name) if limited else load


def _guarded(load: Load, type_name: str) -> Load:
    """Wrap ``load`` so a value Python cannot hold ('infinity', a BC date, year 10000+) arrives
    as PostgreSQL's own text instead of raising: the converter turns it into a row error routed
    by the stream's ``on_error`` (a string field keeps it exactly). Raising here would stop the
    stream at that row on every restart."""

    def guarded(data: bytes) -> Any:
        try:
            return load(data)
        except (psycopg.DataError, OverflowError):
            return bytes(data).decode("utf-8", "replace")

    return guarded


def _lenient(base: type[LoaderProtocol]) -> type[Loader]:
    """A loader that delegates to an instance of ``base`` and returns PostgreSQL's text for a
    value Python cannot hold. ``base`` is what psycopg would use itself (its C loader when
    psycopg[binary] is installed): C loaders cannot be subclassed, and subclassing the
    pure-Python one instead made date/time parsing about a tenth of a polling snapshot's CPU."""

    class Lenient(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            # Instantiated per result set, like psycopg's own: date/time loaders read the
            # connection's DateStyle and TimeZone here.
            self._load = base(oid, context).load

        def load(self, data: Buffer) -> Any:
            try:
                return self._load(data)
            except (psycopg.DataError, OverflowError):
                return bytes(data).decode("utf-8", "replace")

    Lenient.__name__ = Lenient.__qualname__ = f"Lenient{base.__name__}"
    return Lenient


#: Built-in range and multirange types: query connections know no user-defined ones.
_BUILTIN_RANGES: Final = frozenset({3904, 3906, 3908, 3910, 3912, 3926, 4451, 4532, 4533, 4534, 4535, 4536})


def register_lenient_loaders(adapters: AdaptersMap) -> None:
    """For query connections (the polling source): date/time values Python cannot hold load as
    their text, like the WAL loaders above, instead of failing the whole result set; the types
    the WAL source reads as PostgreSQL's text (json, inet, timetz, ranges ...) load as text too,
    so both sources write the same values."""
    # json and jsonb stay parsed on these connections: SQLAlchemy's own reflection reads json
    # (a column's identity options) and needs the parsed value. The polling reader and the
    # audit relay select their json columns as ``::text`` instead (json's and jsonb's output).
    for oid in (_AS_TEXT - _JSON_OIDS) | _BUILTIN_RANGES:
        adapters.register_loader(oid, TextLoader)
    for name in ("date", "time", "timestamp", "timestamptz", "interval"):
        info = adapters.types[name]
        base = adapters.get_loader(info.oid, Format.TEXT)
        if base is None:  # psycopg registers all five; for mypy and for safety
            raise SourceConfigError(f"psycopg has no text loader for {name}")
        adapters.register_loader(info.oid, _lenient(base))
