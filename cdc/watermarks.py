"""Incremental snapshots while streaming, with DBLog's watermarks (Netflix, 2019): the
database-independent state machine shared by the log sources.

A table is read in key-ordered chunks while the log keeps streaming. For each chunk:

1. a *low watermark* row is inserted into the signal table (a committed transaction),
2. the chunk is selected (rows with key > the previous chunk's last key, LIMIT n),
3. a *high watermark* row is inserted.

Both watermarks come back through the log, in commit order with the application's changes. A
change between the low and the high watermark is newer than (or as new as) the chunk's copy of
that row, so the row is dropped from the chunk; when the high watermark arrives, the remaining
chunk rows are emitted right there in the stream. So a snapshot row never overwrites a newer
change, and streaming never pauses for long.

Progress (the queue of streams, the current one, the last key of the last emitted chunk) travels
in the offsets of emitted events (:meth:`WatermarkSnapshot.state`), so a restart continues with
the next chunk. The source supplies two callables: one writes a signal row (committed at once),
one reads a chunk of a stream after a key.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cdc import progress
from cdc.errors import SourceConfigError

log = logging.getLogger(__name__)

OPEN = "snapshot-window-open"
CLOSE = "snapshot-window-close"
EXECUTE = "execute-snapshot"

#: ``write(kind, window)``: insert one signal row (id ``window:kind``) and commit it
WriteSignal = Callable[[str, str], None]
#: ``read(stream, after, limit)``: up to ``limit`` rows of the stream with key > ``after``
ReadChunk = Callable[[str, list[Any] | None, int], list[dict[str, Any]]]


@dataclass
class Chunk:
    """The rows of one closed window, and the progress before and after emitting them."""

    stream: str
    rows: list[dict[str, Any]]
    state_before: dict[str, Any]
    state_after: dict[str, Any]


@dataclass
class WatermarkSnapshot:
    """The watermark state machine; driven by the source's reader thread only."""

    write_signal: WriteSignal
    read_chunk: ReadChunk
    chunk_size: int
    keys: Mapping[str, tuple[str, ...]]  # the streams that can be snapshotted and their keys
    queue: list[str] = field(default_factory=list)
    current: str | None = None
    after: list[Any] | None = None
    window: str | None = None
    window_open: bool = False
    buffer: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    chunk_last: list[Any] | None = None
    state_before: dict[str, Any] = field(default_factory=dict)
    #: rows emitted for the current stream by this process, and its progress report
    emitted: int = 0
    report: progress.Progress | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.queue)

    def state(self) -> dict[str, Any] | None:
        """The progress to store in an offset (None when no snapshot is running)."""
        if not self.busy:
            return None
        return {"queue": list(self.queue), "current": self.current, "after": self.after}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.queue = [s for s in state.get("queue", []) if s in self.keys]
            self.current = state.get("current") if state.get("current") in self.keys else None
            self.after = state.get("after")

    def enqueue(self, streams: Iterable[str]) -> None:
        names = list(streams)
        for name in names:
            if name in self.keys and name != self.current and name not in self.queue:
                self.queue.append(name)
        log.info("incremental snapshot queued: %s", ", ".join(names))

    def open_next_window(self) -> None:
        """Write the low watermark, read the next chunk, write the high watermark."""
        if self.window is not None:
            return
        while self.busy:
            if self.current is None:
                self.current, self.after = self.queue.pop(0), None
            if self.report is None:
                self.report, self.emitted = progress.reporter(f"incremental snapshot of {self.current}"), 0
            stream = self.current
            self.state_before = {"queue": list(self.queue), "current": stream, "after": self.after}
            self.window = str(uuid.uuid4())
            self.write_signal(OPEN, self.window)
            rows = self.read_chunk(stream, self.after, self.chunk_size)
            self.write_signal(CLOSE, self.window)
            key = self.keys[stream]
            if rows:
                self.buffer = {tuple(r[k] for k in key): r for r in rows}
                self.chunk_last = [rows[-1][k] for k in key]
                return
            # The table is exhausted: nothing to reconcile, so its watermarks are ignored.
            self.report(-1, None)
            log.info(
                "incremental snapshot of stream %s done (%d rows read by this run)", stream, self.emitted
            )
            self.current, self.after, self.window, self.report = None, None, None, None

    def on_change(self, stream: str, key: tuple[Any, ...]) -> None:
        """A streamed change: inside the open window it supersedes the chunk's copy."""
        if self.window_open and stream == self.current:
            self.buffer.pop(key, None)

    def on_signal(self, kind: str, data: str | None) -> Chunk | None:
        """A row of the signal table arrived through the log; a closed window returns its chunk."""
        if kind == EXECUTE:
            try:
                streams = list(json.loads(data or "{}").get("streams") or self.keys)
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
        self.emitted += len(chunk.rows)
        if self.report is not None:
            self.report(self.emitted, None)
        return chunk


def interrupted_snapshot_state(
    offset: Mapping[str, Any] | None, streams: Mapping[str, str]
) -> dict[str, Any]:
    """The rest of an interrupted initial snapshot as :meth:`WatermarkSnapshot.restore` state.

    ``offset`` is the last committed snapshot offset (``relation``, ``after``, ``done``, see
    :func:`cdc.logsource.run_snapshot`); ``streams`` maps each stream to snapshot, in order, to
    the relation name the offsets use.
    """
    done = set(offset.get("done", [])) if offset else set()
    relation = offset.get("relation") if offset else None
    names = [n for n, qualified in streams.items() if qualified not in done]
    current = next((n for n in names if streams[n] == relation), None)
    return {
        "queue": [n for n in names if n != current],
        "current": current,
        "after": offset.get("after") if current and offset else None,
    }


def requested_streams(
    action: str, args: Mapping[str, Any], known: Iterable[str], signal_table: str | None, example: str
) -> list[str]:
    """The streams of a ``signal(action, args)`` call of a source (``execute-snapshot``, default
    all of ``known``), or a located SourceConfigError: no signal table (``example`` names one),
    an unknown action or unknown streams."""
    if not signal_table:
        raise SourceConfigError(
            "incremental snapshots need a signal table", hint=f"set source.signal_table, e.g. {example}"
        )
    if action != EXECUTE:
        raise SourceConfigError(f"unknown signal {action!r} (known: {EXECUTE})")
    names = list(known)
    streams = list(args.get("streams") or names)
    unknown = [s for s in streams if s not in names]
    if unknown:
        raise SourceConfigError(f"unknown streams {unknown} (known: {', '.join(names)})")
    return streams
