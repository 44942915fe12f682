"""Write reduced changes into tables: per-dialect upsert, insert, update and delete statements.

Statements bind every value as a parameter and let SQLAlchemy quote identifiers. Rows of one
plan share their columns, so each statement runs once with many parameter sets (SQLAlchemy
batches inserts into multi-row VALUES).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import mysql, postgresql, sqlite

from cdc.sink.columns import Converter
from cdc.sink.config import SinkMode
from cdc.sink.records import Reduced
from cdc.sink.tables import TablePlan

#: below this many rows a batch is written with plain statements (COPY has a fixed cost)
_COPY_MIN_ROWS = 50

#: column types whose text form COPY parses exactly like a bound parameter (and arrays of
#: them); others (JSON, enums, intervals, ranges ...) keep the statement path and SQLAlchemy's
#: bind processors
_COPYABLE_TYPES = (
    sa.Integer, sa.Numeric, sa.Float, sa.String, sa.Boolean, sa.Date, sa.DateTime, sa.Time, sa.LargeBinary,
    sa.Uuid,
)  # fmt: skip


def _copyable_type(t: sa.types.TypeEngine[Any]) -> bool:
    if isinstance(t, sa.ARRAY):  # a list becomes an array literal; its items must qualify
        return _copyable_type(t.item_type)
    return (
        isinstance(t, _COPYABLE_TYPES)
        and not isinstance(t, sa.Enum)
        and not (isinstance(t, sa.Time) and t.timezone)
    )


def _copyable(plan: TablePlan) -> bool:
    return all(_copyable_type(plan.table.c[c].type) for c in plan.columns)


def _utc_wall_clock(value: Any) -> Any:
    """What a bound aware datetime becomes in a ``timestamp`` column (sessions run in UTC); as
    COPY text, PostgreSQL would drop the offset instead of converting."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _naive_timestamp_columns(plan: TablePlan) -> frozenset[str]:
    return frozenset(
        c for c in plan.columns if isinstance(t := plan.table.c[c].type, sa.DateTime) and not t.timezone
    )


#: PostgreSQL column types (``format_type`` without modifiers) that binary COPY fills from the
#: values of these Avro kinds: the decoded Python type is always the one psycopg's binary dumper
#: for that type takes, and the server's binary input applies the column's modifiers (numeric
#: scale and precision, varchar length) as its text input does. Anything else (real: a double
#: rounded to float4 on the client might differ from the server's rounding of its text; domains,
#: smallint, arrays of other types) stays text COPY.
_BINARY_KINDS: dict[str, frozenset[str]] = {
    "bigint": frozenset({"int", "long"}),
    "integer": frozenset({"int"}),
    "text": frozenset({"string"}),
    "character varying": frozenset({"string"}),
    "numeric": frozenset({"decimal"}),
    "boolean": frozenset({"boolean"}),
    "timestamp with time zone": frozenset({"timestamp"}),  # always aware from Avro timestamp-*
    "timestamp without time zone": frozenset({"local_timestamp", "timestamp"}),  # naive (UTC wall clock)
    "date": frozenset({"date"}),
    "double precision": frozenset({"float", "double"}),
    "bytea": frozenset({"bytes"}),
    "uuid": frozenset({"uuid"}),
    "text[]": frozenset({"array<string>"}),
}


def binary_types(plan: TablePlan, column_types: dict[str, str]) -> list[str] | None:
    """The types to COPY the plan's columns with in binary, or None to use text COPY.

    ``column_types``: each column's ``format_type(atttypid, NULL)`` in the target table. A column
    with a converter keeps text: its values are no longer of the kind's type."""
    if plan.converters:
        return None
    types: list[str] = []
    for c in plan.columns:
        pg_type, kind = column_types.get(c), plan.kinds.get(c)
        if pg_type is None or kind is None or kind not in _BINARY_KINDS.get(pg_type, ()):
            return None
        types.append(pg_type)
    return types


def _column_types(cur: psycopg.Cursor[Any], table: sa.Table) -> dict[str, str]:
    """The target table's column types as PostgreSQL names them (one catalog query per plan)."""
    target = sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    cur.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (target.as_string(cur),),
    )
    return {str(name): str(pg_type) for name, pg_type in cur.fetchall()}


def _copy_steps(plan: TablePlan) -> list[tuple[str, Converter | None]] | None:
    """Per column of a COPY: the converter its value needs (None: as is); None when no column needs one."""
    naive = _naive_timestamp_columns(plan)
    steps: list[tuple[str, Converter | None]] = []
    for c in plan.columns:
        conv = plan.converters.get(c)
        if c in naive:
            conv = _utc_wall_clock if conv is None else _then_utc_wall_clock(conv)
        steps.append((c, conv))
    return steps if any(f is not None for _, f in steps) else None


def _then_utc_wall_clock(conv: Converter) -> Converter:
    return lambda value: _utc_wall_clock(conv(value))


