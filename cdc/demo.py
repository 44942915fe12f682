"""The embedded demo behind ``make run``: a small legacy SQLite shop that keeps changing, captured
by the real polling connector into Avro files, then shown decoded. No server needed."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
from decimal import Decimal
from importlib import resources
from pathlib import Path

import sqlalchemy as sa

from cdc.config import load_config
from cdc.runtime.runner import Runner
from cdc.tail import print_tail, read_events

log = logging.getLogger("cdc.demo")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS customers (
        id INTEGER PRIMARY KEY NOT NULL, first_name TEXT NOT NULL, last_name TEXT NOT NULL, email TEXT NOT NULL,
        loyalty_tier TEXT NOT NULL, credit_limit NUMERIC(10, 2) NOT NULL, password_hash TEXT,
        updated_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS orders (
        id INTEGER PRIMARY KEY NOT NULL, customer_id INTEGER NOT NULL, amount NUMERIC(10, 2) NOT NULL,
        status TEXT NOT NULL, note TEXT, updated_at TIMESTAMP NOT NULL)""",
    """CREATE VIEW IF NOT EXISTS v_customers AS SELECT id, email, first_name || ' ' || last_name AS full_name,
        loyalty_tier, credit_limit, updated_at FROM customers""",
]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton"]
TIERS = ["BRONZE", "SILVER", "GOLD"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class LegacyShop:
    """The 'legacy application': owns its tables and changes them."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.meta = sa.MetaData()
        self.rng = random.Random(7)

    def create(self, customers: int = 200, orders: int = 300) -> None:
        with self.engine.begin() as conn:
            for ddl in SCHEMA:
                conn.exec_driver_sql(ddl)
            if conn.exec_driver_sql("SELECT count(*) FROM customers").scalar():
                return
        self.meta.reflect(self.engine, only=["customers", "orders"])
        c, o = self.meta.tables["customers"], self.meta.tables["orders"]
        with self.engine.begin() as conn:
            conn.execute(c.insert(), [self._customer(i) for i in range(1, customers + 1)])
            conn.execute(
                o.insert(),
                [self._order(i, self.rng.randint(1, customers)) for i in range(1, orders + 1)],
            )

    def _customer(self, i: int) -> dict[str, object]:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        return {
            "id": i,
            "first_name": first,
            "last_name": last,
            "email": f"{first}.{last}.{i}@example.com".lower(),
            "loyalty_tier": self.rng.choice(TIERS),
            "credit_limit": Decimal(self.rng.randint(100, 99999)) / 100,
            "password_hash": "$2b$12$not-for-export",
            "updated_at": _now(),
        }

    def _order(self, i: int, customer: int) -> dict[str, object]:
        return {
            "id": i,
            "customer_id": customer,
            "amount": Decimal(self.rng.randint(100, 50000)) / 100,
            "status": "NEW",
            "note": None,
            "updated_at": _now(),
        }

    def trickle(self, stop: threading.Event, interval: float = 0.05) -> None:
        """Keep changing the shop: new orders, status changes, tier changes, a rare deletion."""
        if not self.meta.tables:
            self.meta.reflect(self.engine, only=["customers", "orders"])
        c, o = self.meta.tables["customers"], self.meta.tables["orders"]
        while not stop.wait(interval):
            with self.engine.begin() as conn:
                n_cust = conn.execute(sa.select(sa.func.max(c.c.id))).scalar() or 0
                n_ord = conn.execute(sa.select(sa.func.max(o.c.id))).scalar() or 0
                roll = self.rng.random()
                if roll < 0.4:
                    conn.execute(o.insert(), self._order(n_ord + 1, self.rng.randint(1, max(n_cust, 1))))
                elif roll < 0.75:
                    conn.execute(
                        o.update()
                        .where(o.c.id == self.rng.randint(1, max(n_ord, 1)))
                        .values(status=self.rng.choice(["PAID", "SHIPPED", "DELIVERED"]), updated_at=_now())
                    )
                elif roll < 0.9:
                    conn.execute(
                        c.update()
                        .where(c.c.id == self.rng.randint(1, max(n_cust, 1)))
                        .values(loyalty_tier=self.rng.choice(TIERS), updated_at=_now())
                    )
                elif roll < 0.97:
                    conn.execute(c.insert(), self._customer(n_cust + 1))
                else:
                    victim = self.rng.randint(1, max(n_cust, 1))
                    conn.execute(o.delete().where(o.c.customer_id == victim))
                    conn.execute(c.delete().where(c.c.id == victim))


def demo_config_path() -> Path:
    """The demo config shipped in the source tree, else the copy inside the installed package."""
    here = Path(__file__).resolve().parent.parent / "configs" / "demo" / "demo.yaml"
    if here.is_file():
        return here
    return Path(str(resources.files("cdc._bundled.demo") / "demo.yaml"))


def run_demo(directory: Path, seconds: float) -> None:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["CDC_DEMO_DIR"] = str(directory)
    config = load_config(demo_config_path())
    engine = sa.create_engine(f"sqlite:///{directory / 'legacy.db'}")
    shop = LegacyShop(engine)
    shop.create()
    log.info("demo database %s; capturing for %.0fs (Ctrl-C stops early)", directory / "legacy.db", seconds)
    stop = threading.Event()
    writer = threading.Thread(target=shop.trickle, args=(stop,), daemon=True)
    writer.start()
    runner = Runner(config, stop=threading.Event())
    runner.install_signal_handlers()
    timer = threading.Timer(seconds, runner.stop.set)
    timer.start()
    try:
        runner.run()
    finally:
        timer.cancel()
        stop.set()
        writer.join()
    topics = directory / "topics"
    print_tail(topics, 8)
    counts = {f.stem: len(read_events(f)) for f in sorted(topics.glob("*.avro"))}
    log.info("events written: %s; decode again with: cdc tail %s", counts, topics)
