"""Apply the packaged SQL migrations (the outbox table, ...) to an application's database.

The SQL lives in ``migrations/<dialect>/`` with Flyway names: ``V1__cdc_outbox.sql`` migrates up,
``U1__cdc_outbox.sql`` undoes it. The files are plain, idempotent SQL, so Flyway, Liquibase or a
DBA can run them unchanged; this module is the runner for everyone else (``cdc migrations``).

Applied versions are recorded in ``cdc_schema_history`` (version, description, script, checksum,
installed_on, success), created on first use. Applying again is a no-op; an applied file whose
checksum changed is refused, naming the file. PostgreSQL runs each migration and its history row
in one transaction. MySQL/MariaDB (and SQLite through pysqlite) commit DDL immediately: a failure
part-way is recorded with ``success = false`` and the next ``apply`` runs the (idempotent) file
again.

Where the files come from: a source checkout's ``migrations/`` folder (next to
``pyproject.toml``), else the copy a wheel installs as the data package ``cdc._bundled.migrations``
(pyproject.toml maps it onto ``migrations/``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import sqlalchemy as sa

from cdc.errors import ConfigError, SourceConfigError
from cdc.masking import mask_dsn
from cdc.outbox.table import COLUMNS as OUTBOX_COLUMNS

__all__ = [
    "DIALECTS",
    "HISTORY_TABLE",
    "ApplyResult",
    "HistoryRow",
    "Migration",
    "apply",
    "dialect_name",
    "discover",
    "migration",
    "migrations_root",
    "split_statements",
    "status",
    "undo",
]

DIALECTS = ("postgresql", "mysql", "sqlite")
HISTORY_TABLE = "cdc_schema_history"
_BUNDLED = "cdc._bundled.migrations"  # the wheel's copy of migrations/ (see pyproject.toml)
_FILE = re.compile(r"^(?P<kind>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<description>[^/\\]+)\.sql$")
# Columns a table that already exists must have: ``CREATE TABLE IF NOT EXISTS`` would silently
# keep an unrelated table of the same name.
_EXPECTED_TABLES: dict[str, tuple[str, frozenset[str]]] = {
    "V1__cdc_outbox.sql": (
        "cdc_outbox",
        frozenset(OUTBOX_COLUMNS),
    ),
}

_metadata = sa.MetaData()
_history = sa.Table(
    HISTORY_TABLE,
    _metadata,
    sa.Column("version", sa.String(50), primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("script", sa.String(1000), nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("installed_on", sa.DateTime(timezone=True), nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
)


# --------------------------------------------------------------------------- statement splitting

_IDENT_START = re.compile(r"[A-Za-z_]")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_ROUTINES = frozenset({"TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"})
_UNCOUNTED_BLOCKS = frozenset({"IF", "LOOP", "WHILE", "REPEAT"})  # closed by END IF etc.


class _Splitter:
    """One pass over a script: quotes, comments and BEGIN...END bodies hide their semicolons.

    A statement ends at a ``;`` that is outside quotes, dollar quotes, comments and routine
    bodies, and is followed only by blanks or a comment up to the end of its line.
    """

    def __init__(self, sql: str, dialect: str) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
        self.sql, self.dialect, self.n = sql, dialect, len(sql)
        self.statements: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self.start: int | None = None  # first significant character of the current statement
        self.words: list[str] = []  # the statement's first words (upper case)
        self.routine, self.depth, self.parens, self.prev = False, 0, 0, ""

    def line_of(self, i: int) -> int:
        return self.sql.count("\n", 0, i) + 1

    def comment_end(self, i: int) -> int | None:
        """If a comment starts at ``i``, the index after it; else None."""
        sql = self.sql
        # MySQL needs a blank after "--" ("--1" is minus minus one) and also knows "#".
        mysql_dash = self.dialect == "mysql" and i + 2 < self.n and sql[i + 2] not in " \t\r\n\f\v"
        if (sql.startswith("--", i) and not mysql_dash) or (sql[i] == "#" and self.dialect == "mysql"):
            end = sql.find("\n", i)
            return self.n if end < 0 else end
        if sql.startswith("/*", i):
            return self.block_comment_end(i)
        return None

    def block_comment_end(self, i: int) -> int:
        nested = self.dialect == "postgresql"  # PostgreSQL block comments nest
        level, j = 0, i
        while j < self.n:
            if j == i or (nested and self.sql.startswith("/*", j)):
                level, j = level + 1, j + 2
            elif self.sql.startswith("*/", j):
                level, j = level - 1, j + 2
                if level == 0:
                    return j
            else:
                j += 1
        raise ValueError(f"line {self.line_of(i)}: unterminated /* comment")

    def quoted_end(self, i: int, close: str, backslash: bool) -> int:
        """The index after the quoted span opened at ``i`` (a doubled ``close`` escapes it)."""
        j = i + 1
        while j < self.n:
            c = self.sql[j]
            if backslash and c == "\\":
                j += 2
            elif c == close:
                if self.sql.startswith(close, j + 1) and close != "]":
                    j += 2
                else:
                    return j + 1
            else:
                j += 1
        raise ValueError(f"line {self.line_of(i)}: unterminated {self.sql[i]} quote")

    def dollar_end(self, i: int, tag: str) -> int:
        end = self.sql.find(tag, i + len(tag))
        if end < 0:
            raise ValueError(f"line {self.line_of(i)}: unterminated dollar quote {tag}")
        return end + len(tag)

    def ends_line(self, j: int) -> bool:
        """True if only blanks and comments follow ``j`` up to the end of the line."""
        while j < self.n:
            c = self.sql[j]
            if c == "\n":
                return True
            if c in " \t\r\f\v":
                j += 1
            elif (end := self.comment_end(j)) is not None:
                if "\n" in self.sql[j:end] or self.sql.startswith("--", j) or c == "#":
                    return True
                j = end
            else:
                return False
        return True

    def word(self, w: str) -> None:
        """Track routine bodies: CREATE TRIGGER/PROCEDURE/FUNCTION ... BEGIN ... END."""
        if len(self.words) < 6:
            self.words.append(w)
            if self.words[0] == "CREATE" and w in _ROUTINES:
                self.routine = True
        if self.routine:
            if w == "END":
                self.depth = max(0, self.depth - 1)
            elif self.prev == "END" and w in _UNCOUNTED_BLOCKS:
                self.depth += 1  # END IF closed an IF that never counted: undo the decrement
            elif w == "BEGIN" or (w == "CASE" and self.prev != "END"):
                self.depth += 1
        self.prev = w

    def run(self) -> list[str]:
        sql, i = self.sql, 0
        pg, mysql, sqlite = (self.dialect == d for d in DIALECTS)
        while i < self.n:
            c = sql[i]
            if c.isspace():
                i += 1
                continue
            if (end := self.comment_end(i)) is not None:
                i = end
                continue
            if self.start is None:
                self.start = i
                if c == "\\" and pg:
                    raise ValueError(f"line {self.line_of(i)}: psql meta-commands are client syntax")
            if _IDENT_START.match(c):
                m = _WORD.match(sql, i)
                assert m is not None
                if not self.words and m.group().upper() == "DELIMITER":
                    raise ValueError(
                        f"line {self.line_of(i)}: DELIMITER is mysql client syntax; end statements with ';'"
                    )
                self.word(m.group().upper())
                i = m.end()
                continue
            prev, self.prev = self.prev, ""  # END IF and E'...' need adjacent words
            if c == "'":
                escaped = mysql or (pg and prev == "E" and sql[i - 1] in "eE")
                i = self.quoted_end(i, "'", escaped)
            elif c == '"':
                i = self.quoted_end(i, '"', mysql)
            elif c == "`" and (mysql or sqlite):
                i = self.quoted_end(i, "`", False)
            elif c == "[" and sqlite:
                i = self.quoted_end(i, "]", False)
            elif c == "$" and pg and (m := _DOLLAR_TAG.match(sql, i)):
                i = self.dollar_end(i, m.group())
            elif c in "()":
                self.parens += 1 if c == "(" else -1
                i += 1
            elif c == ";":
                if self.depth == 0 and self.parens <= 0:
                    if not self.ends_line(i + 1):
                        raise ValueError(
                            f"line {self.line_of(i)}: a statement's ';' must end its line "
                            "(one statement per line end, as Liquibase splits)"
                        )
                    if stmt := sql[self.start : i].rstrip():  # a lone ';' is no statement
                        self.statements.append(stmt)
                    self._reset()
                i += 1
            else:
                i += 1
        if self.start is not None:
            self.statements.append(sql[self.start :].rstrip())
        return self.statements


def split_statements(sql: str, dialect: str) -> list[str]:
    """Split a script into statements, each without its ``;``; comment-only chunks are dropped.

    A statement ends at a ``;`` followed only by blanks or a comment to the end of its line,
    outside '...' strings, "..." and `...` identifiers, dollar quotes ($$, $tag$: PostgreSQL),
    comments (-- and /* */; # on MySQL) and BEGIN...END bodies of CREATE TRIGGER / PROCEDURE /
    FUNCTION / EVENT. A ``;`` in the middle of a line outside all of those, an unterminated
    quote or comment, ``DELIMITER`` and psql meta-commands raise ValueError (line number given).
    """
    return _Splitter(sql, dialect).run()


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Migration:
    """One versioned migration of one dialect: its V-file and, if present, its U-file."""

    version: str  # "1", "1.1"
    description: str  # "cdc outbox"
    dialect: str
    file: Traversable
    undo_file: Traversable | None = None
    key: tuple[int, ...] = field(default=(), compare=False)

    @property
    def script(self) -> str:
        return self.file.name

    @property
    def location(self) -> str:
        """Where the file is, for messages: ``.../migrations/postgresql/V1__cdc_outbox.sql``."""
        return str(self.file)

    def sql(self) -> str:
        return _read(self.file)

    def undo_sql(self) -> str:
        if self.undo_file is None:
            raise ConfigError(
                [f"{self.location}: no undo file U{self.version}__*.sql next to it"], source="migrations"
            )
        return _read(self.undo_file)

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text with line endings normalised (a CRLF checkout matches)."""
        return hashlib.sha256(self.sql().encode("utf-8")).hexdigest()

    def statements(self) -> list[str]:
        return _split_file(self.sql(), self.dialect, self.location)

    def undo_statements(self) -> list[str]:
        sql = self.undo_sql()  # ConfigError without a U-file
        return _split_file(sql, self.dialect, str(self.undo_file))


def _read(file: Traversable) -> str:
    return file.read_text(encoding="utf-8").lstrip("\ufeff").replace("\r\n", "\n")


def _split_file(sql: str, dialect: str, location: str) -> list[str]:
    try:
        return split_statements(sql, dialect)
    except ValueError as exc:
        raise ConfigError([f"{location}: {exc}"], source="migrations") from None


def _version_key(version: str) -> tuple[int, ...]:
    """1.2 -> (1, 2); '_' separates parts too and trailing zeros do not count (1.0 is 1), as in Flyway."""
    try:
        key = [int(p) for p in re.split(r"[._]", version.strip())]
    except ValueError:
        raise ConfigError([f"invalid version {version!r} (expected digits like 1 or 1.2)"]) from None
    while len(key) > 1 and key[-1] == 0:
        key.pop()
    return tuple(key)


def migrations_root() -> Traversable:
    """The folder with one subfolder per dialect: the source checkout's, else the packaged copy."""
    source = Path(__file__).resolve().parents[1] / "migrations"
    if source.is_dir() and (source.parent / "pyproject.toml").is_file():
        return source
    try:
        packaged = resources.files(_BUNDLED)
    except ModuleNotFoundError:
        packaged = None
    if packaged is not None and packaged.is_dir():
        return packaged
    raise ConfigError(
        [f"no migrations found: neither a source checkout's migrations/ nor the packaged {_BUNDLED}"],
        source="migrations",
    )


def discover(dialect: str, root: Traversable | None = None) -> list[Migration]:
    """The dialect's migrations in version order; a malformed or duplicate name is a ConfigError."""
    if dialect not in DIALECTS:
        raise ConfigError([f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}"])
    folder = (root or migrations_root()) / dialect
    if not folder.is_dir():
        return []
    found: dict[str, dict[str, tuple[Traversable, str, tuple[int, ...]]]] = {"V": {}, "U": {}}
    problems = []
    for file in sorted(folder.iterdir(), key=lambda f: f.name):
        if not file.name.endswith(".sql"):
            continue
        if not (m := _FILE.match(file.name)):
            problems.append(f"{file}: not a migration name (V<version>__<description>.sql)")
            continue
        key = _version_key(m["version"])
        version = ".".join(str(p) for p in key)
        if version in found[m["kind"]]:
            problems.append(f"{file}: version {version} also in {found[m['kind']][version][0].name}")
        found[m["kind"]][version] = (file, m["description"].replace("_", " "), key)
    problems += [
        f"{f}: undo file without V{v}__*.sql" for v, (f, _, _) in found["U"].items() if v not in found["V"]
    ]
    if problems:
        raise ConfigError(problems, source="migrations")
    migrations = [
        Migration(v, desc, dialect, file, found["U"].get(v, (None,))[0], key)
        for v, (file, desc, key) in found["V"].items()
    ]
    return sorted(migrations, key=lambda m: m.key)


def migration(dialect: str, version: str, root: Traversable | None = None) -> Migration:
    """One version of a dialect's migrations; ConfigError if there is no such file."""
    key = _version_key(version)
    found = next((m for m in discover(dialect, root) if m.key == key), None)
    if found is None:
        raise ConfigError([f"version {version}: no such migration for {dialect}"], source="migrations")
    return found


# --------------------------------------------------------------------------- database side


@dataclass(frozen=True)
class HistoryRow:
    """One row of ``cdc_schema_history``."""

    version: str
    description: str
    script: str
    checksum: str
    installed_on: dt.datetime
    success: bool


@dataclass
class ApplyResult:
    """What ``apply`` / ``undo`` ran (or, with ``dry_run``, would run)."""

    dialect: str
    migrations: list[Migration]
    sql: str
    dry_run: bool = False


def dialect_name(bind: sa.Engine | sa.Connection | str) -> str:
    """postgresql, mysql (MySQL and MariaDB) or sqlite for an engine, a connection or a
    SQLAlchemy dialect name; anything else is a ConfigError."""
    name = bind if isinstance(bind, str) else bind.dialect.name
    name = "mysql" if name == "mariadb" else name
    if name not in DIALECTS:
        raise ConfigError(
            [f"no migrations for the {name!r} database; available: {', '.join(DIALECTS)}"],
            source="migrations",
        )
    return name


def _read_history(conn: sa.Connection) -> dict[str, HistoryRow]:
    if not sa.inspect(conn).has_table(HISTORY_TABLE):
        return {}
    rows = conn.execute(sa.select(_history)).all()
    return {r.version: HistoryRow(*r) for r in sorted(rows, key=lambda r: _version_key(r.version))}


def _now(dialect: str) -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now if dialect == "postgresql" else now.replace(tzinfo=None)  # UTC wall clock elsewhere


def _record(conn: sa.Connection, m: Migration, dialect: str, *, success: bool) -> None:
    conn.execute(sa.delete(_history).where(_history.c.version == m.version))
    conn.execute(
        sa.insert(_history).values(
            version=m.version,
            description=m.description,
            script=m.script,
            checksum=m.checksum,
            installed_on=_now(dialect),
            success=success,
        )
    )


def _check_existing(conn: sa.Connection, m: Migration) -> None:
    """Refuse, before anything runs, a table of the migration's name that is not its table."""
    if m.script not in _EXPECTED_TABLES:
        return
    table, columns = _EXPECTED_TABLES[m.script]
    inspector = sa.inspect(conn)
    if not inspector.has_table(table):
        return
    have = {c["name"].lower() for c in inspector.get_columns(table)}
    if missing := sorted(columns - have):
        raise SourceConfigError(
            f"{m.location}: a table {table} already existed without the columns {', '.join(missing)}",
            hint="it is not this migration's table: rename or drop it, then apply again",
        )


def _render(title: str, statements: list[str]) -> str:
    return f"-- {title}\n" + "".join(f"{s};\n\n" for s in statements)


def _open(url: str | sa.Engine) -> tuple[sa.Engine, str]:
    """An engine for ``url`` (an Engine is used as is) and its masked text for messages."""
    if isinstance(url, sa.Engine):
        return url, mask_dsn(url.url.render_as_string(hide_password=True))
    from cdc.sql.engines import create_engine

    return create_engine(url), mask_dsn(url)


class _Session:
    """An engine plus the dialect and the masked DSN, disposed when the engine was ours."""

    def __init__(self, url: str | sa.Engine) -> None:
        self.owned = not isinstance(url, sa.Engine)
        self.engine, self.where = _open(url)

    def __enter__(self) -> _Session:
        try:
            self.dialect = dialect_name(self.engine)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.owned:
            self.engine.dispose()

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Driver errors outside the migration's own statements, as the service's errors."""
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            from cdc.sql.engines import translate

            raise translate(exc, f"{what} on {self.where}") from None

    def history(self) -> dict[str, HistoryRow]:
        with self.guard(f"reading {HISTORY_TABLE}"), self.engine.connect() as conn:
            return _read_history(conn)

    @contextmanager
    def run(self, location: str, statements: list[str]) -> Iterator[sa.Connection]:
        """Run statements in a transaction, then hand its connection over for the bookkeeping."""
        with self.engine.begin() as conn:
            for n, stmt in enumerate(statements, 1):
                try:
                    conn.exec_driver_sql(stmt, execution_options={"no_parameters": True})
                except sa.exc.SQLAlchemyError as exc:
                    cause = mask_dsn(str(getattr(exc, "orig", exc))).strip()
                    raise SourceConfigError(
                        f"{location}: statement {n} failed on {self.where}: {cause}",
                        hint=f"the statement begins: {stmt[:120]!r}",
                    ) from None
            yield conn


def _verify_checksums(migrations: list[Migration], history: dict[str, HistoryRow]) -> None:
    for m in migrations:
        h = history.get(m.version)
        if h is not None and h.success and h.checksum != m.checksum:
            raise SourceConfigError(
                f"{m.location}: checksum {m.checksum[:12]}... differs from the applied one "
                f"({h.checksum[:12]}..., {h.script} applied {h.installed_on:%Y-%m-%d %H:%M}): "
                "an applied migration must not change",
                hint="restore the file as it was applied and put the change into a new V-file",
            )


def apply(
    url: str | sa.Engine, *, target: str | None = None, dry_run: bool = False, root: Traversable | None = None
) -> ApplyResult:
    """Apply every pending migration (up to ``target``) for the database behind ``url``.

    A version counts as applied once ``cdc_schema_history`` holds it with success true; a row with
    success false (a failure part-way on MySQL) is applied again. With ``dry_run`` the history is
    read but nothing is created or executed: the result's ``sql`` is what would run.
    """
    with _Session(url) as db:
        migrations = discover(db.dialect, root)
        if target is not None:
            key = _version_key(target)
            if not any(m.key == key for m in migrations):
                raise ConfigError(
                    [f"target {target}: no such migration for {db.dialect}"], source="migrations"
                )
            migrations = [m for m in migrations if m.key <= key]
        history = db.history()
        _verify_checksums(migrations, history)
        pending = [m for m in migrations if not (h := history.get(m.version)) or not h.success]
        for m in pending:
            m.statements()  # a syntax problem in any file stops before anything runs
        sql = "".join(_render(f"{m.script} ({db.dialect})", m.statements()) for m in pending)
        if dry_run or not pending:
            if pending and not history:
                sql = _render(f"{HISTORY_TABLE}, if missing", [_create_history_sql(db.engine)]) + sql
            return ApplyResult(db.dialect, pending, sql, dry_run)
        with db.guard(f"creating {HISTORY_TABLE}"):
            _metadata.create_all(db.engine, checkfirst=True)
        for m in pending:
            _apply_one(db, m)
        return ApplyResult(db.dialect, pending, sql)


def _create_history_sql(engine: sa.Engine) -> str:
    ddl = str(sa.schema.CreateTable(_history).compile(dialect=engine.dialect)).strip()
    return "\n".join(line.rstrip() for line in ddl.splitlines())


def _apply_one(db: _Session, m: Migration) -> None:
    with db.guard(f"{m.location}: inspecting the database"), db.engine.connect() as conn:
        _check_existing(conn, m)
    # A bookkeeping failure (e.g. a concurrent apply recorded the version first) rolls back too.
    with db.guard(f"{m.location}: recording version {m.version} in {HISTORY_TABLE}"):
        try:
            with db.run(m.location, m.statements()) as conn:
                _record(conn, m, db.dialect, success=True)
        except SourceConfigError:
            if db.dialect != "postgresql":  # DDL already committed part of it: say so in the history
                with db.engine.begin() as conn:
                    _record(conn, m, db.dialect, success=False)
            raise


def undo(
    url: str | sa.Engine, version: str, *, dry_run: bool = False, root: Traversable | None = None
) -> ApplyResult:
    """Run the U-file of an applied version and delete its history row.

    Not applied: a no-op (an empty result). A later version still applied is refused: undo
    the newest first.
    """
    with _Session(url) as db:
        m = migration(db.dialect, version, root)
        statements = m.undo_statements()  # ConfigError without a U-file
        assert m.undo_file is not None
        undo_file = m.undo_file
        history = db.history()
        if m.version not in history:
            return ApplyResult(db.dialect, [], "", dry_run)
        if later := [v for v in history if _version_key(v) > m.key]:
            raise SourceConfigError(
                f"cannot undo {version}: later version(s) {', '.join(later)} are applied on {db.where}",
                hint="undo the newest version first",
            )
        sql = _render(f"{undo_file.name} ({db.dialect})", statements)
        if not dry_run:
            what = f"{undo_file}: deleting version {m.version} from {HISTORY_TABLE}"
            with db.guard(what), db.run(str(undo_file), statements) as conn:
                conn.execute(sa.delete(_history).where(_history.c.version == m.version))
        return ApplyResult(db.dialect, [m], sql, dry_run)


def status(
    url: str | sa.Engine, root: Traversable | None = None
) -> list[tuple[Migration | None, HistoryRow | None]]:
    """Each local migration with its history row (None: pending), plus applied versions with no file."""
    with _Session(url) as db:
        migrations = {m.version: m for m in discover(db.dialect, root)}
        history = db.history()
    versions = sorted(set(migrations) | set(history), key=_version_key)
    return [(migrations.get(v), history.get(v)) for v in versions]
