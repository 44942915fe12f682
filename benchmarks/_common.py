"""Shared bits of the benchmark scripts: service addresses, RSS, the final JSON line."""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f'benchmark: {name} is not set; run: make services && eval "$(make env)"')
    return value


def rss_mb() -> float:
    """Peak resident set size of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def report(result: dict[str, Any]) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(result, sort_keys=False), flush=True)
