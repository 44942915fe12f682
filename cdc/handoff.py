"""The bounded hand-off between a source's reader thread(s) and the pipeline thread.

Readers ``put`` chunks of events (blocking while the pipeline is behind: that is the
back-pressure on the database reads, not an error) and report failures with ``fail``; the
pipeline ``take``s up to a batch, and a reported failure is raised there, in the pipeline's
thread, never swallowed.
"""

from __future__ import annotations

import queue
import threading

from cdc.plugin import ChangeEvent


class EventHandoff:
    """A bounded queue of event chunks plus the reader's first failure."""

    def __init__(self, max_events: int, chunk: int = 1000) -> None:
        self._queue: queue.Queue[list[ChangeEvent]] = queue.Queue(maxsize=max(2, max_events // chunk))
        self.error: BaseException | None = None

    def put(self, events: list[ChangeEvent], stop: threading.Event) -> bool:
        """Hand over a chunk; False when ``stop`` was set while waiting for room."""
        while not stop.is_set():
            try:
                self._queue.put(events, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    def take(self, timeout: float, batch: int = 5000) -> list[ChangeEvent]:
        """Up to about ``batch`` events, waiting at most ``timeout`` for the first chunk."""
        if self.error is not None:
            raise self.error
        try:
            events = list(self._queue.get(timeout=timeout))
        except queue.Empty:
            return []
        while len(events) < batch:
            try:
                events.extend(self._queue.get_nowait())
            except queue.Empty:
                break
        return events

    def empty(self) -> bool:
        return self._queue.empty()
