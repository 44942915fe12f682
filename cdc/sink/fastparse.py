"""The sink's short way from a consumed message to its change, for the common case.

Most messages of a topic are entity upserts whose key and value were written with schemas
already seen, both read by compiled readers. For such a message the general path (the decoder
twice, then :meth:`ChangeBuilder.build`) repeats per message what depends only on the pair of
5-byte wire headers: two schema lookups, the key columns, the field specs. :class:`EntityParser`
learns a header pair from a message the general path turned into a change, and from then on
takes such messages in one step: two compiled reads and the change.

It never decides anything the general path would decide differently: any message it has not
learnt, any bytes its readers refuse, trailing bytes, a missing key column, returns None and the
caller takes the general path, which gives the error or the change. The unit tests compare both
on the same messages, poison included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from cdc.sink.decode import Decoder
from cdc.sink.errors import MessageRef
from cdc.sink.fastread import RecordReader
from cdc.sink.records import Change, ChangeBuilder


class _Learnt(NamedTuple):
    """What a header pair's messages take: both readers and what build() derives from the pair."""

    read_key: RecordReader
    read_value: RecordReader
    pick: Callable[[dict[str, Any]], tuple[Any, ...]]
    keys: tuple[str, ...]
    specs: list[Any]
    ids: tuple[int, int]


class EntityParser:
    """The short way for one topic's entity upserts (see the module doc)."""

    def __init__(self, decoder: Decoder, builder: ChangeBuilder) -> None:
        self._decoder = decoder
        self._builder = builder
        # None for a header pair that takes the general path for good (an envelope, a schema
        # fastavro reads): decided once, not per message
        self._learnt: dict[tuple[bytes, bytes], _Learnt | None] = {}
        self._merge_key = builder.merges_record_key

    def learn(self, msg: Any, change: Change) -> None:
        """Remember the header pair of a message the general path made ``change`` of, when its
        messages can take the short way: an upsert read by two compiled readers whose schema
        pair ``build()`` has cached."""
        if change.row is None:
            return
        key_bytes, value_bytes = msg.key(), msg.value()
        if key_bytes is None or value_bytes is None:
            return
        headers = (key_bytes[:5], value_bytes[:5])
        if headers in self._learnt:
            return
        key_writer = self._decoder.known(headers[0])
        value_writer = self._decoder.known(headers[1])
        if key_writer is None or value_writer is None:
            return  # not a wire-format header the decoder knows (yet): nothing to decide
        shape = self._builder.shape(key_writer, value_writer)
        if key_writer.reader is None or value_writer.reader is None or shape is None:
            self._learnt[headers] = None  # build() made the change without a cached shape
            return
        self._learnt[headers] = _Learnt(
            key_writer.reader, value_writer.reader, shape.pick, shape.keys, shape.specs, shape.ids
        )

    def __call__(self, msg: Any, topic: str, partition: int, offset: int) -> Change | None:
        """The message's change the short way, or None: take the general path."""
        key_bytes, value_bytes = msg.key(), msg.value()
        if key_bytes is None or value_bytes is None:
            return None
        learnt = self._learnt.get((key_bytes[:5], value_bytes[:5]))
        if learnt is None:
            return None
        try:
            key, key_end = learnt.read_key(key_bytes, 5)
            value, value_end = learnt.read_value(value_bytes, 5)
        except Exception:  # bad bytes: the general path words the error
            return None
        if key_end != len(key_bytes) or value_end != len(value_bytes):
            return None
        if self._merge_key:
            value.update(key)  # the record key is the identity, as build() merges it
        try:
            key_tuple = learnt.pick(value)
        except KeyError:
            return None
        builder = self._builder
        return Change(
            MessageRef(topic, partition, offset, key),
            builder.table,
            key_tuple,
            value,
            msg,
            builder.topic,
            learnt.keys,
            learnt.specs,
            learnt.ids,
        )
