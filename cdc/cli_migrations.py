"""``cdc migrations``: list, show, apply and undo the SQL migrations (the outbox table, ...).

Wired into the main CLI with ``app.add_typer(migrations_app, name="migrations")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cdc.errors import CdcError
from cdc.masking import mask_dsn

migrations_app = typer.Typer(
    help=(
        "SQL migrations that add CDC tables (the transactional outbox) to your application's "
        "database: PostgreSQL, MySQL/MariaDB, SQLite.\n\n"
        "The files are plain idempotent SQL with Flyway names (V1__cdc_outbox.sql, undo: "
        "U1__cdc_outbox.sql): run them with Flyway, Liquibase or Alembic (cdc.outbox.alembic), or "
        "with 'cdc migrations apply', which records applied versions in cdc_schema_history."
    ),
    no_args_is_help=True,
)

DsnOption = Annotated[
    str,
    typer.Option(
        "--dsn",
        envvar="CDC_MIGRATIONS_DSN",
        help="SQLAlchemy URL of the application database (postgresql://, mysql://, sqlite:///path); "
        "also read from CDC_MIGRATIONS_DSN, which keeps the password off the command line",
        show_default=False,
    ),
]
DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="a migrations folder (one subfolder per dialect) instead of the packaged one",
        exists=True,
        file_okay=False,
        show_default=False,
    ),
]
DialectOption = Annotated[
    str | None,
    typer.Option("--dialect", help="postgresql, mysql or sqlite (default: all)", show_default=False),
]
VersionArg = Annotated[str, typer.Argument(help="the migration's version, e.g. 1", show_default=False)]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="print the SQL that would run; change nothing (reads the history)")
]


@contextmanager
def _errors() -> Iterator[None]:
    """A service error becomes a message on stderr and its exit code (see cdc.errors)."""
    try:
        yield
    except CdcError as exc:
        typer.echo(f"error: {mask_dsn(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _dialects(dialect: str | None) -> tuple[str, ...]:
    from cdc.migrations import DIALECTS, dialect_name

    return DIALECTS if dialect is None else (dialect_name(dialect),)


@migrations_app.command("list")
def list_migrations(dialect: DialectOption = None, dsn: DsnOption = "", directory: DirOption = None) -> None:
    """List the migrations per dialect; with --dsn, which of them the database has applied.

    Status with --dsn: applied (date), pending, FAILED (ran part-way on MySQL/SQLite: apply runs it again), or applied with no local file (the database is newer than these files).
    """
    from cdc import migrations

    with _errors():
        if not dsn:
            for name in _dialects(dialect):
                for m in migrations.discover(name, directory):
                    undo = f", undo {m.undo_file.name}" if m.undo_file else ""
                    typer.echo(f"{name:<10}  {m.version:<6}  {m.description}  ({m.script}{undo})")
            return
        for local, h in migrations.status(dsn, directory):
            version = local.version if local else h.version if h else "?"
            description = local.description if local else h.description if h else ""
            if h is None:
                state = "pending"
            elif local is None:
                state = f"applied {h.installed_on:%Y-%m-%d %H:%M} (no local file: the database is newer)"
            else:
                state = (
                    f"applied {h.installed_on:%Y-%m-%d %H:%M}" if h.success else "FAILED (apply retries it)"
                )
            typer.echo(f"{version:<6}  {description:<30}  {state}")


@migrations_app.command("show")
def show(
    version: VersionArg,
    dialect: DialectOption = None,
    undo: Annotated[bool, typer.Option("--undo", help="show the U-file that reverses it")] = False,
    directory: DirOption = None,
) -> None:
    """Print a migration's SQL file (per dialect) exactly as Flyway or Liquibase would run it."""
    from cdc import migrations

    with _errors():
        for name in _dialects(dialect):
            m = migrations.migration(name, version, directory)
            sql = m.undo_sql() if undo else m.sql()
            typer.echo(f"-- ===== {name}: {(m.undo_file if undo else m.file)}\n{sql.rstrip()}\n")


@migrations_app.command("apply")
def apply(
    dsn: DsnOption,
    dry_run: DryRunOption = False,
    target: Annotated[
        str | None,
        typer.Option("--target", help="apply up to and including this version", show_default=False),
    ] = None,
    directory: DirOption = None,
) -> None:
    """Apply every pending migration for the database's dialect, recording each in cdc_schema_history.

    Idempotent: applying again does nothing. An applied file that changed since is refused (its checksum differs): put changes into a new V-file instead.
    """
    from cdc import migrations

    with _errors():
        result = migrations.apply(dsn, target=target, dry_run=dry_run, root=directory)
        if dry_run:
            typer.echo(result.sql.rstrip() or f"-- {result.dialect}: up to date, nothing to apply")
        elif not result.migrations:
            typer.echo(f"{result.dialect}: up to date, nothing to apply")
        for m in [] if dry_run else result.migrations:
            typer.echo(f"applied {m.script} ({result.dialect})")


