"""A reflected SQLAlchemy column described as a :class:`cdc.plugin.ColumnInfo` (for the start-up
schema check), shared by the query-based sources (polling, audit relay)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from cdc.plugin import ColumnInfo


def pg_text(t: sa.types.TypeEngine[Any]) -> bool:
    """A PostgreSQL type the query connections load as its text: timetz and ranges."""
    return (isinstance(t, postgresql.TIME) and bool(t.timezone)) or isinstance(
        t, postgresql.ranges.AbstractRange | postgresql.ranges.AbstractMultiRange
    )


def column_info(col: sa.Column[Any]) -> ColumnInfo:
    """Describe a reflected column for the start-up schema check."""
    t = col.type
    py: type | None
    try:
        py = None if isinstance(t, sa.types.NullType) else t.python_type
    except NotImplementedError:
        py = None
    if py is object:  # SQLAlchemy 2.1 says object where 2.0 raised: the driver's type is unknown
        py = None
    if pg_text(t):
        py = str  # loaded as PostgreSQL's text (cdc.pg.types.register_lenient_loaders)
    aware: bool | None = None
    if isinstance(t, sa.DateTime):
        aware = bool(getattr(t, "timezone", False)) or isinstance(t, mysql.TIMESTAMP)
    precision = getattr(t, "precision", None) if isinstance(t, sa.Numeric) else None
    scale = getattr(t, "scale", None) if isinstance(t, sa.Numeric) else None
    if isinstance(t, sa.Float):
        precision = scale = None
    labels = tuple(t.enums) if isinstance(t, sa.Enum) else None
    return ColumnInfo(
        name=col.name,
        type_name=_type_name(t),
        nullable=bool(col.nullable),
        python_type=py,
        precision=precision,
        scale=scale,
        timezone_aware=aware,
        enum_labels=labels,
    )


def _type_name(t: sa.types.TypeEngine[Any]) -> str:
    try:
        return str(t)
    except Exception:  # some dialect types cannot render without a dialect
        return type(t).__name__
