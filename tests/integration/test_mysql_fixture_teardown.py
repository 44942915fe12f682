"""The MariaDB test-database fixture's teardown ends sessions a failed test left behind.

A test that fails while its own connection holds an open transaction in the database leaves a
metadata lock; DROP DATABASE would wait for it for a year (lock_wait_timeout's default), which
once hung the whole suite in a teardown. The real server is used: the lock is the server's."""

from __future__ import annotations

import time

import pymysql
import pytest

from tests.conftest import _drop_mysql_database, _mysql_connect, unique

pytestmark = pytest.mark.integration


def test_a_session_left_in_an_open_transaction_does_not_hang_the_drop(mysql_dsn: str) -> None:
    name = unique("teardown")
    admin = _mysql_connect(mysql_dsn)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"CREATE TABLE `{name}`.t (id int PRIMARY KEY)")
    leftover = _mysql_connect(mysql_dsn, name)
    with leftover.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT * FROM t")  # the open transaction now holds t's metadata lock
    try:
        started = time.monotonic()
        _drop_mysql_database(admin, name)
        elapsed = time.monotonic() - started
        assert 9 <= elapsed < 30, elapsed  # waited lock_wait_timeout (10 s), then ended the session
        with admin.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (name,))
            assert cur.fetchone() == (0,)
        with pytest.raises(pymysql.err.OperationalError), leftover.cursor() as cur:
            cur.execute("SELECT 1")  # its session was killed
    finally:
        leftover.close()
        admin.close()
