"""What the capture process hands over for a source that encodes there: wire-format records, and
at least once the offset only on each partition's last record of the batch (the parent commits
no other); exactly once every record keeps its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdc.config import load_config
from cdc.plugin import ChangeEvent, Op
from cdc.runtime.capture import StartOrder, _encoder, _packer
from cdc.runtime.routing import DeadLetter, Encoded
from cdc.schemas.eventify import StreamEventifier

KEY = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
ROW = {
    "type": "record",
    "name": "V",
    "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
}
CONFIG = """
name: packed
source: {{connector: polling, url: "postgresql://u@127.0.0.1/db"}}
streams:
  - name: a
    topic: ta
    key_schema: k.avsc
    value_schema: v.avsc
    on_error: dead_letter
    capture: {{table: public.a, mode: incrementing, incrementing_column: id}}
  - name: b
    topic: tb
    key_schema: k.avsc
    value_schema: v.avsc
    capture: {{table: public.b, mode: incrementing, incrementing_column: id}}
delivery: {delivery}
kafka: {{bootstrap_servers: "127.0.0.1:1"}}
schema_registry: {{url: "http://127.0.0.1:1"}}
"""


IDS = {"a": (1, 2), "b": (3, 4)}


def _app(tmp: Path, delivery: str) -> tuple[Any, dict[str, StreamEventifier]]:
    (tmp / "k.avsc").write_text(json.dumps(KEY))
    (tmp / "v.avsc").write_text(json.dumps(ROW))
    (tmp / "c.yaml").write_text(CONFIG.format(delivery=delivery))
    app = load_config(tmp / "c.yaml")
    return app, {s.name: StreamEventifier(app, s) for s in app.streams}


def _pack(tmp: Path, delivery: str) -> Any:
    app, eventifiers = _app(tmp, delivery)
    return _encoder(app, IDS, eventifiers)


def _row(stream: str, n: int, name: Any = "x") -> ChangeEvent:
    return ChangeEvent(stream, Op.READ, {"id": n}, {"id": n, "name": name}, stream, {"id": n, "polls": 1})


def _offsets(items: list[Any]) -> list[Any]:
    return [Encoded._make(i).offset if type(i) is tuple else i.offset for i in items]


def test_at_least_once_only_each_partitions_last_record_carries_its_offset(tmp_path: Path) -> None:
    pack = _pack(tmp_path, "at_least_once")
    events = [_row("a", 1), _row("b", 1), _row("a", 2), _row("a", 3), _row("b", 2)]
    items = pack(events)
    assert _offsets(items) == [None, None, None, {"id": 3, "polls": 1}, {"id": 2, "polls": 1}]
    records = [Encoded._make(i) for i in items]
    assert [(r.stream, r.topic, r.partition) for r in records] == [
        ("a", "ta", "a"), ("b", "tb", "b"), ("a", "ta", "a"), ("a", "ta", "a"), ("b", "tb", "b")
    ]  # fmt: skip
    # the position header still names each record's own offset
    positions = [json.loads(dict(r.headers)["cdc.position"]) for r in records]
    assert [p["offset"]["id"] for p in positions] == [1, 1, 2, 3, 2]


def test_a_dead_letter_last_in_its_partition_carries_the_offset_itself(tmp_path: Path) -> None:
    pack = _pack(tmp_path, "at_least_once")
    items = pack([_row("a", 1), _row("a", 2, name=None)])  # a null name does not fit: dead letter
    assert type(items[1]) is DeadLetter
    assert _offsets(items) == [None, {"id": 2, "polls": 1}]


@pytest.mark.parametrize("size", [1, 4])
def test_exactly_once_every_record_keeps_its_offset(tmp_path: Path, size: int) -> None:
    pack = _pack(tmp_path, "exactly_once")
    items = pack([_row("a", n) for n in range(size)])
    assert _offsets(items) == [{"id": n, "polls": 1} for n in range(size)]


def _change(stream: str, n: int, op: Op) -> ChangeEvent:
    return ChangeEvent(stream, op, {"id": n}, {"id": n, "name": "x"}, stream, {"id": n, "polls": 1})


def test_snapshots_only_encodes_the_batches_of_snapshot_rows_alone(tmp_path: Path) -> None:
    """A log source (encode_snapshot_in_capture): its snapshot's batches cross serialized, any
    batch holding a log event crosses as event fields, in the order the source gave them."""
    app, eventifiers = _app(tmp_path, "at_least_once")
    pack = _packer(app, StartOrder({}, IDS, {}, snapshots_only=True), eventifiers)
    checkpoint = ChangeEvent("a", Op.CHECKPOINT, {}, None, "a", {"id": 9, "polls": 1})
    kind, items = pack([_change("a", 1, Op.READ), checkpoint, _change("a", 2, Op.READ)])
    assert kind == "encoded"
    assert items[1] is checkpoint
    assert [Encoded._make(items[i]).op for i in (0, 2)] == [Op.READ, Op.READ]

    mixed = [_change("a", 3, Op.READ), _change("a", 4, Op.CREATE), _change("b", 1, Op.UPDATE)]
    kind, items = pack(mixed)
    assert kind == "batch"
    assert [ChangeEvent(*fields) for fields in items] == mixed


def test_without_schema_ids_every_batch_crosses_as_event_fields(tmp_path: Path) -> None:
    app, eventifiers = _app(tmp_path, "at_least_once")
    pack = _packer(app, StartOrder({}, None, {}), eventifiers)
    events = [_change("a", 1, Op.READ), _change("a", 2, Op.CREATE)]
    kind, items = pack(events)
    assert (kind, [ChangeEvent(*fields) for fields in items]) == ("batch", events)


def test_a_query_source_encodes_every_batch(tmp_path: Path) -> None:
    app, eventifiers = _app(tmp_path, "at_least_once")
    pack = _packer(app, StartOrder({}, IDS, {}), eventifiers)
    kind, items = pack([_change("a", 1, Op.CREATE), _change("a", 2, Op.UPDATE)])
    assert kind == "encoded"
    assert [Encoded._make(i).op for i in items] == [Op.CREATE, Op.UPDATE]
