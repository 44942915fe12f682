"""Every MySQL type of the value contract, and sakila's ``film`` captured as a TABLE, on the real
stack: MariaDB -> polling source -> Kafka (Avro) -> database sink -> PostgreSQL and -> MariaDB.

Afterwards every field of every row in both targets equals the source database's own value
(read with pymysql in a UTC session, FLOAT as CAST(f AS DOUBLE), its exact 32-bit value).

Mapping (source column -> Avro -> PostgreSQL column auto-created / MariaDB column):

- TIME(6) -> long (signed microseconds) -> bigint / an existing TIME(6) column (the sink turns
  the microseconds back into the interval)
- SET -> array of string (declared order) -> text[] / an existing SET column (comma-joined) or,
  auto-created on MariaDB (film), JSON text
- BIT(3) -> long -> bigint / BIT(3); BIT(1) -> boolean -> boolean / BIT(1)
- BIGINT UNSIGNED -> decimal(20,0) -> numeric(20,0) / BIGINT UNSIGNED; DECIMAL(65,30) alike
- FLOAT -> float -> real / FLOAT (compared as 32-bit values); DOUBLE -> double, bit for bit
- YEAR -> int; ENUM -> enum -> text / ENUM; UUID -> string/uuid -> uuid / UUID; INET6, JSON,
  utf8mb4, latin1 -> string -> text / the same type; BLOB -> bytes; BINARY(4) -> fixed(4)
- zero dates (source option ``zero_dates: null``) -> null
- DATETIME(6) -> local-timestamp-micros -> timestamp; TIMESTAMP(6) -> timestamp-micros -> timestamptz
- generated columns (stored and virtual) -> their declared type
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import create_pg_database, drop_pg_database, unique
from tests.integration import mysql_matrix as mx
from tests.integration.harness import Connector, topics_exist, wait_for, write_config
from tests.integration.sakila import load_postgres
from tests.integration.sakila_mysql import load_mariadb_from_postgres, mysql_connect
from tests.integration.sink_harness import ROUND_TRIP_SINK, SinkProcess

pytestmark = pytest.mark.integration

FILM_KEY = {
    "type": "record",
    "name": "FilmKey",
    "namespace": "test.sakila",
    "fields": [{"name": "film_id", "type": "long"}],
}
FILM_FIELDS: list[tuple[str, Any, bool]] = [
    ("film_id", "long", False),
    ("title", "string", False),
    ("description", "string", True),
    ("release_year", "int", True),
    ("language_id", "long", False),
    ("original_language_id", "long", True),
    ("rental_duration", "int", False),
    ("rental_rate", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}, False),
    ("length", "int", True),
    ("replacement_cost", {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}, False),
    ("rating", {"type": "enum", "name": "Rating", "symbols": ["G", "PG", "PG_13", "R", "NC_17"]}, True),
    ("special_features", {"type": "array", "items": "string"}, True),
    ("last_update", {"type": "long", "logicalType": "timestamp-micros"}, False),
]
FILM_VALUE = {
    "type": "record",
    "name": "Film",
    "namespace": "test.sakila",
    "fields": [
        {"name": n, "type": ["null", t], "default": None} if nullable else {"name": n, "type": t}
        for n, t, nullable in FILM_FIELDS
    ],
}
RATINGS = {"PG-13": "PG_13", "NC-17": "NC_17"}
FILM_COLUMNS = [n for n, _, _ in FILM_FIELDS]

# The matrix with UUID as string/uuid (so the sink gives PostgreSQL a uuid column).
MATRIX_VALUE = {
    **mx.VALUE_SCHEMA,
    "fields": [
        {**f, "type": ["null", {"type": "string", "logicalType": "uuid"}]} if f["name"] == "uid" else f
        for f in mx.VALUE_SCHEMA["fields"]
    ],
}
# The MariaDB target of the matrix: the source's own types (generated columns become plain ones).
TARGET_DDL = mx.DDL.replace("BIGINT AS (id * 1000) STORED", "BIGINT").replace(
    "VARCHAR(20) AS (CONCAT('v', id)) VIRTUAL", "VARCHAR(20)"
)

SOURCE = """
name: {name}
source:
  connector: polling
  url: {url}
  poll_interval: 200ms
  zero_dates: "null"
