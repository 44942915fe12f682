"""The sink serves /metrics (Prometheus), /healthz and /readyz like a source connector."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import wait_for
from tests.integration.sink_harness import Feed, SinkProcess, Target, assert_table_matches, make_config, thing

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test endpoint
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _samples(text: str) -> dict[str, float]:
    """name{label=value,...} -> value, for the samples of interest."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "sink")
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_sink_metrics_and_health(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    for i in range(300):
        feed.upsert(thing(i))
    feed.send(feed.key.encode({"id": 999}), b"not the wire format")  # one poison message
    feed.flush()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = make_config(
        tmp_path, name=topic_name, topic=topic_name, url=pg_database, bootstrap=kafka_bootstrap,
        registry=registry_url, on_error="dead_letter", batch_size=100,
    )  # fmt: skip
    config.write_text(config.read_text() + f"http_port: {port}\n")
    target = Target(pg_database)
    sink = SinkProcess(config, tmp_path / "sink.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 60, "everything consumed")
        assert_table_matches(target, "things", feed)
        assert _get(f"{base}/healthz")[0] == 200
        assert _get(f"{base}/readyz")[0] == 200
        records = f"cdc_sink_records_total{{topic={topic_name}}}"

        def metrics() -> dict[str, float]:
            code, text = _get(f"{base}/metrics")
            assert code == 200
            return _samples(text)

        # The loop thread accounts a batch once the writer thread has committed it and its own
        # next consume() returned: the counters follow the offsets table by up to a batch timeout.
        wait_for(lambda: metrics().get(records) == 301, 10, "the last batch accounted in /metrics")
        got = metrics()
        assert got[records] == 301
        assert got["cdc_sink_rows_written_total{}"] == 300
        assert got[f"cdc_sink_dead_letters_total{{topic={topic_name}}}"] == 1
        assert got[f"cdc_sink_lag_messages{{partition=0,topic={topic_name}}}"] == 0
        assert got["cdc_sink_batch_seconds_count{}"] >= 4  # 301 messages in batches of at most 100
        assert sink.terminate() == 0
    finally:
        sink.ensure_stopped()
        target.dispose()
