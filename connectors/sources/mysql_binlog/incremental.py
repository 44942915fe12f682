"""The MySQL/MariaDB half of incremental snapshots: the signal table, watermark rows, chunk reads.

The watermark algorithm itself (DBLog) is :mod:`cdc.watermarks`, shared with the WAL source.
Watermarks are rows inserted into the signal table in the captured database; they come back
through the binlog in commit order with the application's changes.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pymysql

from cdc.mysql import server
from cdc.plugin import ColumnInfo
from cdc.watermarks import EXECUTE, WatermarkSnapshot

#: the signal table's columns, in order (a row event carries them by name)
COLUMNS = ("id", "type", "data")


def create_signal_table(conn: pymysql.connections.Connection[Any], db: str, table: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {server.quote(db)}.{server.quote(table)} "
            "(id VARCHAR(100) PRIMARY KEY, type VARCHAR(64) NOT NULL, data TEXT)"
        )


def insert_signal(
    conn: pymysql.connections.Connection[Any], db: str, table: str, ident: str, kind: str, data: str
) -> None:
    """Insert one signal row (the session is autocommit: it commits at once)."""
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {server.quote(db)}.{server.quote(table)} (id, type, data) VALUES (%s, %s, %s)",  # noqa: S608 - identifiers quoted, values bound
            (ident, kind, data),
        )


def request_snapshot(
    conn: pymysql.connections.Connection[Any], db: str, table: str, streams: list[str]
) -> str:
    """Write an ``execute-snapshot`` signal; returns its id."""
    ident = str(uuid.uuid4())
    insert_signal(conn, db, table, ident, EXECUTE, json.dumps({"streams": streams}))
    return ident


def incremental_snapshot(
    conn: pymysql.connections.Connection[Any],
    signal: tuple[str, str],
    chunk_size: int,
    tables: Mapping[str, tuple[str, str, dict[str, ColumnInfo]]],
    keys: Mapping[str, tuple[str, ...]],
    normalizers: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]],
) -> WatermarkSnapshot:
    """The watermark state machine over ``conn`` (autocommit). ``tables``: per stream its
    database, table and mapped columns; ``normalizers``: the same row normalizer as the initial
    snapshot's, so a row reads the same from either snapshot."""

    def write_signal(kind: str, window: str) -> None:
        insert_signal(conn, signal[0], signal[1], f"{window}:{kind}", kind, window)

    def read_chunk(stream: str, after: list[Any] | None, limit: int) -> list[dict[str, Any]]:
        db, table, columns = tables[stream]
        rows = server.read_chunks(conn, db, table, columns, keys[stream], after, limit)
        normalize = normalizers[stream]
        return [normalize(row) for row in itertools.islice(rows, limit)]

    return WatermarkSnapshot(write_signal, read_chunk, chunk_size, dict(keys))
