"""Which WAL position may be confirmed to the server (shared by the WAL source and the outbox relay).

Events are identified by ``(commit LSN, index within the transaction)``. A transaction's END
LSN may be confirmed once every one of its events is committed downstream; confirming the
commit's own LSN would replay the transaction after every reconnect. When everything received
is delivered and no transaction is half-received, the last keepalive position is confirmed
too, so an idle captured database does not pin WAL.
"""

from __future__ import annotations

import threading
from collections import deque


class ConfirmTracker:
    """Thread-safe: the reader thread records, the pipeline thread acknowledges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (commit LSN, end LSN, event count) in commit order: the stream delivers transactions
        # in commit-LSN order, so acknowledging pops from the left.
        self._ends: deque[tuple[int, int, int]] = deque()
        self._emitted: tuple[int, int] | None = None
        self._acked: tuple[int, int] | None = None
        self._in_txn = False
        self._keepalive = 0
        self.flushed = 0

    def begin(self) -> None:
        with self._lock:
            self._in_txn = True

    def commit(self, commit_lsn: int, end_lsn: int, events: int) -> None:
        with self._lock:
            self._ends.append((commit_lsn, end_lsn, events))
            self._in_txn = False

    @property
    def in_txn(self) -> bool:
        return self._in_txn

    def emitted(self, commit_lsn: int, index: int) -> None:
        with self._lock:
            self._emitted = (commit_lsn, index)

    def keepalive(self, wal_end: int) -> None:
        """A keepalive arrived with no data since the previous one and outside a transaction."""
        with self._lock:
            if not self._in_txn:
                self._keepalive = max(self._keepalive, wal_end)

    def acknowledge(self, commit_lsn: int, index: int) -> None:
        """Everything up to event ``index`` of the transaction at ``commit_lsn`` is committed downstream."""
        with self._lock:
            self._acked = (commit_lsn, index)
            ends = self._ends
            while ends:
                lsn, end, count = ends[0]
                if lsn < commit_lsn or (lsn == commit_lsn and index >= count - 1):
                    self.flushed = max(self.flushed, end)
                    ends.popleft()
                else:
                    break

    def confirmable(self, queue_empty: bool) -> int:
        with self._lock:
            idle = not self._in_txn and self._emitted == self._acked and queue_empty
            if idle and self._keepalive > self.flushed:
                return self._keepalive
            return self.flushed
