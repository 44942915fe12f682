"""The audit relay's options on PostgreSQL, end to end (issue 10): ``after_relay: mark`` with
``keep_marked``, the TRUNCATE trigger with ``on_truncate: skip`` and ``fail``, and the envelope
format's before-images rebuilt from the audit rows.

Mark mode keeps relayed rows (``relayed_at`` set) and never relays them again, across a
restart; ``keep_marked`` deletes marked rows older than its age (checked when the relay starts,
then once a minute). A TRUNCATE either is skipped with a warning or stops the relay naming the
audit id and the re-snapshot it calls for.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc.audit import generator
from cdc.sql.engines import create_engine
from tests.integration.harness import Connector, TopicReader, wait_for, write_config
from tests.integration.test_audit_relay import DDL, KEY, VALUE

pytestmark = pytest.mark.integration

CONFIG = """
name: {name}
source: {{connector: audit, url: "{url}", poll_interval: 50ms, after_relay: mark, keep_marked: 1s,
          on_truncate: {on_truncate}}}
streams:
  - {{name: acct, topic: {name}.acct, format: envelope, key_schema: key.avsc, value_schema: value.avsc,
      capture: {{table: acct}}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 100ms}}
runtime: {{shutdown_timeout: 20s}}
"""


def _row(i: int, balance: str, note: str | None, version: int) -> dict[str, Any]:
    return {"id": i, "balance": Decimal(balance), "note": note, "version": version}


def _log_counts(engine: sa.Engine) -> tuple[int, int]:
    """(marked, unmarked) rows of the audit log."""
    with engine.connect() as conn:
        marked, unmarked = conn.execute(
            sa.text("SELECT count(relayed_at), count(*) - count(relayed_at) FROM cdc_audit_log")
        ).one()
    return int(marked), int(unmarked)


def _envelopes(reader: TopicReader, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while len(reader.records) < count and time.monotonic() < deadline:
        reader.drain(0.5)
    return [value for _, value, _ in reader.records]


def test_mark_mode_truncate_and_envelope_before_images(
    pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    engine = create_engine(pg_database)
    with engine.begin() as conn:
        conn.exec_driver_sql(DDL["postgresql"])
    generator.apply(engine, ["acct"], truncate=True)
    with engine.begin() as conn:
        for i in range(1, 11):
            conn.execute(
                sa.text("INSERT INTO acct VALUES (:i, :b, :n, 0)"), {"i": i, "b": f"{i}.50", "n": f"n{i}"}
            )
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE acct SET note = NULL, version = 1 WHERE id <= 3"))
        conn.execute(sa.text("DELETE FROM acct WHERE id IN (9, 10)"))

    def config_for(on_truncate: str) -> Path:
        text = CONFIG.format(
            name=topic_name, url=pg_database, bootstrap=kafka_bootstrap, registry=registry_url,
            on_truncate=on_truncate,
        )  # fmt: skip
        return write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})

    relay = Connector(config_for("skip"), tmp_path / "relay1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.acct")
    try:
        values = _envelopes(reader, 15)
        by_op = {op: [v for v in values if v["op"] == op] for op in ("c", "u", "d")}
        assert [len(by_op[op]) for op in ("c", "u", "d")] == [10, 3, 2], values
        for update in by_op["u"]:
            i = update["after"]["id"]
            assert update["before"] == _row(i, f"{i}.50", f"n{i}", 0)
            assert update["after"] == _row(i, f"{i}.50", None, 1)
        for delete in by_op["d"]:
            i = delete["before"]["id"]
            assert delete["after"] is None and delete["before"] == _row(i, f"{i}.50", f"n{i}", 0)
        assert all(v["source"]["connector"] == "audit" for v in values)
        # mark mode: every relayed row kept and marked, none left unmarked
        wait_for(lambda: _log_counts(engine) == (15, 0), 30, "15 rows marked")

        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE acct"))
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO acct VALUES (20, 20.5, 'after truncate', 0)"))
        values = _envelopes(reader, 16)
        assert len(values) == 16 and values[-1]["after"] == _row(20, "20.50", "after truncate", 0)
        wait_for(lambda: "TRUNCATE (audit id" in relay.log_text(), 30, "the TRUNCATE skipped")
        wait_for(lambda: _log_counts(engine) == (17, 0), 30, "the TRUNCATE and the insert marked")
        assert relay.terminate()[0] == 0

        time.sleep(1.5)  # every marked row is now older than keep_marked
        relay = Connector(config_for("fail"), tmp_path / "relay2.log")
        wait_for(lambda: _log_counts(engine) == (0, 0), 30, "marked rows older than keep_marked purged")
        time.sleep(2)
        assert len(reader.drain(1.0)) == 16, "a marked row was relayed again after the restart"

        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE acct"))
        code = relay.proc.wait(60)
        assert code != 0
        assert "was TRUNCATEd (audit id" in relay.log_text() and "re-snapshot" in relay.log_text()
        assert _log_counts(engine) == (0, 1), "the TRUNCATE record must stay for the operator"
    finally:
        relay.ensure_stopped()
        reader.close()
        engine.dispose()
