"""Incremental snapshots while streaming, with DBLog's watermarks (Netflix, 2019).

A table is read in key-ordered chunks while the WAL keeps streaming. For each chunk:

1. a *low watermark* row is inserted into the signal table (a committed transaction),
2. the chunk is selected (rows with key > the previous chunk's last key, LIMIT n),
3. a *high watermark* row is inserted.

Both watermarks come back through the replication stream, in commit order with the
application's changes. A streamed change between the low and the high watermark is newer than
(or as new as) the chunk's copy of that row, so the row is dropped from the chunk; when the high
watermark arrives, the remaining chunk rows are emitted right there in the stream. So a snapshot
row never overwrites a newer streamed change, and streaming never pauses for long.

Progress (the queue of streams, the current one, the last key of the last emitted chunk) travels
in the offsets of emitted events, so a restart continues with the next chunk.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Loader

from cdc.pg.types import TypeMap
from connectors.sources.postgres_wal.catalog import Table, split_name

log = logging.getLogger(__name__)

OPEN = "snapshot-window-open"
CLOSE = "snapshot-window-close"
EXECUTE = "execute-snapshot"


class _RawText(Loader):
    def load(self, data: Any) -> bytes:
        return bytes(data)


@dataclass
class Chunk:
    stream: str
    rows: list[dict[str, Any]]
    state_before: dict[str, Any]
    state_after: dict[str, Any]


@dataclass
class IncrementalSnapshot:
    """The watermark state machine; driven by the reader thread only."""

    conn: psycopg.Connection[Any]
    signal_table: str
    chunk_size: int
    tables: dict[str, Table]
    columns: dict[str, tuple[str, ...]]
    keys: dict[str, tuple[str, ...]]
    types: TypeMap
    queue: list[str] = field(default_factory=list)
    current: str | None = None
    after: list[Any] | None = None
    window: str | None = None
    window_open: bool = False
    buffer: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    chunk_last: list[Any] | None = None
    state_before: dict[str, Any] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.queue)

    def state(self) -> dict[str, Any] | None:
        if not self.busy:
            return None
        return {"queue": list(self.queue), "current": self.current, "after": self.after}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state:
            self.queue = [s for s in state.get("queue", []) if s in self.tables]
            self.current = state.get("current") if state.get("current") in self.tables else None
            self.after = state.get("after")

    def enqueue(self, streams: list[str]) -> None:
        for name in streams:
            if name in self.tables and name != self.current and name not in self.queue:
                self.queue.append(name)
        log.info("incremental snapshot queued: %s", ", ".join(streams))

    def _signal(self, kind: str, window: str) -> None:
        # One row per watermark: the window id goes in data, the row id must be unique.
        self.conn.execute(
            sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(
                sql.Identifier(*split_name(self.signal_table))
            ),
            (f"{window}:{kind}", kind, window),
        )

    def open_next_window(self) -> None:
        """Write the low watermark, read the next chunk, write the high watermark."""
        if self.window is not None:
            return
        while self.busy:
            if self.current is None:
                self.current, self.after = self.queue.pop(0), None
            stream = self.current
            self.state_before = {"queue": list(self.queue), "current": stream, "after": self.after}
            self.window = str(uuid.uuid4())
            self._signal(OPEN, self.window)
            rows = self._read_chunk(stream)
            self._signal(CLOSE, self.window)
            key = self.keys[stream]
            if rows:
                self.buffer = {tuple(r[k] for k in key): r for r in rows}
                self.chunk_last = [rows[-1][k] for k in key]
                return
            # The table is exhausted: nothing to reconcile, so its watermarks are ignored.
            log.info("incremental snapshot of stream %s done", stream)
            self.current, self.after, self.window = None, None, None

    def _read_chunk(self, stream: str) -> list[dict[str, Any]]:
        table, columns, key = self.tables[stream], self.columns[stream], self.keys[stream]
        loaders: list[Callable[[bytes], Any]] = [
            self.types.loader(table.columns[c].type_oid, interval_as_tuple=True) for c in columns
        ]
        # Alias and qualify: an unqualified key would resolve to the text-cast output column.
        query = sql.SQL("SELECT {} FROM ONLY {} AS t").format(
            sql.SQL(", ").join(self.types.as_text(c, table.columns[c].type_oid) for c in columns),
            sql.Identifier(table.schema, table.name),
        )
        params: list[Any] = []
        if self.after is not None:
            query += sql.SQL(" WHERE ({}) > ({})").format(
                sql.SQL(", ").join(sql.Identifier("t", k) for k in key),
                sql.SQL(", ").join(sql.Placeholder() * len(key)),
            )
            params = list(self.after)
        query += sql.SQL(" ORDER BY {} LIMIT {}").format(
            sql.SQL(", ").join(sql.Identifier("t", k) for k in key), sql.Literal(self.chunk_size)
        )
        with self.conn.cursor() as cur:
            cur.adapters.register_loader("text", _RawText)
            cur.execute(query, params or None)
            return [
                {
                    c: (None if v is None else load(v))
                    for c, load, v in zip(columns, loaders, raw, strict=True)
                }
                for raw in cur.fetchall()
            ]

    def on_change(self, stream: str, key: tuple[Any, ...]) -> None:
        """A streamed change: inside the open window it supersedes the chunk's copy."""
        if self.window_open and stream == self.current:
            self.buffer.pop(key, None)

    def on_signal(self, kind: str, ident: str, data: str | None) -> Chunk | None:
        """A row of the signal table arrived through the stream."""
        if kind == EXECUTE:
            try:
                streams = list(json.loads(data or "{}").get("streams") or self.tables)
            except ValueError:
                log.warning("ignoring an execute-snapshot signal with invalid data %r", data)
                return None
            self.enqueue(streams)
            return None
        if data != self.window:
            return None  # a watermark of an earlier process (or window): not ours to act on
        if kind == OPEN:
            self.window_open = True
            return None
        if kind != CLOSE:
            return None
        assert self.current is not None
        self.window, self.window_open = None, False
        self.after = self.chunk_last
        chunk = Chunk(
            self.current, list(self.buffer.values()), self.state_before,
            {"queue": list(self.queue), "current": self.current, "after": self.after},
        )  # fmt: skip
        self.buffer = {}
        return chunk
