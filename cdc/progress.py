"""Progress of long reads (initial loads, snapshots): a bar in a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("cdc.progress")

#: ``update(done, total)``; ``done < 0`` ends the report
Progress = Callable[[int, int | None], None]


def reporter(label: str, every: float = 10.0) -> Progress:
    """A rich progress bar when stderr is a terminal, else an INFO line at most every ``every`` s."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress(
            f"[bold]{label}[/]", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        )
        task = bar.add_task(label, total=None)
        bar.start()

        def update(done: int, total: int | None) -> None:
            if done < 0:
                bar.stop()
            else:
                bar.update(task, completed=done, total=total)

        return update
    state = {"last": 0.0, "start": time.monotonic()}

    def log_update(done: int, total: int | None) -> None:
        now = time.monotonic()
        if done >= 0 and (now - state["last"] >= every or (total is not None and done == total)):
            state["last"] = now
            rate = done / max(now - state["start"], 1e-6)
            log.info("%s: %d/%s rows (%.0f rows/s)", label, done, total if total is not None else "?", rate)

    return log_update
