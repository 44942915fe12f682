"""Serialize eventified records into Confluent wire-format key and value bytes.

Used by the Kafka output, and by a capture process whose source encodes there
(``SourceConnector.encode_in_capture``): the same schema ids, the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from cdc.plugin import EncodedValue
from cdc.schemas.eventify import Record, StreamEventifier
from cdc.schemas.wire import WireEncoder

#: per stream: (key schema id, value schema id) as registered or resolved in the registry
SchemaIds = dict[str, tuple[int, int]]


class RecordEncoder:
    """Key and value bytes of a Record, under the stream's registered schema ids."""

    def __init__(
        self,
        eventifiers: dict[str, StreamEventifier],
        ids: SchemaIds,
        registry_client: Callable[[], Any],
    ) -> None:
        self.ids = ids
        self._encoders = {
            name: (WireEncoder(ev.key_schema, ids[name][0]), WireEncoder(ev.value_schema, ids[name][1]))
            for name, ev in eventifiers.items()
        }
        self._registry_client = registry_client
        self._client: Any = None
        self._version_ids: dict[tuple[str, int | None], int] = {}

    def encode(self, record: Record) -> tuple[bytes, bytes | None]:
        key_enc, value_enc = self._encoders[record.stream]
        if record.encoded_value is not None:
            value = self._wire(record.stream, record.topic, record.encoded_value)
        else:
            value = None if record.value is None else value_enc.encode(record.value)
        return key_enc.encode(record.key), value

    def _wire(self, stream: str, topic: str, encoded: EncodedValue) -> bytes | None:
        """Prefix an application-encoded body with the id of its subject/version (cached)."""
        if encoded.body is None:
            return None
        if encoded.version is None and encoded.subject is None:
            return struct.pack(">bI", 0, self.ids[stream][1]) + encoded.body
        subject = encoded.subject or f"{topic}-value"
        cache_key = (subject, encoded.version)
        schema_id = self._version_ids.get(cache_key, -1)
        if schema_id < 0:
            if self._client is None:
                self._client = self._registry_client()
            from cdc.schemas.subjects import resolve_version_id  # the registry client: only on this path

            schema_id = resolve_version_id(self._client, subject, encoded.version)
            self._version_ids[cache_key] = schema_id
        return struct.pack(">bI", 0, schema_id) + encoded.body
