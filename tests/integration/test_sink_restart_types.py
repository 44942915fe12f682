"""The sink accepts, after a restart, every table it created itself: one column per Avro kind it
can create (json kinds included, which SQLAlchemy 2.1 reflects with python_type ``object``), on
PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import wait_for
from tests.integration.sink_harness import KEY, Feed, SinkProcess, Target, make_config

pytestmark = pytest.mark.integration

EVERY_KIND = {
    "type": "record",
    "name": "EveryKind",
    "namespace": "test.sink.kinds",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": "string"},
        {"name": "raw", "type": "bytes"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 3}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local_at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tod", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "mood", "type": {"type": "enum", "name": "Mood", "symbols": ["HAPPY", "SAD"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {
            "name": "nested",
            "type": {"type": "record", "name": "Nested", "fields": [{"name": "x", "type": "int"}]},
        },
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def value(i: int) -> dict[str, Any]:
    return {
        "id": i, "i": i, "f": 1.5, "d": i / 3, "b": i % 2 == 0, "s": f"row {i}", "raw": bytes([i % 256]),
        "amount": Decimal(i) / 1000, "at": dt.datetime(2024, 5, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
        "local_at": dt.datetime(2024, 5, 1, 8, 0), "day": dt.date(2024, 5, 1), "tod": dt.time(12, 30, 0, 5),
        "ref": uuid.UUID(int=i), "mood": "HAPPY" if i % 2 else "SAD", "tags": [f"t{i}"], "attrs": {"k": i},
        "nested": {"x": i}, "note": None,
    }  # fmt: skip


@pytest.mark.parametrize("which", ["postgres", "mysql", "sqlite"])
def test_a_restarted_sink_accepts_the_tables_it_created(
    tmp_path: Path, request: pytest.FixtureRequest, which: str, topic_name: str, kafka_bootstrap: str,
    registry_url: str,
) -> None:  # fmt: skip
    url = (
        f"sqlite:///{tmp_path / 'target.db'}"
        if which == "sqlite"
        else request.getfixturevalue("pg_database" if which == "postgres" else "mysql_database")
    )
    feed = Feed(kafka_bootstrap, registry_url, topic_name, key_schema=KEY, value_schema=EVERY_KIND)
    config = make_config(
        tmp_path, name=topic_name, topic=topic_name, url=url, bootstrap=kafka_bootstrap, registry=registry_url,
        table="kinds",
    )  # fmt: skip
    target = Target(url)
    try:
        for run in range(3):  # the first run creates the table; the next two must accept it
            for i in range(run * 20, run * 20 + 20):
                feed.upsert(value(i))
            feed.flush()
            sink = SinkProcess(config, tmp_path / f"run{run}.log")
            try:
                wait_for(
                    lambda s=sink: target.consumed(topic_name) >= feed.count or s.proc.poll() is not None,  # type: ignore[misc]
                    60,
                    f"run {run} to consume",
                )
                assert sink.proc.poll() is None, f"run {run} exited: {sink.log_text()[-2000:]}"
                assert sink.terminate() == 0
            finally:
                sink.ensure_stopped()
        rows = target.rows("kinds")
        assert sorted(rows) == list(range(60))
        assert rows[59]["s"] == "row 59" and rows[59]["i"] == 59
    finally:
        target.dispose()
