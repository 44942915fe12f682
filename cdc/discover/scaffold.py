"""``cdc init``: a starter connector (config, one key and one value ``.avsc`` per stream) from a
live database, and the list of what a person must decide.

Column descriptions come from the chosen connector's own ``describe()`` (what ``cdc check`` and
the start-up check see), and every scaffolded field is checked with the runtime's
:func:`~cdc.schemas.sourcecheck.check_fields` before anything is written: a field that check
refuses is left out and reported, so what ``init`` writes passes ``cdc check`` as written.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from psycopg import sql

from cdc.discover import catalog
from cdc.discover.avro import Mapped, avro_name, map_column, record_name
from cdc.errors import ConfigError, LocalResourceError, SchemaError, SourceConfigError
from cdc.masking import mask_dsn
from cdc.plugin import ColumnInfo, StreamSpec
from cdc.registry import load_source_class
from cdc.schemas.convert import compile_record
from cdc.schemas.sourcecheck import check_fields
from cdc.sql import engines

#: which databases each connector's scaffolding supports
DIALECTS = {
    "postgres_wal": ("postgresql",),
    "polling": ("postgresql", "mysql", "mariadb"),
    "mysql_binlog": ("mysql", "mariadb"),
    "audit": ("postgresql", "mysql", "mariadb"),
}
_TS_NAME = re.compile(r"(last_?update|updated|modified|changed)", re.I)


@dataclass(frozen=True)
class InitRequest:
    """What ``cdc init`` was asked for."""

    directory: Path
    connector: str
    url: str  # the URL inspected
    url_value: str  # what the config's source.url says (a ${VAR} or the URL itself)
    name: str
    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    kafka_bootstrap: str = "${KAFKA_BOOTSTRAP:-localhost:9092}"
    registry_url: str = "${SCHEMA_REGISTRY_URL:-http://localhost:8081}"


@dataclass
class Scaffold:
    """The files to write (path relative to the directory -> text) and the report."""

    files: dict[str, str] = field(default_factory=dict)
    streams: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)  # a person must look at these
    notes: list[str] = field(default_factory=list)  # informational


def identifier(name: str) -> str:
    """A PostgreSQL identifier (slot, publication) from a connector name."""
    ident = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
    return ident if re.match(r"^[a-z_]", ident) else f"c_{ident}"[:63]


def _discover(req: InitRequest) -> tuple[str, list[catalog.Table]]:
    allowed = DIALECTS.get(req.connector)
    if allowed is None:
        raise ConfigError(
            [f"--connector: cdc init scaffolds {', '.join(DIALECTS)} or outbox, not {req.connector!r}"],
            source="cdc init",
        )
    engine = engines.create_engine(req.url)
    try:
        dialect = engine.dialect.name
        if dialect not in allowed:
            raise SourceConfigError(
                f"connector {req.connector} does not read {dialect} databases ({mask_dsn(req.url)})",
                hint=f"{req.connector} reads: {', '.join(allowed)}",
            )
        with engine.connect() as conn:
            find = catalog.postgres_tables if dialect == "postgresql" else catalog.mysql_tables
            return dialect, find(conn, req.schemas, req.tables, req.exclude)
    except sa.exc.SQLAlchemyError as exc:
        raise engines.translate(exc, "cdc init") from None
    finally:
        engine.dispose()


def _stream_name(t: catalog.Table, default_schema: str, taken: set[str]) -> str:
    name = t.name if t.schema == default_schema else f"{t.schema}.{t.name}"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-") or "stream"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _capture(req: InitRequest, t: catalog.Table) -> dict[str, Any]:
    cap: dict[str, Any] = {"table": t.qualified}
    if req.connector == "postgres_wal" and t.children:
        cap["children"] = "|".join(re.escape(c) for c in t.children)
    if req.connector == "polling":
        cap["mode"] = "bulk"  # refined from the described columns (_polling_mode)
    return cap


def _polling_mode(t: catalog.Table, infos: dict[str, ColumnInfo], cap: dict[str, Any]) -> str:
    """Pick the safest mode the table supports; say what it cannot see."""
    stamps = [
        c for c in t.columns
        if infos[c].python_type is dt.datetime and not infos[c].nullable and _TS_NAME.search(c)
    ]  # fmt: skip
    counter = t.key[0] if len(t.key) == 1 and infos[t.key[0]].python_type is int else None
    if stamps and counter:
        cap.update(mode="timestamp+incrementing", timestamp_column=stamps[0], incrementing_column=counter)
        return f"polling mode timestamp+incrementing on {stamps[0]}, {counter}: hard deletes are not seen"
    if stamps:
        cap.update(mode="timestamp", timestamp_column=stamps[0])
        return f"polling mode timestamp on {stamps[0]}: hard deletes are not seen"
    if counter:
        cap.update(mode="incrementing", incrementing_column=counter)
        return f"polling mode incrementing on {counter}: sees inserts only (no updates, no deletes)"
    return "polling mode bulk (no last-modified column): every poll reads the whole table"


def describe_streams(
    connector: str, options: dict[str, Any], specs: list[StreamSpec]
) -> dict[str, dict[str, ColumnInfo]]:
    """The columns each stream's table has, as the connector itself describes them (what the
    start-up check sees). ``options`` is the source block without ``connector``."""
    cls = load_source_class(connector)
    cfg = cls.config_model.model_validate(options)
    source = cls(
        cfg, [StreamSpec(s.name, s.key_columns, s.columns, cls.stream_model.model_validate(s.capture).model_dump()) for s in specs]
    )  # fmt: skip
    try:
        return source.describe()
    finally:
        source.close()


def _source_block(req: InitRequest, out: Scaffold) -> dict[str, Any]:
    source: dict[str, Any] = {"connector": req.connector, "url": req.url_value}
    if req.connector == "postgres_wal":
        ident = identifier(req.name)
        source.update(slot=ident, publication=ident)
    if req.connector == "mysql_binlog":
        server_id = 1000 + zlib.crc32(req.name.encode()) % 1_000_000
        source["server_id"] = server_id
        out.decisions.append(
            f"source.server_id {server_id}: must differ from the server's and every other replica's server_id"
        )
    return source


def _field(name: str, mapped: Mapped, nullable: bool, doc: str | None) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name, "type": ["null", mapped.avro] if nullable else mapped.avro}
    if nullable:
        f["default"] = None
    if doc:
        f["doc"] = doc
    return f


def _schemas(
    req: InitRequest, stream: str, t: catalog.Table, infos: dict[str, ColumnInfo], out: Scaffold
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], dict[str, dict[str, str]]] | None:
    """Key and value schemas, the fields: map and symbol_maps of one stream; None to skip it."""
    fields_map: dict[str, str] = {}
    symbol_maps: dict[str, dict[str, str]] = {}
    value_fields: list[dict[str, Any]] = []
    key_fields: list[dict[str, Any]] = []
    names: set[str] = set()
    for column in t.columns:
        info = infos.get(column)
        if info is None:
            continue
        pg_base, pg_category = t.pg_types.get(column, (None, None))
        mapped = map_column(t.name, info, pg_base=pg_base, pg_category=pg_category)
        out.decisions += [f"stream {stream}: {n}" for n in mapped.notes]
        if mapped.skip:
            if column in t.key:
                out.decisions.append(
                    f"stream {stream}: key column {column} has no exact Avro type; stream left out"
                )
                return None
            continue
        name = avro_name(column)
        while name in names:
            name += "_"
        names.add(name)
        if name != column:
            fields_map[name] = column
        if mapped.symbol_map:
            symbol_maps[name] = mapped.symbol_map
        doc = t.column_comments.get(column)
        one = _field(name, mapped, info.nullable and column not in t.key, doc)
        # the runtime's own start-up check, field by field: a refused field is left out
        problems, warnings = check_fields(
            stream, {"fields": [one]}, fields_map, infos, what="value", symbol_maps=symbol_maps
        )
        out.notes += warnings
        if problems:
            out.decisions += [f"{p} (left out of the contract)" for p in problems]
            if column in t.key:
                return None
            continue
        value_fields.append(one)
        if column in t.key:
            key_fields.append(_field(name, mapped, False, doc))
    key_fields.sort(key=lambda f: t.key.index(fields_map.get(f["name"], f["name"])))
    namespace = avro_name(req.name) + "." + avro_name(t.schema)
    key = {
        "type": "record",
        "name": record_name(t.name) + "Key",
        "namespace": namespace,
        "fields": key_fields,
    }
    value: dict[str, Any] = {"type": "record", "name": record_name(t.name), "namespace": namespace}
    if t.comment:
        value["doc"] = t.comment
    value["fields"] = value_fields
    for schema in (key, value):  # the converter the runtime compiles must accept it
        try:
            compile_record(
                schema,
                stream=stream,
                field_map=fields_map,
                symbol_maps=symbol_maps if schema is value else None,
            )
        except SchemaError as exc:
            out.decisions.append(f"stream {stream}: {exc.message}; stream left out")
            return None
    return key, value, fields_map, symbol_maps


def _wal_findings(stream: str, t: catalog.Table, out: Scaffold, dba: list[str]) -> None:
    if t.children:
        out.decisions.append(
            f"stream {stream}: inheritance children {', '.join(t.children)} are captured into it (children:); "
            "children created later need adding to that pattern; incremental snapshots and snapshot recovery "
            "through signal_table do not cover children"
        )
    if t.other_children:
        out.decisions.append(
            f"stream {stream}: inheritance children in other schemas ({', '.join(t.other_children)}) are not "
            "captured (children: names children of the parent's schema); capture them as streams of their own"
        )
    if t.partitions:
        out.notes.append(
            f"stream {stream}: partitioned table; partitions {', '.join(t.partitions)} publish through the root"
        )
    if t.unsafe_identity:
        dba += [
            sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL;").format(sql.Identifier(*u)).as_string(None)
            for u in t.unsafe_identity
        ]
        out.decisions.append(
            f"stream {stream}: {', '.join(f'{s}.{n}' for s, n in t.unsafe_identity)} have no primary key and REPLICA IDENTITY "
            "DEFAULT/NOTHING: once published, PostgreSQL would reject the application's UPDATE/DELETE on them "
            "(cdc check fails until fixed). Run the ALTER TABLE ... REPLICA IDENTITY FULL statements in "
            "dba.sql, give them a primary key, or make the stream insert_only: true"
        )


def scaffold(req: InitRequest) -> Scaffold:
    """Inspect the database and build (not write) the starter connector and its report."""
    out = Scaffold()
    dialect, tables = _discover(req)
    if not tables:
        raise SourceConfigError(
            f"no table matches the selection in {mask_dsn(req.url)} "
            f"(schemas {list(req.schemas) or 'default'}, tables {list(req.tables) or ['*']}, "
            f"exclude {list(req.exclude)})",
            hint="check --schema/--table/--exclude; a glob with a dot matches schema.table",
        )
    # stream names drop the schema of the first selected schema (PostgreSQL: public)
    default_schema = "public" if dialect == "postgresql" else (req.schemas or (tables[0].schema,))[0]
    source = _source_block(req, out)
    taken: set[str] = set()
    chosen: list[tuple[str, catalog.Table, dict[str, Any]]] = []
    for t in tables:
        if not t.key:
            suggestion = (
                f"its unique NOT NULL index ({', '.join(t.unique_key)})" if t.unique_key else "a primary key"
            )
            out.decisions.append(
                f"table {t.qualified} has no primary key: left out. Give it {suggestion} (the stream's key "
                "and the Kafka record key), or add a stream by hand with a key you choose"
                + (" and insert_only: true" if req.connector == "postgres_wal" else "")
            )
            continue
        chosen.append((_stream_name(t, default_schema, taken), t, _capture(req, t)))
    if not chosen:
        raise SourceConfigError(
            "no selected table has a key; nothing to scaffold", hint="; ".join(out.decisions)
        )
    specs = [StreamSpec(name, tuple(t.key), tuple(t.columns), cap) for name, t, cap in chosen]
    options = {k: v for k, v in source.items() if k != "connector"}
    described = describe_streams(req.connector, {**options, "url": req.url}, specs)
    streams: list[dict[str, Any]] = []
    dba: list[str] = []
    for name, t, cap in chosen:
        infos = described[name]
        if req.connector == "polling":
            said = f"stream {name}: {_polling_mode(t, infos, cap)}"
            (out.notes if cap["mode"].startswith("timestamp") else out.decisions).append(said)
        built = _schemas(req, name, t, infos, out)
        if built is None:
            continue
        key, value, fields_map, symbol_maps = built
        if req.connector == "postgres_wal":
            _wal_findings(name, t, out, dba)
        file = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        stream: dict[str, Any] = {
            "name": name,
            "key_schema": f"schemas/{file}-key.avsc",
            "value_schema": f"schemas/{file}-value.avsc",
        }
        if fields_map:
            stream["fields"] = fields_map
        if symbol_maps:
            stream["symbol_maps"] = symbol_maps
        stream["capture"] = cap
        streams.append(stream)
        out.streams.append(name)
        out.files[stream["key_schema"]] = json.dumps(key, indent=2) + "\n"
        out.files[stream["value_schema"]] = json.dumps(value, indent=2) + "\n"
    if req.connector == "audit":
        out.decisions.append(
            "audit triggers: run cdc migrations audit apply CONFIG before cdc check and cdc run"
        )
    finish(req, source, streams, out)
    if dba:
        out.files["dba.sql"] = (
            "-- Statements cdc init recommends; review them, then run them before cdc check.\n"
            + "\n".join(dba)
            + "\n"
        )
    return out


def finish(req: InitRequest, source: dict[str, Any], streams: list[dict[str, Any]], out: Scaffold) -> None:
    """Add connector.yaml (with the decisions as its header) to the scaffold."""
    config = {
        "name": req.name,
        "source": source,
        "streams": streams,
        "kafka": {"bootstrap_servers": req.kafka_bootstrap, "topic_prefix": req.name},
        "schema_registry": {"url": req.registry_url},
        "offsets": {"store": "kafka", "topic": f"{req.name}.offsets"},
    }
    header = [
        f"# Written by cdc init ({req.connector}) from {mask_dsn(req.url)}.",
        "# A starting point: review the streams, the contracts in schemas/ and these decisions:",
        *(f"#  - {d}" for d in out.decisions or ["(none)"]),
    ]
    out.files["connector.yaml"] = (
        "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, width=110)
    )


def write(directory: Path, files: dict[str, str], *, force: bool) -> list[Path]:
    """Write the files under ``directory``; refuses to replace any existing file without ``force``."""
    targets = {directory / rel: text for rel, text in files.items()}
    existing = sorted(str(p) for p in targets if p.exists())
    if existing and not force:
        raise LocalResourceError(
            f"cdc init would overwrite {len(existing)} existing file(s): {', '.join(existing)}",
            hint="choose another directory, or pass --force to replace them",
        )
    try:
        for path, text in targets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LocalResourceError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return list(targets)


__all__ = ["DIALECTS", "InitRequest", "Scaffold", "scaffold", "write"]
