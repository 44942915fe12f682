"""`cdc migrations audit` on real databases: idempotent apply, existing triggers still fire
(Sakila's own), drift reported and repaired, drop removes exactly what was added; PostgreSQL
under a non-superuser who owns the tables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from cdc.sql.engines import create_engine
from tests.conftest import unique
from tests.integration.harness import cdc
from tests.integration.sakila import load_postgres
from tests.integration.sakila_mysql import MYSQL_SCHEMA, mysql_connect, table_ddl

pytestmark = pytest.mark.integration


def audit(*args: str) -> Any:
    return cdc("migrations", "audit", *args)


def _pg_triggers(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", (table,)
    )
    return {r[0] for r in rows}


def _pg_objects(conn: psycopg.Connection[Any]) -> int:
    return int(
        conn.execute(
            "SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE 'cdc\\_audit%') "
            "+ (SELECT count(*) FROM pg_proc WHERE proname LIKE 'cdc\\_audit%')"
        ).fetchone()[0]  # type: ignore[index]
    )


def test_postgres_sakila_as_table_owner(pg_database: str) -> None:
    load_postgres(pg_database)
    owner = unique("owner")
    with psycopg.connect(pg_database, autocommit=True) as su:
        su.execute(f"CREATE ROLE {owner} LOGIN PASSWORD 'pw' NOSUPERUSER")
        su.execute(f"ALTER TABLE actor OWNER TO {owner}")
        su.execute(f"ALTER TABLE film OWNER TO {owner}")
        su.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    url = re.sub(r"//[^@]*@", f"//{owner}:pw@", pg_database)
    try:
        shown = audit("render", url, "--table", "actor", "--table", "film")
        assert shown.returncode == 0, shown.stderr
        assert (
            'CREATE OR REPLACE TRIGGER "cdc_audit" AFTER INSERT OR UPDATE OR DELETE ON "public"."actor"'
            in shown.stdout
        )
        for _ in range(2):  # idempotent
            applied = audit("apply", url, "--table", "actor", "--table", "film")
            assert applied.returncode == 0, applied.stderr
        with psycopg.connect(pg_database, autocommit=True) as app:  # the application (another role)
            assert _pg_triggers(app, "actor") == {"cdc_audit", "last_updated"}
            assert _pg_triggers(app, "film") == {"cdc_audit", "film_fulltext_trigger", "last_updated"}
            assert app.execute(
                "SELECT count(*) FROM pg_proc WHERE proname = 'cdc_audit_capture'"
            ).fetchone() == (1,)
            app.execute("UPDATE actor SET first_name = 'ZED', last_update = '2000-01-01' WHERE actor_id = 1")
            app.execute("UPDATE film SET title = 'QUASAR VOYAGE' WHERE film_id = 1")
            (stamp,) = app.execute("SELECT last_update FROM actor WHERE actor_id = 1").fetchone()  # type: ignore[misc]
            assert stamp.year > 2000  # sakila's BEFORE UPDATE trigger still fired
            assert app.execute(
                "SELECT fulltext @@ to_tsquery('quasar') FROM film WHERE film_id = 1"
            ).fetchone() == (True,)
            rows = app.execute(
                "SELECT table_name, op, after->>'first_name', after->>'last_update', xid::text FROM cdc_audit_log ORDER BY id"
            ).fetchall()
            assert [(r[0], r[1]) for r in rows] == [("actor", "u"), ("film", "u")]
            assert rows[0][2] == "ZED" and rows[0][3].startswith(
                str(stamp.year)
            )  # the image after the BEFORE trigger
            # drift: PostgreSQL's generic trigger keeps capturing; check warns until apply records it
            app.execute("ALTER TABLE actor ADD COLUMN nick text")
        checked = audit("check", url, "--table", "actor", "--table", "film")
        assert (
            checked.returncode == 0
            and "[warn] public.actor: columns changed" in checked.stdout
            and "+nick" in checked.stdout
        )
        assert audit("apply", url, "--table", "actor").returncode == 0
        checked = audit("check", url, "--table", "actor", "--table", "film")
        assert checked.returncode == 0 and "[warn]" not in checked.stdout, checked.stdout
        # drop: exactly what was added
        assert audit("drop", url, "--table", "actor").returncode == 0
        refused = audit("drop", url, "--table", "film")  # the last table; 2 rows not relayed
        assert refused.returncode == 7 and "2 audit row(s)" in refused.stderr
        assert audit("drop", url, "--table", "film", "--force").returncode == 0
        with psycopg.connect(pg_database) as app:
            assert _pg_triggers(app, "actor") == {"last_updated"}
            assert _pg_triggers(app, "film") == {"film_fulltext_trigger", "last_updated"}
            assert _pg_objects(app) == 0
        missing = audit("check", url, "--table", "actor")
        assert missing.returncode == 7 and "missing" in missing.stdout
    finally:
        with psycopg.connect(pg_database, autocommit=True) as su:
            su.execute(f"REASSIGN OWNED BY {owner} TO CURRENT_USER")
            su.execute(f"DROP OWNED BY {owner}")
            su.execute(f"DROP ROLE {owner}")


def _film_triggers() -> list[str]:
    """Sakila's own film -> film_text triggers, without the client's DELIMITER lines."""
    text = MYSQL_SCHEMA.read_text()
    block = text[
        text.index("DELIMITER ;;") + len("DELIMITER ;;") : text.index(
            "DELIMITER ;", text.index("DELIMITER ;;") + 12
        )
    ]
    return [s.strip() for s in block.split(";;") if s.strip()]


def _my_triggers(cur: Any) -> set[str]:
    cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE()")
    return {r[0] for r in cur.fetchall()}


def test_mariadb_sakila_film_triggers_coexist(mysql_database: str) -> None:
    conn = mysql_connect(mysql_database)
    with conn.cursor() as cur:
        for ddl in table_ddl(["language", "film", "film_text"]).values():
            cur.execute(ddl)
        for trigger in _film_triggers():
            cur.execute(trigger)
        cur.execute("INSERT INTO language (language_id, name) VALUES (1, 'English')")
    for _ in range(2):
        applied = audit("apply", mysql_database, "--table", "film")
        assert applied.returncode == 0, applied.stderr
    ours = {"cdc_audit_film_ai", "cdc_audit_film_au", "cdc_audit_film_ad"}
    with conn.cursor() as cur:
        assert _my_triggers(cur) == ours | {"ins_film", "upd_film", "del_film"}
        cur.execute("INSERT INTO film (film_id, title, language_id) VALUES (1, 'ALPHA', 1)")
        cur.execute("UPDATE film SET title = 'BETA' WHERE film_id = 1")
        cur.execute("SELECT title FROM film_text WHERE film_id = 1")
        assert cur.fetchone() == ("BETA",)  # sakila's triggers still fire
        cur.execute("SELECT op, JSON_VALUE(`after`, '$.title') FROM cdc_audit_log ORDER BY id")
        assert cur.fetchall() == (("c", "ALPHA"), ("u", "BETA"))
        cur.execute(
            "ALTER TABLE film ADD COLUMN extra INT, MODIFY rental_rate DECIMAL(6,2) NOT NULL DEFAULT 4.99"
        )
    stale = audit("check", mysql_database, "--table", "film")
    assert stale.returncode == 7 and "STALE" in stale.stdout
    assert "+extra" in stale.stdout and "rental_rate: decimal(4,2) -> decimal(6,2)" in stale.stdout
    assert audit("apply", mysql_database, "--table", "film").returncode == 0
    assert audit("check", mysql_database, "--table", "film").returncode == 0
    with conn.cursor() as cur:
        cur.execute("UPDATE film SET extra = 5 WHERE film_id = 1")
        cur.execute("SELECT `after` FROM cdc_audit_log ORDER BY id DESC LIMIT 1")
        assert json.loads(cur.fetchone()[0])["extra"] == 5  # the refreshed trigger lists the new column
    assert audit("drop", mysql_database, "--table", "film", "--force").returncode == 0
    with conn.cursor() as cur:
        assert _my_triggers(cur) == {"ins_film", "upd_film", "del_film"}
        cur.execute(
            "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'cdc\\_audit%'"
        )
        assert cur.fetchone() == (0,)
    conn.close()


def test_sqlite_generator(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, touched TEXT)")
        conn.exec_driver_sql(
            "CREATE TRIGGER item_touch AFTER UPDATE OF name ON item BEGIN "
            "UPDATE item SET touched = 'yes' WHERE id = NEW.id; END"
        )
    for _ in range(2):
        assert audit("apply", url, "--table", "item").returncode == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO item (id, name) VALUES (1, 'a')")
        conn.exec_driver_sql("UPDATE item SET name = 'b' WHERE id = 1")
        assert conn.exec_driver_sql("SELECT touched FROM item").scalar() == "yes"
        names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert names == {"item_touch", "cdc_audit_item_ai", "cdc_audit_item_au", "cdc_audit_item_ad"}
        ops = [r[0] for r in conn.exec_driver_sql("SELECT op FROM cdc_audit_log ORDER BY id")]
        assert ops == ["c", "u", "u"]  # the application's update, then item_touch's own
        conn.exec_driver_sql("ALTER TABLE item ADD COLUMN price REAL")
    stale = audit("check", url, "--table", "item")
    assert stale.returncode == 7 and "+price" in stale.stdout
    assert audit("apply", url, "--table", "item").returncode == 0
    assert audit("check", url, "--table", "item").returncode == 0
    assert audit("drop", url, "--table", "item", "--force").returncode == 0
    with engine.connect() as conn:
        left = {
            r[0] for r in conn.execute(sa.text("SELECT name FROM sqlite_master WHERE name LIKE 'cdc_audit%'"))
        }
        assert left == set()
        assert {
            r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        } == {"item_touch"}
    engine.dispose()
