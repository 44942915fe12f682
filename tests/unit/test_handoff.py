"""The reader/pipeline hand-off: bounded by events (not chunks), order kept, back-pressure."""

from __future__ import annotations

import threading
import time

import pytest

from cdc.handoff import EventHandoff
from cdc.plugin import ChangeEvent, Op


def _events(n: int, start: int = 0) -> list[ChangeEvent]:
    return [ChangeEvent("s", Op.CREATE, {"id": i}, {"id": i}, "p", {"i": i}) for i in range(start, start + n)]


def test_single_event_chunks_fill_the_bound_in_events() -> None:
    handoff, stop = EventHandoff(100), threading.Event()
    for i in range(100):  # a live trickle: one event per transaction, each its own chunk
        assert handoff.put(_events(1, i), stop)
    blocked = threading.Thread(target=handoff.put, args=(_events(1, 100), stop))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "the 101st event must wait for room"
    taken = handoff.take(0.1, batch=10)
    assert [e.key["id"] for e in taken] == list(range(10))
    blocked.join(2)
    assert not blocked.is_alive()
    rest = handoff.take(0.1, batch=1000)
    assert [e.key["id"] for e in rest] == list(range(10, 101))
    assert handoff.empty()


def test_a_chunk_larger_than_the_bound_goes_alone() -> None:
    handoff, stop = EventHandoff(10), threading.Event()
    assert handoff.put(_events(25), stop)
    assert len(handoff.take(0.1)) == 25


def test_a_waiting_put_gives_up_when_stopping() -> None:
    handoff, stop = EventHandoff(1), threading.Event()
    assert handoff.put(_events(1), stop)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(handoff.put(_events(1), stop)))
    waiter.start()
    time.sleep(0.1)
    stop.set()
    waiter.join(2)
    assert result == [False]


def test_take_waits_for_the_first_chunk_and_raises_a_reported_failure() -> None:
    handoff, stop = EventHandoff(100), threading.Event()
    t0 = time.monotonic()
    assert handoff.take(0.1) == []
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.05, lambda: handoff.put(_events(3), stop)).start()
    assert len(handoff.take(2)) == 3
    handoff.fail(RuntimeError("reader died"))
    with pytest.raises(RuntimeError, match="reader died"):
        handoff.take(0.1)
