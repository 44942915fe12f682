"""Load ``.avsc`` files and derive the schemas the runtime produces with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException, UnknownType

from cdc.errors import SchemaError


def load_avsc(path: Path) -> dict[str, Any]:
    """Read and check a record schema; errors name the file and what is wrong."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"{path}: a stream schema must be an Avro record", hint='{"type": "record", ...}')
    try:
        parse_schema(schema, _write_hint=False)
    except (SchemaParseException, UnknownType, ValueError, TypeError, KeyError) as exc:
        raise SchemaError(f"{path}: invalid Avro schema: {exc}") from None
    return schema


def canonical(schema: dict[str, Any]) -> str:
    """Compact, stable JSON text of a schema (what gets registered)."""
    return json.dumps(schema, separators=(",", ":"), sort_keys=False)


def fullname(schema: dict[str, Any]) -> str:
    ns = schema.get("namespace")
    name = str(schema["name"])
    return name if "." in name or not ns else f"{ns}.{name}"


def envelope_schema(value: dict[str, Any]) -> dict[str, Any]:
    """The Debezium-compatible envelope around a value schema: before/after/source/op/ts_ms."""
    ns = value.get("namespace") or "cdc"
    return {
        "type": "record",
        "name": f"{value['name']}Envelope",
        "namespace": ns,
        "fields": [
            {"name": "before", "type": ["null", value], "default": None},
            {"name": "after", "type": ["null", fullname(value)], "default": None},
            {
                "name": "source",
                "type": {
                    "type": "record",
                    "name": "Source",
                    "namespace": "io.liberator.cdc",
                    "fields": [
                        {"name": "connector", "type": "string"},
                        {"name": "name", "type": "string"},
                        {"name": "stream", "type": "string"},
                        {"name": "ts_ms", "type": ["null", "long"], "default": None},
                        {"name": "txid", "type": ["null", "string"], "default": None},
                        {"name": "snapshot", "type": "boolean", "default": False},
                        {"name": "position", "type": "string"},
                    ],
                },
            },
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": "long"},
        ],
    }
