"""Decoded messages -> row changes, and the reduction of a batch to the last change per key.

Formats: ``entity`` (value = the row, tombstone = delete; also any plain Confluent-Avro topic)
and ``envelope`` (before/after/op; op ``d`` or a tombstone = delete).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cdc.config.model import EventFormat
from cdc.errors import SchemaError
from cdc.sink.columns import FieldSpec, record_fields
from cdc.sink.config import SinkTopic
from cdc.sink.decode import DecodeError, WriterSchema
from cdc.sink.errors import MessageRef
from cdc.sink.tables import TablePlan

_UPSERT_OPS = {"c", "u", "r"}


@dataclass(slots=True)
class Change:
    """One message as a row change. ``row`` None is a delete; ``raw`` keeps the message for a DLQ."""

    ref: MessageRef
    table: tuple[str | None, str]
    key: tuple[Any, ...]
    row: dict[str, Any] | None
    raw: Any  # the confluent_kafka Message
    sink: SinkTopic | None = None  # the topic's config (mode, deletes)
    key_columns: tuple[str, ...] = ()
    fields: list[FieldSpec] = field(default_factory=list)  # upserts only: keys first
    schema_ids: tuple[int, int] = (0, 0)  # (key schema id, value schema id) for the plan cache
    plan: TablePlan | None = None  # set before the data transaction (upserts only)


@dataclass(slots=True)
class Reduced:
    """The last change of a key in a batch, and whether a delete came before it in the batch."""

    change: Change
    deleted_before: bool = False


def envelope_row_schema(schema: Any) -> Any:
    """The row record inside an envelope schema (the record branch of ``before``/``after``)."""
    for f in schema.get("fields", []) if isinstance(schema, dict) else []:
        if f["name"] in ("before", "after"):
            branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
            for b in branches:
                if isinstance(b, dict) and b.get("type") == "record":
                    return b
    raise DecodeError("the value schema is not an envelope (no record-typed before/after)")


def _key_picker(keys: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The key columns' values of a row as a tuple, picked in C (KeyError names a missing one)."""
    if len(keys) == 1:
        (only,) = keys
        return lambda row: (row[only],)
    picker: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(*keys)  # a tuple for 2+
    return picker


#: a builder bound to one (key schema, value schema) pair: (message, topic, partition, offset,
#: key bytes, value bytes) -> its Change, or None when the general path must take the message
FastPath = Callable[[Any, str, int, int, bytes, bytes], "Change | None"]


