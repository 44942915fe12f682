"""Shaping streams end to end on real PostgreSQL and Kafka: column policies, row filters.

One WAL connector carries two streams whose e-mail columns are hashed with the same key, a
filter dropping most rows, a truncated, a masked and a nulled column, and dead letters. Two
polling runs over the same tables (the capture-process path, where records are encoded in the
child) show the hash is stable across runs and connectors with one key and differs with another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import unique
from tests.integration.harness import Connector, TopicReader, cdc, key_of, wait_for, write_config
from tests.integration.test_wal_source import drop_slot

pytestmark = pytest.mark.integration

KEY = {"type": "record", "name": "K", "namespace": "test.shaping", "fields": [{"name": "id", "type": "long"}]}
PEOPLE = {
    "type": "record",
    "name": "Person",
    "namespace": "test.shaping",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": ["null", "string"]},
        {
            "name": "status",
            "type": {"type": "enum", "name": "Status", "symbols": ["paid", "shipped", "draft"]},
        },
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "note", "type": ["null", "string"]},
        {"name": "phone", "type": ["null", "string"]},
        {"name": "ssn", "type": ["null", "string"]},
    ],
}
CUSTOMERS = {
    "type": "record",
    "name": "Customer",
    "namespace": "test.shaping",
    "fields": [{"name": "id", "type": "long"}, {"name": "mail", "type": "string"}],
}
PEOPLE_SHAPING = """
    policies:
      email: {{policy: hash, secret_env: {env}}}
      note: {{policy: truncate, length: 5}}
      phone: {{policy: mask, keep_length: true, replacement: "#"}}
      ssn: {{policy: "null"}}
    where: "status != 'draft' and amount > 0"
"""
WAL = """
name: {name}
source:
  connector: postgres_wal
  url: {url}
  slot: {slot}
  publication: {name}_pub
  status_interval: 1s
