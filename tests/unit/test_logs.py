"""Log hygiene: APScheduler's per-interval overlap warning becomes one informative line."""

from __future__ import annotations

import logging
import time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from cdc import logs


def test_an_overlapping_job_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    logs.setup("INFO", "human")
    logger = logging.getLogger("apscheduler.scheduler")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    release = time.monotonic() + 1.2
    scheduler = BackgroundScheduler(daemon=True, job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(
        lambda: time.sleep(max(0.0, release - time.monotonic())), "interval", seconds=0.1, id="poll-items"
    )
    try:
        scheduler.start()
        time.sleep(1.5)
    finally:
        scheduler.shutdown(wait=True)
        logger.removeHandler(caplog.handler)
    records = list({id(r): r for r in caplog.records}.values())  # the handler sees each record once
    overlaps = [r for r in records if "still running when its next interval came" in r.getMessage()]
    raw = [r for r in records if "maximum number of running instances" in r.getMessage()]
    assert len(overlaps) == 1 and not raw, [r.getMessage() for r in records]
    assert overlaps[0].levelno == logging.INFO