def _picker(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], Sequence[Any]]:
    """The columns' values of a row dict as a sequence (KeyError when the row lacks one)."""
    if len(columns) == 1:
        (only,) = columns
        return lambda row: (row[only],)
    return operator.itemgetter(*columns)


def _copy_statements(
    plan: TablePlan, mode: SinkMode
) -> tuple[sql.Composed, sql.Composed, sql.Composed, sql.Composed, sql.Composed]:
    """CREATE (once per session), COPY (text, binary), INSERT ... SELECT and clearing for one
    plan's staging table."""
    t = plan.table
    target = sql.Identifier(t.schema, t.name) if t.schema else sql.Identifier(t.name)
    # One staging table per target shape and mode; temporary, so private to the session.
    digest = hashlib.blake2b(repr((t.fullname, plan.columns, mode.value)).encode(), digest_size=8).hexdigest()
    stage = sql.Identifier(f"cdc_stage_{digest}")
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in plan.columns)
    create = sql.SQL(
        "CREATE TEMPORARY TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
    ).format(stage, cols, target)
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)
    copy_binary = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, cols)
    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(target, cols, cols, stage)
    if mode is not SinkMode.INSERT:
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in plan.key_columns)
        values = [c for c in plan.columns if c not in plan.key_columns]
        if values:
            sets = sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in values
            )
            insert = sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET {}").format(insert, keys, sets)
        else:
            insert = sql.SQL("{} ON CONFLICT ({}) DO NOTHING").format(insert, keys)
    clear = sql.SQL("TRUNCATE {}").format(stage)
    return create, copy, copy_binary, insert, clear


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
        self.copied_rows = 0  # rows written through the PostgreSQL COPY path (logs, tests)
        self.binary_rows = 0  # of which in binary COPY

    def upsert(
        self,
        conn: sa.Connection,
        plan: TablePlan,
        mode: SinkMode,
        ops: Sequence[Reduced],
        sent: Callable[[], None] | None = None,
    ) -> int:
        """Write the rows of changes that share one plan (and one mode). ``sent`` is called once
        the rows are with the database and what remains is its work (the COPY path's
        ``INSERT ... SELECT``), or at once on the statement paths."""
        if not ops:
            return 0
        if (
            mode is not SinkMode.UPDATE
            and self.dialect == "postgresql"
            and conn.dialect.driver == "psycopg"
            and len(ops) >= _COPY_MIN_ROWS
            and self._cached(("copyable", id(plan)), lambda: _copyable(plan))
        ):
            self._copy_upsert(conn, plan, mode, ops, sent)
            return len(ops)
        if sent is not None:
            sent()
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

    def _copy_upsert(
        self,
        conn: sa.Connection,
        plan: TablePlan,
        mode: SinkMode,
        ops: Sequence[Reduced],
        sent: Callable[[], None] | None = None,
    ) -> None:
        """PostgreSQL: COPY the rows into a session-local staging table, then one
        ``INSERT ... SELECT ... ON CONFLICT``: one round trip of rows instead of one statement
        per row. Same transaction, same upsert semantics; data errors surface as SQLAlchemy's
        DataError/IntegrityError so the caller's row-by-row path finds the culprit."""
        create, copy_text, copy_binary, insert, clear = self._cached(
            ("copy", mode, id(plan)), lambda: _copy_statements(plan, mode)
        )
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, psycopg.Connection), "the COPY path needs the psycopg driver"
        columns = plan.columns
        # Per column, what its value goes through: the plan's converter, then (timestamp columns)
        # the UTC wall clock. Without any, the row's values are picked in C by one itemgetter.
        steps = self._cached(("copy-steps", id(plan)), lambda: _copy_steps(plan))
        pick = self._cached(("pick", id(plan)), lambda: _picker(columns))
        try:
            with raw.cursor() as cur:
                cur.execute(create)
                key = ("binary", id(plan))
                if key not in self._statements:
                    self._statements[key] = binary_types(plan, _column_types(cur, plan.table))
                types: list[str] | None = self._statements[key]
                # Binary COPY: about half the client CPU per row of text COPY, and less parsing
                # on the server.
                with cur.copy(copy_text if types is None else copy_binary) as pipe:
                    if types is not None:
                        pipe.set_types(types)
                    write_row = pipe.write_row
                    if steps is None:
                        for op in ops:
                            row = op.change.row
                            assert row is not None
                            try:
                                write_row(pick(row))
                            except KeyError:  # a field the row lacks is NULL, as row.get(c) gives
                                write_row([row.get(c) for c in columns])
                    else:
                        for op in ops:
                            row = op.change.row
                            assert row is not None
                            write_row([row.get(c) if f is None else f(row.get(c)) for c, f in steps])
                if sent is not None:
                    sent()
                cur.execute(insert)
                cur.execute(clear)
            self.copied_rows += len(ops)
            if types is not None:
                self.binary_rows += len(ops)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            error = (
                sa.exc.IntegrityError if isinstance(exc, psycopg.errors.IntegrityError) else sa.exc.DataError
            )
            raise error(insert.as_string(raw), None, exc) from exc

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
