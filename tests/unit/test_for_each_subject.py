"""for_each_subject: the registry's subjects resolved concurrently, results and errors in order."""

from __future__ import annotations

import threading
import time

import pytest

from cdc.errors import SchemaError
from cdc.schemas import subjects
from cdc.schemas.subjects import SubjectSchema, for_each_subject

ITEMS = [
    SubjectSchema(f"t{i}-{part}", {"type": "long"}, part == "key")
    for i in range(20)
    for part in ("key", "value")
]


def test_ids_come_in_the_order_of_the_subjects() -> None:
    # later subjects answer first: the order must not depend on who finishes first
    def slow_first(item: SubjectSchema) -> int:
        index = ITEMS.index(item)
        time.sleep(0.002 * (len(ITEMS) - index))
        return 1000 + index

    assert for_each_subject(slow_first, ITEMS) == [1000 + i for i in range(len(ITEMS))]
    assert for_each_subject(slow_first, ITEMS[:1]) == [1000]
    assert for_each_subject(slow_first, []) == []


def test_calls_overlap_up_to_the_bound() -> None:
    lock = threading.Lock()
    running = peak = 0

    def call(item: SubjectSchema) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return 1

    for_each_subject(call, ITEMS)
    assert 1 < peak <= subjects.CONCURRENCY


def test_the_first_failing_subject_in_order_is_raised() -> None:
    def fail_some(item: SubjectSchema) -> int:
        index = ITEMS.index(item)
        if index in (7, 30):
            time.sleep(0.05 if index == 7 else 0)  # the later one fails first
            raise SchemaError(f"subject {item.subject!r}: refused")
        return index

    with pytest.raises(SchemaError, match="'t3-value'"):
        for_each_subject(fail_some, ITEMS)
