"""Target tables: reflect, auto-create from the Avro schema, evolve additively, or refuse.

DDL runs in its own short transaction before a batch's data transaction, and is idempotent:
when another instance creates the table or adds the column first, the failure is absorbed by
re-reading the catalog. Any change other than a new optional field stops with a SchemaError.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa

from cdc.errors import SchemaError
from cdc.sink.columns import (
    Converter,
    DatabaseText,
    FieldSpec,
    compatible,
    converter,
    database_text,
    sql_type,
)
from cdc.sink.errors import TableMismatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TablePlan:
    """How rows of one (key schema, value schema) pair are written into one table."""

    table: sa.Table
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]  # every written column, keys first
    converters: dict[str, Converter]  # only the columns that need one
    #: each column's Avro kind ("long", "array<string>" ...): what Python type its values have
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.table.fullname


def _dialect(engine: sa.Engine) -> str:
    return "mysql" if engine.dialect.name == "mariadb" else engine.dialect.name


class TableManager:
    """Builds TablePlans, creating and evolving tables as the config allows. Caches by schema ids."""

    def __init__(self, engine: sa.Engine, *, auto_create: bool, auto_evolve: bool) -> None:
        self.engine = engine
        self.dialect = _dialect(engine)
        self.auto_create = auto_create
        self.auto_evolve = auto_evolve
        self._plans: dict[tuple[object, ...], TablePlan] = {}
        self._reflected: dict[tuple[str | None, str], sa.Table | None] = {}
        self._lock = threading.Lock()

    def existing(self, schema: str | None, name: str) -> sa.Table | None:
        """The reflected table, or None when it does not exist (cached; refreshed after DDL)."""
        ident = (schema, name)
        if ident not in self._reflected:
            try:
                self._reflected[ident] = sa.Table(
                    name, sa.MetaData(), schema=schema, autoload_with=self.engine, resolve_fks=False
                )
            except sa.exc.NoSuchTableError:
                return None  # not cached: it may be created later
        return self._reflected[ident]

    def plan(
        self,
        schema: str | None,
        name: str,
        fields: list[FieldSpec],
        key_columns: tuple[str, ...],
        *,
        inserts: bool,
        cache_key: tuple[object, ...],
    ) -> TablePlan:
        """The plan for writing ``fields`` (keys first) into the table, after any needed DDL."""
        found = self._plans.get(cache_key)
        if found is not None:
            return found
        with self._lock:
            plan = self._build(schema, name, fields, key_columns, inserts)
            self._plans[cache_key] = plan
            return plan

    def _build(
        self, schema: str | None, name: str, fields: list[FieldSpec], keys: tuple[str, ...], inserts: bool
    ) -> TablePlan:
        by_name = {f.name: f for f in fields}
        missing_keys = [k for k in keys if k not in by_name]
        if missing_keys:
            raise TableMismatchError(
                f"table {name!r}: key column(s) {missing_keys} are not fields of the record"
            )
        table = self.existing(schema, name)
        if table is None:
            if not self.auto_create:
                raise SchemaError(
                    f"table {name!r} does not exist", hint="create it, or set auto_create: true"
                )
            table = self._create(schema, name, fields, keys)
        self._check_keys(table, keys)
        added = [f for f in fields if f.name not in table.c]
        if added:
            table = self._evolve(table, added)
        problems = [
            f"column {f.name!r} is {table.c[f.name].type} but the field is Avro {f.describe()}"
            for f in fields
            if not compatible(f, table.c[f.name].type, self.dialect)
        ]
        if inserts:
            problems += [
                f"column {c.name!r} is NOT NULL without a default, and the schema has no field for it"
                for c in table.c
                if c.name not in by_name
                and not c.nullable
                and c.server_default is None
                and c.autoincrement is not True
            ]
        if problems:
            raise TableMismatchError(
                f"table {table.fullname!r} does not fit the record's schema: " + "; ".join(problems),
                hint="only a new optional field is applied automatically; migrate the table by hand",
            )
        convs = {
            f.name: conv
            for f in fields
            if (conv := converter(f, table.c[f.name].type, self.dialect)) is not None
        }
        texts = {f.name for f in fields if database_text(f, table.c[f.name].type, self.dialect)}
        kinds = {f.name: f"array<{f.item.kind}>" if f.item is not None else f.kind for f in fields}
        return TablePlan(_bound_as_text(table, texts), keys, tuple(f.name for f in fields), convs, kinds)

    def _check_keys(self, table: sa.Table, keys: tuple[str, ...]) -> None:
        """Upserts and deletes address rows by key: the key must be the primary key or unique."""
        pk = {c.name for c in table.primary_key.columns}
        if pk == set(keys):
            return
        inspector = sa.inspect(self.engine)
        uniques: list[set[str | None]] = [
            set(u["column_names"]) for u in inspector.get_unique_constraints(table.name, table.schema)
        ]
        uniques += [
            set(i["column_names"]) for i in inspector.get_indexes(table.name, table.schema) if i.get("unique")
        ]
        if set(keys) not in uniques:
            raise SchemaError(
                f"table {table.fullname!r}: the key {list(keys)} is neither its primary key {sorted(pk)} nor unique",
                hint="add a primary key or unique constraint on the key columns, or set the topic's key:",
            )

    def _create(
        self, schema: str | None, name: str, fields: list[FieldSpec], keys: tuple[str, ...]
    ) -> sa.Table:
        columns = [
            sa.Column(
                f.name,
                sql_type(f, self.dialect, key=f.name in keys),
                primary_key=f.name in keys,
                nullable=f.name not in keys and f.nullable,
                autoincrement=False,
            )
            for f in fields
        ]
        table = sa.Table(name, sa.MetaData(), *columns, schema=schema)
        try:
            with self.engine.begin() as conn:
                table.create(conn, checkfirst=True)
            log.info("created table %s", table.fullname)
        except sa.exc.DBAPIError:
            if not sa.inspect(self.engine).has_table(name, schema):
                raise
            log.info("table %s was created concurrently by another instance", table.fullname)
        return self._refresh(schema, name)

    def _evolve(self, table: sa.Table, added: list[FieldSpec]) -> sa.Table:
        refused = [f.name for f in added if not f.optional]
        if refused:
            raise TableMismatchError(
                f"table {table.fullname!r}: new field(s) {refused} are required (not nullable, no default)",
                hint="a new field needs a default or a null branch to be added as a nullable column",
            )
        if not self.auto_evolve:
            raise SchemaError(
                f"table {table.fullname!r} lacks column(s) {[f.name for f in added]}",
                hint="add them, or set auto_evolve: true",
            )
        preparer = self.engine.dialect.identifier_preparer
        for f in added:
            column = sa.Column(f.name, sql_type(f, self.dialect), nullable=True)
            spec = sa.schema.CreateColumn(column).compile(dialect=self.engine.dialect)
            # Identifiers are quoted by SQLAlchemy's preparer; there are no values in DDL.
            ddl = f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {spec}"
            try:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
                log.info("added column %s.%s (%s)", table.fullname, f.name, f.describe())
            except sa.exc.DBAPIError:
                columns = {c["name"] for c in sa.inspect(self.engine).get_columns(table.name, table.schema)}
                if f.name not in columns:
                    raise
                log.info("column %s.%s was added concurrently", table.fullname, f.name)
        return self._refresh(table.schema, table.name)

    def _refresh(self, schema: str | None, name: str) -> sa.Table:
        self._reflected.pop((schema, name), None)
        table = self.existing(schema, name)
        if table is None:
            raise SchemaError(f"table {name!r} vanished right after DDL")
        return table


def _bound_as_text(table: sa.Table, columns: set[str]) -> sa.Table:
    """``table`` with ``columns`` bound as text and cast by the database (a copy: the reflected
    table keeps its real types for the next compatibility check)."""
    if not columns:
        return table
    copy = sa.Table(
        table.name,
        sa.MetaData(),
        *(c._copy() for c in table.c),
        schema=table.schema,
    )
    for name in columns:
        copy.c[name].type = DatabaseText(table.c[name].type)
    return copy
