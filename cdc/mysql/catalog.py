"""Column descriptions of a MySQL/MariaDB table or view, read from ``information_schema``.

SQLAlchemy's reflection does not know MariaDB's UUID/INET types, and its column types carry
result processors that change values (see :mod:`cdc.mysql.types`); the catalog is the exact
source for the start-up check and the value normalizers.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdc.mysql.types import column_info
from cdc.plugin import ColumnInfo

_COLUMNS = sa.text(
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, "
    "DATETIME_PRECISION, CHARACTER_SET_NAME FROM information_schema.columns "
    "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table "
    "ORDER BY ORDINAL_POSITION"
)


def describe_table(conn: sa.Connection, schema: str | None, table: str) -> dict[str, ColumnInfo]:
    """Every column of ``schema.table`` (the connection's database when schema is None), by name;
    empty when the table does not exist or is not visible to the user."""
    out: dict[str, ColumnInfo] = {}
    for name, data_type, column_type, nullable, precision, scale, fsp, charset in conn.execute(
        _COLUMNS, {"schema": schema, "table": table}
    ):
        decimal = str(data_type).lower() in ("decimal", "numeric")
        out[str(name)] = column_info(
            str(name),
            str(data_type),
            nullable=str(nullable).upper() == "YES",
            column_type=str(column_type),
            precision=int(precision) if decimal and precision is not None else None,
            scale=int(scale) if decimal and scale is not None else None,
            fsp=int(fsp) if fsp is not None else None,
            charset=str(charset) if charset else None,
        )
    return out
