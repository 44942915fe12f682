"""Load Sakila into MariaDB: the MySQL schema's own table DDL, the rows copied from a PostgreSQL Sakila.

The MySQL schema file (tests/data/sakila/mysql-sakila-schema.sql) defines triggers and
procedures between DELIMITER lines, which a driver cannot run statement by statement, so only
the CREATE TABLE statements of the wanted tables are taken from it, verbatim (INT UNSIGNED ids,
DECIMAL(5,2), DATETIME dates, TIMESTAMP last_update with ON UPDATE CURRENT_TIMESTAMP, the
foreign keys). The rows come from a PostgreSQL database loaded with
``tests.integration.sakila.load_postgres``: the columns both dialects share are copied
(PostgreSQL-only columns such as customer.activebool are left out; MySQL-only ones such as
payment.last_update take their defaults), in a session running in UTC, so PostgreSQL's naive
``timestamp`` values become the same wall clock in MySQL TIMESTAMP columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
import pymysql
from psycopg import sql

from tests.integration.sakila import SAKILA

MYSQL_SCHEMA = SAKILA / "mysql-sakila-schema.sql"

# Every Sakila table both dialects share except film_text (MyISAM with a FULLTEXT index, kept in
# step by triggers; PostgreSQL has film.fulltext instead). Parents before children. All of them are
# created even when only a few are captured: reflecting a table also reflects the tables its foreign
# keys reference, and a missing one fails the reflection (see the report on the polling reader).
SHARED_TABLES = (
    "actor",
    "category",
    "language",
    "film",
    "film_actor",
    "film_category",
    "country",
    "city",
    "address",
    "staff",
    "store",
    "inventory",
    "customer",
    "rental",
    "payment",
)

_CREATE = re.compile(r"^CREATE TABLE (\w+) \(.*?^\)ENGINE=\w+[^;]*;", re.S | re.M)


def mysql_connect(dsn: str, **kwargs: Any) -> Any:
    """A pymysql connection to the database named in the DSN's path (autocommit)."""
    u = urlparse(dsn)
    return pymysql.connect(
        host=u.hostname,
        port=u.port or 3306,
        user=unquote(u.username or ""),
        password=unquote(u.password or ""),
        database=u.path.lstrip("/") or None,
        autocommit=True,
        connect_timeout=10,
        **kwargs,
    )


def _mysql_value(value: Any) -> Any:
    """PostgreSQL's text[] (film.special_features) is a SET in MySQL: comma-separated members."""
    return ",".join(value) if isinstance(value, list) else value


def table_ddl(tables: Iterable[str]) -> dict[str, str]:
    """The schema file's CREATE TABLE statement of each wanted table, verbatim."""
    if not MYSQL_SCHEMA.is_file():
        raise AssertionError(f"the Sakila MySQL schema is missing at {MYSQL_SCHEMA}")
    found = {m.group(1): m.group(0) for m in _CREATE.finditer(MYSQL_SCHEMA.read_text())}
    wanted = list(tables)
    missing = [t for t in wanted if t not in found]
    if missing:
        raise AssertionError(f"no CREATE TABLE for {missing} in {MYSQL_SCHEMA}")
    return {t: found[t] for t in wanted}


def load_mariadb_from_postgres(
    pg_dsn_with_sakila: str, mysql_dsn: str, tables: Iterable[str] = SHARED_TABLES
) -> dict[str, int]:
    """Create the tables in the MySQL database of ``mysql_dsn`` and copy their rows; returns row counts."""
    ddl = table_ddl(tables)
    counts: dict[str, int] = {}
    conn = mysql_connect(mysql_dsn)
    try:
        with conn.cursor() as cur, psycopg.connect(pg_dsn_with_sakila) as pg:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("SET SESSION foreign_key_checks = 0")  # tables and rows in any order
            cur.execute("SET SESSION sql_mode = 'TRADITIONAL'")  # as the schema file does
            for statement in ddl.values():
                cur.execute(statement)
            for table in ddl:
                cur.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                )
                mysql_columns = [r[0] for r in cur.fetchall()]
                pg_columns = {
                    r[0]
                    for r in pg.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = 'public' AND table_name = %s",
                        (table,),
                    )
                }
                columns = [c for c in mysql_columns if c in pg_columns]
                # SELECT FROM the parent also reads inheritance children (payment_p2007_*).
                rows = pg.execute(
                    sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
                    )
                ).fetchall()
                insert = (
                    f"INSERT INTO `{table}` ({', '.join(f'`{c}`' for c in columns)}) "
                    f"VALUES ({', '.join(['%s'] * len(columns))})"
                )
                rows = [tuple(_mysql_value(v) for v in row) for row in rows]
                for start in range(0, len(rows), 5000):
                    cur.executemany(insert, rows[start : start + 5000])
                counts[table] = len(rows)
            cur.execute("SET SESSION foreign_key_checks = 1")
    finally:
        conn.close()
    return counts