streams:
  - name: matrix
    topic: {name}.matrix
    key_schema: matrix-key.avsc
    value_schema: matrix.avsc
    capture: {{table: matrix, mode: incrementing, incrementing_column: id}}
  - name: film
    topic: {name}.film
    key_schema: film-key.avsc
    value_schema: film.avsc
    symbol_maps: {{rating: {{PG-13: PG_13, NC-17: NC_17}}}}
    capture: {{table: film, mode: timestamp+incrementing, timestamp_column: last_update, incrementing_column: film_id}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
runtime: {{shutdown_timeout: 20s}}
"""

Rows = dict[int, dict[str, Any]]


def _read_mysql(dsn: str, table: str, columns: list[str], key: str) -> Rows:
    conn = mysql_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            select = ", ".join(
                "CAST(f AS DOUBLE)" if c == "f" and table == "matrix" else f"`{c}`" for c in columns
            )
            cur.execute(f"SELECT {select} FROM `{table}`")
            return {r[columns.index(key)]: dict(zip(columns, r, strict=True)) for r in cur.fetchall()}
    finally:
        conn.close()


def _read_pg(dsn: str, table: str, columns: list[str], key: str) -> Rows:
    with psycopg.connect(dsn) as conn:
        try:
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
            )
            rows = conn.execute(query).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {r[columns.index(key)]: dict(zip(columns, r, strict=True)) for r in rows}


def _zero(v: Any) -> Any:
    return None if isinstance(v, str) else v  # pymysql hands zero dates over as text


def _members(v: str | None) -> list[str] | None:
    return None if v is None else v.split(",") if v else []  # MySQL renders a SET in declared order


def _opt(f: Any, v: Any) -> Any:
    return None if v is None else f(v)


def matrix_in_postgres(src: dict[str, Any]) -> dict[str, Any]:
    """A source matrix row as the auto-created PostgreSQL table must hold it."""
    return {
        **src,
        "ts6": _opt(lambda v: v.replace(tzinfo=dt.UTC), src["ts6"]),
        "t6": _opt(lambda v: v // dt.timedelta(microseconds=1), src["t6"]),
        "b3": _opt(lambda v: int.from_bytes(v, "big"), src["b3"]),
        "b1": _opt(lambda v: v == b"\x01", src["b1"]),
        "s": _members(src["s"]),
        "uid": _opt(uuid.UUID, src["uid"]),
        "zd": _zero(src["zd"]),
        "zdt": _zero(src["zdt"]),
    }


def exact_floats(row: dict[str, Any]) -> dict[str, Any]:
    """FLOAT compared as its 32 bits (PostgreSQL renders real in shortest form), DOUBLE as 64."""
    return {
        **row,
        "f": _opt(lambda v: struct.pack("<f", v), row["f"]),
        "d": _opt(lambda v: struct.pack("<d", v), row["d"]),
    }


def matrix_in_mariadb(src: dict[str, Any]) -> dict[str, Any]:
    return {**src, "zd": _zero(src["zd"]), "zdt": _zero(src["zdt"])}


def film_in_postgres(src: dict[str, Any]) -> dict[str, Any]:
    out = dict(src)
    out["rating"] = src["rating"] and RATINGS.get(src["rating"], src["rating"])
    out["special_features"] = _members(src["special_features"])
    out["last_update"] = src["last_update"].replace(tzinfo=dt.UTC)
    return out


def film_in_mariadb(src: dict[str, Any]) -> dict[str, Any]:
    out = film_in_postgres(src)
    out["last_update"] = src["last_update"]  # DATETIME(6) holding UTC
    if out["special_features"] is not None:
        out["special_features"] = json.dumps(out["special_features"], separators=(",", ":"))
    return out


def _differences(want: Rows, got: Rows, what: str) -> list[str]:
    out = [f"{what}: key {k} missing" for k in want if k not in got]
    out += [f"{what}: key {k} not in the source" for k in got if k not in want]
    for k, row in want.items():
        for name, value in row.items():
            if k in got and got[k][name] != value:
                out.append(f"{what} {k} {name}: target {got[k][name]!r}, source {value!r}")
    return out


def test_every_mysql_type_and_sakila_film_round_trip(
    pg_dsn: str,
    pg_database: str,
    mysql_database: str,
    mysql_target: str,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    load_postgres(pg_database)
    assert load_mariadb_from_postgres(pg_database, mysql_database, ("language", "film")) == {
        "language": 6,
        "film": 1000,
    }
    conn = mysql_connect(mysql_database)
    with conn.cursor() as cur:
        cur.execute(mx.DDL)
        mx.insert_rows(cur, [1, 2, 3])
    target_conn = mysql_connect(mysql_target)
    with target_conn.cursor() as cur:
        cur.execute(TARGET_DDL)
    target_conn.close()
    pg_target = create_pg_database(pg_dsn, target_name := unique("test"))
    config = write_config(
        tmp_path,
        SOURCE.format(name=topic_name, url=mysql_database, bootstrap=kafka_bootstrap, registry=registry_url),
        {
            "matrix-key.avsc": mx.KEY_SCHEMA,
            "matrix.avsc": MATRIX_VALUE,
            "film-key.avsc": FILM_KEY,
            "film.avsc": FILM_VALUE,
        },
    )
    source = Connector(config, tmp_path / "source.log")
    sinks: list[SinkProcess] = []
    topics = [f"{topic_name}.matrix", f"{topic_name}.film"]
    wait_for(lambda: not source.alive() or topics_exist(kafka_bootstrap, topics), 60, "the source's topics")
    for label, target in (("pg", pg_target), ("my", mysql_target)):
        path = tmp_path / f"sink-{label}.yaml"
        path.write_text(
            ROUND_TRIP_SINK.format(
                name=f"{topic_name}-{label}",
                topics="".join(f"  - {{topic: {t}, table: {t.rsplit('.', 1)[1]}}}\n" for t in topics),
                target=target,
                bootstrap=kafka_bootstrap,
                registry=registry_url,
            )
        )
        sinks.append(SinkProcess(path, tmp_path / f"sink-{label}.log"))
    matrix_cols, film_cols = list(mx.READ), FILM_COLUMNS
    try:
        time.sleep(3)  # the initial load is under way: now change rows the stream already read
        with conn.cursor() as cur:
            mx.insert_rows(cur, [4, 5, 6, 7, 8])
            cur.execute(
                "UPDATE film SET special_features = 'Behind the Scenes,Trailers', release_year = 2155, "
                "rating = 'NC-17' WHERE film_id IN (1, 2)"
            )
        deadline = time.monotonic() + 120
        while True:
            assert source.alive(), source.log_text()[-3000:]
            for sink in sinks:
                assert sink.proc.poll() is None, sink.log_text()[-3000:]
            src_m = _read_mysql(mysql_database, "matrix", matrix_cols, "id")
            src_f = _read_mysql(mysql_database, "film", film_cols, "film_id")
            problems = _differences(
                {k: exact_floats(matrix_in_postgres(r)) for k, r in src_m.items()},
                {k: exact_floats(r) for k, r in _read_pg(pg_target, "matrix", matrix_cols, "id").items()},
                "postgres matrix",
            )
            problems += _differences(
                {k: matrix_in_mariadb(r) for k, r in src_m.items()},
                _read_mysql(mysql_target, "matrix", matrix_cols, "id"),
                "mariadb matrix",
            )
            problems += _differences(
                {k: film_in_postgres(r) for k, r in src_f.items()},
                _read_pg(pg_target, "film", film_cols, "film_id"),
                "postgres film",
            )
            problems += _differences(
                {k: film_in_mariadb(r) for k, r in src_f.items()} if _has_table(mysql_target, "film") else {},
                _read_mysql(mysql_target, "film", film_cols, "film_id")
                if _has_table(mysql_target, "film")
                else {},
                "mariadb film",
            )
            if not _has_table(mysql_target, "film"):
                problems.append("mariadb film: table not created yet")
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not problems, "\n".join(problems[:40])
        assert len(src_m) == len(mx.ROWS) and len(src_f) == 1000
        assert src_f[1]["special_features"] == "Trailers,Behind the Scenes"  # MySQL's declared order
        for sink in sinks:
            assert sink.terminate() == 0
        code, _ = source.terminate()
        assert code == 0, source.log_text()[-3000:]
    finally:
        conn.close()
        for sink in sinks:
            sink.ensure_stopped()
        source.ensure_stopped()
        drop_pg_database(pg_dsn, target_name)


def _has_table(dsn: str, table: str) -> bool:
    conn = mysql_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            return cur.fetchone() is not None
    finally:
        conn.close()
