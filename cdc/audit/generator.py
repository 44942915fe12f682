"""Render, apply, drop and check the audit tables and triggers of chosen tables.

``apply`` is idempotent (the shared objects are created if missing, each table's triggers are
replaced atomically where the dialect allows: PostgreSQL and SQLite in one transaction, MariaDB
with CREATE OR REPLACE TRIGGER) and records each audited table with its column list in
``cdc_audit_tables``. ``check`` compares that record with the table's current columns: the
MySQL/SQLite triggers list columns explicitly, so a gained, lost or retyped column makes them
stale until ``apply`` runs again. ``drop`` removes the triggers and registry rows of the named
tables, and the shared objects only when no audited table remains (and, unless forced, no
unrelayed audit row).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import sqlalchemy as sa

from cdc.audit import sql_mysql, sql_pg, sql_sqlite
from cdc.audit.catalog import (
    LOG_TABLE,
    REGISTRY_TABLE,
    AuditedTable,
    default_schema,
    dialect_of,
    inspect_table,
)
from cdc.errors import ConfigError, SourceConfigError
from cdc.masking import mask_dsn

_SQL: dict[str, ModuleType] = {"postgresql": sql_pg, "mysql": sql_mysql, "sqlite": sql_sqlite}
_LOG_COLUMNS = frozenset({"id", "table_schema", "table_name", "op", "before", "after", "ts", "relayed_at"})


@dataclass(frozen=True)
class Finding:
    """One result of ``check``: ok, or a problem with what to do."""

    ok: bool
    what: str
    detail: str = ""
    warning: bool = False


@dataclass
class Target:
    """An open database plus where the shared audit objects live (PostgreSQL schema)."""

    engine: sa.Engine
    where: str
    dialect: str
    schema: str
    mariadb: bool
    owned: bool

    @property
    def sql(self) -> ModuleType:
        return _SQL[self.dialect]

    def close(self) -> None:
        if self.owned:
            self.engine.dispose()


@contextmanager
def open_target(url: str | sa.Engine, schema: str | None = None) -> Iterator[Target]:
    """Open ``url`` (an Engine is used as is); driver errors become the service's errors."""
    from cdc.sql.engines import create_engine, translate

    owned = not isinstance(url, sa.Engine)
    engine = create_engine(url) if isinstance(url, str) else url
    where = mask_dsn(url) if isinstance(url, str) else mask_dsn(url.url.render_as_string(hide_password=True))
    target = None
    try:
        with engine.connect() as conn:
            dialect = dialect_of(conn)
            audit_schema = schema or default_schema(conn)
        target = Target(
            engine, where, dialect, audit_schema, bool(getattr(engine.dialect, "is_mariadb", False)), owned
        )
        yield target
    except sa.exc.SQLAlchemyError as exc:
        raise translate(exc, f"audit capture on {where}") from None
    finally:
        if target is not None:
            target.close()
        elif owned:
            engine.dispose()


def _tables(target: Target, names: Sequence[str]) -> list[AuditedTable]:
    if not names:
        raise ConfigError(["name at least one table with --table"], source="audit")
    with target.engine.connect() as conn:
        return [inspect_table(conn, n) for n in dict.fromkeys(names)]


def _install(target: Target, table: AuditedTable, truncate: bool) -> list[str]:
    if target.dialect == "mysql":
        return sql_mysql.install(target.schema, table, truncate, mariadb=target.mariadb)
    return list(target.sql.install(target.schema, table, truncate))


def render(
    url: str | sa.Engine, tables: Sequence[str], *, schema: str | None = None, truncate: bool = False
) -> str:
    """The SQL ``apply`` runs, for review: shared objects, then each table's triggers."""
    with open_target(url, schema) as target:
        audited = _tables(target, tables)
        parts = [f"-- liberator-cdc audit capture ({target.dialect}): shared objects, created if missing"]
        parts += [f"{s};\n" for s in target.sql.setup(target.schema)]
        for t in audited:
            parts.append(f"-- {t.qualified}: triggers (columns {', '.join(c.name for c in t.columns)})")
            parts += [f"{s};\n" for s in _install(target, t, truncate)]
            parts.append(f"-- and records {t.qualified} with its column list in {REGISTRY_TABLE}\n")
        return "\n".join(parts)


