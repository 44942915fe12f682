"""The sink's short way (EntityParser) against its general path, on the same messages."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.config.model import EventFormat
from cdc.schemas.avsc import envelope_schema
from cdc.sink.config import SinkTopic
from cdc.sink.decode import DecodeError, Decoder
from cdc.sink.errors import MessageRef
from cdc.sink.fastparse import EntityParser
from cdc.sink.records import Change, ChangeBuilder
from tests.unit.test_sink_fastread import FLAT, encode, flat_record, wire

KEY = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
OTHER_KEY = {"type": "record", "name": "K2", "fields": [{"name": "s", "type": "string"}]}


class _Registry:
    """Schemas by id, as the registry client serves them (a unit test needs no HTTP)."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas

    def get_schema(self, schema_id: int) -> Any:
        return SimpleNamespace(schema_type="AVRO", schema_str=json.dumps(self.schemas[schema_id]))


class _Message:
    """The part of a consumed message the parsers read."""

    def __init__(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def general(decoder: Decoder, builder: ChangeBuilder, msg: _Message, offset: int) -> Change | str:
    """What the runner's general path makes of a message: its change, or that it refused it."""
    key_bytes, value_bytes = msg.key(), msg.value()
    try:
        key_writer, key = decoder.decode(key_bytes) if key_bytes is not None else (None, None)
        value_writer, value = decoder.decode(value_bytes) if value_bytes is not None else (None, None)
        ref = MessageRef("t", 0, offset, key if key_bytes is not None else None)
        return builder.build(ref, msg, key_writer, key, value_writer, value)
    except DecodeError:
        return "refused"


def messages(rng: random.Random) -> list[_Message]:
    """Valid upserts, tombstones, another key schema, and poison of every kind."""
    out: list[_Message] = []
    for i in range(300):
        key = wire(1, encode(KEY, {"id": i}))
        record = flat_record(rng, i)
        record["id"] = i
        value = wire(2, encode(FLAT, record))
        kind = i % 10
        if kind == 1:
            value = value[: rng.randrange(5, len(value))]  # cut short
        elif kind == 2:
            value += b"\0"  # a trailing byte
        elif kind == 3:
            key = key[:-1]  # the key cut short
        elif kind == 4:
            out.append(_Message(key, None, i))  # a tombstone
            continue
        elif kind == 5:
            key = wire(3, encode(OTHER_KEY, {"s": f"k{i}"}))  # another key schema: its own pair
        elif kind == 6:
            corrupt = bytearray(value)
            corrupt[rng.randrange(5, len(corrupt))] = rng.randrange(256)
            value = bytes(corrupt)
        elif kind == 7:
            value = b"\1" + value[1:]  # not the wire format
        out.append(_Message(key, value, i))
    return out


def same_change(fast: Change, slow: Change) -> None:
    assert (fast.ref, fast.table, fast.key, fast.row, fast.raw, fast.sink) == (
        slow.ref,
        slow.table,
        slow.key,
        slow.row,
        slow.raw,
        slow.sink,
    )
    assert (fast.key_columns, fast.fields, fast.schema_ids, fast.plan) == (
        slow.key_columns,
        slow.fields,
        slow.schema_ids,
        slow.plan,
    )


@pytest.mark.parametrize("fixed_key", [False, True])
def test_the_short_way_gives_the_general_paths_change_or_defers_to_it(fixed_key: bool) -> None:
    schemas = {1: KEY, 2: FLAT, 3: OTHER_KEY}
    topic = SinkTopic(topic="t", key=["id"] if fixed_key else None)
    slow_decoder, fast_decoder = Decoder(_Registry(schemas)), Decoder(_Registry(schemas))  # type: ignore[arg-type]
    slow_builder, fast_builder = ChangeBuilder(topic), ChangeBuilder(topic)
    parser = EntityParser(fast_decoder, fast_builder)
    short = 0
    for msg in messages(random.Random(8)):
        offset = msg._offset
        expected = general(slow_decoder, slow_builder, msg, offset)
        found: Change | str | None = parser(msg, "t", 0, offset)
        if found is None:  # the runner's order: the general path, then learn from its change
            found = general(fast_decoder, fast_builder, msg, offset)
            if isinstance(found, Change):
                parser.learn(msg, found)
        else:
            short += 1
        if isinstance(expected, Change):
            assert isinstance(found, Change), offset
            same_change(found, expected)
        else:
            assert found == "refused", offset
    # After the first message of each header pair, every valid upsert took the short way.
    assert short >= 100


def test_envelopes_and_unknown_pairs_keep_the_general_path() -> None:
    schemas = {1: KEY, 4: envelope_schema(FLAT)}
    decoder = Decoder(_Registry(schemas))  # type: ignore[arg-type]
    builder = ChangeBuilder(SinkTopic(topic="t", format=EventFormat.ENVELOPE))
    parser = EntityParser(decoder, builder)
    after = flat_record(random.Random(1), 0)
    source = {"connector": "c", "name": "n", "stream": "s", "position": "{}"}
    value = {"before": None, "after": after, "op": "c", "source": source, "ts_ms": 0}
    msg = _Message(wire(1, encode(KEY, {"id": 0})), wire(4, encode(envelope_schema(FLAT), value)), 0)
    change = general(decoder, builder, msg, 0)
    assert isinstance(change, Change)
    parser.learn(msg, change)
    assert parser(msg, "t", 0, 1) is None  # learnt as "general path for good"
    assert parser(_Message(wire(1, b"\2"), wire(9, b""), 2), "t", 0, 2) is None  # never seen
