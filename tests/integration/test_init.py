"""cdc init against live databases: what it writes passes cdc check as written (PostgreSQL Sakila
with the WAL and polling sources, MariaDB Sakila with the binlog and polling sources), and it
reports what needs a person's decision."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.conftest import unique
from tests.integration.harness import cdc
from tests.integration.sakila import load_postgres
from tests.integration.sakila_mysql import SHARED_TABLES, mysql_connect, table_ddl

pytestmark = pytest.mark.integration

PG_EXTRAS = """
CREATE TABLE notes (id int PRIMARY KEY, body text, amount numeric, span interval, doc jsonb, tags int[], ref uuid);
COMMENT ON TABLE notes IS 'Notes by staff';
COMMENT ON COLUMN notes.body IS 'free text, as typed';
CREATE TABLE keyless (code text NOT NULL UNIQUE, n int);
CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
"""


def init(directory: Path, connector: str, url: str, *extra: str) -> tuple[int, str]:
    out = cdc(
        "init", str(directory), "--connector", connector, "--url", url, "--name", directory.name,
        "--kafka-bootstrap", "${KAFKA}", "--registry-url", "${REGISTRY}", *extra,
    )  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stdout + out.stderr


def check(directory: Path, bootstrap: str, registry: str) -> tuple[int, str]:
    out = cdc("check", str(directory / "connector.yaml"), env={"KAFKA": bootstrap, "REGISTRY": registry})
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stdout + out.stderr


def test_init_on_postgres_sakila_passes_check(
    pg_database: str, tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    load_postgres(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(PG_EXTRAS)
    wal = tmp_path / unique("test").replace("_", "-")
    code, out = init(wal, "postgres_wal", pg_database)
    assert code == 0, out
    assert (
        "table public.keyless has no primary key: left out. Give it its unique NOT NULL index (code)" in out
    )
    assert (
        "'PG-13' -> PG_13" in out and "notes.amount (numeric): unconstrained numeric mapped to string" in out
    )
    assert "notes.doc (jsonb): mapped to string" in out and "partitions public.events_2024" in out
    assert "inheritance children payment_p2007_01" in out and "review and run" in out
    dba = (wal / "dba.sql").read_text()
    assert 'ALTER TABLE "public"."payment_p2007_06" REPLICA IDENTITY FULL;' in dba
    notes = json.loads((wal / "schemas/notes-value.avsc").read_text())
    assert notes["doc"] == "Notes by staff"
    fields = {f["name"]: f for f in notes["fields"]}
    assert fields["body"]["doc"] == "free text, as typed"
    assert fields["span"]["type"][1]["type"] == "record" and fields["tags"]["type"][1]["items"] == "int"
    assert not (wal / "schemas/keyless-key.avsc").exists()

    # As written, check refuses the keyless children, naming the fix init wrote into dba.sql ...
    code, out = check(wal, kafka_bootstrap, registry_url)
    assert code == 7 and "[FAIL] publication safety" in out and "payment_p2007_01" in out, out
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(dba)
    # ... and passes once it ran, with no edit of what init wrote.
    code, out = check(wal, kafka_bootstrap, registry_url)
    assert code == 0 and "check passed" in out, out
    assert (
        "[FAIL]" not in out
        and "[ok  ] publication: the connector runs at start-up: CREATE PUBLICATION" in out
    )

    # signal_table cannot finish an interrupted snapshot of inheritance children: said, not silent.
    text = (wal / "connector.yaml").read_text()
    (wal / "connector.yaml").write_text(
        text.replace("  publication:", "  signal_table: public.cdc_signals\n  publication:")
    )
    code, out = check(wal, kafka_bootstrap, registry_url)
    assert code == 0 and "[warn] signal_table with inheritance children: streams ['payment']" in out, out
    (wal / "connector.yaml").write_text(text)

    # Never overwrites without --force.
    before = (wal / "connector.yaml").read_text()
    code, out = init(wal, "postgres_wal", pg_database, "--table", "film")
    assert code == 9 and "would overwrite" in out and "--force" in out, out
    assert (wal / "connector.yaml").read_text() == before
    code, out = init(wal, "postgres_wal", pg_database, "--table", "film", "--force")
    assert code == 0 and "1 stream(s)" in out, out

    polling = tmp_path / unique("test").replace("_", "-")
    code, out = init(polling, "polling", pg_database, "--exclude", "keyless")
    assert code == 0, out
    assert "notes.span (INTERVAL): an interval read by this connector has no exact Avro type" in out
    assert "stream payment: polling mode incrementing on payment_id" in out
    code, out = check(polling, kafka_bootstrap, registry_url)
    assert code == 0 and "check passed" in out, out

    audit = tmp_path / unique("test").replace("_", "-")
    code, out = init(audit, "audit", pg_database, "--table", "film", "--table", "notes")
    assert code == 0 and "run cdc migrations audit apply CONFIG before cdc check" in out, out
    env = {"KAFKA": kafka_bootstrap, "REGISTRY": registry_url}
    applied = cdc("migrations", "audit", "apply", str(audit / "connector.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr
    code, out = check(audit, kafka_bootstrap, registry_url)
    assert code == 0 and "check passed" in out, out


def test_init_on_mariadb_sakila_passes_check(
    mysql_database: str, tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    conn = mysql_connect(mysql_database)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION foreign_key_checks = 0")
            for statement in table_ddl(SHARED_TABLES).values():
                cur.execute(statement)
            cur.execute(
                "CREATE TABLE big (id BIGINT UNSIGNED PRIMARY KEY, note VARCHAR(10) COMMENT 'a note') COMMENT 'big ids'"
            )
    finally:
        conn.close()
    for connector in ("mysql_binlog", "polling"):
        directory = tmp_path / unique("test").replace("_", "-")
        code, out = init(directory, connector, mysql_database)
        assert code == 0, out
        assert "big.id (bigint(20) unsigned): bigint(20) unsigned holds 0..2^64-1" in out, out
        assert "'PG-13' -> PG_13" in out
        big = json.loads((directory / "schemas/big-value.avsc").read_text())
        assert big["doc"] == "big ids" and big["fields"][1]["doc"] == "a note"
        assert big["fields"][0]["type"] == {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": 20,
            "scale": 0,
        }
        code, out = check(directory, kafka_bootstrap, registry_url)
        assert code == 0 and "check passed" in out, out


def test_init_outbox_streams_per_aggregate_type(
    pg_database: str, tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    directory = tmp_path / unique("test").replace("_", "-")
    code, out = init(directory, "outbox", pg_database)
    assert (
        code == 7 and "outbox table 'cdc_outbox' does not exist" in out and "cdc migrations apply" in out
    ), out
    assert cdc("migrations", "apply", "--dsn", pg_database).returncode == 0
    code, out = init(directory, "outbox", pg_database)
    assert code == 7 and "--aggregate-type" in out, out
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO cdc_outbox (id, aggregatetype, aggregateid, type, payload, schema_subject) VALUES "
            "(gen_random_uuid(), 'customer', '1', 'Created', '\\x00', 'shop.customer-value'), "
            "(gen_random_uuid(), 'order', '7', 'Placed', '\\x00', NULL)"
        )
    code, out = init(directory, "outbox", pg_database)
    assert code == 0 and "2 stream(s)" in out, out
    assert "schemas/customer-value.avsc is a placeholder" in out and "name subject shop.customer-value" in out
    config = (directory / "connector.yaml").read_text()
    assert "aggregate_type: order" in config and "aggregate_id: aggregateid" in config
    code, out = check(directory, kafka_bootstrap, registry_url)
    assert code == 0 and "check passed" in out, out
