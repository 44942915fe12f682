"""``cdc check`` says whether the binlog source can use its signal table (issue 9, preflight).

A connector user with exactly the replication privileges but no right to write (or create) the
signal table would only fail at its first incremental snapshot; the check names the GRANT (or
the CREATE TABLE) that fixes it, and passes once it is granted.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.integration.harness import cdc
from tests.integration.test_binlog_source import docs_db, make_config, run_sql  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def replication_user(mysql_dsn: str) -> Iterator[tuple[str, str]]:
    """A user with REPLICATION SLAVE, BINLOG MONITOR and SELECT only: (name, password)."""
    name, password = f"cdc_check_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    run_sql(
        mysql_dsn,
        f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{password}'",
        f"GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO '{name}'@'127.0.0.1'",
    )
    yield name, password
    run_sql(mysql_dsn, f"DROP USER '{name}'@'127.0.0.1'")


def _check(config: Path) -> str:
    result = cdc("check", str(config), timeout=60)
    return result.stdout + result.stderr


def test_cdc_check_names_the_grant_the_signal_table_needs(
    docs_db: str,  # noqa: F811 - the fixture
    replication_user: tuple[str, str],
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    user, password = replication_user
    db = urlparse(docs_db).path.lstrip("/")
    url = urlparse(docs_db)._replace(
        netloc=f"{user}:{password}@{urlparse(docs_db).hostname}:{urlparse(docs_db).port}"
    )
    config = make_config(tmp_path, url.geturl(), topic_name, kafka_bootstrap, registry_url)
    config.write_text(
        re.sub(r"(\n  url: .*\n)", r"\1  signal_table: cdc_signals\n", config.read_text(), count=1)
    )

    out = _check(config)  # the table does not exist: CREATE and INSERT are needed
    assert f"[FAIL] signal table {db}.cdc_signals" in out, out
    assert f"GRANT CREATE, INSERT ON `{db}`.* TO <connector user>" in out, out
    assert f"CREATE TABLE `{db}`.`cdc_signals`" in out, out
    assert password not in out

    run_sql(
        docs_db,
        "CREATE TABLE cdc_signals (id VARCHAR(100) PRIMARY KEY, type VARCHAR(64) NOT NULL, data TEXT)",
    )
    out = _check(config)  # it exists now: INSERT is what is missing
    assert f"GRANT INSERT ON `{db}`.`cdc_signals` TO <connector user>" in out, out

    run_sql(docs_db, f"GRANT INSERT ON `{db}`.`cdc_signals` TO '{user}'@'127.0.0.1'")
    out = _check(config)
    assert f"[ok  ] signal table {db}.cdc_signals: INSERT" in out, out
