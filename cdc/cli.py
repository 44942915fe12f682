"""The ``cdc`` command line.

Exit codes: 0 success; 1 unexpected error; 2 bad config; 3 schema problem; 4 a row that does not
fit its schema; 5 a lost source position; 6 another instance running; 7 source disagrees with
the config; 8 delivery refused by the broker; 9 a local resource unusable (port, path); 10
credentials refused (see cdc.errors).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cdc import __version__, cli_init
from cdc.cli_migrations import migrations_app
from cdc.cli_sink import sink_app
from cdc.errors import CdcError
from cdc.masking import mask_dsn
from cdc.plugin import CheckResult, SourceConnector

if TYPE_CHECKING:
    from cdc.config.model import AppConfig

app = typer.Typer(
    name="cdc",
    help=(
        "Free data from legacy databases: capture changes from PostgreSQL, MySQL/MariaDB or any "
        "SQLAlchemy database and publish them to Kafka as keyed, Avro-schematized event streams.\n\n"
        "Typical flow: cdc init DIR (or write CONFIG by hand) -> cdc validate CONFIG -> cdc check CONFIG -> "
        "cdc schemas register CONFIG -> cdc run CONFIG. Try it without any server: cdc demo."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="Register and inspect the streams' Avro schemas in the schema registry.")
connectors_app = typer.Typer(help="List the installed connectors and describe their options.")
app.add_typer(schemas_app, name="schemas")
app.add_typer(connectors_app, name="connectors")
app.add_typer(migrations_app, name="migrations")
app.add_typer(sink_app, name="sink")
app.command("init")(cli_init.init)
schemas_app.command("diff")(cli_init.schemas_diff)

ConfigArg = Annotated[Path, typer.Argument(help="the connector's YAML config", show_default=False)]
LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR")]
LogFormat = Annotated[
    str | None, typer.Option("--log-format", help="json or human (default: human in a terminal, else json)")
]

log = logging.getLogger("cdc")


def _load(config: Path):  # type: ignore[no-untyped-def]
    from cdc.config import load_config

    return load_config(config)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a config file offline: YAML, keys, types, the connector's options, schema files.

    Every problem is listed at once with its dotted path; nothing connects anywhere.
    """
    cfg = _load(config)
    from cdc.schemas.eventify import StreamEventifier

    for stream in cfg.streams:
        StreamEventifier(cfg, stream)
    typer.echo(
        f"{config}: valid ({len(cfg.streams)} stream(s), source {cfg.source.connector}, {cfg.delivery.value})"
    )


def _echo_findings(results: list[CheckResult]) -> bool:
    """Print findings as ``[ok  ]``/``[warn]``/``[FAIL]`` lines; True when one failed."""
    failed = False
    for r in results:
        mark = "ok  " if r.ok else ("warn" if r.warning else "FAIL")
        failed |= not r.ok and not r.warning
        typer.echo(f"[{mark}] {r.what}" + (f": {r.detail}" if r.detail else ""))
    return failed


def _position_findings(cfg: AppConfig, source: SourceConnector) -> list[CheckResult]:
    """The source's verdict on the committed position, or why it could not be read."""
    from cdc.offsets import make_offset_store

    try:
        store = make_offset_store(cfg)
        try:
            offsets = store.load()
        finally:
            store.close()
    except CdcError as exc:
        return [CheckResult(False, "committed position not checked", str(exc), warning=True)]
    if not offsets:
        return [CheckResult(True, "no committed position yet: the first run starts per snapshot_mode")]
    return source.check_position(offsets)


@app.command()
def check(config: ConfigArg, log_level: LogLevel = "WARNING") -> None:
    """Preflight against the real servers: reachability, privileges, settings, schemas vs tables."""
    from cdc import logs
    from cdc.runtime.runner import prepare
    from cdc.shaping.shaper import shaping_lines

    logs.setup(log_level, "human")
    cfg = _load(config)
    prepared = prepare(cfg)
    failed = False
    try:
        failed |= _echo_findings(prepared.source.check())
        for w in prepared.warnings:
            typer.echo(f"[warn] {w}")
        for line in shaping_lines(prepared.eventifiers):
            typer.echo(f"[ok  ] {line}")
        kafka_ok = True
        if cfg.kafka is not None:
            from cdc.kafka_clients import TopicSpec, check_topics
            from cdc.runtime.outputs import topic_specs_of

            specs = []
            if cfg.output.kind == "kafka":
                specs = topic_specs_of(
                    cfg, prepared.eventifiers, event_streams=prepared.source.encodes_values
                )
            if cfg.offsets.store == "kafka":
                specs.append(TopicSpec(cfg.offsets.topic, True, 1, cfg.kafka.topics.replication_factor, {}))
            for ok, finding in check_topics(cfg.kafka, specs):
                kafka_ok &= ok
                typer.echo(f"[{'ok  ' if ok else 'FAIL'}] {finding}")
            failed |= not kafka_ok
        # offsets kept in Kafka cannot be read from a broker that does not answer (reported above)
        if cfg.offsets.store != "kafka" or kafka_ok:
            failed |= _echo_findings(_position_findings(cfg, prepared.source))
    finally:
        prepared.source.close()
    if cfg.schema_registry is not None and cfg.kafka is not None:
        from cdc.runtime.outputs import subjects_of
        from cdc.schemas.subjects import make_client, resolve_id

        client = make_client(cfg.schema_registry.url, cfg.schema_registry.config)
        auto = cfg.schema_registry.auto_register
        for _name, key_subject, value_subject in subjects_of(prepared.eventifiers):
            for item in (key_subject, value_subject):
                try:
                    typer.echo(f"[ok  ] subject {item.subject}: id {resolve_id(client, item)}")
                except CdcError as exc:
                    if "not registered" in exc.message:
                        # resolve_id says so only for a new subject or a compatible new version
                        then = "auto_register will register it" if auto else "run cdc schemas register CONFIG"
                        typer.echo(f"[warn] subject {item.subject}: not registered yet (compatible); {then}")
                        continue
                    failed = True
                    typer.echo(f"[FAIL] {exc}")
    if failed:
        raise typer.Exit(7)
    typer.echo("check passed")


