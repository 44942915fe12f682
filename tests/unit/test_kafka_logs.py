"""librdkafka's log lines go through Python logging, rate-limited, never raw to stderr."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from cdc.kafka_logs import RepeatFilter


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("cdc.librdkafka", logging.ERROR, __file__, 1, msg, None, None)


def test_similar_messages_pass_once_per_window_and_report_what_was_swallowed() -> None:
    now = [0.0]
    f = RepeatFilter(window=10, clock=lambda: now[0])
    assert f.filter(_record("Connect to 127.0.0.1:1 failed (after 0ms)"))
    for i in range(50):
        now[0] += 0.1
        assert not f.filter(_record(f"Connect to 127.0.0.1:1 failed (after {i}ms)"))
    assert f.filter(_record("another complaint"))
    now[0] = 10.5
    rec = _record("Connect to 127.0.0.1:1 failed (after 3ms)")
    assert f.filter(rec)
    assert rec.getMessage().endswith("(and 50 similar in the last 10s)")


def test_a_client_against_a_dead_broker_writes_no_raw_librdkafka_lines() -> None:
    script = textwrap.dedent(
        """
        import logging, sys, time
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="LOG %(name)s %(message)s")
        from confluent_kafka import Producer
        from cdc.config.model import KafkaConfig
        from cdc.kafka_clients import producer_config
        p = Producer(producer_config(KafkaConfig(bootstrap_servers="127.0.0.1:1")))
        p.produce("t", b"v")
        end = time.monotonic() + 4
        while time.monotonic() < end:
            p.poll(0.2)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "%3|" not in out.stderr and "%3|" not in out.stdout, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("LOG cdc.librdkafka")]
    assert lines, "librdkafka's complaints must reach the logger"
    assert len(lines) < 10, lines  # rate-limited: a few distinct complaints, not one per retry
