"""Sakila through the WAL source: enums with '-' labels, a domain, arrays, bytea, numeric,
tsvector, inheritance children without keys, existing triggers and rules - snapshotted and
streamed under a mixed workload, every row decodable and equal to the source."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import unique
from tests.integration.harness import Connector, TopicReader, key_of, write_config
from tests.integration.sakila import load_postgres

pytestmark = pytest.mark.integration

LOCAL_TS = {"type": "long", "logicalType": "local-timestamp-micros"}
FILM_KEY = {
    "type": "record",
    "name": "FilmKey",
    "namespace": "sakila",
    "fields": [{"name": "film_id", "type": "int"}],
}
FILM = {
    "type": "record", "name": "Film", "namespace": "sakila",
    "fields": [
        {"name": "film_id", "type": "int"},
        {"name": "title", "type": "string"},
        {"name": "description", "type": ["null", "string"], "default": None},
        {"name": "release_year", "type": ["null", "int"], "default": None},
        {"name": "rental_rate", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}},
        {"name": "length", "type": ["null", "int"], "default": None},
        {"name": "rating", "type": ["null", {"type": "enum", "name": "Rating", "symbols": ["G", "PG", "PG_13", "R", "NC_17"]}], "default": None},
        {"name": "special_features", "type": ["null", {"type": "array", "items": "string"}], "default": None},
        {"name": "fulltext", "type": "string"},
        {"name": "last_update", "type": LOCAL_TS},
    ],
}  # fmt: skip
PAYMENT_KEY = {
    "type": "record",
    "name": "PaymentKey",
    "namespace": "sakila",
    "fields": [{"name": "payment_id", "type": "int"}],
}
PAYMENT = {
    "type": "record", "name": "Payment", "namespace": "sakila",
    "fields": [
        {"name": "payment_id", "type": "int"},
        {"name": "customer_id", "type": "int"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}},
        {"name": "payment_date", "type": LOCAL_TS},
    ],
}  # fmt: skip
STAFF_KEY = {
    "type": "record",
    "name": "StaffKey",
    "namespace": "sakila",
    "fields": [{"name": "staff_id", "type": "int"}],
}
STAFF = {
    "type": "record", "name": "Staff", "namespace": "sakila",
    "fields": [
        {"name": "staff_id", "type": "int"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {"name": "active", "type": "boolean"},
        {"name": "picture", "type": ["null", "bytes"], "default": None},
        {"name": "last_update", "type": LOCAL_TS},
    ],
}  # fmt: skip

CONFIG = """
name: {name}
source:
  connector: postgres_wal
  url: {url}
  slot: {slot}
  publication: {name}_pub
  status_interval: 1s
