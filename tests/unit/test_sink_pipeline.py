"""Which decoded messages a batch applies once the batch written meanwhile is done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdc.sink.errors import BadMessageError, MessageRef
from cdc.sink.loader import load_sink_config
from cdc.sink.records import Change
from cdc.sink.runner import SinkRunner

CONFIG = """
name: s
topics: [{topic: t}]
target: {url: "postgresql://u:p@db/x"}
kafka: {bootstrap_servers: "localhost:9092"}
schema_registry: {url: "http://localhost:8081"}
"""


def change(partition: int, offset: int) -> Change:
    return Change(
        MessageRef("t", partition, offset, None), (None, "t"), (offset,), {"id": offset}, f"m{offset}"
    )


def test_a_batch_applies_owned_partitions_past_their_positions_and_skips_dropped_ones(tmp_path: Path) -> None:
    (tmp_path / "sink.yaml").write_text(CONFIG)
    runner = SinkRunner(load_sink_config(tmp_path / "sink.yaml"))
    runner.positions = {("t", 0): 5, ("t", 1): None, ("t", 2): 0}
    poison = BadMessageError(MessageRef("t", 1, 3, None), "cannot decode")
    decoded: list[Any] = [
        (("t", 0), 4, "m4", change(0, 4)),  # applied already
        (("t", 0), 5, "m5", change(0, 5)),
        (("t", 1), 3, "bad", poison),  # no stored position yet: everything applies
        (("t", 2), 9, "m9", change(2, 9)),  # its previous batch was fenced: fetched again
        (("t", 3), 1, "m1", change(3, 1)),  # revoked while in flight
    ]
    batch = runner._batch(decoded, {("t", 2)})
    assert batch.ends == {("t", 0): 6, ("t", 1): 4}
    assert [c.ref.offset for c in batch.changes] == [5]
    assert batch.poison == [("bad", poison)]


# --- the learnt path of a (topic, key schema, value schema) triple ---

KEY = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "V",
    "fields": [
        {"name": "name", "type": ["null", "string"]},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}
ENVELOPE_CONFIG = CONFIG.replace("topics: [{topic: t}]", "topics: [{topic: t, format: envelope}]")


class _Registry:
    """The registry client's one call the decoder makes (a unit-test stand-in)."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas
        self.calls = 0

    def get_schema(self, schema_id: int) -> Any:
        import json
        from types import SimpleNamespace

        self.calls += 1
        return SimpleNamespace(schema_type="AVRO", schema_str=json.dumps(self.schemas[schema_id]))


