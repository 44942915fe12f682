"""Errors of poison messages: each names topic, partition, offset and key."""

from __future__ import annotations

from typing import NamedTuple

from cdc.errors import CdcError, RowError, SchemaError


class MessageRef(NamedTuple):
    """Where a message came from: enough to find it again (and to report it).

    A named tuple rather than a frozen dataclass: one is made per consumed message, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost about 1.4 times as much."""

    topic: str
    partition: int
    offset: int
    key: object  # decoded key when known, else the raw bytes

    def __str__(self) -> str:
        return f"topic {self.topic!r} partition {self.partition} offset {self.offset} key {self.key!r}"


class UndecodableMessageError(SchemaError):
    """A message is not Confluent-Avro, names an unknown schema, or does not fit the topic's format."""

    def __init__(self, ref: MessageRef, reason: str) -> None:
        self.ref = ref
        self.reason = reason
        CdcError.__init__(
            self,
            f"{ref}: cannot decode: {reason}",
            hint="fix the producer, or set on_error: dead_letter to route such messages to <topic>.sink-dlq",
        )


class RejectedRowError(RowError):
    """The target database refused a row (constraint violation, value out of range)."""

    def __init__(self, ref: MessageRef, reason: str) -> None:
        self.ref = ref
        self.reason = reason
        self.stream, self.key, self.field = ref.topic, ref.key, ""
        CdcError.__init__(
            self,
            f"{ref}: the target database refused the row: {reason}",
            hint="fix the table or the data, or set on_error: dead_letter to route such messages to <topic>.sink-dlq",
        )


class BadMessageError(SchemaError):
    """A decoded message does not fit its table (a changed field type, a new required field)."""

    def __init__(self, ref: MessageRef, reason: str) -> None:
        self.ref = ref
        self.reason = reason
        CdcError.__init__(
            self,
            f"{ref}: {reason}",
            hint="migrate the table by hand, or set on_error: dead_letter to route such messages to <topic>.sink-dlq",
        )


class TableMismatchError(SchemaError):
    """A record's schema does not fit its (existing) table; poison for that message only."""