def _check_log_table(conn: sa.Connection, target: Target) -> None:
    inspector = sa.inspect(conn)
    schema = target.schema if target.dialect == "postgresql" else None
    if inspector.has_table(LOG_TABLE, schema=schema):
        with warnings.catch_warnings():  # SQLAlchemy does not know xid8; only the names matter here
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            have = {c["name"].lower() for c in inspector.get_columns(LOG_TABLE, schema=schema)}
        if missing := sorted(_LOG_COLUMNS - have):
            raise SourceConfigError(
                f"a table {LOG_TABLE} already exists without the columns {', '.join(missing)}",
                hint="it is not the audit log: rename or drop it, then apply again",
            )


def _registry_name(target: Target) -> str:
    if target.dialect == "postgresql":
        return f"{sql_pg.q(target.schema)}.{sql_pg.q(REGISTRY_TABLE)}"
    return target.sql.q(REGISTRY_TABLE)  # type: ignore[no-any-return]


Bound = tuple[str, dict[str, str]]  # SQL with :named parameters (sqlite3 and sa.text share the syntax)


def _unregister(target: Target, t: AuditedTable) -> Bound:
    reg = _registry_name(target)
    return f"DELETE FROM {reg} WHERE table_schema = :s AND table_name = :t", {"s": t.schema, "t": t.name}  # noqa: S608 - quoted name, bound values


def _register(target: Target, t: AuditedTable) -> list[Bound]:
    reg = _registry_name(target)
    insert = f"INSERT INTO {reg} (table_schema, table_name, columns) VALUES (:s, :t, :c)"  # noqa: S608 - quoted name, bound values
    return [_unregister(target, t), (insert, {"s": t.schema, "t": t.name, "c": t.signature()})]


def _run(target: Target, statements: list[str], bound: list[Bound] | None = None) -> None:
    """Statements, then bound bookkeeping, in one transaction where the dialect's DDL is transactional."""
    if target.dialect == "sqlite":
        with target.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            previous = raw.isolation_level
            raw.isolation_level = None  # BEGIN/COMMIT issued here, around the DDL too
            try:
                raw.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in statements:
                        raw.execute(stmt)
                    for text, params in bound or []:
                        raw.execute(text, params)
                    raw.execute("COMMIT")
                except BaseException:
                    raw.execute("ROLLBACK")
                    raise
            finally:
                raw.isolation_level = previous
        return
    with target.engine.begin() as conn:
        for stmt in statements:
            conn.exec_driver_sql(stmt, execution_options={"no_parameters": True})
        for text, params in bound or []:
            conn.execute(sa.text(text), params)


def apply(
    url: str | sa.Engine, tables: Sequence[str], *, schema: str | None = None, truncate: bool = False
) -> list[AuditedTable]:
    """Create what is missing and (re)install the tables' triggers; returns the tables."""
    with open_target(url, schema) as target:
        audited = _tables(target, tables)
        with target.engine.connect() as conn:
            _check_log_table(conn, target)
        _run(target, target.sql.setup(target.schema))
        for t in audited:
            _run(target, _install(target, t, truncate), _register(target, t))
        return audited


def backfill(url: str | sa.Engine, tables: Sequence[str], *, schema: str | None = None) -> dict[str, int]:
    """Record every current row of each (audited) table as a read, so the relay publishes an
    initial copy through the same path and value encoding as the changes; rows per table."""
    with open_target(url, schema) as target:
        audited = _tables(target, tables)
        recorded = registered(target)
        if missing := [t.qualified for t in audited if (t.schema, t.name) not in recorded]:
            raise SourceConfigError(
                f"not audited: {', '.join(missing)}",
                hint="apply the audit triggers first (a later change would be missed)",
            )
        counts: dict[str, int] = {}
        for t in audited:
            with target.engine.begin() as conn:  # one transaction per table: its lock, its rows
                result = None
                for stmt in target.sql.backfill(target.schema, t):
                    result = conn.exec_driver_sql(stmt, execution_options={"no_parameters": True})
                counts[t.qualified] = result.rowcount if result is not None else 0
        return counts


def registered(target: Target) -> dict[tuple[str, str], list[list[str]]]:
    """The registry: (schema, table) -> [[column, type], ...] as recorded at apply."""
    with target.engine.connect() as conn:
        schema = target.schema if target.dialect == "postgresql" else None
        if not sa.inspect(conn).has_table(REGISTRY_TABLE, schema=schema):
            return {}
        query = f"SELECT table_schema, table_name, columns FROM {_registry_name(target)}"  # noqa: S608 - quoted name
        return {(str(r[0]), str(r[1])): json.loads(r[2]) for r in conn.exec_driver_sql(query)}


