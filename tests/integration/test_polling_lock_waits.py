"""Polling must not pass over a row whose statement waited on a lock before its transaction
opened (issue 17), nor a PostgreSQL prepared transaction's row.

MariaDB stamps CURRENT_TIMESTAMP(6) when the statement starts; InnoDB opens the transaction
(innodb_trx.trx_started) only after a metadata / table lock wait. The exact reproduction of the
issue and its variants run through the real connector into Kafka, polled every 500 ms, and the
late row must arrive field by field.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc.sql.engines import normalize_url
from tests.conftest import unique
from tests.integration.harness import Connector, TopicReader, cdc, key_of, write_config
from tests.integration.test_polling_to_kafka import assert_equal_field_by_field

pytestmark = pytest.mark.integration

MYSQL_DDL = """CREATE TABLE late (id bigint AUTO_INCREMENT PRIMARY KEY, v text,
    updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))"""
PG_DDL = """CREATE TABLE late (id bigserial PRIMARY KEY, v text,
    updated_at timestamptz(6) NOT NULL DEFAULT now())"""

KEY = {
    "type": "record",
    "name": "LateKey",
    "namespace": "test.late",
    "fields": [{"name": "id", "type": "long"}],
}
VALUE = {
    "type": "record",
    "name": "Late",
    "namespace": "test.late",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "v", "type": ["null", "string"]},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}
CONFIG = """
name: {topic}
source: {{connector: polling, url: "{url}", poll_interval: 500ms}}
streams:
  - name: late
    topic: {topic}
    key_schema: key.avsc
    value_schema: value.avsc
    capture: {capture}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}"}}
offsets: {{store: kafka, topic: {topic}.offsets, commit_interval: 200ms}}
runtime: {{shutdown_timeout: 20s}}
"""
MODES = {
    "timestamp": "{table: late, mode: timestamp, timestamp_column: updated_at}",
    "timestamp+incrementing": (
        "{table: late, mode: timestamp+incrementing, timestamp_column: updated_at, incrementing_column: id}"
    ),
}


class Late:
    """The issue's table and the sessions that write it (each its own connection)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(normalize_url(url), pool_size=8)
        self.mysql = self.engine.dialect.name in ("mysql", "mariadb")
        with self.engine.begin() as conn:
            conn.exec_driver_sql(MYSQL_DDL if self.mysql else PG_DDL)

    def session(self) -> sa.Connection:
        conn = self.engine.connect()
        conn.exec_driver_sql("SET time_zone = '+00:00'" if self.mysql else "SET TIME ZONE 'UTC'")
        conn.commit()
        return conn

    def insert(self, conn: sa.Connection, v: str) -> None:
        conn.execute(sa.text("INSERT INTO late (v) VALUES (:v)"), {"v": v})

    def expected(self) -> dict[str, dict[str, Any]]:
        with self.session() as conn:
            rows = conn.execute(sa.text("SELECT id, v, updated_at FROM late")).all()
        return {
            key_of({"id": r.id}): {
                "id": r.id,
                "v": r.v,
                "updated_at": r.updated_at if r.updated_at.tzinfo else r.updated_at.replace(tzinfo=dt.UTC),
            }
            for r in rows
        }


