"""Shard ownership through session-level advisory locks.

Several relay replicas may run; each aggregate hashes to one shard and each shard is held by
one replica at a time (``pg_try_advisory_lock`` / ``GET_LOCK``). A replica that dies loses its
session and its locks, and another one takes the shard over at its next poll. Because one
aggregate's events are relayed by one replica, in ``seq`` order, they are published in order -
which ``FOR UPDATE SKIP LOCKED`` alone does not guarantee (two replicas could take two events of
one aggregate and publish them out of order).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cdc.sql.lease import lock_key


def shard_expression(dialect: str, column: Any, shards: int) -> Any:
    """SQL for the shard of an aggregate id; the same function the claim query filters on."""
    if dialect == "postgresql":
        return sa.func.abs(sa.func.hashtext(column)) % shards
    if dialect in ("mysql", "mariadb"):
        return sa.func.crc32(column) % shards
    return sa.literal(0)  # SQLite: one relay, one shard


class ShardLocks:
    """Holds the shard locks of this replica on one dedicated session."""

    def __init__(self, engine: sa.Engine, table: str, shards: int) -> None:
        self.engine = engine
        self.table = table
        self.shards = shards if engine.dialect.name != "sqlite" else 1
        self.owned: set[int] = set()
        self._conn: sa.Connection | None = None

    def _session(self) -> sa.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self.owned.clear()
        return self._conn

    def _name(self, shard: int) -> str:
        return f"cdc-outbox:{self.table}:{shard}"

    def acquire_free(self, limit: int | None = None) -> set[int]:
        """Try every shard not owned yet; returns the set owned afterwards."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            self.owned = {0}
            return self.owned
        conn = self._session()
        for shard in range(self.shards):
            if shard in self.owned or (limit is not None and len(self.owned) >= limit):
                continue
            if dialect == "postgresql":
                got = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self._name(shard))}
                ).scalar()
            else:
                got = (
                    conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": self._name(shard)[:64]}).scalar()
                    == 1
                )
            if got:
                self.owned.add(shard)
        return self.owned

    def release_all(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the locks die with the session
            self._conn = None
        self.owned.clear()
