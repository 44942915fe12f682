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


def test_items_of_one_subject_run_one_after_another_in_order() -> None:
    # Two streams into one topic share its subjects: their registrations must not race (the
    # registry refused the second concurrent "set compatibility" of a new key subject with 409).
    shared = [
        SubjectSchema("pay-key", {"type": "long"}, True),
        SubjectSchema("pay-value", {"type": "string"}, False),
        SubjectSchema("pay-key", {"type": "long"}, True),
        SubjectSchema("pay-value", {"type": "string"}, False),
    ]
    items = [*shared, *ITEMS]
    lock = threading.Lock()
    running: dict[str, int] = {}
    order: list[int] = []
    overlapped: list[str] = []

    def call(item: SubjectSchema) -> int:
        index = next(i for i, x in enumerate(items) if x is item)
        with lock:
            running[item.subject] = running.get(item.subject, 0) + 1
            if running[item.subject] > 1:
                overlapped.append(item.subject)
            if item.subject.startswith("pay-"):
                order.append(index)
        time.sleep(0.01)
        with lock:
            running[item.subject] -= 1
        return index

    assert for_each_subject(call, items) == list(range(len(items)))
    assert overlapped == []
    assert [i for i in order if items[i].subject == "pay-key"] == [0, 2]
    assert [i for i in order if items[i].subject == "pay-value"] == [1, 3]


def test_a_failure_stops_the_rest_of_its_subject_and_the_first_in_order_is_raised() -> None:
    items = [
        SubjectSchema("a-value", {"type": "long"}, False),
        SubjectSchema("b-value", {"type": "long"}, False),
        SubjectSchema("a-value", {"type": "string"}, False),
    ]
    called: list[int] = []

    def call(item: SubjectSchema) -> int:
        index = next(i for i, x in enumerate(items) if x is item)
        called.append(index)
        if index in (0, 1):
            time.sleep(0.05 if index == 0 else 0)  # b fails first, a is earlier in order
            raise SchemaError(f"subject {item.subject!r}: refused #{index}")
        return index

    with pytest.raises(SchemaError, match="refused #0"):
        for_each_subject(call, items)
    assert 2 not in called  # the second item of a failed subject is not tried
