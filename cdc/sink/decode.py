"""Registry-backed Avro decoding of Confluent wire-format messages, with a schema cache.

A schema id is immutable in the registry, so each id is fetched once per process. Flat records
are decoded by a reader compiled per schema id (:mod:`cdc.sink.fastread`, the same results as
fastavro at a fraction of its per-call cost); other schemas use fastavro's schemaless reader
(aware datetimes for timestamp-*, naive for local-timestamp-*).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import parse_schema, schemaless_reader

from cdc.errors import BrokerUnavailableError
from cdc.masking import mask_dsn
from cdc.schemas.wire import MAGIC, split_header
from cdc.sink.fastread import RecordReader, compile_record_reader


class DecodeError(ValueError):
    """The bytes are not a decodable message (a poison message, not an outage)."""


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """A registered schema: its id, its JSON (for table DDL), fastavro's parsed form and, for a
    flat record, its compiled reader."""

    schema_id: int
    schema: Any  # a record dict, or a primitive type name / dict for primitive keys
    parsed: Any
    reader: RecordReader | None = None


class Decoder:
    """Decodes wire-format messages; thread-safe cache of writer schemas by id."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client
        self._schemas: dict[int, WriterSchema] = {}
        self._by_header: dict[bytes, WriterSchema] = {}  # the same, by wire-format header
        self._lock = threading.Lock()

    def writer_schema(self, schema_id: int) -> WriterSchema:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(f"schema id {schema_id} is not in the registry") from None
            if exc.http_status_code >= 500:
                raise BrokerUnavailableError(f"schema registry: schema {schema_id}: {exc}") from None
            raise DecodeError(f"schema id {schema_id}: registry error {exc.error_message}") from None
        except Exception as exc:  # requests/httpx errors: the registry is unreachable
            raise BrokerUnavailableError(
                f"schema registry: schema {schema_id}: {mask_dsn(str(exc))}"
            ) from None
        if registered.schema_type not in (None, "AVRO"):
            raise DecodeError(f"schema id {schema_id} is {registered.schema_type}, not Avro")
        schema = json.loads(registered.schema_str or "null")
        # parse_schema's hint marks the result as parsed: without it every read re-parses (2x slower).
        parsed = parse_schema(schema)  # first: it validates the names the compiled reader embeds
        found = WriterSchema(schema_id, schema, parsed, compile_record_reader(schema))
        with self._lock:
            self._schemas[schema_id] = found
            self._by_header[bytes([MAGIC]) + schema_id.to_bytes(4, "big")] = found
        return found

    def known(self, header: bytes) -> WriterSchema | None:
        """The writer schema of a wire-format header (magic byte and schema id) already fetched,
        or None: no registry call."""
        return self._by_header.get(header)

    def decode(self, data: bytes) -> tuple[WriterSchema, Any]:
        """Return the writer schema and the decoded datum; DecodeError for poison bytes."""
        # The 5-byte header (magic byte, schema id) of a known schema finds it in one lookup.
        writer = self._by_header.get(data[:5])
        if writer is not None and writer.reader is not None:
            return writer, self._read_compiled(writer, writer.reader, data)
        try:
            schema_id, body = split_header(data)
        except ValueError as exc:
            raise DecodeError(str(exc)) from None
        writer = self.writer_schema(schema_id)
        if writer.reader is not None:
            return writer, self._read_compiled(writer, writer.reader, data)
        buf = BytesIO(body)
        try:
            datum = schemaless_reader(buf, writer.parsed, None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on bad bytes
            raise DecodeError(f"the Avro body does not fit schema id {schema_id}: {exc!r}") from None
        if buf.tell() != len(body):
            raise DecodeError(
                f"{len(body) - buf.tell()} trailing byte(s) after the Avro body of schema {schema_id}"
            )
        return writer, datum

    @staticmethod
    def _read_compiled(writer: WriterSchema, reader: RecordReader, data: bytes) -> dict[str, Any]:
        try:
            record, end = reader(data, 5)
        except Exception as exc:  # IndexError, EOFError, UnicodeDecodeError... on bad bytes
            raise DecodeError(f"the Avro body does not fit schema id {writer.schema_id}: {exc!r}") from None
        if end != len(data):
            raise DecodeError(
                f"{len(data) - end} trailing byte(s) after the Avro body of schema {writer.schema_id}"
            )
        return record
