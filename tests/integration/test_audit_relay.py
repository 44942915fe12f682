"""The audit relay end to end on PostgreSQL, MariaDB and SQLite: triggers -> audit log -> relay
(a real `cdc run` process, killed -9 mid-stream) -> Kafka.

Writers insert, update, delete and change keys concurrently (each owns a key range) and all of
them fight over one shared row; some transactions roll back. On PostgreSQL and MariaDB one
transaction inserts early (drawing a low audit id) and commits last. Afterwards, for every key,
the last record in the topic equals the table's row field by field, keys no longer in the table
end in a tombstone, the late transaction's row arrived, and the audit log is empty.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc.audit import generator
from cdc.sql.engines import create_engine
from tests.integration.harness import Connector, TopicReader, cdc, key_of, wait_for, write_config

pytestmark = pytest.mark.integration

KEY = {
    "type": "record",
    "name": "AcctKey",
    "namespace": "test.audit",
    "fields": [{"name": "id", "type": "int"}],
}
VALUE = {
    "type": "record", "name": "Acct", "namespace": "test.audit",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "balance", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "version", "type": "int"},
    ],
}  # fmt: skip
DDL = {
    "postgresql": "CREATE TABLE acct (id int PRIMARY KEY, balance numeric(12,2) NOT NULL, note text, version int NOT NULL)",
    "mysql": "CREATE TABLE acct (id INT PRIMARY KEY, balance DECIMAL(12,2) NOT NULL, note VARCHAR(100), version INT NOT NULL)",
    "sqlite": "CREATE TABLE acct (id INTEGER PRIMARY KEY, balance NUMERIC(12,2) NOT NULL, note TEXT, version INTEGER NOT NULL)",
}
CONFIG = """
name: {name}
source: {{connector: audit, url: "{url}", poll_interval: 50ms, batch_size: 500}}
streams:
  - {{name: acct, topic: {name}.acct, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: acct}}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 100ms}}
