"""``cdc init --connector outbox``: one stream per aggregate type of an application's outbox table.

The key contract is the aggregate id (a string). The value contract is the application's event
schema, which only the application knows (the ``.avsc`` its :class:`cdc.outbox.OutboxWriter`
validates with): ``init`` writes a placeholder record and says so, and names the registry subject
the table's rows already point at, where they do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa

from cdc.discover.avro import record_name
from cdc.discover.scaffold import InitRequest, Scaffold, finish
from cdc.errors import SourceConfigError
from cdc.masking import mask_dsn
from cdc.outbox.table import COLUMNS, TABLE
from cdc.sql import engines

KEY_FIELD = "aggregate_id"


def _aggregates(req: InitRequest, table: str) -> list[tuple[str, int, str | None]]:
    """(aggregate type, rows, a schema subject the rows name) found in the outbox table."""
    engine = engines.create_engine(req.url)
    try:
        with engine.connect() as conn:
            try:
                t = sa.Table(table, sa.MetaData(), autoload_with=conn, resolve_fks=False)
            except sa.exc.NoSuchTableError:
                raise SourceConfigError(
                    f"outbox table {table!r} does not exist in {mask_dsn(req.url)}",
                    hint="create it with: cdc migrations apply --dsn <url>",
                ) from None
            missing = [c for c in COLUMNS if c not in t.c]
            if missing:
                raise SourceConfigError(f"outbox table {table!r} lacks columns {missing}")
            query = sa.select(t.c.aggregatetype, sa.func.count(), sa.func.max(t.c.schema_subject)).group_by(
                t.c.aggregatetype
            )
            return [(str(a), int(n), s) for a, n, s in conn.execute(query.order_by(t.c.aggregatetype))]
    except sa.exc.SQLAlchemyError as exc:
        raise engines.translate(exc, "cdc init") from None
    finally:
        engine.dispose()


def scaffold_outbox(req: InitRequest, aggregate_types: tuple[str, ...], table: str = TABLE) -> Scaffold:
    """Streams for the given aggregate types, or for those the outbox table holds rows of."""
    out = Scaffold()
    found = {a: (n, s) for a, n, s in _aggregates(req, table)}
    types = list(aggregate_types) or list(found)
    if not types:
        raise SourceConfigError(
            f"outbox table {table!r} holds no rows, so no aggregate type to relay",
            hint="name them: --aggregate-type customer --aggregate-type order",
        )
    source: dict[str, Any] = {"connector": "outbox", "url": req.url_value}
    if table != TABLE:
        source["table"] = table
    streams = []
    for aggregate in types:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", aggregate).lstrip("._-") or "aggregate"
        rows, subject = found.get(aggregate, (0, None))
        key = {"type": "record", "name": record_name(aggregate) + "Key", "namespace": req.name.replace("-", "_"),
               "fields": [{"name": KEY_FIELD, "type": "string", "doc": "the aggregate id (outbox aggregateid)"}]}  # fmt: skip
        value = {
            "type": "record", "name": record_name(aggregate) + "Event", "namespace": key["namespace"],
            "doc": "PLACEHOLDER written by cdc init: replace with the event schema the application writes",
            "fields": [],
        }  # fmt: skip
        streams.append(
            {"name": name, "key_schema": f"schemas/{name}-key.avsc", "value_schema": f"schemas/{name}-value.avsc",
             "fields": {KEY_FIELD: "aggregateid"}, "capture": {"aggregate_type": aggregate}}
        )  # fmt: skip
        out.files[f"schemas/{name}-key.avsc"] = json.dumps(key, indent=2) + "\n"
        out.files[f"schemas/{name}-value.avsc"] = json.dumps(value, indent=2) + "\n"
        out.streams.append(name)
        named = f"; its {rows} row(s) name subject {subject}" if subject else f" ({rows} row(s) in the table)"
        out.decisions.append(
            f"stream {name}: schemas/{name}-value.avsc is a placeholder: replace it with the .avsc the "
            f"application's OutboxWriter for {aggregate!r} uses (rows without schema_subject are produced "
            f"under it){named}"
        )
    out.notes.append(
        "relay topics are created with cleanup.policy=delete: they hold events, not entity state"
    )
    finish(req, source, streams, out)
    return out
