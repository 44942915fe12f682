"""The bounded hand-off between a source's reader thread(s) and the pipeline thread.

Readers ``put`` chunks of events (blocking while the pipeline is behind: that is the
back-pressure on the database reads, not an error) and report failures with ``fail``; the
pipeline ``take``s up to a batch, and a reported failure is raised there, in the pipeline's
thread, never swallowed.

The bound counts events, not chunks: a log reader hands over at every transaction end when
nothing more is waiting, so under a live trickle a chunk is often one event, and a bound of
N/1000 chunks would let only a handful of events wait - stalling the reader (and adding
latency) while the pipeline lingers for a batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from cdc.plugin import ChangeEvent

#: events a source buffers ahead of the pipeline unless its ``queue_events`` says otherwise:
#: 10,000 decouples reading from the pipeline for 0.2 s or more at full speed; 50,000 held
#: ~50-70 MB more at peak (issue #15's RSS goal) and was no faster in the drain benchmarks
DEFAULT_QUEUE_EVENTS = 10_000


#: Seconds a binlog reader thread waits, once it has handed over everything the server had
#: sent, before it reads on. Under a trickle of small transactions a blocking read returns for
#: every transaction: a wake-up, then the GIL taken from the capture process's other thread,
#: which cost more CPU than reading the transaction. After the pause one read takes every
#: transaction committed meanwhile. Binlog live benchmark (5,000 single-row transactions/s,
#: 2-core machine): capture CPU per event 93-103 us -> 75-86 us; 1 ms gave 84-87 us, 4 ms no
#: less than 2 ms and a longer tail. The WAL reader does not pause: there it saved 9% of the
#: CPU but added 2-6 ms to p50 against a tighter latency goal.
CAUGHT_UP_PAUSE = 0.002


def pause_caught_up() -> None:
    """Called by a reader thread after a hand-off made because nothing more was waiting (see
    :data:`CAUGHT_UP_PAUSE`); never after a full chunk or a heartbeat."""
    time.sleep(CAUGHT_UP_PAUSE)


class EventHandoff:
    """A queue of event chunks bounded by its number of events, plus the reader's first failure."""

    def __init__(self, max_events: int) -> None:
        self._chunks: deque[list[ChangeEvent]] = deque()
        self._events = 0  # events in the chunks queued
        self._max = max_events
        self._changed = threading.Condition()
        self.error: BaseException | None = None

    def put(self, events: list[ChangeEvent], stop: threading.Event) -> bool:
        """Hand over a chunk; False when ``stop`` was set while waiting for room. A chunk larger
        than the bound is taken alone once the queue is empty."""
        with self._changed:
            while self._events and self._events + len(events) > self._max:
                if stop.is_set():
                    return False
                self._changed.wait(0.2)
            if stop.is_set():
                return False
            self._chunks.append(events)
            self._events += len(events)
            self._changed.notify_all()
        return True

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    def take(self, timeout: float, batch: int = 5000) -> list[ChangeEvent]:
        """Up to about ``batch`` events (whole chunks), waiting at most ``timeout`` for the first."""
        if self.error is not None:
            raise self.error
        with self._changed:
            if not self._chunks and timeout > 0:
                self._changed.wait(timeout)
            if not self._chunks:
                return []
            events = list(self._chunks.popleft())
            while self._chunks and len(events) < batch:
                events.extend(self._chunks.popleft())
            self._events -= len(events)
            self._changed.notify_all()
        return events

    def empty(self) -> bool:
        with self._changed:
            return not self._chunks