runtime: {{shutdown_timeout: 20s}}
"""
SHARED = 1  # the row every writer updates


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_database")
    elif request.param == "mariadb":
        yield request.getfixturevalue("mysql_database")
    else:
        yield f"sqlite:///{tmp_path / 'app.db'}"


def _engine(url: str) -> sa.Engine:
    return (
        create_engine(url, connect_args={"timeout": 30}) if url.startswith("sqlite") else create_engine(url)
    )


class Writer(threading.Thread):
    """Random inserts, updates, deletes and key changes in its own key range, plus the shared row."""

    def __init__(self, engine: sa.Engine, n: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.rng, self.base = engine, random.Random(n), (n + 1) * 100_000
        self.keys: list[int] = []
        self.next = self.base
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None
        # sqlite3 binds no Decimal: text goes into the NUMERIC column exactly
        self.num: Any = str if engine.dialect.name == "sqlite" else Decimal

    def step(self, conn: sa.Connection) -> None:
        r = self.rng.random()
        if r < 0.35 or len(self.keys) < 5:
            self.next += 1
            conn.execute(
                sa.text("INSERT INTO acct VALUES (:i, :b, :n, 0)"),
                {
                    "i": self.next,
                    "b": self.num(Decimal(self.rng.randint(0, 10**6)) / 100),
                    "n": f"née {self.next}",
                },
            )
            self.keys.append(self.next)
        elif r < 0.65:
            key = self.rng.choice(self.keys)
            conn.execute(
                sa.text(
                    "UPDATE acct SET balance = balance + :d, note = NULL, version = version + 1 WHERE id = :i"
                ),
                {"d": self.num(Decimal("0.01")), "i": key},
            )
        elif r < 0.75:
            conn.execute(
                sa.text("DELETE FROM acct WHERE id = :i"),
                {"i": self.keys.pop(self.rng.randrange(len(self.keys)))},
            )
        elif r < 0.85:
            old = self.keys.pop(self.rng.randrange(len(self.keys)))
            self.next += 1
            conn.execute(
                sa.text("UPDATE acct SET id = :n, version = version + 1 WHERE id = :o"),
                {"n": self.next, "o": old},
            )
            self.keys.append(self.next)
        else:
            conn.execute(sa.text("UPDATE acct SET version = version + 1 WHERE id = :i"), {"i": SHARED})

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                keys = list(self.keys)
                with self.engine.connect() as conn:
                    for _ in range(self.rng.randint(1, 4)):
                        self.step(conn)
                    if self.rng.random() < 0.1:
                        conn.rollback()
                        self.keys = keys
                    else:
                        conn.commit()
                        self.commits += 1
                time.sleep(0.002)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def _committed(writers: list[Writer]) -> int:
    for w in writers:
        if w.error is not None:
            raise AssertionError(f"writer failed: {w.error!r}")
    return sum(w.commits for w in writers)


def _rows(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, balance, note, version FROM acct")).all()
    return {
        key_of({"id": r[0]}): {
            "id": r[0],
            "balance": Decimal(r[1]).quantize(Decimal("0.01")),
            "note": r[2],
            "version": r[3],
        }
        for r in rows
    }


def _wait_relayed(engine: sa.Engine, what: str) -> None:
    """Wait until the relay deleted every audit row committed so far (a late one is invisible)."""
    with engine.connect() as conn:
        high = conn.execute(sa.text("SELECT max(id) FROM cdc_audit_log")).scalar() or 0
    query = sa.text("SELECT count(*) FROM cdc_audit_log WHERE id <= :h")

    def relayed() -> bool:
        with engine.connect() as conn:
            return high > 0 and conn.execute(query, {"h": high}).scalar() == 0

    wait_for(relayed, 60, what)


def _log_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM cdc_audit_log")).scalar() or 0)


def test_relay_misses_nothing_through_kill9_and_late_commit(
    app_url: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    engine = _engine(app_url)
    dialect = engine.dialect.name.replace("mariadb", "mysql")
    with engine.begin() as conn:
        conn.exec_driver_sql(DDL[dialect])
        conn.execute(sa.text("INSERT INTO acct VALUES (:i, 0, 'shared', 0)"), {"i": SHARED})
    generator.apply(engine, ["acct"])
    text = CONFIG.format(name=topic_name, url=app_url, bootstrap=kafka_bootstrap, registry=registry_url)
    config = write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})
    check = cdc("check", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "audit triggers installed and current" in check.stdout

    late = None
    if dialect != "sqlite":  # SQLite has one writer: no transaction can commit "late"
        late = engine.connect()
        late.execute(sa.text("INSERT INTO acct VALUES (7, 7.77, 'late', 0)"))  # a low audit id, open
    writers = [Writer(engine, n) for n in range(3)]
    relay = Connector(config, tmp_path / "relay1.log")
    restarted: Connector | None = None
    try:
        for w in writers:
            w.start()
        wait_for(lambda: _committed(writers) > 100, 60, "writers committing")
        if dialect == "postgresql":
            # PgQ rule: nothing above the open transaction's xid is published while it is open.
            assert late is not None
            wait_for(lambda: "capture process started" in relay.log_text(), 60, "the relay reading")
            time.sleep(2)
            early = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.acct")
            deadline, published = time.monotonic() + 5, 0
            while time.monotonic() < deadline:  # bounded: a broken relay keeps producing
                msg = early.consumer.poll(0.5)
                published += msg is not None and not msg.error()
            early.close()
            assert not published, f"{published} events published above an open transaction"
            late.commit()
            late.close()
        _wait_relayed(engine, "the first relay publishing")
        relay.kill9()  # with rows in flight: the writers keep committing
        restarted = Connector(config, tmp_path / "relay2.log")
        _wait_relayed(engine, "the restarted relay publishing")
        if late is not None and dialect == "mysql":
            late.commit()  # its audit id is below everything the restarted relay published
            late.close()
        time.sleep(1.5)
        for w in writers:
            w.stop.set()
            w.join(30)
            assert w.error is None, repr(w.error)
        expected = _rows(engine)
        assert len(expected) > 20 and (late is None or key_of({"id": 7}) in expected)
        wait_for(lambda: _log_rows(engine) == 0, 90, "audit log drained")
        reader = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.acct")
        state = reader.wait_until(lambda s: all(s.get(k) == v for k, v in expected.items()), 60)
        reader.close()
        for key, row in expected.items():
            got = state.get(key)
            assert got is not None, f"key {key}: never arrived"
            for field, value in row.items():
                assert got[field] == value, f"key {key}, field {field}: {got[field]!r} != {value!r}"
        gone = [k for k in state if k not in expected and state[k] is not None]
        assert not gone, f"keys deleted in the table but not tombstoned: {gone[:10]}"
        assert json.loads(next(iter(expected)))  # keys are JSON objects
        assert restarted.terminate()[0] == 0
    finally:
        for w in writers:
            w.stop.set()
        relay.ensure_stopped()
        if restarted is not None:
            restarted.ensure_stopped()
        engine.dispose()