@migrations_app.command("undo")
def undo(
    version: VersionArg, dsn: DsnOption, dry_run: DryRunOption = False, directory: DirOption = None
) -> None:
    """Reverse an applied migration with its U-file and delete its history row.

    For the outbox this DROPS the table with every event not yet relayed. Undo the newest version first; a version that is not applied is left alone.
    """
    from cdc import migrations

    with _errors():
        result = migrations.undo(dsn, version, dry_run=dry_run, root=directory)
        if not result.migrations:
            typer.echo(f"{result.dialect}: version {version} is not applied, nothing to undo")
        elif dry_run:
            typer.echo(result.sql.rstrip())
        else:
            typer.echo(f"undone {result.migrations[0].script} ({result.dialect})")


audit_app = typer.Typer(
    help=(
        "Trigger audit capture: an audit table and triggers that record every row change of the chosen "
        "tables (for databases whose log is out of reach). The 'audit' source relays them to Kafka.\n\n"
        "TARGET is the application database's URL (postgresql://, mysql://, sqlite:///path) or an audit "
        "connector's config file (its source.url and its streams' capture.table are used)."
    ),
    no_args_is_help=True,
)
migrations_app.add_typer(audit_app, name="audit")

TargetArg = Annotated[
    str, typer.Argument(help="database URL or an audit connector's config file", show_default=False)
]
TablesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--table", help="a table to audit, schema-qualified where needed (repeatable)", show_default=False
    ),
]
SchemaOption = Annotated[
    str | None,
    typer.Option(
        "--schema", help="PostgreSQL: schema of the audit table and function (default: current schema)"
    ),
]
TruncateOption = Annotated[
    bool, typer.Option("--truncate", help="PostgreSQL: also record TRUNCATE (a statement trigger)")
]


def _audit_target(
    target: str, tables: list[str] | None, schema: str | None
) -> tuple[str, list[str], str | None]:
    """URL, tables and schema from the command line, or from an audit connector's config."""
    path = Path(target)
    if "://" in target or not path.is_file():
        return target, list(tables or []), schema
    from cdc.config import load_config

    cfg = load_config(path)
    options = cfg.source.options()
    url = options.get("url")
    if not url:
        from cdc.errors import ConfigError

        raise ConfigError([f"{path}: source.url is missing"], source="audit")
    configured = [
        str(s.capture["table"]) for s in cfg.streams if isinstance(s.capture, dict) and "table" in s.capture
    ]
    return str(getattr(url, "secret", url)), list(tables or configured), schema or options.get("audit_schema")


@audit_app.command("render")
def audit_render(
    target: TargetArg,
    table: TablesOption = None,
    schema: SchemaOption = None,
    truncate: TruncateOption = False,
) -> None:
    """Print the SQL that apply runs (audit table, function, triggers) for review; change nothing."""
    from cdc.audit import generator

    with _errors():
        url, tables, schema = _audit_target(target, table, schema)
        typer.echo(generator.render(url, tables, schema=schema, truncate=truncate).rstrip())


@audit_app.command("apply")
def audit_apply(
    target: TargetArg,
    table: TablesOption = None,
    schema: SchemaOption = None,
    truncate: TruncateOption = False,
) -> None:
    """Create the audit table (if missing) and install or refresh the tables' triggers. Idempotent."""
    from cdc.audit import generator

    with _errors():
        url, tables, schema = _audit_target(target, table, schema)
        for t in generator.apply(url, tables, schema=schema, truncate=truncate):
            typer.echo(f"audited {t.qualified} ({len(t.columns)} columns, key {', '.join(t.key)})")


@audit_app.command("backfill")
def audit_backfill(target: TargetArg, table: TablesOption = None, schema: SchemaOption = None) -> None:
    """Record every current row of audited tables as a read, so the relay publishes an initial copy.

    Runs after apply (a change made meanwhile is also recorded). Each table is read under a share lock (PostgreSQL: LOCK TABLE ... IN SHARE MODE; MySQL: LOCK IN SHARE MODE), which holds writers off for the duration.
    """
    from cdc.audit import generator

    with _errors():
        url, tables, schema = _audit_target(target, table, schema)
        for name, count in generator.backfill(url, tables, schema=schema).items():
            typer.echo(f"recorded {count} row(s) of {name}")


@audit_app.command("drop")
def audit_drop(
    target: TargetArg,
    table: TablesOption = None,
    schema: SchemaOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="also drop an audit table that still holds unrelayed rows")
    ] = False,
    dry_run: DryRunOption = False,
) -> None:
    """Remove the tables' triggers; the audit table and function too once no audited table remains."""
    from cdc.audit import generator

    with _errors():
        url, tables, schema = _audit_target(target, table, schema)
        sql = generator.drop(url, tables, schema=schema, force=force, dry_run=dry_run)
        typer.echo(sql.rstrip() if dry_run else f"dropped the audit triggers of {', '.join(tables)}")


@audit_app.command("check")
def audit_check(target: TargetArg, table: TablesOption = None, schema: SchemaOption = None) -> None:
    """Report per table whether its triggers are installed, enabled and current (exit 7 if not)."""
    from cdc.audit import generator

    with _errors():
        url, tables, schema = _audit_target(target, table, schema)
        findings = generator.check(url, tables, schema=schema)
    failed = False
    for f in findings:
        mark = "ok  " if f.ok else ("warn" if f.warning else "FAIL")
        failed |= not f.ok and not f.warning
        typer.echo(f"[{mark}] {f.what}" + (f": {f.detail}" if f.detail else ""))
    if failed:
        raise typer.Exit(7)
