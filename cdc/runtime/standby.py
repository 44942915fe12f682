"""Hot standby: wait for the single-instance lease instead of exiting when another replica holds it.

Two replicas of one connector are the usual way to run it for availability. The active one holds
the lease (a session lock in the source database, see :mod:`cdc.sql.lease`); with
``runtime.standby: true`` the other polls for it about once a second. The lock dies with the
active instance's database session - at once on ``kill -9`` or a lost container, and on a clean
stop right after the final flush and offset commit - so the standby takes over within about a
second plus its own start-up, and resumes from the committed offsets like any restart.
"""

from __future__ import annotations

import logging
import threading
import time

from cdc.errors import LeaseHeldError
from cdc.plugin import Lease, SourceConnector
from cdc.runtime.metrics import Health

log = logging.getLogger(__name__)

#: how long a standby waits between two attempts to take the lease (seconds)
POLL_INTERVAL = 1.0
#: how often a standby repeats that it is still standing by (seconds)
REMIND_INTERVAL = 300.0


def take_lease(
    source: SourceConnector,
    name: str,
    stop: threading.Event,
    health: Health,
    *,
    standby: bool,
    poll: float = POLL_INTERVAL,
) -> Lease | None:
    """The connector's lease; None when ``stop`` was set while standing by.

    Without ``standby`` a held lease raises :class:`~cdc.errors.LeaseHeldError` (exit code 6), as
    before. With it, this waits (health says alive, not ready) until the lease is free.
    """
    try:
        return source.acquire_lease(name)
    except LeaseHeldError:
        if not standby:
            raise
    started = last_said = time.monotonic()
    health.standing_by(True)
    log.info(
        "standing by: another instance of connector %r is active (it holds the lease); "
        "taking over when it stops (checking every %.0fs)",
        name,
        poll,
    )
    try:
        while not stop.wait(poll):
            try:
                lease = source.acquire_lease(name)
            except LeaseHeldError:
                if time.monotonic() - last_said >= REMIND_INTERVAL:
                    last_said = time.monotonic()
                    log.info("still standing by for connector %r", name)
                continue
            log.info(
                "took the lease of connector %r after standing by %.1fs: resuming from the committed offsets",
                name,
                time.monotonic() - started,
            )
            return lease
        log.info("stopped while standing by")
        return None
    finally:
        health.standing_by(False)
