"""A table in a database reachable through SQLAlchemy: ``(connector, partition) -> offset JSON``."""

from __future__ import annotations

import json

import sqlalchemy as sa

from cdc.errors import SourceUnavailableError
from cdc.masking import mask_dsn
from cdc.offsets import jsonvalues
from cdc.offsets.base import OffsetStore
from cdc.plugin import Offsets


class DatabaseOffsetStore(OffsetStore):
    def __init__(self, connector: str, url: str, table: str) -> None:
        super().__init__(connector)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        meta = sa.MetaData()
        self.table = sa.Table(
            table,
            meta,
            sa.Column("connector", sa.String(200), primary_key=True),
            sa.Column("source_partition", sa.String(500), primary_key=True),
            sa.Column("source_offset", sa.Text, nullable=False),
        )
        try:
            meta.create_all(self.engine, checkfirst=True)
        except sa.exc.OperationalError as exc:
            raise SourceUnavailableError(f"offsets database: {mask_dsn(str(exc.orig))}") from None

    def load(self) -> Offsets:
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.source_partition, t.c.source_offset).where(t.c.connector == self.connector)
            )
            return {p: json.loads(o) for p, o in rows}

    def save(self, offsets: Offsets) -> None:
        t = self.table
        with self.engine.begin() as conn:
            for partition, offset in offsets.items():
                text = jsonvalues.dumps(offset)
                cond = (t.c.connector == self.connector) & (t.c.source_partition == partition)
                updated = conn.execute(sa.update(t).where(cond).values(source_offset=text)).rowcount
                if not updated:
                    conn.execute(
                        sa.insert(t).values(
                            connector=self.connector, source_partition=partition, source_offset=text
                        )
                    )

    def close(self) -> None:
        self.engine.dispose()
