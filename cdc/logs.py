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


def setup(level: str = "INFO", fmt: str | None = None) -> None:
    """Configure the root logger; ``fmt`` is ``json``, ``human`` or None (auto by tty)."""
    fmt = fmt or os.environ.get("CDC_LOG_FORMAT") or ("human" if sys.stderr.isatty() else "json")
    handler: logging.Handler
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
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
