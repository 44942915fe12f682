"""SIGTERM/SIGINT: the first asks for a graceful stop, the second gives up on it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def install_stop_handlers(stop: threading.Event, what: str) -> None:
    """Set ``stop`` on the first SIGTERM/SIGINT (logging ``what`` happens next); exit 130 on the second."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(130)  # second signal: give up on the graceful path
        log.info("received %s: stopping (%s)", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
