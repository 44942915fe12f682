"""The open-transaction bound (cdc.sql.bounds) on scripted samples of a server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cdc.sql.bounds import PUBLISH_MARGIN, Sample, SourceBounds, Tracker

T0 = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def sample(now: float, executing: float | None = None, writers: tuple[str, ...] = ()) -> Sample:
    return Sample(at(now), None if executing is None else at(executing), {w: f"trx {w}" for w in writers})


def test_idle_server_bound_is_now_minus_the_publish_margin_and_lag() -> None:
    tracker = Tracker()
    assert tracker.observe(sample(10), 0).upper == at(10) - PUBLISH_MARGIN
    assert tracker.observe(sample(11), 5).upper == at(6)


def test_an_executing_statement_bounds_the_poll_at_its_start() -> None:
    # Session A's INSERT waits on LOCK TABLES since 3.0: its CURRENT_TIMESTAMP(6) is 3.0.
    tracker = Tracker()
    assert tracker.observe(sample(5, executing=3.0), 0).upper == at(3.0)


def test_lock_wait_then_open_transaction_keeps_the_statement_start() -> None:
    """The issue's scenario: A waits (seen executing), then holds its transaction open after the
    wait; innodb_trx then shows only its (later) trx_started, processlist shows Sleep."""
    tracker = Tracker()
    tracker.observe(sample(1), 0)
    assert tracker.observe(sample(5, executing=3.2), 0).upper == at(3.2)  # A waits since 3.2
    # The lock is released at 5.1; A's transaction opens then, writes, and stays open.
    bound = tracker.observe(sample(5.5, writers=("A",)), 0)
    assert bound.upper is not None and bound.upper <= at(3.2)
    for t in (6, 7, 12):  # for as long as A is open, whatever else happens
        bound = tracker.observe(sample(t, writers=("A", f"other-{t}")), 0)
        assert bound.upper is not None and bound.upper <= at(3.2)
    assert tracker.observe(sample(13), 0).upper == at(13) - PUBLISH_MARGIN  # A committed


def test_a_wait_shorter_than_the_sampling_interval_is_still_covered() -> None:
    """A's statement started after sample 1 and its wait ended before sample 2 (never seen
    executing): its stamp is later than sample 1's raw bound, which becomes its floor."""
    tracker = Tracker()
    tracker.observe(sample(10), 0)
    bound = tracker.observe(sample(11, writers=("A",)), 0)
    assert bound.upper == at(10) - PUBLISH_MARGIN
    # The floor stays with A even though later samples are much later.
    assert tracker.observe(sample(20, writers=("A",)), 0).upper == at(10) - PUBLISH_MARGIN


def test_floor_includes_statements_executing_at_the_previous_sample() -> None:
    tracker = Tracker()
    tracker.observe(sample(10, executing=4.0), 0)  # A's statement waiting since 4.0
    assert tracker.observe(sample(11, writers=("A",)), 0).upper == at(4.0)


def test_writer_open_at_start_up_blocks_until_it_ends() -> None:
    """After a restart nothing is known of a writing transaction's statements: read nothing."""
    tracker = Tracker()
    bound = tracker.observe(sample(10, writers=("old",)), 0)
    assert bound.upper is None and bound.blocked_by == ("trx old",)
    bound = tracker.observe(sample(11, writers=("old", "new")), 0)
    assert bound.upper is None and bound.blocked_by == ("trx old",)
    bound = tracker.observe(sample(12, writers=("new",)), 0)
    assert bound.upper == at(10) - PUBLISH_MARGIN  # "new" first seen at 11: floor of sample 10


def test_writers_that_reappear_under_a_new_identity_get_the_previous_samples_floor() -> None:
    tracker = Tracker()
    tracker.observe(sample(1), 0)
    tracker.observe(sample(2, writers=("x",)), 0)
    # x ended; y is new at 3: its floor is sample 2's raw bound, not x's.
    assert tracker.observe(sample(3, writers=("y",)), 0).upper == at(2) - PUBLISH_MARGIN


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_source_bounds_reuses_a_fresh_sample_and_serializes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("cdc.sql.bounds.time.monotonic", clock)
    taken: list[int] = []

    def sampler(_conn: Any) -> Sample:
        taken.append(1)
        return sample(len(taken))

    shared = SourceBounds(sampler)
    first = shared.compute(None, 0)  # type: ignore[arg-type]
    clock.t += 0.05
    assert shared.compute(None, 0) is first  # type: ignore[arg-type]
    clock.t += 0.2
    assert shared.compute(None, 0) is not first  # type: ignore[arg-type]
    assert len(taken) == 2
