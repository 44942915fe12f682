"""From a captured change to what the output sends: a record, a dead letter by policy, or
nothing (the stream's filter dropped it).

A row that does not fit its stream's schema either stops the connector (``on_error: fail``)
or becomes a DeadLetter carrying the row (as the column policies shaped it), the error and the
position. A filtered event becomes a Filtered marker, so its offset still advances.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cdc.config.model import AppConfig, OnError
from cdc.errors import RowError
from cdc.plugin import ChangeEvent, Offset, Op
from cdc.schemas.eventify import Record, StreamEventifier, position_text


class DeadLetter(NamedTuple):
    """A row that did not fit its schema, routed to the stream's dead-letter topic."""

    stream: str
    topic: str
    key: Any
    payload: dict[str, Any]
    partition: str
    offset: Offset


class Encoded(NamedTuple):
    """A record the capture process already serialized (Confluent wire format)."""

    stream: str
    topic: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: str
    #: None when a later item of the same capture batch and partition carries the offset
    #: (cdc.runtime.capture sends one per partition and batch: a dict per row cost more to
    #: pickle and unpickle than the rest of the record)
    offset: Offset | None
    #: the event's operation: a snapshot row (READ) commits promptly, as an unencoded one does
    op: Op


class Filtered(NamedTuple):
    """An event the stream's row filter dropped: nothing is sent, its offset is committed."""

    stream: str
    partition: str
    offset: Offset


class Router:
    """Eventifies changes; applies each stream's ``on_error`` policy to rows that do not fit."""

    def __init__(self, app: AppConfig, eventifiers: dict[str, StreamEventifier]) -> None:
        self.app = app
        self.eventifiers = eventifiers
        self._streams = {s.name: s for s in app.streams}

    def __call__(self, event: ChangeEvent) -> Record | DeadLetter | Filtered:
        """The event's record; a DeadLetter where the policy says so; RowError otherwise;
        Filtered when the stream's filter drops it."""
        eventifier = self.eventifiers[event.stream]
        shaper = eventifier.shaper
        if shaper is None:
            try:
                return eventifier(event)
            except RowError as err:
                return self._dead_letter(event, err)
        try:
            kept = shaper.filter(event)  # on the raw values
        except RowError as err:
            return self._dead_letter(shaper.apply_policies(event), err)  # shows published values
        if kept is None:
            return Filtered(event.stream, event.partition, event.offset)
        if eventifier.fuses_policies:
            # the policies apply while converting: no copied images on the hot path
            try:
                return eventifier(kept, shaped=True)
            except RowError as err:
                return self._dead_letter(shaper.apply_policies(kept), err)
        kept = shaper.apply_policies(kept) if shaper.policies else kept
        try:
            return eventifier(kept)
        except RowError as err:
            return self._dead_letter(kept, err)

    def _dead_letter(self, event: ChangeEvent, err: RowError) -> DeadLetter:
        """The dead letter of an event that raised ``err`` (the event as published); raises
        ``err`` again when the stream's ``on_error`` is ``fail``."""
        stream = self._streams[event.stream]
        if stream.on_error is OnError.FAIL:
            raise err
        return DeadLetter(
            stream.name,
            self.app.dead_letter_topic_of(stream),
            event.key,
            self._payload(event, err),
            event.partition,
            event.offset,
        )

    def _payload(self, event: ChangeEvent, err: RowError) -> dict[str, Any]:
        return {
            "connector": self.app.name,
            "stream": err.stream,
            "key": event.key,
            "field": err.field,
            "reason": err.reason,
            "error": str(err.message),
            "op": event.op.value,
            "row": event.after if event.after is not None else event.before,
            "position": position_text(event),
        }
