"""OutboxWriter on PostgreSQL, MariaDB and SQLite: in the application's transaction, or not at all."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa
from fastavro import parse_schema, schemaless_reader
from sqlalchemy.orm import Session

from cdc import migrations
from cdc.errors import ConfigError, RowError
from cdc.outbox import OutboxWriter
from cdc.sql.engines import normalize_url

pytestmark = pytest.mark.integration

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "shop.events",
    "fields": [
        {"name": "order_id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}],
                },
            },
        },
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def payload(order_id: int, **changes: Any) -> dict[str, Any]:
    value = {
        "order_id": order_id,
        "customer": "Ada Lovelace ✓",
        "total": Decimal("1234.50"),
        "placed_at": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC),
        "status": "NEW",
        "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B;2", "qty": 1}],
        "note": None,
    }
    return value | changes


class Db:
    """One migrated test database: its engine, a DB-API connection factory, and row readers."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.engine = sa.create_engine(normalize_url(url))
        self.dialect = migrations.dialect_name(self.engine)
        migrations.apply(self.engine)
        with self.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, status VARCHAR(20))"))
        self.outbox = sa.Table("cdc_outbox", sa.MetaData(), autoload_with=self.engine)

    def dbapi(self) -> Any:
        """A plain driver connection, outside SQLAlchemy, not in autocommit."""
        if self.dialect == "postgresql":
            import psycopg

            return psycopg.connect(self.url)
        if self.dialect == "mysql":
            import pymysql

            u = urlparse(self.url)
            return pymysql.connect(
                host=u.hostname,
                port=u.port or 3306,
                user=u.username,
                password=u.password or "",
                database=u.path.lstrip("/"),
                autocommit=False,
            )
        return sqlite3.connect(self.url.removeprefix("sqlite:///"))

    def rows(self) -> list[dict[str, Any]]:
        """The outbox in seq order, normalised across dialects."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.outbox).order_by(self.outbox.c.seq)).mappings().all()
        out = []
        for r in rows:
            row = dict(r)
            row["id"] = uuid.UUID(str(row["id"]))
            row["payload"] = bytes(row["payload"])
            if isinstance(row["headers"], str):
                row["headers"] = json.loads(row["headers"])
            ts = row["timestamp"]
            ts = dt.datetime.fromisoformat(ts) if isinstance(ts, str) else ts
            row["timestamp"] = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)  # MySQL: UTC wall clock
            out.append(row)
        return out

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.outbox)).scalar_one())

    def orders(self) -> list[int]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT id FROM orders ORDER BY id")).scalars())


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "postgres":
        url = str(request.getfixturevalue("pg_database"))
    elif request.param == "mysql":
        url = str(request.getfixturevalue("mysql_database"))
    else:
        url = f"sqlite:///{tmp_path / 'app.db'}"
    database = Db(url, tmp_path)
    yield database
    database.engine.dispose()


@pytest.fixture
def writer(tmp_path: Path) -> OutboxWriter:
    avsc = tmp_path / "order-placed.avsc"
    avsc.write_text(json.dumps(SCHEMA))
    return OutboxWriter(
        avsc, aggregate_type="order", event_type="OrderPlaced", subject="shop.orders-value", version=3
    )


def decode(body: bytes) -> Any:
    return schemaless_reader(io.BytesIO(body), parse_schema(SCHEMA), None)


def test_session_transaction_commits_event_with_the_business_change(db: Db, writer: OutboxWriter) -> None:
    before = dt.datetime.now(dt.UTC)
    with Session(db.engine) as session, session.begin():
        session.execute(sa.text("INSERT INTO orders (id, status) VALUES (7, 'placed')"))
        event_id = writer.write(session, 7, payload(7), headers={"trace-id": "abc-123"})
        assert db.count() == 0 or db.dialect == "sqlite"  # not visible before commit (SQLite: same file lock)
    after = dt.datetime.now(dt.UTC)

    (row,) = db.rows()
    assert db.orders() == [7]
    assert row["id"] == event_id and isinstance(event_id, uuid.UUID)
    assert (row["aggregatetype"], row["aggregateid"], row["type"]) == ("order", "7", "OrderPlaced")
    assert (row["schema_subject"], row["schema_version"]) == ("shop.orders-value", 3)
    assert row["headers"] == {"trace-id": "abc-123"}
    assert before - dt.timedelta(seconds=1) <= row["timestamp"] <= after + dt.timedelta(seconds=1)
    # The plain Avro body (no wire header) decodes to exactly what was written.
    assert decode(row["payload"]) == payload(7)
    assert row["payload"] == writer.encode(payload(7))


def test_sqlalchemy_connection_and_rollback(db: Db, writer: OutboxWriter) -> None:
    with db.engine.connect() as conn:
        with conn.begin():
            writer.write(conn, "a-1", payload(1))
        trans = conn.begin()
        writer.write(conn, "a-2", payload(2))
        trans.rollback()

    def fail_after_writing() -> None:
        with Session(db.engine) as session, session.begin():
            session.execute(sa.text("INSERT INTO orders (id, status) VALUES (8, 'placed')"))
            writer.write(session, 8, payload(8))
            raise RuntimeError("the business change failed")

    with pytest.raises(RuntimeError, match="business change failed"):
        fail_after_writing()

    assert [r["aggregateid"] for r in db.rows()] == ["a-1"]
    assert db.orders() == []


@pytest.mark.parametrize("use_cursor", [False, True], ids=["connection", "cursor"])
def test_dbapi_transaction_commit_and_rollback(db: Db, writer: OutboxWriter, use_cursor: bool) -> None:
    conn = db.dbapi()
    try:
        cur = conn.cursor()
        target = cur if use_cursor else conn
        cur.execute("INSERT INTO orders (id, status) VALUES (1, 'placed')")
        kept = writer.write(target, 1, payload(1), headers={"k": "v"})
        conn.commit()

        cur.execute("INSERT INTO orders (id, status) VALUES (2, 'placed')")
        writer.write(target, 2, payload(2))
        conn.rollback()
        cur.close()
    finally:
        conn.close()

    rows = db.rows()
    assert [(r["id"], r["aggregateid"], r["headers"]) for r in rows] == [(kept, "1", {"k": "v"})]
    assert decode(rows[0]["payload"]) == payload(1)
    assert db.orders() == [1]


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        (payload(1) | {"order_id": "one"}, "order_id", "expected an integer"),
        (payload(1, total=Decimal("1.005")), "total", "more than 2 fractional digits"),
        (payload(1, total=Decimal("123456789")), "total", "would overflow decimal(10,2)"),
        (payload(1, placed_at=dt.datetime(2024, 5, 1, 12)), "placed_at", "naive datetime"),
        (payload(1, status="SHIPPED"), "status", "not a symbol of enum"),
        (payload(1, lines=[{"sku": "A", "qty": 2**31}]), "lines[0].qty", "overflows int"),
        ({k: v for k, v in payload(1).items() if k != "customer"}, "customer", "missing"),
        (payload(1, custmer="typo"), "custmer", "not a field of OrderPlaced"),
    ],
)
def test_invalid_payload_raises_and_inserts_nothing(
    db: Db, writer: OutboxWriter, bad: dict[str, Any], field: str, reason: str
) -> None:
    with Session(db.engine) as session, session.begin():
        session.execute(sa.text("INSERT INTO orders (id, status) VALUES (1, 'placed')"))
        with pytest.raises(RowError, match=re.escape(reason)) as exc:
            writer.write(session, 1, bad)
        assert exc.value.field == field and exc.value.key == "1"
        assert session.execute(sa.select(sa.func.count()).select_from(db.outbox)).scalar_one() == 0
    assert db.count() == 0
    assert db.orders() == [1]  # the application decides: here it committed its change without the event


def test_invalid_headers_and_aggregate_ids_are_refused(db: Db, writer: OutboxWriter) -> None:
    conn = db.dbapi()
    try:
        with pytest.raises(RowError, match="names and values must be strings"):
            writer.write(conn, 1, payload(1), headers={"n": 1})  # type: ignore[dict-item]
        with pytest.raises(RowError, match="aggregateid"):
            writer.write(conn, "x" * 256, payload(1))
        conn.commit()
    finally:
        conn.close()
    assert db.count() == 0


def test_seq_increases_in_insert_order(db: Db, writer: OutboxWriter) -> None:
    ids: list[uuid.UUID] = []
    with Session(db.engine) as session, session.begin():
        ids += [writer.write(session, "order-1", payload(n)) for n in range(3)]
    conn = db.dbapi()
    try:
        ids += [writer.write(conn, "order-2", payload(n)) for n in range(3, 6)]
        conn.commit()
    finally:
        conn.close()
    with Session(db.engine) as session, session.begin():
        ids.append(writer.write(session, "order-1", payload(6)))

    rows = db.rows()
    assert [r["id"] for r in rows] == ids
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [decode(r["payload"])["order_id"] for r in rows] == list(range(7))


def test_dict_schema_and_dialect_override(db: Db) -> None:
    plain = OutboxWriter(
        {"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "int"}]},
        aggregate_type="probe",
        event_type="Ping",
        dialect="mariadb" if db.dialect == "mysql" else db.dialect,
    )
    with db.engine.begin() as conn:
        plain.write(conn, uuid.UUID(int=1), {"n": 1})
    (row,) = db.rows()
    assert row["aggregateid"] == "00000000-0000-0000-0000-000000000001"
    assert (row["schema_subject"], row["schema_version"], row["headers"]) == (None, None, None)


def test_construction_errors() -> None:
    ping = {"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "int"}]}
    with pytest.raises(ConfigError, match="not a plain"):
        OutboxWriter(ping, aggregate_type="a", event_type="b", table="cdc_outbox; DROP TABLE x")
    with pytest.raises(ConfigError, match="aggregate_type"):
        OutboxWriter(ping, aggregate_type="", event_type="b")
    with pytest.raises(ConfigError, match="unsupported dialect 'oracle'"):
        OutboxWriter(ping, aggregate_type="a", event_type="b", dialect="oracle")
    writer = OutboxWriter(ping, aggregate_type="a", event_type="b")
    with pytest.raises(TypeError, match="not an Engine"):
        writer.write(sa.create_engine("sqlite://"), 1, {"n": 1})
    with pytest.raises(TypeError, match="neither a SQLAlchemy"):
        writer.write(object(), 1, {"n": 1})


def test_importing_the_writer_loads_no_driver_kafka_client_or_sqlalchemy() -> None:
    code = (
        "import sys, cdc.outbox, cdc.outbox.alembic\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sqlalchemy', 'psycopg', 'pymysql', 'confluent_kafka', 'alembic', 'sqlite3'})\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