streams:
  - name: people
    topic: {name}.people
    key_schema: key.avsc
    value_schema: people.avsc
    on_error: dead_letter
    capture: {{table: public.people}}
{people_shaping}
  - name: customers
    topic: {name}.customers
    key_schema: key.avsc
    value_schema: customers.avsc
    fields: {{mail: email}}
    capture: {{table: public.customers}}
    policies:
      mail: {{policy: hash, secret_env: {env}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
runtime: {{metrics_log_interval: 2s}}
"""
POLLING = """
name: {name}
source: {{connector: polling, url: "{url}", poll_interval: 200ms}}
streams:
  - name: people
    topic: {name}.people
    key_schema: key.avsc
    value_schema: people.avsc
    capture: {{table: people, mode: incrementing, incrementing_column: id}}
{people_shaping}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""


def hmac_hex(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def shop_db(pg_database: str) -> str:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE people (id bigint PRIMARY KEY, email text, status text NOT NULL, "
            "amount numeric(10,2) NOT NULL, note text, phone text, ssn text)"
        )
        # the old row on every update, so an update that stays out of the filter emits nothing
        conn.execute("ALTER TABLE people REPLICA IDENTITY FULL")
        conn.execute("CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL)")
        # 1..20: every third row is a draft, row 10 has a zero amount: both filtered out
        conn.execute(
            "INSERT INTO people SELECT g, 'user' || g || '@example.com', "
            "CASE WHEN g % 3 = 0 THEN 'draft' ELSE 'paid' END, CASE WHEN g = 10 THEN 0 ELSE g END, "
            "'a long note ' || g, '+1-555-' || g, 'ssn-' || g FROM generate_series(1, 20) g"
        )
        conn.execute(
            "INSERT INTO customers SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 5) g"
        )
    return pg_database


def passing(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, email, status, amount, note, phone FROM people WHERE status <> 'draft' AND amount > 0"
        ).fetchall()
    return {key_of({"id": r[0]}): {"id": r[0], "email": r[1], "status": r[2], "amount": r[3], "note": r[4],
                                   "phone": r[5]} for r in rows}  # fmt: skip


def assert_shaped(state: dict[str, Any], expected: dict[str, dict[str, Any]], secret: str) -> None:
    """Field by field per key: each policy's output, from the raw row and the key."""
    for key, raw in expected.items():
        got = state.get(key)
        assert got is not None, f"{key} missing"
        assert got["email"] == hmac_hex(secret, raw["email"]), key
        assert (
            got["status"] == raw["status"]
            and got["amount"] == Decimal(raw["amount"])
            and got["id"] == raw["id"]
        )
        assert got["note"] == raw["note"][:5]
        assert got["phone"] == "#" * len(raw["phone"])
        assert got["ssn"] is None


def dead_letter(bootstrap: str, topic: str) -> dict[str, Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("dlq")})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is not None and not msg.error():
                payload: dict[str, Any] = json.loads(msg.value())
                return payload
        raise AssertionError(f"no dead letter in {topic}")
    finally:
        consumer.close()


def confirmed_lsn(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def test_wal_policies_filter_tombstone_dead_letter_and_slot_advance(
    shop_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    env = unique("HASH_KEY").upper()
    secret = "first-key"
    os.environ[env] = secret  # the connector child process inherits it
    slot = unique("test")
    shaping = PEOPLE_SHAPING.format(env=env)
    text = WAL.format(
        name=topic_name, url=shop_db, slot=slot, bootstrap=kafka_bootstrap, registry=registry_url,
        env=env, people_shaping=shaping,
    )  # fmt: skip
    config = write_config(
        tmp_path, text, {"key.avsc": KEY, "people.avsc": PEOPLE, "customers.avsc": CUSTOMERS}
    )
    shown = cdc("schemas", "show", str(config))
    assert shown.returncode == 0, shown.stderr
    assert (
        "hash (HMAC-SHA-256, hex, key from env" in shown.stdout and "truncate (5 characters)" in shown.stdout
    )
    assert secret not in shown.stdout
    checked = cdc("check", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "stream people shaping: email: hash (HMAC-SHA-256, hex, key from env" in checked.stdout
    assert "ssn: null; where status != 'draft' and amount > 0" in checked.stdout
    conn = Connector(config, tmp_path / "run.log")
    people = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.people")
    customers = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.customers")
    try:
        expected = passing(shop_db)
        state = people.wait_until(lambda s: len(s) >= len(expected), 60)
        assert set(state) == set(expected), "the snapshot holds exactly the rows that pass the filter"
        assert_shaped(state, expected, secret)
        mails = customers.wait_until(lambda s: len(s) >= 5, 60)
        # the same address hashed in two streams with one key: equal values, so they still join
        for i in range(1, 6):
            assert mails[key_of({"id": i})]["mail"] == hmac_hex(secret, f"user{i}@example.com")
            if key_of({"id": i}) in state:
                assert mails[key_of({"id": i})]["mail"] == state[key_of({"id": i})]["email"]

        with psycopg.connect(shop_db, autocommit=True) as db:
            db.execute("UPDATE people SET status = 'draft' WHERE id = 1")  # moves out: a tombstone
            db.execute("UPDATE people SET status = 'paid', amount = 7 WHERE id = 3")  # moves in
            db.execute("UPDATE people SET note = 'still a draft' WHERE id = 6")  # out -> out: nothing
            # a row that passes the filter but not the schema (no such enum symbol)
            db.execute("INSERT INTO people VALUES (500, 'secret@example.com', 'lost', 5, 'n', 'p', 's')")
        expected = passing(shop_db)
        del expected[key_of({"id": 500})]  # dead-lettered
        state = people.wait_until(
            lambda s: s.get(key_of({"id": 1}), 1) is None and key_of({"id": 3}) in s, 60
        )
        assert state[key_of({"id": 1})] is None, "a row updated out of the filter ends in a tombstone"
        assert_shaped(state, expected, secret)
        assert key_of({"id": 6}) not in state
        letter = dead_letter(kafka_bootstrap, f"{topic_name}.people.source-dlq")
        assert letter["key"] == {"id": 500} and letter["field"] == "status"
        assert letter["row"]["email"] == hmac_hex(secret, "secret@example.com")
        assert letter["row"]["ssn"] is None and letter["row"]["note"] == "n"
        assert "secret@example.com" not in json.dumps(letter)
        assert "secret@example.com" not in conn.log_text()

        # A tail the filter drops entirely must not pin the WAL: the slot's confirmed position
        # passes the last filtered transaction.
        with psycopg.connect(shop_db, autocommit=True) as db:
            db.execute(
                "INSERT INTO people SELECT g, 'd' || g, 'draft', 1, NULL, NULL, NULL FROM generate_series(1000, 4000) g"
            )
            for i in range(10):
                db.execute("INSERT INTO people VALUES (%s, 'x', 'draft', 1, NULL, NULL, NULL)", (5000 + i,))
            row = db.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
            assert row is not None
            tail = int(row[0])
        wait_for(
            lambda: confirmed_lsn(shop_db, slot) >= tail, 60, "the slot's confirmed position to pass the tail"
        )
        people.drain(1)
        assert all(k["id"] < 1000 for k, _, _ in people.records), "no filtered row was produced"
        code, _ = conn.terminate()
        assert code == 0, conn.log_text()[-2000:]
    finally:
        conn.ensure_stopped()
        people.close()
        customers.close()
        drop_slot(shop_db, config)
        os.environ.pop(env, None)


@pytest.mark.parametrize(
    ("secret", "same", "runtime_term"),
    [("first-key", True, ""), ("another-key", False, "note < 'a long note 2'")],
)
def test_polling_hash_is_stable_across_runs_with_one_key(
    secret: str,
    same: bool,
    runtime_term: str,
    shop_db: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    """Also the filter's pushdown: both terms of the where go into the polling query; a text
    order comparison (collation-dependent in SQL) stays in the runtime, in the capture process."""
    env = unique("HASH_KEY").upper()
    name = unique("shape")
    shaping = PEOPLE_SHAPING.format(env=env)
    if runtime_term:
        shaping = shaping.replace('amount > 0"', f'amount > 0 and {runtime_term}"')
    text = POLLING.format(
        name=name, url=shop_db, bootstrap=kafka_bootstrap, registry=registry_url, people_shaping=shaping,
    )  # fmt: skip
    config = write_config(tmp_path, text, {"key.avsc": KEY, "people.avsc": PEOPLE})
    os.environ[env] = secret  # the connector process inherits it
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, f"{name}.people")
    try:
        expected = passing(shop_db)
        if runtime_term:  # ASCII text: Python's order is the C collation's
            expected = {k: v for k, v in expected.items() if v["note"] < "a long note 2"}
            assert 0 < len(expected) < len(passing(shop_db))
        state = reader.wait_until(lambda s: len(s) >= len(expected), 60)
        reader.drain(1)
        state = reader.latest()
        assert set(state) == set(expected)
        pushed = "stream people: 2 filter term(s) pushed into the query; in the runtime only: "
        assert pushed + (runtime_term or "nothing") in conn.log_text()
        for key, raw in expected.items():
            first = hmac_hex("first-key", raw["email"])  # what the WAL connector's run published
            assert (state[key]["email"] == first) is same
        assert_shaped(state, expected, secret)
    finally:
        conn.ensure_stopped()
        reader.close()
        os.environ.pop(env, None)
