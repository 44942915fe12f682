"""SIGTERM/SIGINT/SIGHUP: the first asks for a graceful stop, the second gives up on it.

SIGHUP (a closed terminal, some process managers' "reload") is a graceful stop too: its default
action would kill the process with events in flight and nothing committed. There is no reload:
a supervisor restarts the connector with the new config.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

#: Set by the first stop signal, process-wide: blocking client calls wait in short slices and
#: give up once it is set, so a stop is honoured within about a second even while the broker is
#: unreachable (a Python signal handler only runs between two such slices).
STOPPING = threading.Event()


def install_stop_handlers(stop: threading.Event, what: str) -> None:
    """Set ``stop`` on the first SIGTERM/SIGINT/SIGHUP (logging ``what`` happens next); exit 130 on the second."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(130)  # second signal: give up on the graceful path
        log.info("received %s: stopping (%s)", signal.Signals(signum).name, what)
        stop.set()
        STOPPING.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)
