"""Shared fixtures. Service fixtures read the CDC_TEST_* variables (``make env`` prints them).

Locally a missing service skips its tests with a reason; when CDC_TEST_REQUIRE names the
service (CI sets it for all), a missing service FAILS the test instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

SERVICES = {
    "postgres": "CDC_TEST_POSTGRES_DSN",
    "mysql": "CDC_TEST_MYSQL_DSN",
    "kafka": "CDC_TEST_KAFKA_BOOTSTRAP",
    "registry": "CDC_TEST_SCHEMA_REGISTRY_URL",
}


def required(service: str) -> bool:
    wanted = {s.strip() for s in os.environ.get("CDC_TEST_REQUIRE", "").split(",") if s.strip()}
    return service in wanted or "all" in wanted


def unavailable(service: str, reason: str) -> None:
    """A service is missing: fail when CDC_TEST_REQUIRE names it (CI), else skip with the reason."""
    if required(service):
        pytest.fail(reason)
    pytest.skip(reason)


def service_env(service: str) -> str:
    """The service's address, or skip (locally) / fail (when required) with the reason."""
    var = SERVICES[service]
    value = os.environ.get(var)
    if not value:
        unavailable(service, f'{service}: {var} is not set (run: eval "$(make env)" after make services)')
    return value


def unique(prefix: str) -> str:
    """A unique lowercase identifier for databases, slots, topics."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = service_env("postgres")
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        msg = f"postgres at CDC_TEST_POSTGRES_DSN unreachable: {exc}"
        unavailable("postgres", msg)
    _drop_stale_slots(dsn)
    return dsn


def _drop_stale_slots(dsn: str) -> None:
    """A leaked test slot pins WAL: drop inactive test slots at session start. An active one
    belongs to a test running right now (another session on the same servers), and so may an
    inactive one that is recent (between a kill -9 and the restart of a crash test): only slots
    holding more than 256 MB of WAL count as leaked."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'test\\_%' AND NOT active"
            " AND pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > 256 * 1024 * 1024"
        ).fetchall()
        for (name,) in rows:
            with contextlib.suppress(psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))  # raced: in use or gone


def create_pg_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``dsn``; return its DSN."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{dsn.rpartition('/')[0]}/{name}"


def drop_pg_database(dsn: str, name: str) -> None:
    """Drop database ``name`` (and its sessions) on the server of ``dsn``."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_database(pg_dsn: str) -> Iterator[str]:
    """A fresh PostgreSQL database; yields its DSN and drops it afterwards."""
    name = unique("test")
    yield create_pg_database(pg_dsn, name)
    drop_pg_database(pg_dsn, name)


@pytest.fixture(scope="session")
def mysql_dsn() -> str:
    dsn = service_env("mysql")
    import pymysql

    try:
        _mysql_connect(dsn).close()
    except pymysql.err.OperationalError as exc:
        msg = f"mysql at CDC_TEST_MYSQL_DSN unreachable: {exc}"
        unavailable("mysql", msg)
    return dsn


def _mysql_connect(dsn: str, database: str | None = None):  # type: ignore[no-untyped-def]
    from urllib.parse import urlparse

    import pymysql

    u = urlparse(dsn)
    return pymysql.connect(
        host=u.hostname,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=database,
        autocommit=True,
        connect_timeout=5,
    )


@contextlib.contextmanager
def _fresh_mysql_database(mysql_dsn: str) -> Iterator[str]:
    name = unique("test")
    conn = _mysql_connect(mysql_dsn)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    base, _, _ = mysql_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        _drop_mysql_database(conn, name)
        conn.close()


def delete_subjects(registry_url: str, subjects: Iterable[str]) -> None:
    """Delete registry subjects, soft then permanently (the registry keeps a soft-deleted one's
    name taken); a subject that is not there (any more) is skipped."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = SchemaRegistryClient({"url": registry_url})
    for subject in subjects:
        for permanent in (False, True):
            with contextlib.suppress(SchemaRegistryError):
                client.delete_subject(subject, permanent=permanent)


def _drop_mysql_database(conn: Any, name: str) -> None:
    """DROP DATABASE, ending the sessions still in it first if they hold it up (PostgreSQL's
    WITH (FORCE)). A session that a failed test left in an open transaction holds a metadata
    lock, and the DROP would wait for it for lock_wait_timeout (a year by default): one failed
    test hung the suite in its teardown. The failure is the test's to report, not a hang."""
    import pymysql

    with conn.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 10")
        try:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            return
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1205:  # ER_LOCK_WAIT_TIMEOUT
                raise
        cur.execute(
            "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (name,)
        )
        for (session,) in cur.fetchall():
            with contextlib.suppress(pymysql.err.OperationalError):  # it may have ended meanwhile
                cur.execute("KILL %s", (session,))
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mysql_database(mysql_dsn: str) -> Iterator[str]:
    """A fresh MariaDB database; yields its DSN and drops it afterwards."""
    with _fresh_mysql_database(mysql_dsn) as dsn:
        yield dsn


@pytest.fixture
def mysql_target(mysql_dsn: str) -> Iterator[str]:
    """A second fresh MariaDB database (a sink's target next to a captured one)."""
    with _fresh_mysql_database(mysql_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = service_env("kafka")
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except Exception as exc:
        msg = f"kafka at {bootstrap} unreachable: {exc}"
        unavailable("kafka", msg)
    return bootstrap


@pytest.fixture(scope="session")
def registry_url() -> str:
    url = service_env("registry")
    import urllib.request

    try:
        urllib.request.urlopen(f"{url}/subjects", timeout=10).read()  # noqa: S310 - loopback test service
    except Exception as exc:
        msg = f"schema registry at {url} unreachable: {exc}"
        unavailable("registry", msg)
    return url


@pytest.fixture
def topic_name(kafka_bootstrap: str) -> Iterator[str]:
    """A unique topic name; topics with that prefix are deleted afterwards."""
    name = unique("test")
    yield name
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(name)]
    if doomed:
        for fut in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # best-effort clean-up
                fut.result()