class Background(threading.Thread):
    """Runs one session's statements in a thread (they block on the lock)."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.work, self.error = work, None  # type: ignore[var-annotated]

    def run(self) -> None:
        try:
            self.work()
        except Exception as exc:  # reported by the test thread
            self.error = exc  # type: ignore[assignment]


@contextmanager
def running_connector(
    tmp_path: Path, url: str, mode: str, topic: str, bootstrap: str, registry: str
) -> Iterator[TopicReader]:
    text = CONFIG.format(topic=topic, url=url, capture=MODES[mode], bootstrap=bootstrap, registry=registry)
    config = write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})
    reg = cdc("schemas", "register", str(config))
    assert reg.returncode == 0, reg.stderr
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(bootstrap, registry, topic)
    try:
        yield reader
    finally:
        conn.terminate()
        conn.ensure_stopped()
        reader.close()


def converge(reader: TopicReader, late: Late) -> None:
    expected = late.expected()
    state = reader.wait_until(lambda s: all(s.get(k) == v for k, v in expected.items()), 60)
    assert_equal_field_by_field(state, expected, set())


def run_blocked_writers(late: Late, block: Callable[[], Callable[[], None]], hold: float) -> str:
    """A (in a transaction) and then B (autocommit) write while ``block`` holds a lock; once the
    lock is released B commits at once and A keeps its transaction open ``hold`` seconds."""
    a_conn, b_conn = late.session(), late.session()
    a_done, a_commit = threading.Event(), threading.Event()

    def session_a() -> None:
        a_conn.execute(sa.text("INSERT INTO late (v) VALUES ('a')"))  # begins A's transaction
        a_done.set()
        a_commit.wait(60)
        a_conn.commit()

    def session_b() -> None:
        late.insert(b_conn, "b")
        b_conn.commit()

    release = block()
    a, b = Background(session_a), Background(session_b)
    a.start()
    time.sleep(0.5)
    b.start()
    time.sleep(2.0)  # both wait on the lock for more than a second
    release()
    b.join(30)
    assert a_done.wait(30), "A's statement never finished"
    time.sleep(hold)  # several polls while A's transaction is open
    a_commit.set()
    a.join(30)
    for t in (a, b):
        assert t.error is None, t.error
    a_conn.close()
    b_conn.close()
    return "a"


@pytest.mark.parametrize("mode", ["timestamp", "timestamp+incrementing"])
def test_insert_waiting_on_lock_tables_is_not_passed_over(
    mode: str, mysql_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """The issue's exact reproduction: C holds LOCK TABLES WRITE, A and B wait, C unlocks."""
    late = Late(mysql_database)
    with late.session() as conn:
        for i in range(3):
            late.insert(conn, f"early-{i}")
        conn.commit()
    lock = late.session()

    def block() -> Callable[[], None]:
        lock.exec_driver_sql("LOCK TABLES late WRITE")
        return lambda: lock.exec_driver_sql("UNLOCK TABLES")

    with running_connector(
        tmp_path, mysql_database, mode, topic_name, kafka_bootstrap, registry_url
    ) as reader:
        reader.wait_until(lambda s: len(s) >= 3, 60)
        run_blocked_writers(late, block, hold=6.0)
        converge(reader, late)
    lock.close()
    late.engine.dispose()


