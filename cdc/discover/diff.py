"""``cdc schemas diff``: each stream's contract against its live table, and whether the registry
would accept the evolved contract (the current one plus the added columns as optional fields).

The verdict on each field is the runtime's own start-up check
(:func:`~cdc.schemas.sourcecheck.check_fields`), so a field reported as fitting is one ``cdc run``
accepts, and a field reported as broken is one it refuses.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from cdc.config.model import AppConfig, EventFormat, StreamConfig
from cdc.discover.avro import avro_name, map_column
from cdc.discover.scaffold import describe_streams
from cdc.plugin import ColumnInfo, StreamSpec
from cdc.registry import load_source_class
from cdc.schemas.avsc import envelope_schema, load_avsc
from cdc.schemas.sourcecheck import check_fields
from cdc.schemas.subjects import accepts, make_client


@dataclass
class StreamDiff:
    """The differences of one stream; ``evolved`` is the proposed value schema (None: unchanged)."""

    stream: str
    added: list[str] = field(default_factory=list)  # "+ ..." lines: columns the contract lacks
    broken: list[str] = field(default_factory=list)  # fields the runtime would refuse
    warnings: list[str] = field(default_factory=list)  # nullability and other start-up warnings
    evolved: dict[str, Any] | None = None
    registry: str | None = None  # what the registry says of the evolved value schema
    registry_ok: bool = True

    @property
    def clean(self) -> bool:
        return not (self.added or self.broken or self.warnings) and self.registry_ok


def _evolve(
    sc: StreamConfig, row: dict[str, Any], columns: dict[str, ColumnInfo], table: str, diff: StreamDiff
) -> None:
    mapped_columns = {sc.fields.get(f["name"], f["name"]) for f in row["fields"]}
    names = {f["name"] for f in row["fields"]}
    new_fields = []
    for column, info in columns.items():
        if column in mapped_columns:
            continue
        mapped = map_column(table, info)
        if mapped.skip:
            diff.added.append(f"column {column} ({info.type_name}): {'; '.join(mapped.notes)}")
            continue
        name = avro_name(column)
        note = "" if name == column else f" (add fields: {{{name}: {column}}})"
        if name in names:
            diff.added.append(
                f"column {column} ({info.type_name}): field name {name} is taken; map it by hand"
            )
            continue
        names.add(name)
        proposal = {"name": name, "type": ["null", mapped.avro], "default": None}
        new_fields.append(proposal)
        extra = f"; {'; '.join(mapped.notes)}" if mapped.notes else ""
        diff.added.append(
            f"column {column} ({info.type_name}) is not in the contract: proposed optional field "
            f"{name} {json.dumps(proposal['type'])} default null{note}{extra}"
        )
    if new_fields:
        evolved = copy.deepcopy(row)
        evolved["fields"] = [*evolved["fields"], *new_fields]
        diff.evolved = evolved


# (contract kind, what the column maps to now): the runtime accepts the contract, but values of
# the retyped column may not fit it (row errors later, not at start-up)
_NARROWER = {("int", "long"), ("int", "decimal"), ("long", "decimal"), ("float", "double")}


def _kind(avro: Any) -> str:
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        return _kind(branches[0]) if len(branches) == 1 else "union"
    if isinstance(avro, dict):
        return str(avro.get("logicalType") or avro.get("type"))
    return str(avro)


def _existing(
    sc: StreamConfig, row: dict[str, Any], columns: dict[str, ColumnInfo], table: str, diff: StreamDiff
) -> None:
    """Dropped columns the check tolerates (a field with a default) and retyped, wider columns."""
    for f in row["fields"]:
        column = sc.fields.get(f["name"], f["name"])
        info = columns.get(column)
        if info is None:
            if "default" in f:
                diff.warnings.append(
                    f"field {f['name']}: source column {column!r} was dropped; events carry the field's default"
                )
            continue
        mapped = map_column(table, info)
        now = _kind(mapped.avro)
        if not mapped.guessed and (_kind(f["type"]), now) in _NARROWER:
            diff.warnings.append(
                f"field {f['name']}: column {column!r} is now {info.type_name} (maps to {now}); values beyond "
                f"the contract's {_kind(f['type'])} would be row errors: evolve the field"
            )


def _registry(app: AppConfig, sc: StreamConfig, row: dict[str, Any], diff: StreamDiff, client: Any) -> None:
    subject = f"{app.topic_of(sc)}-value"
    schema = envelope_schema(row) if sc.format is EventFormat.ENVELOPE else row
    what = "the evolved schema" if diff.evolved is not None else "the contract"
    verdict = accepts(client, subject, schema)
    diff.registry_ok = verdict is not False
    if verdict is None:
        diff.registry = f"subject {subject} is not registered yet (any schema is accepted)"
    else:
        diff.registry = (
            f"subject {subject} {'accepts' if verdict else 'REFUSES'} {what} under its compatibility rule"
        )


def diff_config(app: AppConfig) -> list[StreamDiff]:
    """Compare every stream of ``app`` with its live table (and the registry, when configured)."""
    cls = load_source_class(app.source.connector)
    if cls.encodes_values:
        return [
            StreamDiff(s.name, warnings=["the source encodes values itself; no table to compare"])
            for s in app.streams
        ]
    specs = [StreamSpec(s.name, (), (), s.capture) for s in app.streams]
    described = describe_streams(app.source.connector, app.source.options(), specs)
    client = None
    if app.schema_registry is not None:
        client = make_client(app.schema_registry.url, app.schema_registry.config)
    out = []
    for sc in app.streams:
        diff = StreamDiff(sc.name)
        key = load_avsc(app.resolve(sc.key_schema))
        row = load_avsc(app.resolve(sc.value_schema))
        columns = described[sc.name]
        for what, schema in (("key", key), ("value", row)):
            problems, warnings = check_fields(
                sc.name, schema, sc.fields, columns, what=what, symbol_maps=sc.symbol_maps
            )
            diff.broken += [p for p in problems if p not in diff.broken]
            diff.warnings += [w for w in warnings if w not in diff.warnings]
        table = str(sc.capture.get("table") or sc.name)
        _existing(sc, row, columns, table, diff)
        _evolve(sc, row, columns, table, diff)
        if client is not None:
            _registry(app, sc, diff.evolved or row, diff, client)
        out.append(diff)
    return out
