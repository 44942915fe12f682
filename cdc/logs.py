"""Logging: human-readable in a terminal, one JSON object per line elsewhere (containers)."""

from __future__ import annotations

import logging
import os
import sys

from cdc.masking import mask_dsn


class _MaskingFilter(logging.Filter):
    """Last line of defence: mask credentials in every formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_dsn(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


class _OverlappingRunFilter(logging.Filter):
    """APScheduler warns on every interval that a job is still running (a long initial load): say
    it once per job, in words an operator can act on, instead of one warning per interval."""

    def __init__(self) -> None:
        super().__init__()
        self._told: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances reached" not in str(record.msg):
            return True
        found = record.args[0] if isinstance(record.args, tuple) and record.args else None
        # The job's str() carries its next run time: name it by function and arguments instead.
        job = f"{getattr(found, 'name', 'a job')}{tuple(getattr(found, 'args', ()))}"
        if job in self._told:
            return False
        self._told.add(job)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = (
            f"scheduled job {job}: still running when its next interval came (a long load or a slow query); "
            "the next run starts when this one ends (said once)",
            None,
        )
        return True


def setup(level: str = "INFO", fmt: str | None = None) -> None:
    """Configure the root logger; ``fmt`` is ``json``, ``human`` or None (auto by tty)."""
    fmt = fmt or os.environ.get("CDC_LOG_FORMAT") or ("human" if sys.stderr.isatty() else "json")
    handler: logging.Handler
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        # CDC_LOG_STREAM=stdout (the image sets it): a container's log is its standard output.
        stream = sys.stdout if os.environ.get("CDC_LOG_STREAM") == "stdout" else sys.stderr
        handler = logging.StreamHandler(stream)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level"}
            )
        )
    else:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "urllib3", "httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scheduler_log = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _OverlappingRunFilter) for f in scheduler_log.filters):
        scheduler_log.addFilter(_OverlappingRunFilter())
