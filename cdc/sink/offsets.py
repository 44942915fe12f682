"""The sink-owned offsets table: consumed positions committed with the rows they produced.

``next_offset`` is the offset of the next message to apply. A batch advances it with a
conditional update (``WHERE next_offset = :start``) as the last statement of its transaction:
zero rows updated means another instance applied that range meanwhile (it owns the partition
now), and the whole batch rolls back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]


def offsets_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("group_id", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
    )


def ensure_offsets_table(engine: sa.Engine, table: sa.Table) -> None:
    """Create the table if missing; another instance creating it at the same time is fine."""
    try:
        with engine.begin() as conn:
            table.create(conn, checkfirst=True)
    except sa.exc.DBAPIError:
        if not sa.inspect(engine).has_table(table.name):
            raise
        log.info("offsets table %s was created concurrently", table.name)


def load_offsets(
    conn: sa.Connection, table: sa.Table, group: str, topics: Iterable[str]
) -> dict[TopicPartitionKey, int]:
    """The stored next offsets of a group's partitions."""
    c = table.c
    rows = conn.execute(
        sa.select(c.topic, c.partition, c.next_offset).where(c.group_id == group, c.topic.in_(list(topics)))
    )
    return {(str(r.topic), int(r.partition)): int(r.next_offset) for r in rows}


def advance(
    conn: sa.Connection, table: sa.Table, group: str, tp: TopicPartitionKey, start: int | None, end: int
) -> bool:
    """Move a partition's position from ``start`` to ``end`` in the open transaction.

    ``start`` None means nothing was stored when the partition was assigned: insert the row
    (a concurrent first insert by another instance fails on the primary key). Returns False when
    another instance moved the position: the caller must roll back.
    """
    c = table.c
    topic, partition = tp
    if start is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    sa.insert(table).values(group_id=group, topic=topic, partition=partition, next_offset=end)
                )
        except sa.exc.IntegrityError:
            return False
        return True
    result = conn.execute(
        sa.update(table)
        .where(c.group_id == group, c.topic == topic, c.partition == partition, c.next_offset == start)
        .values(next_offset=end)
    )
    return result.rowcount == 1