class _Message:
    """A consumed message's accessors, as confluent_kafka.Message has them."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._offset, self._key, self._value = offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def _wire(schema_id: int, schema: Any, datum: Any) -> bytes:
    import io
    import struct

    from fastavro import parse_schema, schemaless_writer

    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), datum)
    return struct.pack(">bI", 0, schema_id) + buf.getvalue()


def _runner(tmp_path: Path, config: str = CONFIG) -> SinkRunner:
    from cdc.sink.decode import Decoder

    (tmp_path / "sink.yaml").write_text(config)
    runner = SinkRunner(load_sink_config(tmp_path / "sink.yaml"))
    runner.decoder = Decoder(_Registry({1: KEY, 2: VALUE}))  # type: ignore[arg-type]
    return runner


def _messages() -> list[_Message]:
    import datetime as dt
    from decimal import Decimal

    at = dt.datetime(2026, 12, 4, 8, 30, 1, 250, tzinfo=dt.UTC)
    good = [
        _Message(
            i, _wire(1, KEY, {"id": i}), _wire(2, VALUE, {"name": f"n{i}", "total": Decimal(i) / 4, "at": at})
        )
        for i in range(4)
    ]
    value = good[1].value()
    assert value is not None
    return [
        *good,
        _Message(4, good[0].key(), value[:-3]),  # cut short
        _Message(5, good[0].key(), value + b"\x00"),  # a trailing byte
        _Message(6, good[0].key(), None),  # a tombstone: a delete
        _Message(7, good[2].key(), good[2].value()),
    ]


def _fields(parsed: Any) -> Any:
    if isinstance(parsed, BadMessageError):
        return ("bad", parsed.ref, str(parsed))
    return (
        parsed.ref, parsed.table, parsed.key, parsed.row, parsed.raw, parsed.sink, parsed.key_columns,
        [f.name for f in parsed.fields], parsed.schema_ids,
    )  # fmt: skip


def test_a_learnt_schema_pair_builds_the_changes_the_general_path_builds(tmp_path: Path) -> None:
    """Messages of a known (topic, key schema, value schema) triple are built in one call; the
    changes are field for field those of decoding and building each message, and anything the
    learnt path cannot read (a cut value, trailing bytes, a tombstone) goes the general way."""
    runner = _runner(tmp_path)
    messages = _messages()
    decoded = runner._decode(messages)  # type: ignore[arg-type]
    assert [path is not None for path in runner._fast_paths.values()] == [True]  # learnt, and used
    expected = []
    for m in messages:
        try:
            expected.append(runner._parse(m, "t", 0, m.offset()))
        except BadMessageError as exc:
            expected.append(exc)
    assert [type(e).__name__ for e in expected] == ["Change"] * 4 + ["BadMessageError"] * 2 + ["Change"] * 2
    for (tp, offset, raw, parsed), message, general in zip(decoded, messages, expected, strict=True):
        assert (tp, offset, raw) == (("t", 0), message.offset(), message)
        assert _fields(parsed) == _fields(general)
    assert decoded[6][3].row is None and decoded[6][3].key == (0,)  # type: ignore[union-attr]
    assert runner.decoder._client.calls == 2  # type: ignore[attr-defined]


def test_the_general_path_keeps_envelopes_and_unknown_schemas(tmp_path: Path) -> None:
    runner = _runner(tmp_path, ENVELOPE_CONFIG)
    decoded = runner._decode(_messages()[:2])  # type: ignore[arg-type]
    # An envelope topic learns that its pair has no fast path; the value is no envelope here.
    assert list(runner._fast_paths.values()) == [None]
    assert all(isinstance(parsed, BadMessageError) for *_, parsed in decoded)
    assert "not an envelope" in str(decoded[1][3])


def test_the_next_batch_is_decoded_once_the_writer_has_sent_its_rows(tmp_path: Path) -> None:
    """The consuming thread decodes batch N+1 while the writer waits on the database for batch
    N, not while the writer formats N's rows (one GIL for both threads)."""
    import threading
    import time

    (tmp_path / "sink.yaml").write_text(CONFIG)
    runner = SinkRunner(load_sink_config(tmp_path / "sink.yaml"))
    runner.positions = {("t", 0): None}
    events: list[str] = []
    batches = iter([[_Message(0, b"k", b"v")], [_Message(1, b"k", b"v")], [_Message(2, b"k", b"v")]])

    class Consumer:
        def consume(self, num_messages: int, timeout: float) -> list[_Message]:
            found = next(batches, None)
            if found is None:
                runner.stop.set()
                return []
            return found

        def commit(self, **_: Any) -> None:
            pass

        def get_watermark_offsets(self, *_: Any, **__: Any) -> tuple[int, int]:
            return (0, 0)

    def decode(messages: list[_Message]) -> list[Any]:
        events.append(f"decode {messages[0].offset()}")
        return [(("t", 0), m.offset(), m, change(0, m.offset())) for m in messages]

    def apply(batch: Any) -> None:
        offset = batch.changes[0].ref.offset
        time.sleep(0.05)  # formatting the rows: the next batch must not be decoded meanwhile
        events.append(f"sent {offset}")
        batch.rows_sent.set()
        time.sleep(0.05)  # the database's work: the next batch is decoded now
        events.append(f"committed {offset}")

    runner._decode = decode  # type: ignore[method-assign]
    runner._apply = apply  # type: ignore[method-assign]
    thread = threading.Thread(target=runner._loop, args=(Consumer(),))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert events == [
        "decode 0",
        "sent 0",
        "decode 1",
        "committed 0",
        "sent 1",
        "decode 2",
        "committed 1",
        "sent 2",
        "committed 2",
    ]