@app.command()
def run(config: ConfigArg, log_level: LogLevel = "INFO", log_format: LogFormat = None) -> None:
    """Run a connector until SIGTERM/SIGINT (then flush, commit, exit 0).

    Resumes from the last committed position. Retriable failures (a database or the broker
    down) are retried with backoff; fatal ones exit with a distinct code (see cdc --help).
    """
    from cdc import logs
    from cdc.runtime.runner import Runner

    logs.setup(log_level, log_format)
    cfg = _load(config)
    runner = Runner(cfg)
    runner.install_signal_handlers()
    log.info("starting connector %s (%s, %s)", cfg.name, cfg.source.connector, cfg.delivery.value)
    raise typer.Exit(runner.run())


@app.command()
def health(
    url: Annotated[
        str | None,
        typer.Option(help="the /healthz URL to ask (default: the one the running connector announced)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 4.0,
) -> None:
    """Exit 0 when the running connector's /healthz answers 200, else 1 (a container HEALTHCHECK).

    Without --url it asks the endpoint that the connector (``cdc run`` or ``cdc sink run``, with
    runtime.http_port set) wrote to the file named by CDC_HEALTH_FILE when it began serving, so
    the check follows whatever host and port the config chose. The image sets CDC_HEALTH_FILE
    and uses this command as its HEALTHCHECK.
    """
    import os
    import urllib.error
    import urllib.request

    from cdc.runtime.metrics import HEALTH_FILE_ENV

    if url is None:
        path = os.environ.get(HEALTH_FILE_ENV)
        if not path:
            typer.echo(
                f"cdc health: give --url, or set {HEALTH_FILE_ENV} for the connector and this check", err=True
            )
            raise typer.Exit(1)
        try:
            with open(path, encoding="utf-8") as fh:
                url = fh.read().strip()
        except OSError as exc:
            typer.echo(
                f"cdc health: no endpoint announced in {path} ({exc.strerror}): the connector has not started "
                "serving yet, or its config sets no runtime.http_port",
                err=True,
            )
            raise typer.Exit(1) from None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http(s) URL of our own endpoint
            status_code = int(answer.status)
    except urllib.error.HTTPError as exc:
        status_code = exc.code
    except (OSError, ValueError) as exc:
        typer.echo(f"cdc health: {url}: {getattr(exc, 'reason', exc)}", err=True)
        raise typer.Exit(1) from None
    if status_code != 200:
        typer.echo(f"cdc health: {url} answered {status_code}", err=True)
        raise typer.Exit(1)
    typer.echo(f"healthy ({url})")


@app.command()
def status(config: ConfigArg) -> None:
    """Show the committed positions of a connector and its source lag."""
    from cdc.offsets import make_offset_store
    from cdc.runtime.sources import build_source

    cfg = _load(config)
    store = make_offset_store(cfg)
    try:
        offsets = store.load()
    finally:
        store.close()
    typer.echo(f"connector {cfg.name} ({cfg.source.connector}), offsets in {cfg.offsets.store}")
    if not offsets:
        typer.echo("  no committed position yet (a first run starts from the beginning)")
    source, _ = build_source(cfg)
    try:
        for partition, offset in sorted(offsets.items()):
            typer.echo(f"  {partition}: {json.dumps(source.show_offset(offset), default=str)}")
        for name, value in sorted(source.lag(offsets).items()):
            typer.echo(f"  lag {name}: {value:.3f}")
    finally:
        source.close()


@app.command()
def snapshot(
    config: ConfigArg,
    stream: Annotated[
        list[str] | None, typer.Option("--stream", "-s", help="a stream to snapshot (repeat; default: all)")
    ] = None,
) -> None:
    """Ask a running connector for an incremental snapshot of some streams, while it streams.

    The request travels through the source itself (a row in source.signal_table of the WAL or binlog source),
    so it is picked up in order with the changes; chunks are reconciled with watermarks, so a
    snapshot row never overwrites a newer change. Use it to add a table to a running connector.
    """
    from cdc.runtime.sources import build_source

    cfg = _load(config)
    source, _ = build_source(cfg)
    try:
        ident = source.signal("execute-snapshot", {"streams": stream or []})
    finally:
        source.close()
    typer.echo(f"snapshot requested (signal {ident}) for {', '.join(stream or ['all streams'])}")


@schemas_app.command("register")
def schemas_register(
    config: ConfigArg,
    allow_key_change: Annotated[
        bool, typer.Option("--allow-key-change", help="permit a changed key schema (re-keys the topic)")
    ] = False,
) -> None:
    """Register every stream's key and value schema (subjects <topic>-key / <topic>-value).

    Key subjects get FULL_TRANSITIVE compatibility; a changed key schema is refused unless
    --allow-key-change is given. Value subjects follow the registry's rule (BACKWARD here).
    """
    from cdc.runtime.outputs import subjects_of
    from cdc.schemas.eventify import StreamEventifier
    from cdc.schemas.subjects import make_client, register

    cfg = _load(config)
    if cfg.schema_registry is None or cfg.kafka is None:
        raise CdcError("this config has no schema_registry/kafka block; nothing to register")
    eventifiers = {s.name: StreamEventifier(cfg, s) for s in cfg.streams}
    client = make_client(cfg.schema_registry.url, cfg.schema_registry.config)
    allow = allow_key_change or cfg.schema_registry.allow_key_schema_change
    for _name, key_subject, value_subject in subjects_of(eventifiers):
        for item in (key_subject, value_subject):
            typer.echo(f"{item.subject}: id {register(client, item, allow_key_change=allow)}")


@schemas_app.command("show")
def schemas_show(config: ConfigArg) -> None:
    """Print the key and value schemas each stream produces with (envelope streams wrapped)."""
    from cdc.schemas.eventify import StreamEventifier

    cfg = _load(config)
    for s in cfg.streams:
        ev = StreamEventifier(cfg, s)
        shown = {"stream": s.name, "topic": ev.topic, "key": ev.key_schema, "value": ev.value_schema}
        if ev.shaper is not None:
            shown["shaping"] = ev.shaper.summary()
        typer.echo(json.dumps(shown, indent=2))


@connectors_app.command("list")
def connectors_list() -> None:
    """List installed source connectors (entry points in group cdc.sources)."""
    from cdc.registry import SINK_GROUP, SOURCE_GROUP, available

    for group, label in ((SOURCE_GROUP, "source"), (SINK_GROUP, "sink")):
        for name, ep in sorted(available(group).items()):
            typer.echo(f"{label:6} {name:12} {ep.value}")


@connectors_app.command("describe")
def connectors_describe(
    name: Annotated[str, typer.Argument(help="connector name or package.module:Class")],
) -> None:
    """Show a connector's options (source: block and each stream's capture: block) with descriptions."""
    from cdc.registry import load_source_class

    cls = load_source_class(name)
    typer.echo(f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
    for title, model in (("source:", cls.config_model), ("streams[].capture:", cls.stream_model)):
        typer.echo(f"\n{title}")
        for field, info in model.model_fields.items():
            default = "required" if info.is_required() else f"default {info.default!r}"
            typer.echo(f"  {field:22} {info.description or ''} ({default})")


@app.command()
def tail(
    path: Annotated[
        Path,
        typer.Argument(
            help="a connector's YAML config (its Kafka topics), or a file output's directory or .avro file"
        ),
    ],
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="show the last N events per file or topic")
    ] = 20,
    stream: Annotated[
        list[str] | None,
        typer.Option("--stream", "-s", help="config: a stream to show (repeat; default all)"),
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", help="config: wait up to this many seconds for N events per topic")
    ] = 0.0,
) -> None:
    """Decode and print the latest events: of a connector's Kafka topics (given its config), or
    written by the file output (the embedded demo's Kafka stand-in)."""
    if path.suffix in (".yaml", ".yml"):
        from cdc.tail_kafka import tail_topics

        tail_topics(_load(path), list(stream or []), limit, wait)
        return
    from cdc.tail import print_tail

    print_tail(path, limit)


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="where the demo database and output go")] = Path(
        ".run/demo"
    ),
    seconds: Annotated[
        float, typer.Option("--seconds", help="how long to capture the trickle of changes")
    ] = 15.0,
    log_level: LogLevel = "INFO",
) -> None:
    """Run the embedded demo: no server needed.

    Creates a small 'legacy' SQLite database (customers and orders, a few hundred rows),
    keeps changing it, captures it with the polling connector through the same eventify,
    offset and acknowledgement path as production, writes Avro files, and shows them decoded.
    """
    from cdc import logs
    from cdc.demo import run_demo

    logs.setup(log_level, "human")
    run_demo(directory, seconds)


def main() -> None:
    """Console entry point: translate service errors into messages and exit codes."""
    try:
        app()
    except CdcError as exc:
        typer.echo(f"error: {mask_dsn(str(exc))}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
