"""``cdc init`` (scaffold a connector from a live database) and ``cdc schemas diff`` (a config's
contracts against the live tables), registered on the main app by :mod:`cdc.cli`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cdc.errors import ConfigError

Globs = Annotated[list[str] | None, typer.Option(show_default=False)]


def init(
    directory: Annotated[Path, typer.Argument(help="where connector.yaml and schemas/ are written")],
    connector: Annotated[
        str, typer.Option("--connector", "-c", help="postgres_wal, polling, mysql_binlog, audit or outbox")
    ],
    url: Annotated[
        str | None, typer.Option("--url", help="the database to inspect (written into the config as is)")
    ] = None,
    url_env: Annotated[
        str | None,
        typer.Option(
            "--url-env", help="read the URL from this variable; the config says ${VAR} (no secret on disk)"
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="connector name (default: the directory's name)")
    ] = None,
    schema: Annotated[
        list[str] | None,
        typer.Option(
            "--schema", "-s", help="schema/database to look in (repeat; default public / the URL's)"
        ),
    ] = None,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="glob of tables (repeat; schema.table globs too)"),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", "-x", help="glob of tables to leave out")
    ] = None,
    kafka_bootstrap: Annotated[
        str, typer.Option("--kafka-bootstrap", help="kafka.bootstrap_servers as written")
    ] = "${KAFKA_BOOTSTRAP:-localhost:9092}",
    registry_url: Annotated[
        str, typer.Option("--registry-url", help="schema_registry.url as written")
    ] = "${SCHEMA_REGISTRY_URL:-http://localhost:8081}",
    aggregate_type: Annotated[
        list[str] | None,
        typer.Option(
            "--aggregate-type",
            help="outbox: an aggregate type to relay (repeat; default: those in the table)",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace files that already exist")] = False,
) -> None:
    """Inspect a live database and write a starter connector: connector.yaml plus one key and one
    value .avsc per table, typed by the rules the runtime checks (cdc check passes on it).

    Prints what needs a person's decision: tables without a primary key, enum labels renamed to
    Avro symbols, columns mapped to strings, unsigned BIGINT, inheritance children, tables whose
    REPLICA IDENTITY would break the application's UPDATE/DELETE (with the ALTER in dba.sql).
    """
    from cdc.discover.scaffold import InitRequest, identifier, scaffold, write

    if (url is None) == (url_env is None):
        raise ConfigError(["give exactly one of --url URL or --url-env VARIABLE"], source="cdc init")
    if url_env is not None:
        url = os.environ.get(url_env)
        if not url:
            raise ConfigError([f"--url-env: environment variable {url_env} is not set"], source="cdc init")
    assert url is not None
    conn_name = name or identifier(directory.resolve().name).replace("_", "-")
    req = InitRequest(
        directory=directory, connector=connector, url=url,
        url_value=f"${{{url_env}}}" if url_env else url, name=conn_name,
        schemas=tuple(schema or ()), tables=tuple(table or ()), exclude=tuple(exclude or ()),
        kafka_bootstrap=kafka_bootstrap, registry_url=registry_url,
    )  # fmt: skip
    if connector == "outbox":
        from cdc.discover.outbox import scaffold_outbox

        result = scaffold_outbox(req, tuple(aggregate_type or ()), *(table or [])[:1])
    else:
        result = scaffold(req)
    written = write(directory, result.files, force=force)
    typer.echo(f"wrote {len(written)} file(s) under {directory}: {len(result.streams)} stream(s)")
    typer.echo(f"  {', '.join(result.streams)}")
    for note in result.notes:
        typer.echo(f"[note] {note}")
    for decision in result.decisions:
        typer.echo(f"[decide] {decision}")
    if "dba.sql" in result.files:
        typer.echo(f"[decide] review and run {directory / 'dba.sql'} before cdc check")
    typer.echo(f"next: cdc check {directory / 'connector.yaml'}")


def schemas_diff(
    config: Annotated[Path, typer.Argument(help="the connector's YAML config", show_default=False)],
    write: Annotated[
        bool, typer.Option("--write", help="write each evolved contract next to it as <name>.proposed.avsc")
    ] = False,
) -> None:
    """Compare each stream's contract with its live table: columns added (proposed as optional
    fields with defaults), dropped or retyped, nullability; and whether the registry would accept
    the evolved value schema under the subject's compatibility rule.

    Exits 3 when a contract no longer fits its table (cdc run would refuse it) or the registry
    would refuse the evolved schema; added columns alone are not an error (the contract is explicit).
    """
    import json

    from cdc.config import load_config
    from cdc.discover.diff import diff_config
    from cdc.errors import SchemaError

    app = load_config(config)
    diffs = diff_config(app)
    by_name = {s.name: s for s in app.streams}
    for d in diffs:
        typer.echo(f"stream {d.stream}: {'no differences' if d.clean else 'differs'}")
        for line in d.added:
            typer.echo(f"  + {line}")
        for line in d.broken:
            typer.echo(f"  ! {line}")
        for line in d.warnings:
            typer.echo(f"  ~ {line}")
        if d.registry:
            typer.echo(f"  registry: {d.registry}")
        if write and d.evolved is not None:
            current = app.resolve(by_name[d.stream].value_schema)
            proposed = current.with_name(current.name.removesuffix(".avsc") + ".proposed.avsc")
            proposed.write_text(json.dumps(d.evolved, indent=2) + "\n", encoding="utf-8")
            typer.echo(
                f"  wrote {proposed} (review it, then replace {current.name} and cdc schemas register)"
            )
    bad = [d.stream for d in diffs if d.broken or not d.registry_ok]
    if bad:
        raise SchemaError(
            f"streams {bad}: the contract no longer fits the table or the registry would refuse the evolution",
            hint="see the '!' lines and the registry verdicts above",
        )