def installed_triggers(conn: sa.Connection, table: AuditedTable) -> dict[str, bool]:
    """The table's trigger names -> enabled."""
    dialect = dialect_of(conn)
    if dialect == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT t.tgname, t.tgenabled <> 'D' FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t "
                "AND NOT t.tgisinternal"
            ),
            {"s": table.schema, "t": table.name},
        )
    elif dialect == "mysql":
        rows = conn.execute(
            sa.text(
                "SELECT TRIGGER_NAME, 1 FROM information_schema.TRIGGERS "
                "WHERE EVENT_OBJECT_SCHEMA = :s AND EVENT_OBJECT_TABLE = :t"
            ),
            {"s": table.schema, "t": table.name},
        )
    else:
        rows = conn.execute(
            sa.text("SELECT name, 1 FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
            {"t": table.name},
        )
    return {str(r[0]): bool(r[1]) for r in rows}


def check_tables(target: Target, audited: Sequence[AuditedTable]) -> list[Finding]:
    """Per table: triggers present and enabled, and the recorded columns equal the current ones."""
    recorded = registered(target)
    findings: list[Finding] = []
    with target.engine.connect() as conn:
        for t in audited:
            have = installed_triggers(conn, t)
            missing = [n for n in target.sql.trigger_names(t, False) if not have.get(n)]
            if missing or (t.schema, t.name) not in recorded:
                findings.append(
                    Finding(False, f"{t.qualified}: audit triggers missing or disabled ({', '.join(missing) or 'not registered'})",
                            "run: cdc migrations audit apply ... --table " + t.qualified)
                )  # fmt: skip
                continue
            before = recorded[(t.schema, t.name)]
            now = [[c.name, c.type] for c in t.columns]
            if before != now:
                findings.append(_drift(target.dialect, t, before, now))
            else:
                findings.append(Finding(True, f"{t.qualified}: audit triggers installed and current"))
    return findings


def _drift(dialect: str, t: AuditedTable, before: list[list[str]], now: list[list[str]]) -> Finding:
    old, new = dict((c[0], c[1]) for c in before), dict((c[0], c[1]) for c in now)
    changes = [f"+{n}" for n in new if n not in old] + [f"-{n}" for n in old if n not in new]
    changes += [f"{n}: {old[n]} -> {new[n]}" for n in new if n in old and old[n] != new[n]]
    what = f"{t.qualified}: columns changed since the audit triggers were applied ({'; '.join(changes) or 'order'})"
    fix = "run: cdc migrations audit apply ... --table " + t.qualified
    if dialect == "postgresql":  # the generic function captures whole rows: nothing is lost
        return Finding(
            False,
            what,
            f"the generic trigger still captures every column; {fix} to record the new shape",
            warning=True,
        )
    return Finding(False, what + ": the triggers are STALE (they list the old columns)", fix)


def check(url: str | sa.Engine, tables: Sequence[str], *, schema: str | None = None) -> list[Finding]:
    with open_target(url, schema) as target:
        return check_tables(target, _tables(target, tables))


def drop(
    url: str | sa.Engine,
    tables: Sequence[str],
    *,
    schema: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> str:
    """Remove the named tables' triggers and registry rows; the shared objects once none remain.

    Returns the SQL run (or, with ``dry_run``, that would run).
    """
    with open_target(url, schema) as target:
        with target.engine.connect() as conn:
            audited = [inspect_table(conn, n) for n in dict.fromkeys(tables)]
        recorded = registered(target)
        remaining = set(recorded) - {(t.schema, t.name) for t in audited}
        statements = [s for t in audited for s in target.sql.remove(t)]
        teardown = not remaining
        if teardown and not force:
            pending = _pending_rows(target)
            if pending:
                raise SourceConfigError(
                    f"{LOG_TABLE} still holds {pending} audit row(s) the relay has not published",
                    hint="let the relay drain it, or drop with --force to discard them",
                )
        if teardown:
            statements += target.sql.teardown(target.schema)
        bookkeeping = [] if teardown or not recorded else [_unregister(target, t) for t in audited]
        if not dry_run:
            _run(target, statements, bookkeeping)
        return "".join(f"{s};\n" for s in statements)


def _pending_rows(target: Target) -> int:
    schema = target.schema if target.dialect == "postgresql" else None
    with target.engine.connect() as conn:
        if not sa.inspect(conn).has_table(LOG_TABLE, schema=schema):
            return 0
        log = sa.table(LOG_TABLE, sa.column("relayed_at"), schema=schema)
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(log).where(log.c.relayed_at.is_(None))
            ).scalar()
            or 0
        )
