"""SQLite: per-table triggers (one per event type) with explicit column lists.

``json_object`` renders REAL with 15 digits and refuses BLOBs, so those two storage classes
travel tagged: ``["r", "<17 significant digits>"]`` and ``["b", "<hex>"]`` (decoded by
``cdc.audit.values``); text, integers and NULL go as themselves. SQLite DDL is transactional:
the generator replaces triggers inside one transaction, so no write goes unaudited.
"""

from __future__ import annotations

from cdc.audit.catalog import LOG_TABLE, PREFIX, REGISTRY_TABLE, AuditedTable

EVENTS = (("INSERT", "ai", "c"), ("UPDATE", "au", "u"), ("DELETE", "ad", "d"))


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _expr(ref: str) -> str:
    return (
        f"CASE typeof({ref}) WHEN 'real' THEN json_array('r', printf('%!.17g', {ref})) "
        f"WHEN 'blob' THEN json_array('b', hex({ref})) ELSE {ref} END"
    )


def image(row: str, table: AuditedTable) -> str:
    return (
        "json_object("
        + ", ".join(f"{literal(c.name)}, {_expr(f'{row}.{q(c.name)}')}" for c in table.columns)
        + ")"
    )


def trigger_name(table: AuditedTable, suffix: str) -> str:
    return f"{PREFIX}_{table.name}_{suffix}"


def trigger_names(table: AuditedTable, truncate: bool) -> list[str]:
    return [trigger_name(table, suffix) for _, suffix, _ in EVENTS]


def setup(schema: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {q(LOG_TABLE)} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_schema TEXT NOT NULL,
    table_name TEXT NOT NULL,
    op TEXT NOT NULL,
    "before" TEXT,
    "after" TEXT,
    ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    relayed_at TEXT
)""",
        f"""CREATE TABLE IF NOT EXISTS {q(REGISTRY_TABLE)} (
    table_schema TEXT NOT NULL,
    table_name TEXT NOT NULL,
    columns TEXT NOT NULL,
    installed_on TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    PRIMARY KEY (table_schema, table_name)
)""",
    ]


def install(schema: str, table: AuditedTable, truncate: bool) -> list[str]:
    out: list[str] = []
    for event, suffix, op in EVENTS:
        before = image("OLD", table) if op in ("u", "d") else "NULL"
        after = image("NEW", table) if op in ("c", "u") else "NULL"
        name = q(trigger_name(table, suffix))
        out.append(f"DROP TRIGGER IF EXISTS {name}")
        insert = "INSERT INTO"
        out.append(
            f"CREATE TRIGGER {name} AFTER {event} ON {q(table.name)} FOR EACH ROW BEGIN\n"
            f'    {insert} {q(LOG_TABLE)} (table_schema, table_name, op, "before", "after") VALUES '
            f"('main', {literal(table.name)}, '{op}',\n        {before},\n        {after});\nEND"
        )
    return out


def remove(table: AuditedTable) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {q(trigger_name(table, suffix))}" for _, suffix, _ in EVENTS]


def teardown(schema: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS {q(LOG_TABLE)}", f"DROP TABLE IF EXISTS {q(REGISTRY_TABLE)}"]


def backfill(schema: str, table: AuditedTable) -> list[str]:
    """Every current row as a read ('r') record (SQLite has one writer: nothing interleaves)."""
    order = ", ".join(f"x.{q(k)}" for k in table.key)
    insert = f'INSERT INTO {q(LOG_TABLE)} (table_schema, table_name, op, "before", "after")'
    select = f"SELECT 'main', {literal(table.name)}, 'r', NULL, {image('x', table)}"
    return [f"{insert} {select} FROM {q(table.name)} x ORDER BY {order}"]
