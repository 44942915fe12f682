"""The PostgreSQL half of incremental snapshots: watermark rows and chunk reads.

The watermark algorithm itself (DBLog) is :mod:`cdc.watermarks`, shared with the binlog source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from cdc.pg.types import TypeMap
from cdc.watermarks import WatermarkSnapshot
from connectors.sources.postgres_wal.catalog import Table, split_name
from connectors.sources.postgres_wal.snapshot import raw_text


def incremental_snapshot(
    conn: psycopg.Connection[Any],
    signal_table: str,
    chunk_size: int,
    tables: Mapping[str, Table],
    columns: Mapping[str, tuple[str, ...]],
    keys: Mapping[str, tuple[str, ...]],
    types: TypeMap,
) -> WatermarkSnapshot:
    """The watermark state machine over ``conn`` (autocommit: each watermark commits at once)."""

    def write_signal(kind: str, window: str) -> None:
        # One row per watermark: the window id goes in data, the row id must be unique.
        conn.execute(
            sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(
                sql.Identifier(*split_name(signal_table))
            ),
            (f"{window}:{kind}", kind, window),
        )

    def read_chunk(stream: str, after: list[Any] | None, limit: int) -> list[dict[str, Any]]:
        table, cols, key = tables[stream], columns[stream], keys[stream]
        loaders: list[Callable[[bytes], Any]] = [
            types.loader(table.columns[c].type_oid, interval_as_tuple=True) for c in cols
        ]
        # Alias and qualify: an unqualified key would resolve to the text-cast output column.
        query = sql.SQL("SELECT {} FROM ONLY {} AS t").format(
            sql.SQL(", ").join(types.as_text(c, table.columns[c].type_oid) for c in cols),
            sql.Identifier(table.schema, table.name),
        )
        params: list[Any] = []
        if after is not None:
            query += sql.SQL(" WHERE ({}) > ({})").format(
                sql.SQL(", ").join(sql.Identifier("t", k) for k in key),
                sql.SQL(", ").join(sql.Placeholder() * len(key)),
            )
            params = list(after)
        query += sql.SQL(" ORDER BY {} LIMIT {}").format(
            sql.SQL(", ").join(sql.Identifier("t", k) for k in key), sql.Literal(limit)
        )
        with conn.cursor() as cur:
            raw_text(cur)
            cur.execute(query, params or None, binary=True)
            return [
                {c: (None if v is None else load(v)) for c, load, v in zip(cols, loaders, raw, strict=True)}
                for raw in cur.fetchall()
            ]

    return WatermarkSnapshot(write_signal, read_chunk, chunk_size, dict(keys))
