"""Hot standby (runtime.standby): two processes of one WAL connector on real PostgreSQL and Kafka.

The standby waits for the lease (alive, not ready) while the active one streams under a running
workload; kill -9 of the active one hands over within seconds with every row arriving field by
field; SIGTERM of the active one (a rolling restart) hands over with no record delivered twice.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import Connector, TopicReader, assert_matches, converged, free_port, wait_for
from tests.integration.test_runtime_resilience import get
from tests.integration.test_wal_source import docs_db as docs_db  # a fixture, re-exported
from tests.integration.test_wal_source import drop_slot, expected_rows, make_config

pytestmark = pytest.mark.integration


class Workload:
    """Updates and inserts in small transactions until stopped; every value written is distinct."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.changes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rng = random.Random(7)
        next_id = 1000
        with psycopg.connect(self.dsn, autocommit=True) as db:
            while not self.stop.is_set():
                with db.transaction():
                    db.execute(
                        "UPDATE docs SET title = %s, amount = %s, changed_at = now() WHERE id = %s",
                        (f"v{self.changes}", rng.randint(0, 10**6) / 100, rng.randint(1, 100)),
                    )
                    db.execute(
                        "INSERT INTO docs (id, title, amount) VALUES (%s, %s, 1.5)", (next_id, f"n{next_id}")
                    )
                next_id += 1
                self.changes += 1
                time.sleep(0.005)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


def replica(config: Path, name: str, delivery: str) -> tuple[Path, int]:
    """A copy of ``config`` for one replica: standby on, its own health port, the delivery mode."""
    port = free_port()
    text = config.read_text().replace(
        "runtime:\n", f"delivery: {delivery}\nruntime:\n  standby: true\n  http_port: {port}\n"
    )
    path = config.with_name(f"{name}.yaml")
    path.write_text(text)
    return path, port


@pytest.fixture
def pair(
    docs_db: str,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Connector, Connector, int, TopicReader, str]]:
    """The active replica streaming (snapshot read) and the standby standing by; yields (active,
    standby, standby's health port, reader, dsn)."""
    delivery = getattr(request, "param", "at_least_once")
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    first, _ = replica(config, "a", delivery)
    second, port = replica(config, "b", delivery)
    active = Connector(first, tmp_path / "a.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    standby: Connector | None = None
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        standby = Connector(second, tmp_path / "b.log")
        wait_for(lambda: "standing by" in standby.log_text(), 60, "the second replica to stand by")
        yield active, standby, port, reader, docs_db
    finally:
        active.ensure_stopped()
        if standby is not None:
            standby.ensure_stopped()
        reader.close()
        drop_slot(docs_db, config)


def took_over(standby: Connector) -> bool:
    return "took the lease" in standby.log_text()


def hand_over(reader: TopicReader, standby: Connector, end_active: Callable[[], object]) -> float:
    """Once the workload streams through the active replica, end it; seconds until the standby
    has the lease."""
    time.sleep(0.5)
    before = reader.written()
    wait_for(lambda: reader.written() > before + 200, 60, "the workload's changes to stream")
    assert not took_over(standby), "the standby took over while the active replica ran"
    end_active()
    ended = time.monotonic()
    wait_for(lambda: took_over(standby), 30, "the standby to take the lease")
    return time.monotonic() - ended


def assert_every_row(reader: TopicReader, dsn: str) -> None:
    """Every source row is its key's last record, field by field."""
    expected = expected_rows(dsn)
    assert_matches(reader.wait_until(converged(expected, set()), 90), expected, set())


def repeats(reader: TopicReader) -> list[tuple[str, str]]:
    """Records (key, value) a read_committed consumer saw more than once."""
    versions = Counter(
        (json.dumps(k, sort_keys=True), json.dumps(v, sort_keys=True, default=str))
        for k, v, _ in reader.records
    )
    return [kv for kv, n in versions.items() if n > 1]


@pytest.mark.parametrize("pair", ["at_least_once", "exactly_once"], indirect=True)
def test_standby_takes_over_after_kill_minus_9_under_load(
    pair: tuple[Connector, Connector, int, TopicReader, str], request: pytest.FixtureRequest
) -> None:
    active, standby, port, reader, dsn = pair
    base = f"http://127.0.0.1:{port}"
    # Standing by: alive, not ready, and says so; the active one keeps the lease.
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/readyz")[0] == 503
    assert 'cdc_standby{connector="' in get(f"{base}/metrics")[1]
    assert "} 1.0" in next(
        line for line in get(f"{base}/metrics")[1].splitlines() if line.startswith("cdc_standby{")
    )
    load = Workload(dsn)
    try:
        takeover = hand_over(reader, standby, active.kill9)
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, 60, "the new active replica to be ready")
        time.sleep(1)
    finally:
        load.finish()
    assert takeover < 5, f"took {takeover:.1f}s to take the lease"
    assert_every_row(reader, dsn)
    assert load.changes > 100
    if request.node.callspec.params["pair"] == "exactly_once":
        # The dead replica's open transaction was aborted when the standby's producer took its
        # transactional.id over; what it had committed, offsets included, is not produced again.
        assert not repeats(reader), f"{len(repeats(reader))} records delivered twice"
    assert "} 0.0" in next(
        line for line in get(f"{base}/metrics")[1].splitlines() if line.startswith("cdc_standby{")
    )
    code, _ = standby.terminate()
    assert code == 0, standby.log_text()[-2000:]


@pytest.mark.parametrize("pair", ["at_least_once", "exactly_once"], indirect=True)
def test_rolling_restart_hands_over_without_duplicates(
    pair: tuple[Connector, Connector, int, TopicReader, str],
) -> None:
    active, standby, _, reader, dsn = pair
    load = Workload(dsn)
    codes: list[int] = []
    try:
        takeover = hand_over(reader, standby, lambda: codes.append(active.terminate()[0]))
        assert codes == [0], active.log_text()[-2000:]
        time.sleep(2)  # the new active replica streams the workload too
    finally:
        load.finish()
    assert takeover < 3, f"took {takeover:.1f}s to take the lease after a clean stop"
    assert_every_row(reader, dsn)
    # A clean stop commits everything delivered: the standby resumes right after it.
    twice = repeats(reader)
    assert not twice, f"{len(twice)} records delivered twice, e.g. {twice[:3]}"
    assert standby.terminate()[0] == 0
