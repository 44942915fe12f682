"""The outbox table's shape, shared by the migrations, the application helper and the relay."""

from __future__ import annotations

TABLE = "cdc_outbox"
#: the columns the application writes (``seq`` is assigned by the database)
WRITTEN_COLUMNS = (
    "id", "aggregatetype", "aggregateid", "type", "payload", "timestamp", "schema_subject", "schema_version",
    "headers",
)  # fmt: skip
#: every column, as the relay reads them
COLUMNS = (*WRITTEN_COLUMNS, "seq")
