"""Garbage-collector settings for the long-running loops (sources, capture process, sink).

A streaming loop allocates a few short-lived objects per event (decoded dicts, change records)
and frees them a batch later. With CPython's default threshold (a young collection every 700
net allocations) a 10,000-record batch triggers hundreds of collections, each walking every
young object, and the periodic full collections walk every module, schema and cached plan
loaded at start-up. Measured on the sink benchmark (200,000 records into PostgreSQL) this cut
throughput by a fifth. The objects of a batch rarely form cycles, so collecting less often
costs almost no memory; start-up objects are frozen so full collections skip them.
"""

from __future__ import annotations

import gc

#: net allocations between young-generation collections (CPython's default is 700)
YOUNG_THRESHOLD = 50_000

_frozen = False


def tune_for_streaming() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    Call once a process has loaded its configuration and is about to enter its loop. Only the
    first call freezes: a frozen object's reference cycles are never collected, so a process
    that runs many loops (tests, the demo) must not freeze each one's leftovers.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
