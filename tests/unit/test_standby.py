"""runtime.standby: waiting for the lease instead of exiting (the lease itself is faked here)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cdc.errors import AlreadyRunningError, LeaseHeldError
from cdc.plugin import Lease
from cdc.runtime.metrics import Metrics
from cdc.runtime.standby import take_lease


class HeldLease(Lease):
    def release(self) -> None:
        return None


class Source:
    """Refuses the lease ``refusals`` times, then grants it; records what health said meanwhile."""

    def __init__(self, refusals: int, health: Metrics) -> None:
        self.refusals = refusals
        self.health = health
        self.seen: list[tuple[bool, bool]] = []

    def acquire_lease(self, _name: str) -> Lease:
        self.seen.append((self.health.standby, self.health.ready))
        if self.refusals:
            self.refusals -= 1
            raise LeaseHeldError("held")
        return HeldLease()


def take(source: Any, health: Metrics, stop: threading.Event, standby: bool) -> Lease | None:
    return take_lease(source, "c", stop, health, standby=standby, poll=0.01)


def test_without_standby_a_held_lease_is_exit_code_6() -> None:
    health = Metrics("c")
    with pytest.raises(AlreadyRunningError) as err:
        take(Source(1, health), health, threading.Event(), standby=False)
    assert err.value.exit_code == 6


def test_a_standby_waits_alive_and_not_ready_then_takes_the_lease() -> None:
    health = Metrics("c")
    health.ready = True
    source = Source(3, health)
    assert isinstance(take(source, health, threading.Event(), standby=True), HeldLease)
    assert source.seen[0] == (False, True)  # the first attempt, before standing by
    assert all(s == (True, False) for s in source.seen[1:])  # standing by: not ready
    assert health.healthy() and not health.standby
    assert health.standby_gauge.labels("c")._value.get() == 0


def test_a_stop_while_standing_by_returns_none() -> None:
    health = Metrics("c")
    stop = threading.Event()
    source = Source(10**9, health)
    timer = threading.Timer(0.05, stop.set)
    timer.start()
    assert take(source, health, stop, standby=True) is None
    assert not health.standby


def test_the_first_free_lease_is_taken_at_once() -> None:
    health = Metrics("c")
    source = Source(0, health)
    assert isinstance(take(source, health, threading.Event(), standby=True), HeldLease)
    assert source.seen == [(False, False)]


def test_a_database_that_is_down_while_taking_the_lease_is_retriable() -> None:
    """After an outage the next attempt takes the lease first: a refused connection must be the
    retriable SourceUnavailableError (retried), never a raw driver error (a traceback, exit 1)."""
    import socket

    from cdc.errors import SourceUnavailableError
    from cdc.sql import engines, lease

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = engines.create_engine(f"postgresql://cdc:secret@127.0.0.1:{port}/db", pool_size=1)
    try:
        with pytest.raises(SourceUnavailableError) as err:
            lease.acquire(engine, "c")
    finally:
        engine.dispose()
    assert err.value.retriable and "taking the lease" in str(err.value) and "secret" not in str(err.value)
