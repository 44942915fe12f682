"""What every log-reading source (PostgreSQL WAL, MySQL/MariaDB binlog) shares.

- :class:`SnapshotMode`: when an initial snapshot is taken before streaming.
- :class:`ReaderThread`: one reader thread handing events to the pipeline through a bounded
  :class:`~cdc.handoff.EventHandoff`, the session lease, ``poll`` and ``close``.
- :func:`run_snapshot`: the chunked, resumable, progress-reporting read of every table of an
  initial snapshot. Each table is read in key order; each event's offset says which table is
  being read, the key of the last row handed over and which tables are done, so a process that
  dies mid-snapshot continues after the last committed key instead of starting over.

The database-specific parts (opening a consistent snapshot, reading a table after a key,
counting rows) stay in each connector and are passed in as callables.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cdc import progress
from cdc.handoff import EventHandoff
from cdc.plugin import ChangeEvent, Lease, Offset, Offsets, Op
from cdc.sql import engines, lease

log = logging.getLogger(__name__)

#: events handed over per chunk
CHUNK = 1000


class ReaderThread:
    """The threading half of a log source: a reader thread, its hand-off and the lease.

    A source mixes this in before :class:`~cdc.plugin.SourceConnector`, calls
    :meth:`_init_reader` in its constructor and :meth:`_start_reader` from ``start``; the
    reader hands chunks over with :meth:`_put` and reports a failure with ``_handoff.fail``.
    """

    dsn: str
    _lease_engine: Any = None

    def _init_reader(self, queue_events: int) -> None:
        self._handoff = EventHandoff(queue_events)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acked = threading.Condition()
        self._acked_offsets: Offsets = {}

    def _start_reader(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._thread.start()

    def _put(self, events: list[ChangeEvent]) -> bool:
        """Hand a chunk over (blocking while the pipeline is behind); False when stopping."""
        return self._handoff.put(events, self._stop)

    def _checkpoint(self, partition: str, offset: Offset) -> bool:
        """Make ``offset`` durable before anything else is handed over: hand over a
        :attr:`~cdc.plugin.Op.CHECKPOINT` and wait until it is acknowledged (committed). False
        when stopping. A source that overrides ``acknowledge`` must call :meth:`_note_ack`."""
        if not self._put([ChangeEvent("", Op.CHECKPOINT, {}, None, partition, offset)]):
            return False
        with self._acked:
            while self._acked_offsets.get(partition) != offset:
                if self._stop.is_set():
                    return False
                self._acked.wait(0.2)
        return True

    def _note_ack(self, offsets: Offsets) -> None:
        with self._acked:
            self._acked_offsets.update(offsets)
            self._acked.notify_all()

    def acknowledge(self, offsets: Offsets) -> None:
        self._note_ack(offsets)

    def acquire_lease(self, connector_name: str) -> Lease:
        """The single-instance lease, held by a session of the source database."""
        if self._lease_engine is None:  # one engine for every attempt (a standby retries each second)
            self._lease_engine = engines.create_engine(self.dsn, pool_size=1)
        return lease.acquire(self._lease_engine, connector_name)

    def poll(self, timeout: float) -> list[ChangeEvent]:
        return self._handoff.take(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._lease_engine is not None:
            self._lease_engine.dispose()


class SnapshotMode(StrEnum):
    """When a log source reads the tables' current rows before streaming."""

    INITIAL = "initial"  # snapshot once when no position is stored, then stream
    NEVER = "never"  # stream only, from the log's current position (alias: no_data)
    NO_DATA = "no_data"
    INITIAL_ONLY = "initial_only"  # snapshot, then stop
    # snapshot whenever no usable position exists: none stored, or the stored one is gone
    # from the server - instead of stopping
    WHEN_NEEDED = "when_needed"

    @property
    def snapshots(self) -> bool:
        """True when this mode reads the tables when no usable position exists."""
        return self in (SnapshotMode.INITIAL, SnapshotMode.INITIAL_ONLY, SnapshotMode.WHEN_NEEDED)


@dataclass(frozen=True, slots=True)
class SnapshotTable:
    """One relation of a snapshot: the stream it feeds and how to read it after a key."""

    stream: str
    qualified: str  # the name stored in offsets (schema.table)
    key_columns: tuple[str, ...]
    #: rows (column -> value) in key order, strictly after ``after`` (a key list) when given
    read: Callable[[list[Any] | None], Iterable[dict[str, Any]]]


def run_snapshot(
    tables: Sequence[SnapshotTable],
    partition: str,
    resume: Offset | None,
    put: Callable[[list[ChangeEvent]], bool],
    *,
    count: Callable[[], int] | None = None,
    extra: Offset | None = None,
    source: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> bool:
    """Read every table not yet done, handing READ events over in chunks of :data:`CHUNK`.

    ``resume`` is the offset of the last committed snapshot event (``relation``, ``after``,
    ``done``); ``extra`` is merged into every offset (e.g. the log position streaming starts
    from). ``count`` gives the number of rows for the progress report; it runs once per
    snapshot, not per restart: its answer travels in the offsets (a count(*) of a large table
    is work a restart would otherwise repeat before its first row). Returns False when ``put``
    refused (the source is stopping).
    """
    done: list[str] = list(resume.get("done", [])) if resume else []
    total: int | None = resume.get("total") if resume else None
    if total is None and count is not None:
        total = count()
    report = progress.reporter("snapshot")
    emitted = 0
    for table in tables:
        if table.qualified in done:
            continue
        after = resume.get("after") if resume and resume.get("relation") == table.qualified else None
        chunk: list[ChangeEvent] = []
        for row in table.read(after):
            key = {k: row[k] for k in table.key_columns}
            offset: Offset = {
                **(extra or {}),
                "phase": "snapshot",
                "total": total,
                "relation": table.qualified,
                "after": list(key.values()),
                "done": done,
            }
            chunk.append(ChangeEvent(table.stream, Op.READ, key, row, partition, offset, source=source or {}))
            if len(chunk) >= CHUNK:
                emitted += len(chunk)
                report(emitted, total)
                if not put(chunk) or (stop is not None and stop.is_set()):
                    return False
                chunk = []
        if chunk:
            emitted += len(chunk)
            if not put(chunk):
                return False
        done = [*done, table.qualified]
        report(emitted, total)
    report(-1, total)
    log.info("snapshot done: %d rows read by this run", emitted)
    return True
