"""The capture process: it dies with the connector, and the inline mode delivers the same."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.integration.dbs import LegacyApp
from tests.integration.harness import Connector, TopicReader, cdc, wait_for
from tests.integration.test_polling_to_kafka import assert_equal_field_by_field, converged, make_config

pytestmark = pytest.mark.integration


def _capture_pid(conn: Connector) -> int:
    found = re.search(r"capture process started \(pid (\d+)\)", conn.log_text())
    assert found, "no capture process was started"
    return int(found.group(1))


def test_kill_minus_9_of_the_connector_takes_its_capture_process_down(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    app = LegacyApp(pg_database)
    app.insert_many(50)
    config = make_config(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    assert cdc("schemas", "register", str(config)).returncode == 0
    conn = Connector(config, tmp_path / "run.log")
    try:
        wait_for(lambda: "capture process started" in conn.log_text(), 60, "the capture process")
        child = _capture_pid(conn)
        assert Path(f"/proc/{child}").exists()
        conn.proc.send_signal(signal.SIGKILL)
        conn.proc.wait(30)
        # PR_SET_PDEATHSIG: the kernel kills the child with its parent (it would otherwise keep
        # a replication slot or the lease busy for the replacement instance).
        wait_for(lambda: not _alive(child), 10, f"capture process {child} to exit")
    finally:
        conn.ensure_stopped()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_inline_capture_delivers_the_same_as_the_capture_process(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    app = LegacyApp(pg_database)
    ids = app.insert_many(100)
    config = make_config(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    config.write_text(config.read_text().replace("runtime:\n", "runtime:\n  capture: inline\n"))
    assert cdc("schemas", "register", str(config)).returncode == 0
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= len(ids), 60)
        app.update(ids[0], name="renamed")
        app.insert_many(10, start=1000)
        state = reader.wait_until(converged(app.expected(), set()), 60)
        assert_equal_field_by_field(state, app.expected(), set())
        assert "capture process started" not in conn.log_text()
        code, _ = conn.terminate()
        assert code == 0
    finally:
        conn.ensure_stopped()
        reader.close()


def test_a_capture_process_spawned_before_a_failed_preparation_never_outlives_it(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str
) -> None:
    # The child is spawned while the parent still asks the registry; here nothing answers there,
    # so every attempt fails after the spawn and is retried: each attempt's child must be gone
    # before the next one is spawned, and the last one with the connector.
    app = LegacyApp(pg_database)
    app.insert_many(5)
    config = make_config(tmp_path, pg_database, topic_name, kafka_bootstrap, "http://127.0.0.1:9/ccompat")
    config.write_text(config.read_text().replace("runtime:\n", "runtime:\n  retry_backoff_max: 1s\n"))
    conn = Connector(config, tmp_path / "run.log")
    try:
        wait_for(
            lambda: len(re.findall(r"capture process started \(pid (\d+)\)", conn.log_text())) >= 3,
            90,
            "three attempts, each spawning a capture process",
        )
        pids = [int(p) for p in re.findall(r"capture process started \(pid (\d+)\)", conn.log_text())]
        for pid in pids[:-1]:
            assert not _alive(pid), f"capture process {pid} of a failed attempt is still running"
        conn.proc.send_signal(signal.SIGTERM)
        assert conn.proc.wait(60) == 0
        wait_for(lambda: not any(_alive(p) for p in pids), 10, "every capture process to exit")
    finally:
        conn.ensure_stopped()
