"""MySQL/MariaDB: per-table triggers (one per event type) with explicit column lists.

Each column enters the JSON image through an expression chosen by its type so that the relay can
rebuild the exact value the polling and binlog sources hand over (see ``cdc.audit.values``):
binary strings as hex, BIT as an unsigned integer, FLOAT widened to DOUBLE (its exact IEEE value),
TIMESTAMP as epoch seconds (independent of the writing session's time zone), JSON/UUID/INET6 as
their text. Everything else is rendered by JSON_OBJECT itself (DECIMAL as an exact JSON number,
DOUBLE with a round-trip representation, temporal types as text).

MariaDB replaces triggers atomically (CREATE OR REPLACE TRIGGER); MySQL has no such statement,
so there a refresh drops and creates under LOCK TABLES ... WRITE.
"""

from __future__ import annotations

import hashlib

from cdc.audit.catalog import LOG_TABLE, PREFIX, REGISTRY_TABLE, AuditedTable, Column
from cdc.errors import SourceConfigError

EVENTS = (("INSERT", "ai", "c"), ("UPDATE", "au", "u"), ("DELETE", "ad", "d"))

BINARY = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
# MariaDB's JSON is a LONGTEXT that JSON_OBJECT would embed as JSON, not as its stored text.
TEXTUAL = frozenset({"json", "longtext", "uuid", "inet6", "inet4"})
UNSUPPORTED = frozenset(
    {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
     "geometrycollection", "vector"}
)  # fmt: skip


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def kind(column: Column) -> str:
    """How a column travels in the image: hex, bit, float, epoch, text or plain (JSON_OBJECT's own)."""
    t = column.data_type
    if t in UNSUPPORTED:
        raise SourceConfigError(
            f"column {column.name!r} of type {column.type}: spatial and vector types are not supported by audit capture",
            hint="leave the table out, or capture it with another method",
        )
    if t in BINARY:
        return "hex"
    if t == "bit":
        return "bit"
    if t == "float":
        return "float"
    if t == "timestamp":
        return "epoch"
    if t in TEXTUAL:
        return "text"
    return "plain"


def _expr(row: str, column: Column) -> str:
    ref = f"{row}.{q(column.name)}"
    return {
        "hex": f"HEX({ref})",
        "bit": f"CAST({ref} AS UNSIGNED)",
        "float": f"{ref} + 0e0",
        "epoch": f"UNIX_TIMESTAMP({ref})",
        "text": f"CONCAT({ref})",
        "plain": ref,
    }[kind(column)]


def image(row: str, table: AuditedTable) -> str:
    pairs = ", ".join(f"{literal(c.name)}, {_expr(row, c)}" for c in table.columns)
    return f"JSON_OBJECT({pairs})"


def trigger_name(table: AuditedTable, suffix: str) -> str:
    """``cdc_audit_<table>_<ai|au|ad>``, shortened with a hash to MySQL's 64 characters."""
    name = f"{PREFIX}_{table.name}_{suffix}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(table.name.encode()).hexdigest()[:8]
    return f"{PREFIX}_{table.name[: 64 - len(PREFIX) - 14]}_{digest}_{suffix}"


def trigger_names(table: AuditedTable, truncate: bool) -> list[str]:
    return [trigger_name(table, suffix) for _, suffix, _ in EVENTS]


def setup(schema: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {q(LOG_TABLE)} (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    table_schema VARCHAR(64) NOT NULL,
    table_name VARCHAR(64) NOT NULL,
    op CHAR(1) NOT NULL,
    `before` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    `after` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ts TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    relayed_at TIMESTAMP(6) NULL DEFAULT NULL,
    KEY {q(LOG_TABLE + "_table")} (table_name, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE IF NOT EXISTS {q(REGISTRY_TABLE)} (
    table_schema VARCHAR(64) NOT NULL,
    table_name VARCHAR(64) NOT NULL,
    columns LONGTEXT NOT NULL,
    installed_on TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (table_schema, table_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    ]


def _create(table: AuditedTable, event: str, suffix: str, op: str, replace: bool) -> str:
    before = image("OLD", table) if op in ("u", "d") else "NULL"
    after = image("NEW", table) if op in ("c", "u") else "NULL"
    verb = "CREATE OR REPLACE TRIGGER" if replace else "CREATE TRIGGER"
    return (
        f"{verb} {q(trigger_name(table, suffix))} AFTER {event} ON {q(table.name)} FOR EACH ROW\n"
        f"INSERT INTO {q(LOG_TABLE)} (table_schema, table_name, op, `before`, `after`) VALUES "
        f"(DATABASE(), {literal(table.name)}, '{op}',\n    {before},\n    {after})"
    )


def install(schema: str, table: AuditedTable, truncate: bool, mariadb: bool = True) -> list[str]:
    """The table's three triggers; MariaDB replaces each atomically, MySQL under a table lock."""
    if mariadb:
        return [_create(table, event, suffix, op, True) for event, suffix, op in EVENTS]
    body = [
        stmt
        for event, suffix, op in EVENTS
        for stmt in (
            f"DROP TRIGGER IF EXISTS {q(trigger_name(table, suffix))}",
            _create(table, event, suffix, op, False),
        )
    ]
    return [f"LOCK TABLES {q(table.name)} WRITE, {q(LOG_TABLE)} WRITE", *body, "UNLOCK TABLES"]


def remove(table: AuditedTable) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {q(trigger_name(table, suffix))}" for _, suffix, _ in EVENTS]


def teardown(schema: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS {q(LOG_TABLE)}", f"DROP TABLE IF EXISTS {q(REGISTRY_TABLE)}"]


def backfill(schema: str, table: AuditedTable) -> list[str]:
    """Every current row as a read ('r') record, its rows share-locked until the commit, so no
    change can commit between this read and these ids (it would be published before them)."""
    order = ", ".join(f"x.{q(k)}" for k in table.key)
    return [
        f"INSERT INTO {q(LOG_TABLE)} (table_schema, table_name, op, `before`, `after`) "  # noqa: S608 - quoted names
        f"SELECT DATABASE(), {literal(table.name)}, 'r', NULL, {image('x', table)} FROM {q(table.name)} x "
        f"ORDER BY {order} LOCK IN SHARE MODE"
    ]
