"""Sink availability: a restart after kill -9 resumes within seconds (static group membership),
and a sink started before its topics exist waits for them instead of exiting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.harness import wait_for
from tests.integration.sink_harness import Feed, SinkProcess, Target, assert_table_matches, make_config, thing

pytestmark = pytest.mark.integration


def test_a_restart_after_kill9_resumes_within_seconds(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    config = make_config(
        tmp_path,
        name=topic_name,
        topic=topic_name,
        url=pg_database,
        bootstrap=kafka_bootstrap,
        registry=registry_url,
    )
    # Kafka's default session timeout: without static membership the restarted member would wait
    # up to 45 s for the killed one to expire before it gets the partition back.
    config.write_text(config.read_text().replace("session.timeout.ms: 6000", "session.timeout.ms: 45000"))
    target = Target(pg_database)
    sink = SinkProcess(config, tmp_path / "first.log", instance="pod-0")
    try:
        for i in range(200):
            feed.upsert(thing(i))
        feed.flush()
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 60, "the first load")
        sink.kill9()
        for i in range(200, 400):
            feed.upsert(thing(i))
        feed.flush()
        restarted = time.monotonic()
        sink = SinkProcess(config, tmp_path / "second.log", instance="pod-0")
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 60, "the restarted sink to catch up")
        took = time.monotonic() - restarted
        print(f"restarted sink caught up in {took:.1f}s")  # the figure quoted in the README
        assert took < 20, f"the restarted sink needed {took:.1f}s (session.timeout.ms is 45 s)"
        assert_table_matches(target, "things", feed)
        assert sink.terminate() == 0
    finally:
        sink.ensure_stopped()
        target.dispose()


def test_a_sink_started_before_its_topic_waits_for_it(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(
        tmp_path,
        name=topic_name,
        topic=topic_name,
        url=pg_database,
        bootstrap=kafka_bootstrap,
        registry=registry_url,
    )
    target = Target(pg_database)
    sink = SinkProcess(config, tmp_path / "early.log")
    try:
        wait_for(lambda: "waiting for topic(s)" in sink.log_text(), 60, "the sink to say what it waits for")
        assert sink.proc.poll() is None, sink.log_text()[-2000:]
        feed = Feed(kafka_bootstrap, registry_url, topic_name)  # the topic appears now
        for i in range(50):
            feed.upsert(thing(i))
        feed.flush()
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 90, "the records of the late topic")
        assert_table_matches(target, "things", feed)
        assert sink.terminate() == 0
    finally:
        sink.ensure_stopped()
        target.dispose()
