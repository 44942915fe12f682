"""Turn pgoutput row messages into change events for the configured streams.

One :class:`RelationMapper` per relation id: it knows the stream, which columns the stream maps,
and a psycopg loader per column (looked up by type OID in the shared TypeMap). A Relation
message that drops or retypes a mapped column stops the connector before the next event of that
table is produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc.errors import SchemaError
from cdc.pg.pgoutput import UNCHANGED_TOAST, Relation, TupleData
from cdc.pg.types import TypeMap
from connectors.sources.postgres_wal.catalog import Table


@dataclass(slots=True)
class RelationMapper:
    stream: str
    table: Table  # the configured (parent) table
    relation: Relation
    positions: list[tuple[int, str, Callable[[bytes], Any]]]  # (index in tuple, column, loader)
    key_columns: tuple[str, ...]
    #: the events' ``source`` metadata, shared by every event of this relation (read-only)
    meta: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.meta = {"table": self.qualified}

    @property
    def qualified(self) -> str:
        return f"{self.relation.namespace}.{self.relation.name}"

    def values(self, data: TupleData) -> dict[str, Any]:
        """Load the mapped columns; unchanged TOAST values stay the UNCHANGED_TOAST sentinel."""
        out: dict[str, Any] = {}
        for i, name, load in self.positions:
            raw = data[i]
            if raw is None or raw is UNCHANGED_TOAST:
                out[name] = raw
            else:
                assert isinstance(raw, bytes)
                out[name] = load(raw)
        return out

    def unchanged(self, values: dict[str, Any]) -> list[str]:
        return [name for name, value in values.items() if value is UNCHANGED_TOAST]


def build_mapper(
    stream: str,
    table: Table,
    relation: Relation,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    types: TypeMap,
) -> RelationMapper:
    """Check the relation against the start-up catalog and compile the column loaders."""
    by_name = {c.name: (i, c) for i, c in enumerate(relation.columns)}
    positions = []
    for name in columns:
        if name not in by_name:
            raise SchemaError(
                f"stream {stream!r}: column {name!r} was dropped from {relation.namespace}.{relation.name} "
                "(or renamed); the stream's schema maps it",
                hint="map the stream to the new shape (and register the evolved schema), then restart",
            )
        index, col = by_name[name]
        expected = table.columns[name].type_oid if name in table.columns else col.type_oid
        if col.type_oid != expected:
            raise SchemaError(
                f"stream {stream!r}: column {name!r} of {relation.namespace}.{relation.name} changed type "
                f"(OID {expected} -> {col.type_oid})",
                hint="check the stream's schema against the new type, then restart",
            )
        if col.type_oid not in types:
            raise SchemaError(
                f"stream {stream!r}: column {name!r} has a type unknown at start-up (OID {col.type_oid})"
            )
        positions.append((index, name, types.loader(col.type_oid, interval_as_tuple=True)))
    return RelationMapper(stream, table, relation, positions, key)