class ChangeBuilder:
    """Turns one decoded key/value of one topic into a Change (DecodeError for a message that does not fit).

    The decoded value becomes the change's row as it is (the record key's fields are written
    into it): callers pass values they do not use afterwards, as the decoder's are."""

    def __init__(self, topic: SinkTopic) -> None:
        self.topic = topic
        self.table = (topic.table_schema, topic.table_name)
        self._fields: dict[tuple[int, int], list[FieldSpec]] = {}
        self._keys: dict[int, tuple[str, ...]] = {}  # by key schema id
        self._fixed_keys = tuple(topic.key) if topic.key else None
        self._envelope = topic.format is EventFormat.ENVELOPE
        self._pickers: dict[tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]]] = {}

    def key_columns(self, key_writer: WriterSchema | None) -> tuple[str, ...]:
        if self._fixed_keys is not None:
            return self._fixed_keys
        if key_writer is not None:
            found = self._keys.get(key_writer.schema_id)
            if found is not None:
                return found
        if (
            key_writer is None
            or not isinstance(key_writer.schema, dict)
            or key_writer.schema.get("type") != "record"
        ):
            raise DecodeError(
                f"topic {self.topic.topic!r}: the record key is not an Avro record; set the topic's key: [column]"
            )
        keys = self._keys[key_writer.schema_id] = tuple(str(f["name"]) for f in key_writer.schema["fields"])
        return keys

    def build(
        self,
        ref: MessageRef,
        raw: Any,
        key_writer: WriterSchema | None,
        key: Any,
        value_writer: WriterSchema | None,
        value: Any,
    ) -> Change:
        keys = self.key_columns(key_writer)
        row: dict[str, Any] | None
        if value is None:
            row = None
        elif self._envelope:
            if not isinstance(value, dict) or "op" not in value:
                raise DecodeError("the value is not an envelope (no op field)")
            op = value["op"]
            if op == "d":
                row = None
            elif op in _UPSERT_OPS and isinstance(value.get("after"), dict):
                row = value["after"]
            else:
                raise DecodeError(f"envelope op {op!r} without an after image")
        elif isinstance(value, dict):
            row = value  # the decoder's fresh dict: updated in place, never shared (no copy per record)
        else:
            raise DecodeError("the value is not an Avro record")
        if row is None:
            return Change(ref, self.table, self._key_from_key(keys, key), None, raw, self.topic, keys)
        if self._fixed_keys is None and isinstance(key, dict):
            row.update(key)  # the record key is the identity; deletes use it too
        pick = self._pickers.get(keys)
        if pick is None:
            pick = self._pickers[keys] = _key_picker(keys)
        try:
            key_tuple = pick(row)
        except KeyError as exc:
            raise DecodeError(f"key column {exc.args[0]!r} is not a field of the value") from None
        assert value_writer is not None
        ids = (key_writer.schema_id if key_writer else 0, value_writer.schema_id)
        specs = self._specs(ids, key_writer, value_writer)
        return Change(ref, self.table, key_tuple, row, raw, self.topic, keys, specs, ids)

    def fast_path(self, key_writer: WriterSchema, value_writer: WriterSchema) -> FastPath | None:
        """The whole of :meth:`build` for an ``entity`` message with a record key and a value,
        both read by compiled readers, bound to one (key schema, value schema) pair; None when
        that pair needs the general path (a delete, an envelope, a schema the readers do not
        compile, or a pair the general path refuses)."""
        key_reader, value_reader = key_writer.reader, value_writer.reader
        if self._envelope or key_reader is None or value_reader is None:
            return None
        try:
            keys = self.key_columns(key_writer)
            ids = (key_writer.schema_id, value_writer.schema_id)
            specs = self._specs(ids, key_writer, value_writer)
        except DecodeError:
            return None  # the general path reports it, per message
        merge = self._fixed_keys is None
        pick = self._pickers.get(keys)
        if pick is None:
            pick = self._pickers[keys] = _key_picker(keys)
        table, topic = self.table, self.topic
        # MessageRef(...) goes through the named tuple's generated __new__: half the cost again
        new_ref = tuple.__new__

        def build(
            raw: Any, topic_name: str, partition: int, offset: int, key_bytes: bytes, value_bytes: bytes
        ) -> Change | None:
            # None for anything unusual: the general path then decodes the message again and
            # says what is wrong with it.
            try:
                key, key_end = key_reader(key_bytes, 5)
                row, value_end = value_reader(value_bytes, 5)
                if key_end != len(key_bytes) or value_end != len(value_bytes):
                    return None
                if merge:
                    row.update(key)  # the record key is the identity
                key_tuple = pick(row)
            except Exception:  # IndexError, EOFError, UnicodeDecodeError, KeyError ... on bad bytes
                return None
            ref = new_ref(MessageRef, (topic_name, partition, offset, key))
            return Change(ref, table, key_tuple, row, raw, topic, keys, specs, ids)

        return build

    def _key_from_key(self, keys: tuple[str, ...], key: Any) -> tuple[Any, ...]:
        if isinstance(key, dict):
            try:
                return tuple(key[k] for k in keys)
            except KeyError as exc:
                raise DecodeError(f"key column {exc.args[0]!r} is not a field of the record key") from None
        if len(keys) == 1 and key is not None:
            return (key,)
        raise DecodeError("a delete needs a record key (or a scalar key and a one-column key:)")

    def _specs(
        self, ids: tuple[int, int], key_writer: WriterSchema | None, value_writer: WriterSchema
    ) -> list[FieldSpec]:
        found = self._fields.get(ids)
        if found is not None:
            return found
        value_schema = value_writer.schema
        if self.topic.format is EventFormat.ENVELOPE:
            value_schema = envelope_row_schema(value_schema)
        try:
            value_fields = record_fields(value_schema, f"{self.topic.topic} value")
            key_fields = (
                record_fields(key_writer.schema, f"{self.topic.topic} key")
                if key_writer is not None and not self.topic.key
                else []
            )
        except SchemaError as exc:
            raise DecodeError(exc.message) from None
        names = {f.name for f in key_fields}
        by_name = {f.name: f for f in key_fields + value_fields}
        ordered = [*key_fields, *(f for f in value_fields if f.name not in names)]
        keys = self.key_columns(key_writer)
        specs = [by_name[k] for k in keys if k in by_name] + [f for f in ordered if f.name not in keys]
        self._fields[ids] = specs
        return specs


def reduce_changes(changes: Iterable[Change]) -> dict[tuple[str | None, str], dict[tuple[Any, ...], Reduced]]:
    """Per table, the last change of every key in offset order (changes arrive in that order)."""
    out: dict[tuple[str | None, str], dict[tuple[Any, ...], Reduced]] = {}
    for change in changes:
        per_key = out.get(change.table)
        if per_key is None:
            per_key = out[change.table] = {}
        key = change.key
        # Popped and re-inserted: the dict's order then follows each key's last change.
        previous = per_key.pop(key, None)
        deleted = previous is not None and (previous.deleted_before or previous.change.row is None)
        per_key[key] = Reduced(change, deleted)
    return out
