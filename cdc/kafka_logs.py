"""librdkafka's own log lines, routed through Python logging and rate-limited.

Without a ``logger`` librdkafka writes ``%3|1700000000.123|FAIL|...`` lines straight to stderr,
bypassing the log format (one JSON object per line in containers breaks) and repeating the same
complaint many times a second while a broker is down. Every client built by
:mod:`cdc.kafka_clients` gets :data:`LIBRDKAFKA_LOGGER`; its filter lets a message through once
per :data:`REPEAT_WINDOW` seconds and says how many repeats it swallowed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

REPEAT_WINDOW = 30.0
_VARYING = re.compile(r"\d+")  # timings, counters, ports: "after 0ms" and "after 1ms" are one complaint


class RepeatFilter(logging.Filter):
    """Pass the first of a run of similar messages each ``window`` seconds; count the rest."""

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}  # shape -> (last passed at, swallowed since)

    def filter(self, record: logging.LogRecord) -> bool:
        shape = _VARYING.sub("#", record.getMessage())
        now = self._clock()
        with self._lock:
            passed_at, swallowed = self._seen.get(shape, (None, 0))
            if passed_at is not None and now - passed_at < self.window:
                self._seen[shape] = (passed_at, swallowed + 1)
                return False
            self._seen[shape] = (now, 0)
            if len(self._seen) > 1000:  # bounded: forget the oldest shapes
                for old in sorted(self._seen, key=lambda s: self._seen[s][0])[:500]:
                    del self._seen[old]
        if swallowed:
            record.msg = f"{record.getMessage()} (and {swallowed} similar in the last {self.window:.0f}s)"
            record.args = None
        return True


LIBRDKAFKA_LOGGER = logging.getLogger("cdc.librdkafka")
LIBRDKAFKA_LOGGER.addFilter(RepeatFilter())
