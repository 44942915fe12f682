"""The audit relay's scan bound on real PostgreSQL: reads start above a cursor that moves only
past ids no transaction can still add a row below, so a late commit is never passed over.

Each round: transactions that took their xid early (so their rows are publishable while a later
one runs) write after a "late" transaction drew a lower audit id and stays open. The relay
publishes the early rows over several reads (each one adding a scan bound), their deletes leave
dead entries, rows of newer transactions wait above; the late transaction then commits and must
be emitted. A cursor moved to the highest published id, a bound that ripened without a later
listing of the ids below it, or a bound taken from the listing snapshot's xmax (the late
transaction's xid may be above it) would each lose the late row. Three rounds, so later rounds
start from a cursor that has moved.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from cdc.audit import generator
from cdc.plugin import ChangeEvent, StreamSpec
from cdc.sql.engines import create_engine
from connectors.sources.audit.config import AuditConfig
from connectors.sources.audit.source import AuditRelay
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration

STREAM = "acct"
PARTITION = f"audit:{STREAM}"


class Relay:
    """The relay source driven in-process: every poll's events acknowledged, keys collected."""

    def __init__(self, url: str) -> None:
        config = AuditConfig.model_validate(
            {"url": url, "batch_size": 2, "max_pending": 4, "poll_interval": 0}
        )
        spec = StreamSpec(STREAM, ("id",), ("id", "note"), {"table": "acct"})
        self.source = AuditRelay(config, [spec])
        self.source.describe()
        self.source.start({})
        self.keys: list[int] = []

    def poll(self) -> list[ChangeEvent]:
        events = self.source.poll(0.1)
        if events:
            self.keys += [int(e.key["id"]) for e in events]
            # the broker "acknowledges" at once: the rows are deleted (dead index entries)
            self.source.acknowledge({PARTITION: {"n": max(int(e.offset["n"]) for e in events)}})
        return events

    def until(self, key: int, what: str) -> None:
        def arrived() -> bool:
            self.poll()
            return key in self.keys

        wait_for(arrived, 30, what)

    def until_cursor(self, audit_id: int) -> None:
        """Wait (reading) until the cursor passed ``audit_id``: with no transaction holding the
        xmin back, the bounds ripen and the cursor moves."""

        def moved() -> bool:
            self.poll()
            return self.cursor >= audit_id

        wait_for(moved, 60, f"the cursor moving past {audit_id}")

    @property
    def cursor(self) -> int:
        return self.source._cursor[STREAM]


def _xid(conn: sa.Connection) -> None:
    """Start a transaction that holds an xid (it writes later)."""
    conn.execute(sa.text("SELECT pg_current_xact_id()"))


def _insert(conn: sa.Connection, key: int, note: str) -> None:
    conn.execute(sa.text("INSERT INTO acct VALUES (:k, :n)"), {"k": key, "n": note})


def test_scan_bound_never_passes_over_a_late_commit(pg_database: str) -> None:
    engine = create_engine(pg_database)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE acct (id int PRIMARY KEY, note text)")
    generator.apply(engine, ["acct"])
    relay = Relay(pg_database)
    opened: list[sa.Connection] = []
    try:
        for round_ in range(3):
            base = (round_ + 1) * 1000
            early = [engine.connect() for _ in range(4)]
            opened += early
            for conn in early:
                _xid(conn)
            late = engine.connect()
            opened.append(late)
            _insert(late, base, "late")  # draws an id below every early row's
            late_id: Any = late.execute(
                sa.text("SELECT max(id) FROM cdc_audit_log WHERE xid = pg_current_xact_id()")
            ).scalar()
            for i, conn in enumerate(early, 1):
                _insert(conn, base + i, "early")
                conn.commit()
                conn.close()
                relay.until(base + i, f"round {round_}: early row {i} relayed")
                for _ in range(3):  # more reads, more bounds, while the late row is invisible
                    relay.poll()
                assert relay.cursor < late_id, "the scan moved above an open transaction's row"
            with engine.begin() as conn:  # a newer transaction's rows: held back meanwhile
                for j in range(3):
                    _insert(conn, base + 100 + j, "newer")
            for _ in range(5):
                relay.poll()
            assert base not in relay.keys and base + 100 not in relay.keys
            assert relay.cursor < late_id
            late.commit()
            late.close()
            relay.until(base, f"round {round_}: the late commit relayed")
            for j in range(3):
                relay.until(base + 100 + j, f"round {round_}: newer row {j} relayed")
            relay.until_cursor(late_id)
        expected = {b + k for b in (1000, 2000, 3000) for k in (0, 1, 2, 3, 4, 100, 101, 102)}
        assert sorted(relay.keys) == sorted(expected)  # each exactly once
        relay.source.close()  # releases what was acknowledged

        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM cdc_audit_log")).scalar() == 0
    finally:
        for conn in opened:
            conn.close()
        relay.source.close()
        engine.dispose()
