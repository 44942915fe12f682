"""Transaction metadata records around a transaction's events, and what they hold back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdc.config.model import AppConfig
from cdc.errors import ConfigError
from cdc.plugin import ChangeEvent, Op, TransactionEnd
from cdc.runtime import transactions
from cdc.runtime.acks import AckTracker

APP = {
    "name": "t",
    "source": {"connector": "postgres_wal"},
    "streams": [{"name": "a", "key_schema": "k.avsc", "value_schema": "v.avsc"}],
    "kafka": {"bootstrap_servers": "x:1", "topic_prefix": "shop"},
    "schema_registry": {"url": "http://x"},
    "transactions": {},
}


def event(i: int, end: TransactionEnd | None = None) -> ChangeEvent:
    return ChangeEvent("a", Op.CREATE, {"id": i}, {"id": i}, "slot:s", {"commit": 9, "i": i - 1},
                       ts_ms=5, txid="77", txn_order=i, txn_end=end)  # fmt: skip


def test_begin_events_end_and_the_offset_commits_only_with_end() -> None:
    app = AppConfig.model_validate(APP)
    tracker = AckTracker()
    produced: list[tuple[str, dict[str, Any], int | None]] = []
    sent: list[tuple[ChangeEvent, int | None]] = []
    meta = transactions.TransactionMetadata(
        app, tracker, lambda topic, key, value, seq: produced.append((topic, json.loads(value), seq))
    )
    end = TransactionEnd("77", {"lsn": 9}, 5, {"a": 2})
    for e in (event(1), event(2, end)):
        meta.send(e, True, lambda ev, seq: sent.append((ev, seq)))
    assert [p[1]["status"] for p in produced] == ["BEGIN", "END"] and produced[0][0] == "shop.transactions"
    assert produced[1][1] == {
        "status": "END", "id": "77", "ts_ms": 5, "commit_position": {"lsn": 9}, "event_count": 2,
        "data_collections": [{"stream": "a", "topic": "shop.a", "event_count": 2}],
    }  # fmt: skip
    assert [dict(ev.headers or [])["cdc.txn.order"] for ev, _ in sent] == [b"1", b"2"]
    begin_seq, end_seq = produced[0][2], produced[1][2]
    first_seq, last_seq = sent[0][1], sent[1][1]
    assert begin_seq is not None and end_seq is not None and first_seq is not None and last_seq is not None
    for seq in (begin_seq, first_seq, last_seq):
        tracker.delivered(seq)
    assert tracker.take_committable() == {"slot:s": {"commit": 9, "i": 0}}  # not the last event's yet
    tracker.delivered(end_seq)
    assert tracker.take_committable() == {"slot:s": {"commit": 9, "i": 1}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": {"connector": "polling"}}, "the polling source does not report transaction boundaries"),
        ({"streams": [{**APP["streams"][0], "where": "id > 1"}]}, "has a row filter"),  # type: ignore[index]
    ],
)
def test_transactions_refused_where_counts_could_not_match(change: dict[str, Any], message: str) -> None:
    from cdc.registry import load_source_class

    app = AppConfig.model_validate({**APP, **change})
    with pytest.raises(ConfigError, match=message):
        transactions.check(app, load_source_class(app.source.connector))


@pytest.mark.parametrize("configured", [True, False])
def test_a_source_is_told_whether_transaction_metadata_is_published(configured: bool, tmp_path: Any) -> None:
    """The WAL source numbers changes and builds TransactionEnds only when they are published."""
    from cdc.runtime.sources import build_source

    schema = {"type": "record", "name": "R", "fields": [{"name": "id", "type": "long"}]}
    (tmp_path / "k.avsc").write_text(json.dumps(schema))
    (tmp_path / "v.avsc").write_text(json.dumps(schema))
    config = {
        **APP,
        "source": {
            "connector": "postgres_wal",
            "url": "postgresql://u@h/db",
            "slot": "s",
            "publication": "p",
        },
        "streams": [
            {
                "name": "a",
                "key_schema": str(tmp_path / "k.avsc"),
                "value_schema": str(tmp_path / "v.avsc"),
                "capture": {"table": "public.a"},
            }
        ],
    }
    if not configured:
        del config["transactions"]
    source, _ = build_source(AppConfig.model_validate(config))
    assert source.transaction_metadata_wanted is configured
