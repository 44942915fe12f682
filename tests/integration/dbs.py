"""A tiny 'legacy application' per dialect, writing the items table the polling tests capture."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from cdc.sql.engines import normalize_url

DDL = {
    "postgresql": """CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL,
        price numeric(10,2) NOT NULL, secret text, updated_at timestamp(6) NOT NULL DEFAULT now())""",
    "mysql": """CREATE TABLE items (id bigint AUTO_INCREMENT PRIMARY KEY, name varchar(200) NOT NULL,
        price decimal(10,2) NOT NULL, secret text,
        updated_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))""",
    "sqlite": """CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        price NUMERIC(10,2) NOT NULL, secret TEXT, updated_at TIMESTAMP NOT NULL)""",
}


class LegacyApp:
    """Writes rows the way a legacy app does: the database assigns timestamps where it can."""

    def __init__(self, url: str) -> None:
        self.reconnect(url)
        with self.engine.begin() as conn:
            conn.exec_driver_sql(DDL[self.dialect])
        self.table = sa.Table("items", sa.MetaData(), autoload_with=self.engine)

    def reconnect(self, url: str) -> None:
        """Attach to a database (the items table may already exist)."""
        self.url = url
        self.engine = sa.create_engine(normalize_url(url))
        self.dialect = self.engine.dialect.name
        if self.dialect == "mariadb":
            self.dialect = "mysql"
        if sa.inspect(self.engine).has_table("items"):
            self.table = sa.Table("items", sa.MetaData(), autoload_with=self.engine)

    def _stamp(self) -> Any:
        if self.dialect == "sqlite":
            return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # the app's clock (SQLite has no now(6))
        return sa.func.now() if self.dialect == "postgresql" else sa.text("CURRENT_TIMESTAMP(6)")

    def insert(self, conn: sa.Connection, name: str, price: str) -> int:
        values: dict[str, Any] = {"name": name, "price": Decimal(price), "secret": "do-not-publish"}
        if self.dialect == "sqlite":
            values["updated_at"] = self._stamp()
        result = conn.execute(self.table.insert().values(**values))
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    def insert_many(self, n: int, start: int = 0) -> list[int]:
        with self.engine.begin() as conn:
            return [
                self.insert(conn, f"item-{start + i}", f"{(start + i) % 1000}.{i % 100:02d}")
                for i in range(n)
            ]

    def update(self, item_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                self.table.update()
                .where(self.table.c.id == item_id)
                .values(updated_at=self._stamp(), **values)
            )

    def delete(self, item_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.id == item_id))

    def expected(self) -> dict[str, dict[str, Any]]:
        """Source rows as the value schema decodes them (contract fields only), by key text."""
        from tests.integration.harness import key_of

        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.name, t.c.price, t.c.updated_at)).all()
        return {
            key_of({"id": r.id}): {
                "id": r.id,
                "name": r.name,
                "price": Decimal(r.price),
                "updated_at": r.updated_at,
            }
            for r in rows
        }

    def dispose(self) -> None:
        self.engine.dispose()
