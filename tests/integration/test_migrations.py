"""The outbox migrations and their runner on PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner, Result

from cdc import migrations
from cdc.cli_migrations import migrations_app
from cdc.errors import ConfigError, SourceConfigError
from cdc.outbox.alembic import downgrade_outbox, upgrade_outbox
from cdc.sql.engines import normalize_url

pytestmark = pytest.mark.integration

OUTBOX_COLUMNS = {
    "id",
    "aggregatetype",
    "aggregateid",
    "type",
    "payload",
    "timestamp",
    "schema_subject",
    "schema_version",
    "headers",
    "seq",
}


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each dialect."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_database"))
    if request.param == "mysql":
        return str(request.getfixturevalue("mysql_database"))
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(normalize_url(db_url))
    yield eng
    eng.dispose()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A private copy of the packaged migrations, free to be changed by a test."""
    copy = tmp_path / "migrations"
    shutil.copytree(str(migrations.migrations_root()), copy)
    return copy


def dialect_of(engine: sa.Engine) -> str:
    return migrations.dialect_name(engine)


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def history(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM cdc_schema_history ORDER BY version")).mappings()
        return [dict(r) for r in rows]


def cli(*args: str) -> Result:
    """Run `cdc migrations ...` through a tiny app, as cdc.cli will mount it."""
    app = typer.Typer()
    app.add_typer(migrations_app, name="migrations")
    return CliRunner().invoke(app, ["migrations", *args])


def test_apply_twice_records_one_version(db_url: str, engine: sa.Engine) -> None:
    first = migrations.apply(db_url)
    assert [m.script for m in first.migrations] == ["V1__cdc_outbox.sql"]
    assert {c["name"].lower() for c in sa.inspect(engine).get_columns("cdc_outbox")} == OUTBOX_COLUMNS

    again = cli("apply", "--dsn", db_url)
    assert again.exit_code == 0, again.output
    assert "up to date, nothing to apply" in again.output
    assert migrations.apply(db_url).migrations == []

    (row,) = history(engine)
    v1 = migrations.migration(dialect_of(engine), "1")
    assert (row["version"], row["description"], row["script"]) == ("1", "cdc outbox", "V1__cdc_outbox.sql")
    assert row["checksum"] == v1.checksum and len(row["checksum"]) == 64
    assert bool(row["success"]) is True and row["installed_on"] is not None


def test_outbox_indexes_for_the_relay(db_url: str, engine: sa.Engine) -> None:
    migrations.apply(db_url)
    inspector = sa.inspect(engine)
    indexed = [tuple(i["column_names"]) for i in inspector.get_indexes("cdc_outbox")]
    indexed += [tuple(u["column_names"]) for u in inspector.get_unique_constraints("cdc_outbox")]
    assert ("aggregatetype", "aggregateid", "seq") in indexed
    primary = tuple(inspector.get_pk_constraint("cdc_outbox")["constrained_columns"])
    assert ("seq",) in [*indexed, primary]  # SQLite: seq is the rowid primary key
    assert primary == (("seq",) if engine.dialect.name == "sqlite" else ("id",))


def test_apply_next_to_unrelated_tables(db_url: str, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50))"))
        conn.execute(sa.text("INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace')"))
        conn.execute(sa.text("CREATE TABLE outbox (id INTEGER PRIMARY KEY, body VARCHAR(50))"))
        if engine.dialect.name == "postgresql":  # another schema with a table of the same name
            conn.execute(sa.text("CREATE SCHEMA legacy"))
            conn.execute(sa.text("CREATE TABLE legacy.cdc_outbox (event_id INTEGER PRIMARY KEY)"))

    assert [m.version for m in migrations.apply(db_url).migrations] == ["1"]

    assert tables(engine) == {"customers", "outbox", "cdc_outbox", "cdc_schema_history"}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM customers ORDER BY id")).scalars().all() == [
            "Ada",
            "Grace",
        ]
    if engine.dialect.name == "postgresql":
        legacy = sa.inspect(engine).get_columns("cdc_outbox", schema="legacy")
        assert [c["name"] for c in legacy] == ["event_id"]


