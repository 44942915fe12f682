"""Create (and drop) the outbox table from an Alembic revision.

::

    # alembic/versions/20240501_add_cdc_outbox.py
    from alembic import op

    from cdc.outbox.alembic import downgrade_outbox, upgrade_outbox

    def upgrade() -> None:
        upgrade_outbox(op)

    def downgrade() -> None:
        downgrade_outbox(op)

The statements are the packaged ``V1__cdc_outbox.sql`` / ``U1__cdc_outbox.sql`` of the
connection's dialect (PostgreSQL, MySQL/MariaDB, SQLite), pinned to ``version="1"`` so a revision
does the same thing forever, whatever later cdc releases add. Alembic records the revision in
``alembic_version``; ``cdc_schema_history`` is left alone (a later ``cdc migrations apply`` on the
same database is harmless: V1 is idempotent). In offline mode (``alembic upgrade --sql``) the
statements are written into the script. Alembic itself is not imported here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["downgrade_outbox", "upgrade_outbox"]


def upgrade_outbox(op: Any, version: str = "1") -> None:
    """Run the V-file of ``version`` for the dialect of ``op``'s connection."""
    _run(op, version, undo=False)


def downgrade_outbox(op: Any, version: str = "1") -> None:
    """Run the U-file of ``version`` (drops the outbox table and any unrelayed events)."""
    _run(op, version, undo=True)


def _run(op: Any, version: str, *, undo: bool) -> None:
    from cdc.migrations import dialect_name, migration

    context = op.get_context()
    m = migration(dialect_name(str(context.dialect.name)), version)
    statements = m.undo_statements() if undo else m.statements()
    if getattr(context, "as_sql", False):
        from sqlalchemy import text

        for statement in statements:  # offline: every colon is literal SQL, not a bind parameter
            op.execute(text(statement.replace(":", "\\:")))
        return
    bind = op.get_bind()
    for statement in statements:
        bind.exec_driver_sql(statement, execution_options={"no_parameters": True})
