"""Heartbeats keep an idle binlog stream alive and its lag honest (issue 9).

With ``heartbeat_interval: 1s`` the server sends a heartbeat each second the stream is idle.
The stream's socket times out after 30 s without data, so an idle period of 35 s passes only
if heartbeats arrive and are handled: no reconnect, no warning, the lag metric reads 0 s while
nothing is pending (without heartbeats it would read the age of the last event, growing), and
the next change still arrives at once.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.integration.harness import Connector, TopicReader, key_of
from tests.integration.test_binlog_source import docs_db, make_config, run_sql  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

IDLE = 35.0  # longer than the stream socket's 30 s read timeout
LAG = re.compile(r"lag=(\{.*?\})")


def _lags_since(log: str, mark: int) -> list[dict[str, float]]:
    """The lag of every metrics line written after byte ``mark`` of the log."""
    out = []
    for line in log[mark:].splitlines():
        found = LAG.search(line.replace('\\"', '"'))
        if "metrics events=" in line and found:
            out.append(json.loads(found.group(1)))
    return out


def test_an_idle_stream_stays_connected_and_reports_no_lag(
    docs_db: str,  # noqa: F811 - the fixture
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        run_sql(docs_db, "INSERT INTO docs (id, title, amount) VALUES (500, 'before the pause', 1)")
        state = reader.wait_until(lambda s: key_of({"id": 500}) in s, 30)
        assert key_of({"id": 500}) in state, "the streamed row never arrived"
        mark = len(conn.log_text())
        time.sleep(IDLE)
        assert conn.alive(), conn.log_text()[-3000:]
        idle_log = conn.log_text()[mark:]
        trouble = [line for line in idle_log.splitlines() if '"WARNING"' in line or '"ERROR"' in line]
        assert not trouble, "the idle stream was not quiet:\n" + "\n".join(trouble[:10])
        # (the first line or two may be reported from before the stream's first event)
        lags = [lag.get("binlog_seconds_behind") for lag in _lags_since(conn.log_text(), mark)][2:]
        assert len(lags) >= 10 and None not in lags, f"metrics lines while idle: {idle_log[-2000:]}"
        # 0 when caught up; other databases' transactions on the shared server may pass through
        # for a moment. Without heartbeats this would be the age of the last event (up to 35 s).
        assert all(lag is not None and lag < 3.0 for lag in lags), f"the lag while idle: {lags}"
        assert lags.count(0.0) >= len(lags) // 2, f"the lag while idle: {lags}"

        started = time.monotonic()
        run_sql(docs_db, "INSERT INTO docs (id, title, amount) VALUES (501, 'after the pause', 2)")
        state = reader.wait_until(lambda s: key_of({"id": 501}) in s, 30)
        assert key_of({"id": 501}) in state, "the row after the idle period never arrived"
        assert time.monotonic() - started < 10
        code, _ = conn.terminate()
        assert code == 0, conn.log_text()[-2000:]
    finally:
        conn.ensure_stopped()
        reader.close()