def test_an_unrelated_table_named_cdc_outbox_is_refused(db_url: str, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE cdc_outbox (id INTEGER PRIMARY KEY, body VARCHAR(50))"))

    with pytest.raises(
        SourceConfigError, match=r"V1__cdc_outbox\.sql: a table cdc_outbox already existed"
    ) as exc:
        migrations.apply(db_url)

    assert "aggregateid" in str(exc.value)
    assert history(engine) == []  # refused before anything ran
    assert {c["name"] for c in sa.inspect(engine).get_columns("cdc_outbox")} == {"id", "body"}


def test_dry_run_prints_the_sql_and_changes_nothing(db_url: str, engine: sa.Engine) -> None:
    result = migrations.apply(db_url, dry_run=True)
    assert result.dry_run and [m.version for m in result.migrations] == ["1"]
    assert "CREATE TABLE IF NOT EXISTS cdc_outbox" in result.sql
    assert "cdc_schema_history" in result.sql

    out = cli("apply", "--dsn", db_url, "--dry-run")
    assert out.exit_code == 0, out.output
    assert "-- V1__cdc_outbox.sql" in out.output
    assert "CREATE TABLE IF NOT EXISTS cdc_outbox (" in out.output
    assert tables(engine) == set()

    migrations.apply(db_url)
    assert cli("apply", "--dsn", db_url, "--dry-run").output.strip().endswith("up to date, nothing to apply")


def test_undo_drops_the_table_and_the_history_row(db_url: str, engine: sa.Engine) -> None:
    migrations.apply(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO cdc_outbox (id, aggregatetype, aggregateid, type, payload, "
                + ("`timestamp`" if engine.dialect.name == "mysql" else '"timestamp"')
                + ") VALUES ('7d0f3b5e-0b7e-4c1f-9e55-2f1f4a3f0a01', 'order', '1', 'Created', :p, :t)"
            ),
            {"p": b"\x02", "t": "2024-05-01 12:00:00"},
        )

    dry = cli("undo", "1", "--dsn", db_url, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "DROP TABLE IF EXISTS cdc_outbox" in dry.output
    assert "cdc_outbox" in tables(engine)

    done = cli("undo", "1", "--dsn", db_url)
    assert done.exit_code == 0, done.output
    assert "undone V1__cdc_outbox.sql" in done.output
    assert tables(engine) == {"cdc_schema_history"}
    assert history(engine) == []

    again = cli("undo", "1", "--dsn", db_url)  # nothing applied: a no-op
    assert again.exit_code == 0 and "not applied, nothing to undo" in again.output
    assert [m.version for m in migrations.apply(db_url).migrations] == ["1"]  # and back again


def test_a_changed_applied_file_is_refused_naming_it(db_url: str, engine: sa.Engine, root: Path) -> None:
    migrations.apply(db_url, root=root)
    v1 = root / dialect_of(engine) / "V1__cdc_outbox.sql"
    v1.write_text(v1.read_text() + "\n-- a harmless-looking edit\n")

    with pytest.raises(SourceConfigError, match="an applied migration must not change") as exc:
        migrations.apply(db_url, root=root)
    assert str(v1) in str(exc.value)

    out = cli("apply", "--dsn", db_url, "--dir", str(root))
    assert out.exit_code == SourceConfigError.exit_code
    assert str(v1) in out.output and "checksum" in out.output
    assert len(history(engine)) == 1


def _add_v2(root: Path, dialect: str, sql: str) -> Path:
    v2 = root / dialect / "V2__extra_table.sql"
    v2.write_text(sql)
    (root / dialect / "U2__extra_table.sql").write_text("DROP TABLE IF EXISTS cdc_extra;\n")
    return v2


def test_target_order_and_undo_of_the_newest_first(db_url: str, engine: sa.Engine, root: Path) -> None:
    # '%', ':name' and ';' inside a string reach the server untouched (no driver parameter parsing).
    _add_v2(
        root,
        dialect_of(engine),
        "CREATE TABLE IF NOT EXISTS cdc_extra (\n  id INTEGER NOT NULL PRIMARY KEY,\n"
        "  note VARCHAR(40) DEFAULT '50%: a;b :x %s'\n);\n",
    )

    assert [m.version for m in migrations.apply(db_url, root=root, target="1").migrations] == ["1"]
    listed = cli("list", "--dsn", db_url, "--dir", str(root))
    assert listed.exit_code == 0, listed.output
    assert "1       cdc outbox" in listed.output and "pending" in listed.output

    assert [m.version for m in migrations.apply(db_url, root=root).migrations] == ["2"]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO cdc_extra (id) VALUES (1)"))
        assert conn.execute(sa.text("SELECT note FROM cdc_extra")).scalar() == "50%: a;b :x %s"

    with pytest.raises(SourceConfigError, match=r"later version\(s\) 2 are applied"):
        migrations.undo(db_url, "1", root=root)
    migrations.undo(db_url, "2", root=root)
    migrations.undo(db_url, "1", root=root)
    assert tables(engine) == {"cdc_schema_history"}

    with pytest.raises(ConfigError, match="target 3: no such migration"):
        migrations.apply(db_url, root=root, target="3")


def test_a_failing_statement_names_file_and_statement_and_masks_the_password(
    db_url: str, engine: sa.Engine, root: Path
) -> None:
    dialect = dialect_of(engine)
    v2 = _add_v2(
        root,
        dialect,
        "CREATE TABLE IF NOT EXISTS cdc_half (id INTEGER);\nCREATE TABLE cdc_extra (id INTEGER, id INTEGER);\n",
    )
    migrations.apply(db_url, root=root, target="1")

    with pytest.raises(SourceConfigError, match="statement 2 failed") as exc:
        migrations.apply(db_url, root=root)
    message = str(exc.value)
    assert str(v2) in message
    assert "cdc:cdc@" not in message
    if dialect != "sqlite":
        assert "cdc:***@" in message

    rows = {r["version"]: bool(r["success"]) for r in history(engine)}
    if dialect == "postgresql":  # transactional DDL: nothing happened
        assert rows == {"1": True} and "cdc_half" not in tables(engine)
    else:  # committed part-way: recorded as failed, and apply runs it again
        assert rows == {"1": True, "2": False}
        assert "FAILED" in cli("list", "--dsn", db_url, "--dir", str(root)).output

    v2.write_text("CREATE TABLE IF NOT EXISTS cdc_half (id INTEGER);\nCREATE TABLE cdc_extra (id INTEGER);\n")
    assert [m.version for m in migrations.apply(db_url, root=root).migrations] == ["2"]
    assert {r["version"]: bool(r["success"]) for r in history(engine)} == {"1": True, "2": True}


def test_show_and_list_offline() -> None:
    shown = cli("show", "1", "--dialect", "mysql")
    assert shown.exit_code == 0, shown.output
    assert "UNIQUE KEY cdc_outbox_seq_key (seq)" in shown.output
    assert "DROP TABLE" in cli("show", "1", "--dialect", "sqlite", "--undo").output
    listed = cli("list")
    assert listed.exit_code == 0
    assert {line.split()[0] for line in listed.output.splitlines()} == {"postgresql", "mysql", "sqlite"}
    unknown = cli("show", "1", "--dialect", "oracle")
    assert unknown.exit_code == ConfigError.exit_code and "oracle" in unknown.output


def test_bad_migration_names_are_reported(tmp_path: Path) -> None:
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "sqlite" / "V1__a.sql").write_text("SELECT 1;\n")
    (tmp_path / "sqlite" / "V1_0__b.sql").write_text("SELECT 1;\n")
    (tmp_path / "sqlite" / "V2-oops.sql").write_text("SELECT 1;\n")
    (tmp_path / "sqlite" / "U3__c.sql").write_text("SELECT 1;\n")
    with pytest.raises(ConfigError) as exc:
        migrations.discover("sqlite", tmp_path)
    problems = "\n".join(exc.value.problems)
    assert "V1__a.sql: version 1 also in V1_0__b.sql" in problems  # 1.0 is 1, as in Flyway
    assert "V2-oops.sql: not a migration name" in problems
    assert "U3__c.sql: undo file without V3__*.sql" in problems


class _AlembicOp:
    """The part of alembic.op the helper uses (alembic itself is not a dependency)."""

    def __init__(self, conn: sa.Connection, *, as_sql: bool = False) -> None:
        self.conn, self.as_sql, self.executed = conn, as_sql, list[str]()

    def get_context(self) -> SimpleNamespace:
        return SimpleNamespace(dialect=self.conn.dialect, as_sql=self.as_sql)

    def get_bind(self) -> sa.Connection:
        return self.conn

    def execute(self, statement: sa.TextClause) -> None:
        self.executed.append(str(statement.compile(dialect=self.conn.dialect)))


def test_alembic_helpers_run_the_packaged_sql(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        upgrade_outbox(_AlembicOp(conn))
    assert "cdc_outbox" in tables(engine) and "cdc_schema_history" not in tables(engine)
    with engine.begin() as conn:
        upgrade_outbox(_AlembicOp(conn))  # idempotent
        downgrade_outbox(_AlembicOp(conn))
    assert "cdc_outbox" not in tables(engine)

    with engine.connect() as conn:
        offline = _AlembicOp(conn, as_sql=True)
        upgrade_outbox(offline)
    assert offline.executed == migrations.migration(dialect_of(engine), "1").statements()
    assert "cdc_outbox" not in tables(engine)
