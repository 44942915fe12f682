"""Plain SQL against the MySQL/MariaDB server: connections, settings, positions, catalog reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql
from sqlalchemy.engine import make_url

from cdc.errors import SourceConfigError, SourceUnavailableError
from cdc.masking import mask_dsn
from cdc.plugin import ColumnInfo

#: connection fields Settings keeps apart from the DSN's driver options
_ADDRESS = frozenset({"host", "port", "user", "password", "database"})


@dataclass(frozen=True, slots=True)
class Settings:
    """How to reach the server (the DSN parsed once)."""

    host: str
    port: int
    user: str
    password: str
    database: str | None
    #: the DSN's driver options as ``pymysql.connect`` keywords - TLS above all
    #: (``?ssl_ca=/ca.pem&ssl_cert=...&ssl_key=...&ssl_check_hostname=true`` become ``ssl={...}``),
    #: read the way SQLAlchemy's PyMySQL dialect reads them, so the replication stream and the
    #: plain sessions connect exactly like the catalog's engine does
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, dsn: str) -> Settings:
        url = make_url(dsn)
        _, kwargs = MySQLDialect_pymysql().create_connect_args(url)
        options = {k: v for k, v in kwargs.items() if k not in _ADDRESS}
        return cls(
            url.host or "127.0.0.1", url.port or 3306, url.username or "", url.password or "", url.database,
            options,
        )  # fmt: skip

    def replication(self) -> dict[str, Any]:
        """Connection settings for BinLogStreamReader (its control and stream connections)."""
        return {
            **self.options,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "passwd": self.password,
        }


def connect(settings: Settings, dsn_for_errors: str) -> pymysql.connections.Connection[Any]:
    """A plain autocommit session in UTC (TIMESTAMP values read as UTC, like the binlog's), with
    the DSN's driver options (TLS); autocommit, the character set and the time zone are this
    function's whatever the DSN says, as every value read depends on them."""
    try:
        conn = pymysql.connect(
            **{
                "connect_timeout": 10,
                **settings.options,
                "host": settings.host,
                "port": settings.port,
                "user": settings.user,
                "password": settings.password,
                "database": settings.database,
                "autocommit": True,
                "charset": "utf8mb4",
                "init_command": "SET time_zone = '+00:00'",
            }
        )
    except pymysql.MySQLError as exc:
        raise SourceUnavailableError(f"cannot connect to {mask_dsn(dsn_for_errors)}: {exc}") from None
    return conn


def scalar(conn: pymysql.connections.Connection[Any], query: str, args: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, args)
        row = cur.fetchone()
    return None if row is None else row[0]


def rows(conn: pymysql.connections.Connection[Any], query: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, args)
        return list(cur.fetchall())


def is_mariadb(conn: pymysql.connections.Connection[Any]) -> bool:
    return "mariadb" in str(conn.get_server_info()).lower()


def variables(conn: pymysql.connections.Connection[Any], *names: str) -> dict[str, str]:
    """Global variables by lowercase name (missing ones absent)."""
    placeholders = ", ".join(["%s"] * len(names))
    found = rows(conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})", names)
    return {str(k).lower(): str(v) for k, v in found}


def current_gtids(conn: pymysql.connections.Connection[Any], mariadb: bool) -> str:
    return str(
        scalar(conn, "SELECT @@GLOBAL.gtid_binlog_pos" if mariadb else "SELECT @@GLOBAL.gtid_executed") or ""
    )


def master_status(conn: pymysql.connections.Connection[Any]) -> tuple[str, int]:
    for statement in ("SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"):
        try:
            found = rows(conn, statement)
        except pymysql.err.ProgrammingError:
            continue
        if found:
            return str(found[0][0]), int(found[0][1])
    raise SourceConfigError("binary logging is off on the server", hint="set log_bin (and restart)")


def binary_logs(conn: pymysql.connections.Connection[Any]) -> list[str]:
    return [str(r[0]) for r in rows(conn, "SHOW BINARY LOGS")]


def position_on_server(
    conn: pymysql.connections.Connection[Any], start: str, mariadb: bool, by_file: bool
) -> bool:
    """True when the binary logs still on the server reach back to ``start`` (a stored restart
    position): by file, the file is still listed; MariaDB GTIDs, the oldest binlog's GTID list
    is not past it in any domain; MySQL GTIDs, nothing it lacks was purged."""
    logs = binary_logs(conn)
    if by_file:
        return start.rpartition(":")[0] in logs
    if not mariadb:
        missing = scalar(conn, "SELECT GTID_SUBTRACT(@@GLOBAL.gtid_purged, %s)", (start,))
        return not missing
    if not logs:
        return False
    events = rows(conn, "SHOW BINLOG EVENTS IN %s LIMIT 4", (logs[0],))
    listed = next((str(e[5]) for e in events if str(e[2]) == "Gtid_list"), "[]")
    stored = {d: seq for d, _, seq in (_gtid(p) for p in start.split(",") if p.strip())}
    for part in listed.strip("[]").split(","):
        if part.strip():
            domain, _, seq = _gtid(part)
            if stored.get(domain, 0) < seq:
                return False
    return True


def _gtid(text: str) -> tuple[int, int, int]:
    domain, server_id, seq = (int(x) for x in text.strip().split("-"))
    return domain, server_id, seq


def split_table(name: str, default_db: str | None) -> tuple[str, str]:
    db, _, table = name.rpartition(".")
    if not db:
        if not default_db:
            raise SourceConfigError(
                f"table {name!r} names no database and the URL has none", hint="use db.table"
            )
        db = default_db
    return db, table


def quote(name: str) -> str:
    """A MySQL identifier, quoted."""
    return "`" + name.replace("`", "``") + "`"


def read_chunks(
    conn: pymysql.connections.Connection[Any],
    db: str,
    table: str,
    columns: dict[str, ColumnInfo],
    key: tuple[str, ...],
    after: list[Any] | None,
    size: int,
) -> Iterator[dict[str, Any]]:
    """Rows in key order strictly after ``after``, ``size`` per query (keyset pagination)."""
    cols = tuple(columns)
    # FLOAT through the text protocol has 6 significant digits; as a DOUBLE it is exact.
    select = ", ".join(
        f"CAST({quote(c)} AS DOUBLE)" if info.data_type == "float" else quote(c)
        for c, info in columns.items()
    )
    order = ", ".join(quote(k) for k in key)
    tuple_key = f"({order})"
    while True:
        where = f" WHERE {tuple_key} > ({', '.join(['%s'] * len(key))})" if after is not None else ""
        query = f"SELECT {select} FROM {quote(db)}.{quote(table)}{where} ORDER BY {order} LIMIT %s"  # noqa: S608 - identifiers quoted, values bound
        with conn.cursor() as cur:
            cur.execute(query, [*(after or []), size])
            batch = cur.fetchall()
        for row in batch:
            values = dict(zip(cols, row, strict=True))
            yield values
        if len(batch) < size:
            return
        after = [values[k] for k in key]


def count_rows(conn: pymysql.connections.Connection[Any], tables: list[tuple[str, str]]) -> int:
    """Estimated rows (information_schema.TABLES), for progress."""
    total = 0
    for db, table in tables:
        n = scalar(
            conn, "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, table),
        )  # fmt: skip
        total += int(n or 0)
    return total
