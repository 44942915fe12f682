"""The README's Sakila quickstart, executed exactly as written: its fenced block runs in bash in an
empty directory; only the values of its four ``export`` lines are replaced by this test's own
databases and services (the README says so). Afterwards the copy the sink wrote is compared with
the source field by field, per key."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from tests.conftest import create_pg_database, delete_subjects, drop_pg_database, unique
from tests.integration.sakila import load_postgres

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- quickstart: executed by tests/integration/test_readme_quickstart.py -->"
EXPORTS = ("PG_URL", "COPY_URL", "KAFKA_BOOTSTRAP", "SCHEMA_REGISTRY_URL")
# Names the README's commands give the connector (from the directory sakila-cdc) and its slot.
PREFIX, SLOT = "sakila-cdc.", "sakila_cdc"


def quickstart_block() -> str:
    """The fenced bash block right after the marker comment."""
    text = README.read_text()
    assert MARKER in text, "the README lost its quickstart marker"
    m = re.match(r"\s*```bash\n(.*?)\n```", text[text.index(MARKER) + len(MARKER) :], re.S)
    assert m, "no ```bash block follows the quickstart marker"
    return m.group(1)


def substitute(block: str, values: dict[str, str]) -> str:
    """Replace the value of each ``export NAME=...`` line; every one of EXPORTS must be there."""
    found = re.findall(r"^export (\w+)=", block, re.M)
    assert sorted(found) == sorted(EXPORTS), found
    return re.sub(
        r"^export (\w+)=.*$", lambda m: f"export {m.group(1)}={values[m.group(1)]}", block, flags=re.M
    )


def _forget(pg_dsn: str, bootstrap: str, registry: str) -> None:
    """The README uses fixed names: drop what an earlier run left (slot, topics, subjects)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            (SLOT,),
        )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(PREFIX)]
    for f in (admin.delete_topics(doomed, operation_timeout=30) if doomed else {}).values():
        f.result(30)
    # by name: the registry's subject list is paged (a long-lived registry lists only the first 1000)
    tables = re.findall(r"--table (\w+)", quickstart_block())
    assert tables, "the quickstart's cdc init names its tables with --table"
    delete_subjects(registry, (f"{PREFIX}{t}-{part}" for t in tables for part in ("key", "value")))


def _rows(dsn: str, query: str) -> dict[Any, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: tuple(r) for r in conn.execute(query)}


def test_readme_quickstart_runs_as_written(
    pg_dsn: str, pg_database: str, tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    load_postgres(pg_database)
    copy_name = unique("test")
    copy_url = create_pg_database(pg_dsn, copy_name)
    _forget(pg_dsn, kafka_bootstrap, registry_url)
    script = substitute(
        quickstart_block(),
        {"PG_URL": pg_database, "COPY_URL": copy_url, "KAFKA_BOOTSTRAP": kafka_bootstrap,
         "SCHEMA_REGISTRY_URL": registry_url},
    )  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:  # a step never finished: show how far the block got
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0] + "\n(timed out after 240 s)"
    finally:
        with contextlib.suppress(ProcessLookupError):  # a failed step leaves the background jobs
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _forget(pg_dsn, kafka_bootstrap, registry_url)
    logs = {n: (tmp_path / n).read_text() for n in ("connector.log", "sink.log") if (tmp_path / n).exists()}
    try:
        assert proc.returncode == 0, f"{out}\n{logs}"
        assert "[decide] review and run" in out and "dba.sql" in out, out
        assert "'PG-13' -> PG_13" in out and "check passed" in out, out
        assert re.search(r"^--- sakila-cdc\.film \(last 3\)$", out, re.M), out
        assert "Traceback" not in "".join(logs.values()), logs
        assert "not registered yet (compatible); run cdc schemas register" in out, out
        assert re.search(r"^  slot:sakila_cdc: \{", out, re.M) and not re.search(r'"commit": \d', out), out
        compare(pg_database, copy_url)
    finally:
        drop_pg_database(pg_dsn, copy_name)


def compare(source: str, copy: str) -> None:
    """The sink's copy equals the source, field by field per key."""
    rating = {"PG-13": "PG_13", "NC-17": "NC_17"}
    source_films = _rows(
        source,
        "SELECT film_id, title, rental_rate, rating::text, special_features, last_update FROM film",
    )
    assert source_films[1][2] == Decimal("1.99")
    films = {k: (*r[:3], rating.get(r[3], r[3]), *r[4:]) for k, r in source_films.items()}
    assert (
        _rows(copy, "SELECT film_id, title, rental_rate, rating, special_features, last_update FROM film")
        == films
    )
    query = "SELECT payment_id, customer_id, staff_id, rental_id, amount, payment_date FROM payment"
    assert _rows(copy, query) == _rows(source, query)
    query = "SELECT actor_id, first_name, last_name, last_update FROM actor"
    assert _rows(copy, query) == _rows(source, query)
