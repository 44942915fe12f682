"""Run until stopped, retrying retriable failures with capped exponential backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cdc.errors import CdcError

log = logging.getLogger(__name__)


def run_with_retries(
    attempt: Callable[[], None],
    stop: threading.Event,
    backoff_max: float,
    *,
    resumes_from: str,
    on_error: Callable[[CdcError], None] | None = None,
) -> int:
    """Call ``attempt`` until it returns (0) or a fatal CdcError is raised (propagated).

    A retriable error waits 1 s, 2 s, 4 s ... up to ``backoff_max``; an attempt that ran for a
    minute resets the backoff (the outage is new). ``resumes_from`` says in the log where the
    next attempt starts.
    """
    backoff = 1.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            attempt()
            return 0
        except CdcError as exc:
            if on_error is not None:
                on_error(exc)
            if not exc.retriable:
                raise
            if time.monotonic() - started > 60:
                backoff = 1.0
            log.warning("%s; retrying in %.0fs from %s", exc.message, backoff, resumes_from)
            stop.wait(backoff)
            backoff = min(backoff * 2, backoff_max)
    return 0