def test_insert_waiting_behind_alter_table_is_not_passed_over(
    mysql_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """A metadata-lock pile-up: C reads in an open transaction, an ALTER TABLE waits for C's
    metadata lock, and A's and B's inserts queue behind the ALTER."""
    late = Late(mysql_database)
    with late.session() as conn:
        late.insert(conn, "early")
        conn.commit()
    reader_c, alter = late.session(), late.session()
    altering = Background(lambda: alter.exec_driver_sql("ALTER TABLE late COMMENT = 'cdc-test'"))

    def block() -> Callable[[], None]:
        reader_c.exec_driver_sql("SELECT * FROM late")  # C's transaction holds a shared MDL
        altering.start()
        time.sleep(0.3)
        return reader_c.commit

    with running_connector(
        tmp_path, mysql_database, "timestamp+incrementing", topic_name, kafka_bootstrap, registry_url
    ) as reader:
        reader.wait_until(lambda s: len(s) >= 1, 60)
        run_blocked_writers(late, block, hold=4.0)
        altering.join(30)
        assert altering.error is None, altering.error
        converge(reader, late)
    reader_c.close()
    alter.close()
    late.engine.dispose()


class InnodbTrxMonitor(Background):
    """A monitoring client reading information_schema.innodb_trx every 20 ms: InnoDB then never
    refreshes the table's cache (it does so only after 100 ms without readers)."""

    def __init__(self, late: Late) -> None:
        self.stop = threading.Event()
        self.conn = late.session()
        super().__init__(self._watch)

    def _watch(self) -> None:
        while not self.stop.wait(0.02):
            self.conn.exec_driver_sql("SELECT COUNT(*) FROM information_schema.innodb_trx").all()
            self.conn.commit()

    def finish(self) -> None:
        self.stop.set()
        self.join(10)
        self.conn.close()


def test_update_waiting_on_a_row_lock_is_not_passed_over(
    mysql_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """C holds a row with SELECT ... FOR UPDATE; A's UPDATE of it (ON UPDATE CURRENT_TIMESTAMP(6))
    waits, B inserts and commits meanwhile; A holds its transaction open after the wait. A
    monitoring client keeps information_schema.innodb_trx stale meanwhile (a row-lock wait alone
    happens after InnoDB opened the transaction, so trx_started would cover it)."""
    late = Late(mysql_database)
    with late.session() as conn:
        late.insert(conn, "early")
        conn.commit()
    c, a_conn = late.session(), late.session()
    a_done, a_commit = threading.Event(), threading.Event()

    def session_a() -> None:
        a_conn.execute(sa.text("UPDATE late SET v = 'a' WHERE id = 1"))
        a_done.set()
        a_commit.wait(60)
        a_conn.commit()

    with running_connector(
        tmp_path, mysql_database, "timestamp", topic_name, kafka_bootstrap, registry_url
    ) as reader:
        reader.wait_until(lambda s: len(s) >= 1, 60)
        monitor = InnodbTrxMonitor(late)
        monitor.start()
        time.sleep(0.3)
        c.exec_driver_sql("SELECT * FROM late WHERE id = 1 FOR UPDATE")
        a = Background(session_a)
        a.start()
        time.sleep(0.5)
        with late.session() as b:
            late.insert(b, "b")
            b.commit()
        time.sleep(2.0)
        c.commit()
        assert a_done.wait(30)
        time.sleep(4.0)
        a_commit.set()
        a.join(30)
        time.sleep(1.0)
        monitor.finish()
        assert a.error is None and monitor.error is None, (a.error, monitor.error)
        converge(reader, late)
        assert reader.latest()[key_of({"id": 1})]["v"] == "a"
    c.close()
    a_conn.close()
    late.engine.dispose()


@pytest.fixture
def pg_with_2pc(pg_dsn: str) -> Iterator[str]:
    """A private PostgreSQL with max_prepared_transactions enabled (the shared one has 0)."""
    import os
    import shutil
    import tempfile

    import psycopg

    from tests.conftest import create_pg_database
    from tests.integration.test_runtime_resilience import PrivatePostgres

    # Not under pytest's tmp_path: the server runs as user postgres, which must reach its state.
    state = Path(tempfile.mkdtemp(prefix="cdc-test-pg2pc-", dir="/var/tmp"))
    os.chmod(state, 0o755)  # noqa: S103 - the postgres user must traverse into its data directory
    pg = PrivatePostgres(state)
    pg.run("start")
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_prepared_transactions = 8")
        pg.run("stop")
        pg.run("start")
        yield create_pg_database(pg.dsn, "late2pc")
    finally:
        pg.run("stop")
        shutil.rmtree(state, ignore_errors=True)


def test_prepared_transaction_is_not_passed_over_nor_after_a_restart(
    pg_with_2pc: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """PREPARE TRANSACTION takes a transaction out of pg_stat_activity while its rows keep its
    start as now(). 1: prepared while the connector runs. 2: prepared while it is stopped (the
    restart rule: nothing is read while a prepared transaction of unknown start exists)."""
    late = Late(pg_with_2pc)
    admin = late.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def prepare(gid: str) -> None:
        with late.session() as a:
            late.insert(a, f"prepared-{gid}")
            a.exec_driver_sql(f"PREPARE TRANSACTION '{gid}'")
        time.sleep(0.3)
        with late.session() as b:
            late.insert(b, f"after-{gid}")
            b.commit()

    with late.session() as conn:
        late.insert(conn, "early")
        conn.commit()
    with running_connector(
        tmp_path, pg_with_2pc, "timestamp+incrementing", topic_name, kafka_bootstrap, registry_url
    ) as reader:
        reader.wait_until(lambda s: len(s) >= 1, 60)
        prepare("g1")
        time.sleep(3.0)  # several polls while g1 is prepared
        admin.exec_driver_sql("COMMIT PREPARED 'g1'")
        converge(reader, late)
    prepare("g2")
    with running_connector(
        tmp_path, pg_with_2pc, "timestamp+incrementing", topic_name, kafka_bootstrap, registry_url
    ) as reader:
        state = reader.wait_until(lambda s: len(s) >= 5, 8)
        assert len(state) == 3, "read while a prepared transaction of unknown start existed"
        admin.exec_driver_sql("COMMIT PREPARED 'g2'")
        converge(reader, late)
    admin.close()
    late.engine.dispose()


def test_postgres_column_defaults_are_never_earlier_than_xact_start(pg_database: str) -> None:
    """Why xact_start bounds PostgreSQL: a transaction shows its xact_start (= its now()) from
    its first statement on, also while that statement waits on a lock, and statement_timestamp()
    and clock_timestamp() are never earlier. (transaction_timestamp() is now().)"""
    engine = sa.create_engine(normalize_url(pg_database))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE stamps (id int PRIMARY KEY, t_now timestamptz DEFAULT now(), "
            "t_stmt timestamptz DEFAULT statement_timestamp(), t_clock timestamptz DEFAULT clock_timestamp(), "
            "t_local timestamp DEFAULT LOCALTIMESTAMP)"
        )
    locker, writer, observer = engine.connect(), engine.connect(), engine.connect()
    locker.exec_driver_sql("LOCK TABLE stamps IN ACCESS EXCLUSIVE MODE")
    pid = writer.exec_driver_sql("SELECT pg_backend_pid()").scalar()  # the transaction starts here
    time.sleep(0.3)
    inserting = Background(lambda: writer.exec_driver_sql("INSERT INTO stamps (id) VALUES (1)"))
    inserting.start()
    time.sleep(0.5)
    seen = observer.exec_driver_sql(
        "SELECT xact_start, wait_event_type FROM pg_stat_activity WHERE pid = %(p)s", {"p": pid}
    ).one()
    observer.commit()
    assert seen.wait_event_type == "Lock"  # waiting, and its xact_start is visible meanwhile
    locker.commit()
    inserting.join(30)
    assert inserting.error is None, inserting.error
    writer.commit()
    row = observer.exec_driver_sql("SELECT t_now, t_stmt, t_clock FROM stamps").one()
    assert row.t_now == seen.xact_start
    assert seen.xact_start < row.t_stmt <= row.t_clock
    for c in (locker, writer, observer):
        c.close()
    engine.dispose()


def test_cdc_check_verifies_the_bound(
    mysql_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """`cdc check` verifies PROCESS, takes a real sample and names the writing transactions a
    start-up would wait for; without PROCESS it fails and says what to grant."""
    late = Late(mysql_database)
    config = write_config(
        tmp_path,
        CONFIG.format(
            topic=topic_name, url=mysql_database, capture=MODES["timestamp"], bootstrap=kafka_bootstrap,
            registry=registry_url,
        ),
        {"key.avsc": KEY, "value.avsc": VALUE},
    )  # fmt: skip
    assert cdc("schemas", "register", str(config)).returncode == 0
    writer = late.session()
    late.insert(writer, "open")  # a writing transaction left open
    thread = writer.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
    out = cdc("check", str(config))
    writer.rollback()
    writer.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok  ] PROCESS privilege" in out.stdout
    assert "[ok  ] open-transaction bound" in out.stdout
    assert f"of thread {thread}" in out.stdout and "polling waits until these end" in out.stdout

    user, database = f"u{unique('')[-10:]}", mysql_database.rsplit("/", 1)[1]
    with late.engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'pw'")
        conn.exec_driver_sql(f"GRANT ALL ON `{database}`.* TO '{user}'@'%%'")
    try:
        base = mysql_database.split("://", 1)[1].split("@", 1)[1]
        config.write_text(config.read_text().replace(mysql_database, f"mysql://{user}:pw@{base}"))
        out = cdc("check", str(config))
        assert out.returncode == 7, out.stdout + out.stderr
        assert "[FAIL] PROCESS privilege" in out.stdout and "GRANT PROCESS ON *.* TO" in out.stdout
    finally:
        with late.engine.connect() as conn:
            conn.exec_driver_sql(f"DROP USER '{user}'@'%%'")
        late.engine.dispose()
