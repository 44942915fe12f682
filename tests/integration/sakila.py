"""Load the Sakila sample database (tests/data/sakila, BSD 2-Clause: see its LICENSE) into a test database."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlparse

import psycopg

SAKILA = Path(__file__).resolve().parents[1] / "data" / "sakila"


def load_postgres(dsn: str) -> None:
    """Schema and data through psql (the dump uses COPY FROM stdin); fails loudly if missing."""
    if not SAKILA.is_dir():
        raise AssertionError(f"the Sakila dataset is missing at {SAKILA}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The dump assigns ownership to a role named postgres; the test cluster's superuser is cdc.
        conn.execute("DO $$ BEGIN CREATE ROLE postgres; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    u = urlparse(dsn)
    env = {"PGPASSWORD": u.password or "", "PATH": "/usr/bin:/bin"}
    for name in ("postgres-sakila-schema.sql", "postgres-sakila-insert-data-using-copy.sql"):
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 5432),
             "-U", u.username or "postgres", "-d", u.path.lstrip("/"), "-f", str(SAKILA / name)],
            check=True, env=env, capture_output=True, timeout=300,
        )  # fmt: skip