streams:
  - name: film
    topic: {name}.film
    key_schema: film-key.avsc
    value_schema: film.avsc
    symbol_maps: {{rating: {{PG-13: PG_13, NC-17: NC_17}}}}
    capture: {{table: public.film}}
  - name: payment
    topic: {name}.payment
    key_schema: payment-key.avsc
    value_schema: payment.avsc
    capture: {{table: public.payment, children: "payment_p2007_.*"}}
  - name: staff
    topic: {name}.staff
    key_schema: staff-key.avsc
    value_schema: staff.avsc
    capture: {{table: public.staff}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""

RATING = {"PG-13": "PG_13", "NC-17": "NC_17"}


def expected(dsn: str) -> dict[str, dict[str, dict[str, Any]]]:
    with psycopg.connect(dsn) as conn:
        films = conn.execute(
            "SELECT film_id, title, description, release_year, rental_rate, length, rating::text, special_features, "
            "fulltext::text, last_update FROM film"
        ).fetchall()
        payments = conn.execute(
            "SELECT payment_id, customer_id, amount, payment_date FROM payment"
        ).fetchall()
        staff = conn.execute("SELECT staff_id, email, active, picture, last_update FROM staff").fetchall()
    return {
        "film": {
            key_of({"film_id": r[0]}): {
                "film_id": r[0], "title": r[1], "description": r[2], "release_year": r[3],
                "rental_rate": Decimal(r[4]), "length": r[5], "rating": RATING.get(r[6], r[6]),
                "special_features": r[7], "fulltext": r[8], "last_update": r[9],
            }
            for r in films
        },
        "payment": {
            key_of({"payment_id": r[0]}): {"payment_id": r[0], "customer_id": r[1], "amount": Decimal(r[2]), "payment_date": r[3]}
            for r in payments
        },
        "staff": {
            key_of({"staff_id": r[0]}): {"staff_id": r[0], "email": r[1], "active": r[2],
                                          "picture": None if r[3] is None else bytes(r[3]), "last_update": r[4]}
            for r in staff
        },
    }  # fmt: skip


def workload(dsn: str, stop: threading.Event) -> None:
    n = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(0.02):
            n += 1
            film = 1 + n % 1000
            conn.execute(
                "UPDATE film SET rating = %s::mpaa_rating, special_features = %s, title = title || '!' WHERE film_id = %s",
                (["G", "PG", "PG-13", "R", "NC-17"][n % 5], ["Trailers", f"Take {n}"], film),
            )
            # The rule sends 2007 payments into the keyless inheritance children.
            conn.execute(
                "INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) "
                "VALUES (%s, 1, 1, %s, %s)",
                (1 + n % 599, Decimal(n % 1000) / 100, f"2007-0{1 + n % 6}-15 10:00:00"),
            )
            if n % 10 == 0:
                conn.execute("DELETE FROM payment WHERE payment_id = %s", (17000 + n,))
                conn.execute(
                    "UPDATE staff SET picture = %s, email = %s WHERE staff_id = 2",
                    (bytes([n % 256]) * 100, f"s{n}@x"),
                )


def test_sakila_snapshot_and_stream_under_a_mixed_workload(
    pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    load_postgres(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        for month in range(1, 7):
            # The user's fix for keyless children: a full replica identity (the connector refuses otherwise).
            conn.execute(f"ALTER TABLE payment_p2007_0{month} REPLICA IDENTITY FULL")
    text = CONFIG.format(
        name=topic_name,
        url=pg_database,
        slot=unique("test"),
        bootstrap=kafka_bootstrap,
        registry=registry_url,
    )
    config = write_config(
        tmp_path, text,
        {"film-key.avsc": FILM_KEY, "film.avsc": FILM, "payment-key.avsc": PAYMENT_KEY, "payment.avsc": PAYMENT,
         "staff-key.avsc": STAFF_KEY, "staff.avsc": STAFF},
    )  # fmt: skip
    stop = threading.Event()
    writer = threading.Thread(target=workload, args=(pg_database, stop), daemon=True)
    conn = Connector(config, tmp_path / "run.log")
    readers = {
        s: TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.{s}")
        for s in ("film", "payment", "staff")
    }
    try:
        writer.start()
        time.sleep(6)
        stop.set()
        writer.join()
        want = expected(pg_database)
        for stream, reader in readers.items():
            rows = want[stream]
            state = reader.wait_until(lambda s, rows=rows: all(s.get(k) == v for k, v in rows.items()), 180)
            for key, row in rows.items():
                assert state.get(key) is not None, f"{stream} {key} missing"
                for field, value in row.items():
                    assert state[key][field] == value, (
                        f"{stream} {key} {field}: {state[key][field]!r} != {value!r}"
                    )
            deleted = [k for k, v in state.items() if v is None]
            assert all(k not in rows for k in deleted)
        assert len(want["payment"]) > 16000
        assert conn.terminate()[0] == 0, conn.log_text()[-2000:]
    finally:
        stop.set()
        conn.ensure_stopped()
        for reader in readers.values():
            reader.close()
        with psycopg.connect(pg_database, autocommit=True) as db:
            slot = text.split("slot: ")[1].split()[0]
            db.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s AND NOT active",
                (slot,),
            )
