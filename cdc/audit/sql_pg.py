"""PostgreSQL: one audit table, one generic plpgsql trigger function, one row trigger per table.

The function stores ``to_jsonb(OLD/NEW)``, so it needs no column list and keeps capturing a
table whose columns change; the relay rebuilds typed values with ``jsonb_populate_record``. It
runs ``SECURITY DEFINER`` (as the role that applied it, with a fixed search_path) so the
application's role needs no privilege on the audit table.
"""

from __future__ import annotations

from cdc.audit.catalog import LOG_TABLE, PG_FUNCTION, PREFIX, REGISTRY_TABLE, AuditedTable


def q(name: str) -> str:
    """A quoted identifier (always quoted: no keyword or case surprise)."""
    return '"' + name.replace('"', '""') + '"'


def setup(schema: str) -> list[str]:
    """The shared objects: log table and its index, registry table, capture function."""
    log, reg, fn = (
        f"{q(schema)}.{q(LOG_TABLE)}",
        f"{q(schema)}.{q(REGISTRY_TABLE)}",
        f"{q(schema)}.{q(PG_FUNCTION)}",
    )
    insert = f"INSERT INTO {log} (table_schema, table_name, op, before, after) VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME"  # noqa: S608 - quoted names
    return [
        f"""CREATE TABLE IF NOT EXISTS {log} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_schema text NOT NULL,
    table_name text NOT NULL,
    op char(1) NOT NULL,
    before jsonb,
    after jsonb,
    ts timestamptz NOT NULL DEFAULT statement_timestamp(),
    relayed_at timestamptz
)""",
        f"CREATE INDEX IF NOT EXISTS {q(LOG_TABLE + '_pending')} ON {log} (table_schema, table_name, id) "
        "WHERE relayed_at IS NULL",
        f"""CREATE TABLE IF NOT EXISTS {reg} (
    table_schema text NOT NULL,
    table_name text NOT NULL,
    columns text NOT NULL,
    installed_on timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_schema, table_name)
)""",
        f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cdc_audit$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {insert}, 'c', NULL, to_jsonb(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        {insert}, 'u', to_jsonb(OLD), to_jsonb(NEW));
    ELSIF TG_OP = 'DELETE' THEN
        {insert}, 'd', to_jsonb(OLD), NULL);
    ELSIF TG_OP = 'TRUNCATE' THEN
        {insert}, 't', NULL, NULL);
    END IF;
    RETURN NULL;
END
$cdc_audit$""",
    ]


def trigger_names(table: AuditedTable, truncate: bool) -> list[str]:
    return [PREFIX, *([f"{PREFIX}_truncate"] if truncate else [])]


def install(schema: str, table: AuditedTable, truncate: bool) -> list[str]:
    """The table's triggers (CREATE OR REPLACE: applying again changes nothing)."""
    target, fn = f"{q(table.schema)}.{q(table.name)}", f"{q(schema)}.{q(PG_FUNCTION)}"
    out = [
        f"CREATE OR REPLACE TRIGGER {q(PREFIX)} AFTER INSERT OR UPDATE OR DELETE ON {target} "
        f"FOR EACH ROW EXECUTE FUNCTION {fn}()"
    ]
    if truncate:
        out.append(
            f"CREATE OR REPLACE TRIGGER {q(PREFIX + '_truncate')} AFTER TRUNCATE ON {target} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
        )
    else:
        out.append(f"DROP TRIGGER IF EXISTS {q(PREFIX + '_truncate')} ON {target}")
    return out


def remove(table: AuditedTable) -> list[str]:
    target = f"{q(table.schema)}.{q(table.name)}"
    return [f"DROP TRIGGER IF EXISTS {q(name)} ON {target}" for name in (PREFIX, f"{PREFIX}_truncate")]


def teardown(schema: str) -> list[str]:
    return [
        f"DROP FUNCTION IF EXISTS {q(schema)}.{q(PG_FUNCTION)}()",
        f"DROP TABLE IF EXISTS {q(schema)}.{q(LOG_TABLE)}",
        f"DROP TABLE IF EXISTS {q(schema)}.{q(REGISTRY_TABLE)}",
    ]


def backfill(schema: str, table: AuditedTable) -> list[str]:
    """Every current row as a read ('r') record. SHARE mode holds writers off meanwhile, so no
    change can commit between this snapshot and these ids (it would be published before them).

    The transaction takes its xid before it draws the first id, as every trigger's transaction
    has (its own row change assigned it): the relay's scan bound relies on every writer of the
    log holding its xid before drawing an id (see ``connectors.sources.audit.source``)."""
    target = f"{q(table.schema)}.{q(table.name)}"
    order = ", ".join(f"x.{q(k)}" for k in table.key)
    return [
        f"LOCK TABLE {target} IN SHARE MODE",
        "SELECT pg_current_xact_id()",
        f"INSERT INTO {q(schema)}.{q(LOG_TABLE)} (table_schema, table_name, op, after) "  # noqa: S608 - quoted names
        f"SELECT {literal(table.schema)}, {literal(table.name)}, 'r', to_jsonb(x) FROM {target} x ORDER BY {order}",
    ]


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
