"""Routing on real PostgreSQL and Kafka: a topic per value of a field (tenant sharding), and
several tables into one topic (partitions of one logical table)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import unique
from tests.integration.harness import (
    Connector,
    TopicReader,
    cdc,
    key_of,
    topics_exist,
    wait_for,
    write_config,
)
from tests.integration.test_wal_source import drop_slot

pytestmark = pytest.mark.integration

ORDER_KEY = {
    "type": "record",
    "name": "OrderKey",
    "namespace": "test.routing",
    "fields": [{"name": "region", "type": "string"}, {"name": "id", "type": "long"}],
}
ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "test.routing",
    "fields": [
        {"name": "region", "type": "string"},
        {"name": "id", "type": "long"},
        {"name": "qty", "type": "int"},
    ],
}
PAY_KEY = {
    "type": "record",
    "name": "PayKey",
    "namespace": "test.routing",
    "fields": [{"name": "payment_id", "type": "long"}],
}
PAY = {
    "type": "record",
    "name": "Payment",
    "namespace": "test.routing",
    "fields": [{"name": "payment_id", "type": "long"}, {"name": "amount", "type": "int"}],
}
CONFIG = """
name: {name}
source: {{connector: postgres_wal, url: "{url}", slot: {slot}, publication: {name}_pub, status_interval: 1s}}
streams:
  - name: orders
    topic: "{name}.orders.{{region}}"
    key_schema: order_key.avsc
    value_schema: order.avsc
    capture: {{table: public.orders}}
  - {{name: pay_2024, topic: {name}.payments, key_schema: pay_key.avsc, value_schema: pay.avsc,
     capture: {{table: public.payment_p2024}}}}
  - {{name: pay_2025, topic: {name}.payments, key_schema: pay_key.avsc, value_schema: pay.avsc,
     capture: {{table: public.payment_p2025}}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""


def test_topic_per_region_and_two_tables_into_one_topic(
    pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute("CREATE TABLE orders (region text, id bigint, qty int NOT NULL, PRIMARY KEY (region, id))")
        db.execute("INSERT INTO orders VALUES ('eu', 1, 10), ('eu', 2, 20), ('us', 3, 30)")
        for year, ids in (("2024", (1, 2)), ("2025", (3, 4))):
            table = sql.Identifier(f"payment_p{year}")
            db.execute(
                sql.SQL("CREATE TABLE {} (payment_id bigint PRIMARY KEY, amount int NOT NULL)").format(table)
            )
            for i in ids:
                db.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (i, i * 100))
    text = CONFIG.format(name=topic_name, url=pg_database, slot=unique("test"), bootstrap=kafka_bootstrap,
                         registry=registry_url)  # fmt: skip
    config = write_config(
        tmp_path,
        text,
        {"order_key.avsc": ORDER_KEY, "order.avsc": ORDER, "pay_key.avsc": PAY_KEY, "pay.avsc": PAY},
    )
    shown = cdc("schemas", "show", str(config))
    assert shown.returncode == 0 and f'"topic": "{topic_name}.orders.region"' in shown.stdout, shown.stderr
    conn = Connector(config, tmp_path / "run.log")
    readers: list[TopicReader] = []
    try:
        payments = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.payments")
        readers.append(payments)
        state = payments.wait_until(lambda s: len(s) >= 4, 60)
        assert state == {
            key_of({"payment_id": i}): {"payment_id": i, "amount": i * 100} for i in (1, 2, 3, 4)
        }
        eu = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.orders.eu")
        us = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.orders.us")
        readers += [eu, us]
        assert eu.wait_until(lambda s: len(s) >= 2, 60) == {
            key_of({"region": "eu", "id": i}): {"region": "eu", "id": i, "qty": q}
            for i, q in ((1, 10), (2, 20))
        }
        with psycopg.connect(pg_database, autocommit=True) as db:
            db.execute("INSERT INTO orders VALUES ('apac', 4, 40)")  # a new region: a new topic
            db.execute("UPDATE orders SET region = 'us' WHERE id = 2")  # moves: tombstone in eu, row in us
            db.execute("DELETE FROM orders WHERE id = 3")  # a delete routes on its key
            db.execute("INSERT INTO payment_p2025 VALUES (5, 500)")
        wait_for(lambda: topics_exist(kafka_bootstrap, [f"{topic_name}.orders.apac"]), 60, "the apac topic")
        apac = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.orders.apac")
        readers.append(apac)
        assert apac.wait_until(lambda s: len(s) >= 1, 60) == {
            key_of({"region": "apac", "id": 4}): {"region": "apac", "id": 4, "qty": 40}
        }
        eu_state = eu.wait_until(lambda s: s.get(key_of({"region": "eu", "id": 2}), 1) is None, 60)
        assert eu_state[key_of({"region": "eu", "id": 2})] is None
        us_state = us.wait_until(lambda s: s.get(key_of({"region": "us", "id": 3}), 1) is None, 60)
        assert us_state == {
            key_of({"region": "us", "id": 3}): None,
            key_of({"region": "us", "id": 2}): {"region": "us", "id": 2, "qty": 20},
        }
        state = payments.wait_until(lambda s: len(s) >= 5, 60)
        assert state[key_of({"payment_id": 5})] == {"payment_id": 5, "amount": 500}
        code, _ = conn.terminate()
        assert code == 0, conn.log_text()[-2000:]
    finally:
        conn.ensure_stopped()
        for r in readers:
            r.close()
        drop_slot(pg_database, config)
