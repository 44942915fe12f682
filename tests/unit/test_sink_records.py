"""Turning decoded messages into changes, and reducing a batch to the last change per key."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.sink.config import SinkTopic
from cdc.sink.decode import DecodeError, WriterSchema
from cdc.sink.errors import MessageRef
from cdc.sink.records import Change, ChangeBuilder, reduce_changes

KEY = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "V",
    "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": ["null", "string"]}],
}
KEY_W = WriterSchema(1, KEY, None)
VALUE_W = WriterSchema(2, VALUE, None)


def change(key: int, row: dict[str, Any] | None, offset: int) -> Change:
    return Change(MessageRef("t", 0, offset, {"id": key}), (None, "t"), (key,), row, None)


def test_the_last_change_per_key_wins_in_offset_order() -> None:
    changes = [
        change(1, {"id": 1, "name": "a"}, 0),
        change(2, {"id": 2, "name": "b"}, 1),
        change(1, {"id": 1, "name": "a2"}, 2),
        change(2, None, 3),
        change(3, None, 4),
        change(3, {"id": 3, "name": "c"}, 5),
    ]
    reduced = reduce_changes(changes)[(None, "t")]
    assert {k: (r.change.row, r.change.ref.offset, r.deleted_before) for k, r in reduced.items()} == {
        (1,): ({"id": 1, "name": "a2"}, 2, False),
        (2,): (None, 3, False),
        (3,): ({"id": 3, "name": "c"}, 5, True),  # insert/update modes delete first, then write
    }
    # Dict order follows each key's last change, so writes replay in offset order.
    assert [r.change.ref.offset for r in reduced.values()] == [2, 3, 5]


def test_a_delete_anywhere_before_the_last_upsert_is_remembered() -> None:
    changes = [change(1, None, 0), change(1, {"id": 1}, 1), change(1, {"id": 1}, 2)]
    assert reduce_changes(changes)[(None, "t")][(1,)].deleted_before


def test_changes_of_different_tables_are_reduced_separately() -> None:
    a = change(1, {"id": 1}, 0)
    b = Change(MessageRef("u", 0, 1, None), (None, "u"), (1,), None, None)
    reduced = reduce_changes([a, b])
    assert set(reduced) == {(None, "t"), (None, "u")}


def test_entity_values_upsert_and_tombstones_delete_by_the_record_key() -> None:
    builder = ChangeBuilder(SinkTopic(topic="shop.items"))
    ref = MessageRef("shop.items", 0, 7, {"id": 5})
    up = builder.build(ref, None, KEY_W, {"id": 5}, VALUE_W, {"id": 5, "name": "x"})
    assert up.table == (None, "shop_items") and up.key == (5,) and up.row == {"id": 5, "name": "x"}
    assert [f.name for f in up.fields] == ["id", "name"] and up.schema_ids == (1, 2)
    gone = builder.build(ref, None, KEY_W, {"id": 5}, None, None)
    assert gone.row is None and gone.key == (5,)


def test_envelopes_use_after_and_op_d_deletes() -> None:
    from cdc.schemas.avsc import envelope_schema

    env = WriterSchema(3, envelope_schema(VALUE), None)
    builder = ChangeBuilder(SinkTopic(topic="t", format="envelope"))
    ref = MessageRef("t", 0, 0, {"id": 1})
    value = {"before": None, "after": {"id": 1, "name": "n"}, "op": "c", "source": {}, "ts_ms": 0}
    up = builder.build(ref, None, KEY_W, {"id": 1}, env, value)
    assert up.row == {"id": 1, "name": "n"} and [f.name for f in up.fields] == ["id", "name"]
    deleted = builder.build(ref, None, KEY_W, {"id": 1}, env, {**value, "after": None, "op": "d"})
    assert deleted.row is None and deleted.key == (1,)
    with pytest.raises(DecodeError, match="op 'u' without an after image"):
        builder.build(ref, None, KEY_W, {"id": 1}, env, {**value, "after": None, "op": "u"})


def test_a_scalar_key_needs_a_key_override() -> None:
    ref = MessageRef("t", 0, 0, "abc")
    scalar = WriterSchema(4, "string", None)
    with pytest.raises(DecodeError, match="set the topic's key"):
        ChangeBuilder(SinkTopic(topic="t")).build(ref, None, scalar, "abc", VALUE_W, {"id": 1, "name": None})
    builder = ChangeBuilder(SinkTopic(topic="t", key=["name"]))
    up = builder.build(ref, None, scalar, "abc", VALUE_W, {"id": 1, "name": "abc"})
    assert up.key == ("abc",) and [f.name for f in up.fields] == ["name", "id"]
    assert builder.build(ref, None, scalar, "abc", None, None).key == ("abc",)


KEY2 = {
    "type": "record",
    "name": "K2",
    "fields": [{"name": "region", "type": "string"}, {"name": "id", "type": ["null", "long"]}],
}
VALUE2 = {
    "type": "record",
    "name": "V2",
    "fields": [
        {"name": "id", "type": ["null", "long"]},
        {"name": "region", "type": "string"},
        {"name": "name", "type": "string"},
    ],
}


def test_the_record_key_is_the_identity_when_the_value_carries_the_key_fields() -> None:
    builder = ChangeBuilder(SinkTopic(topic="t"))
    ref = MessageRef("t", 0, 0, {"id": 5})
    same = builder.build(ref, None, KEY_W, {"id": 5}, VALUE_W, {"id": 5, "name": "x"})
    assert same.key == (5,) and same.row == {"id": 5, "name": "x"}
    # A value whose copy of a key field differs (a hand-made topic): the record key wins, as it
    # decides the partition, and deletes address the row by it.
    differs = builder.build(ref, None, KEY_W, {"id": 5}, VALUE_W, {"id": 6, "name": "x"})
    assert differs.key == (5,) and differs.row == {"id": 5, "name": "x"}


def test_key_fields_missing_from_the_value_are_added_from_the_key_in_key_order() -> None:
    builder = ChangeBuilder(SinkTopic(topic="t"))
    key_w, value_w = WriterSchema(11, KEY2, None), WriterSchema(12, VALUE, None)
    ref = MessageRef("t", 0, 0, {"region": "eu", "id": 9})
    up = builder.build(ref, None, key_w, {"region": "eu", "id": 9}, value_w, {"id": 9, "name": "n"})
    assert up.key == ("eu", 9) and up.key_columns == ("region", "id")
    assert up.row == {"id": 9, "name": "n", "region": "eu"}
    assert [f.name for f in up.fields] == ["region", "id", "name"]


def test_null_key_fields_come_from_the_key_too() -> None:
    builder = ChangeBuilder(SinkTopic(topic="t"))
    key_w, value_w = WriterSchema(21, KEY2, None), WriterSchema(22, VALUE2, None)
    ref = MessageRef("t", 0, 0, {"region": "eu", "id": None})
    up = builder.build(
        ref, None, key_w, {"region": "eu", "id": None}, value_w, {"id": 4, "region": "eu", "name": "n"}
    )
    assert up.key == ("eu", None) and up.row == {"id": None, "region": "eu", "name": "n"}
    filled = builder.build(
        ref, None, key_w, {"region": "eu", "id": 4}, value_w, {"id": None, "region": "eu", "name": "n"}
    )
    assert filled.key == ("eu", 4) and filled.row == {"id": 4, "region": "eu", "name": "n"}
    gone = builder.build(ref, None, key_w, {"region": "eu", "id": None}, None, None)
    assert gone.key == ("eu", None) and gone.row is None


def test_a_key_override_takes_the_key_from_the_value_and_leaves_the_value_alone() -> None:
    builder = ChangeBuilder(SinkTopic(topic="t", key=["region", "name"]))
    ref = MessageRef("t", 0, 0, {"id": 1})
    up = builder.build(
        ref, None, KEY_W, {"id": 1}, WriterSchema(32, VALUE2, None), {"id": 2, "region": "us", "name": "a"}
    )
    assert up.key == ("us", "a") and up.row == {"id": 2, "region": "us", "name": "a"}
    with pytest.raises(DecodeError, match="key column 'region' is not a field of the value"):
        ChangeBuilder(SinkTopic(topic="t", key=["region"])).build(
            ref, None, KEY_W, {"id": 1}, VALUE_W, {"id": 1, "name": "a"}
        )


def test_the_second_message_of_a_schema_pair_builds_the_same_change_the_first_did() -> None:
    """build() caches what an entity upsert takes from its schema pair; the cached way gives the
    same change, merges the record key the same way and refuses a value without a key column."""
    builder = ChangeBuilder(SinkTopic(topic="shop.items"))
    built = [
        builder.build(
            MessageRef("shop.items", 0, i, {"id": i}), None, KEY_W, {"id": i}, VALUE_W, {"name": "x"}
        )
        for i in range(3)
    ]
    assert [(c.key, c.row, c.key_columns, c.schema_ids) for c in built] == [
        ((i,), {"name": "x", "id": i}, ("id",), (1, 2)) for i in range(3)
    ]
    assert built[1].fields is built[0].fields and built[2].ref.offset == 2
    fixed = ChangeBuilder(SinkTopic(topic="t", key=["name"]))
    for _ in range(2):  # first the derived way, then the cached one
        with pytest.raises(DecodeError, match="key column 'name' is not a field of the value"):
            fixed.build(MessageRef("t", 0, 0, None), None, None, None, VALUE_W, {"id": 1})
    first = fixed.build(MessageRef("t", 0, 0, None), None, None, None, VALUE_W, {"id": 1, "name": "a"})
    again = fixed.build(MessageRef("t", 0, 1, None), None, None, None, VALUE_W, {"id": 2, "name": "b"})
    assert (first.key, again.key) == (("a",), ("b",))
    with pytest.raises(DecodeError, match="key column 'name' is not a field of the value"):
        fixed.build(MessageRef("t", 0, 2, None), None, None, None, VALUE_W, {"id": 3})
