"""Write reduced changes into tables: per-dialect upsert, insert, update and delete statements.

Statements bind every value as a parameter and let SQLAlchemy quote identifiers. Rows of one
plan share their columns, so each statement runs once with many parameter sets (SQLAlchemy
batches inserts into multi-row VALUES).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from cdc.sink.config import SinkMode
from cdc.sink.records import Reduced
from cdc.sink.tables import TablePlan


def _key_value(value: Any, column_type: sa.types.TypeEngine[Any], dialect: str) -> Any:
    """A record-key value for a WHERE clause (deletes know no value schema to build converters from)."""
    if isinstance(value, uuid.UUID) and not isinstance(column_type, sa.Uuid):
        return str(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None and dialect != "postgresql":
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class TableWriter:
    """Builds (and caches) the statements of one dialect and executes them for reduced changes."""

    def __init__(self, dialect: str) -> None:
        self.dialect = "mysql" if dialect == "mariadb" else dialect
        self._statements: dict[tuple[object, ...], Any] = {}

    def upsert(self, conn: sa.Connection, plan: TablePlan, mode: SinkMode, ops: Sequence[Reduced]) -> int:
        """Write the rows of changes that share one plan (and one mode)."""
        if not ops:
            return 0
        conv = plan.converters
        rows: list[dict[str, Any]] = []
        for op in ops:
            row = op.change.row
            assert row is not None
            rows.append({c: (conv[c](row.get(c)) if c in conv else row.get(c)) for c in plan.columns})
        if mode is SinkMode.UPDATE:
            keys = plan.key_columns
            values = [c for c in plan.columns if c not in keys]
            if not values:
                return 0
            stmt = self._cached(("update", id(plan)), lambda: self._update(plan, values))
            params = [
                {
                    **{f"k{i}": r[k] for i, k in enumerate(keys)},
                    **{f"v{j}": r[c] for j, c in enumerate(values)},
                }
                for r in rows
            ]
            conn.execute(stmt, params)
            return len(rows)
        stmt = self._cached((mode, id(plan)), lambda: self._insert(plan, mode))
        conn.execute(stmt, rows)
        return len(rows)

    def delete(
        self, conn: sa.Connection, table: sa.Table, keys: tuple[str, ...], ops: Iterable[Reduced]
    ) -> int:
        """Delete rows by key (missing rows are fine: a delete is idempotent)."""
        params = [
            {
                f"k{i}": _key_value(v, table.c[k].type, self.dialect)
                for i, (k, v) in enumerate(zip(keys, op.change.key, strict=True))
            }
            for op in ops
        ]
        if not params:
            return 0
        stmt = self._cached(
            ("delete", table.fullname, keys),
            lambda: sa.delete(table).where(
                *(table.c[k] == sa.bindparam(f"k{i}") for i, k in enumerate(keys))
            ),
        )
        conn.execute(stmt, params)
        return len(params)

    def _cached(self, key: tuple[object, ...], build: Any) -> Any:
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = build()
        return stmt

    def _update(self, plan: TablePlan, values: list[str]) -> Any:
        t = plan.table
        return (
            sa.update(t)
            .where(*(t.c[k] == sa.bindparam(f"k{i}") for i, k in enumerate(plan.key_columns)))
            .values({t.c[c]: sa.bindparam(f"v{j}") for j, c in enumerate(values)})
        )

    def _insert(self, plan: TablePlan, mode: SinkMode) -> Any:
        t = plan.table
        if mode is SinkMode.INSERT:
            return sa.insert(t)
        keys = plan.key_columns
        values = [c for c in plan.columns if c not in keys]
        if self.dialect in ("postgresql", "sqlite"):
            module: Any = postgresql if self.dialect == "postgresql" else sqlite
            ins = module.insert(t)
            target = [t.c[k] for k in keys]
            if not values:
                return ins.on_conflict_do_nothing(index_elements=target)
            return ins.on_conflict_do_update(index_elements=target, set_={c: ins.excluded[c] for c in values})
        if self.dialect == "mysql":
            my = mysql.insert(t)
            # ON DUPLICATE KEY UPDATE needs one assignment even when every column is a key column.
            return my.on_duplicate_key_update({c: my.inserted[c] for c in values or keys[:1]})
        raise NotImplementedError(f"upsert on {self.dialect}: use mode insert or update")
