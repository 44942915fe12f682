"""PostgreSQL column descriptions from the catalog (domains resolved to their base type, enum
labels, numeric precision and scale), shared by the sources that read PostgreSQL tables."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from cdc.plugin import ColumnInfo

_PY_TYPES: dict[str, type] = {
    "int2": int, "int4": int, "int8": int, "oid": int,
    "numeric": Decimal, "float4": float, "float8": float, "bool": bool,
    "text": str, "varchar": str, "bpchar": str, "name": str, "citext": str, "json": str, "jsonb": str,
    "tsvector": str, "xml": str, "inet": str, "cidr": str, "macaddr": str, "macaddr8": str,
    "money": str, "bit": str, "varbit": str,
    "bytea": bytes, "date": dt.date, "time": dt.time, "timetz": str,
    "timestamp": dt.datetime, "timestamptz": dt.datetime, "interval": tuple, "uuid": uuid.UUID,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_name: str  # format_type(): e.g. numeric(10,2), public.mpaa_rating, text[]
    base_name: str  # pg_type.typname after resolving domains
    category: str  # pg_type.typcategory of the base type (A array, E enum, ...)
    not_null: bool
    precision: int | None
    scale: int | None
    enum_labels: tuple[str, ...] | None


#: the columns of several relations in one query: the recursive walk over pg_type costs the
#: server a few milliseconds per query, which per table made start-up of 1,000 tables take seconds
_COLUMNS = """
WITH RECURSIVE base(oid, root) AS (
    SELECT t.oid, t.oid FROM pg_type t
    UNION ALL
    SELECT b.oid, t.typbasetype FROM base b JOIN pg_type t ON t.oid = b.root WHERE t.typtype = 'd'
)
SELECT a.attrelid, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), bt.typname, bt.typcategory,
       a.attnotnull, a.atttypmod, bt.oid,
       (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = bt.oid)
FROM pg_attribute a
JOIN LATERAL (SELECT root FROM base WHERE base.oid = a.atttypid
              AND NOT EXISTS (SELECT 1 FROM pg_type x WHERE x.oid = base.root AND x.typtype = 'd')) r ON true
JOIN pg_type bt ON bt.oid = r.root
WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""


def _numeric_typmod(typmod: int) -> tuple[int | None, int | None]:
    if typmod < 4:
        return None, None
    value = typmod - 4
    return (value >> 16) & 0xFFFF, value & 0xFFFF


def _column(row: tuple[Any, ...]) -> Column:
    _relid, attname, typoid, typename, basename, category, notnull, typmod, _bt, labels = row
    precision, scale = _numeric_typmod(int(typmod)) if basename == "numeric" else (None, None)
    return Column(
        attname, int(typoid), typename, basename, category, bool(notnull), precision, scale,
        tuple(labels) if labels else None,
    )  # fmt: skip


def load_columns(conn: psycopg.Connection[Any], oid: int) -> dict[str, Column]:
    """The columns of the relation ``oid`` in table order."""
    return load_columns_of(conn, [oid])[oid]


def load_columns_of(conn: psycopg.Connection[Any], oids: Sequence[int]) -> dict[int, dict[str, Column]]:
    """The columns of each relation in ``oids`` (in table order), as ``load_columns`` gives them,
    in one query; a relation without columns maps to an empty dict."""
    out: dict[int, dict[str, Column]] = {oid: {} for oid in oids}
    if not oids:
        return out
    for row in conn.execute(_COLUMNS, (list(oids),)):
        column = _column(row)
        out[int(row[0])][column.name] = column
    return out


def column_infos(columns: Iterable[Column]) -> dict[str, ColumnInfo]:
    """The start-up check's view of the columns."""
    out = {}
    for c in columns:
        py = list if c.category == "A" else str if c.category in ("E", "R") else _PY_TYPES.get(c.base_name)
        out[c.name] = ColumnInfo(
            name=c.name,
            type_name=c.type_name,
            nullable=not c.not_null,
            python_type=py,
            precision=c.precision,
            scale=c.scale,
            timezone_aware={"timestamptz": True, "timestamp": False}.get(c.base_name),
            enum_labels=c.enum_labels,
        )
    return out
