"""``cdc sink``: run, validate and inspect a database sink (Kafka topics -> database tables).

Wired into the main CLI with ``app.add_typer(sink_app, name="sink")``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

sink_app = typer.Typer(
    help=(
        "The database sink: consume keyed Avro topics and write them into PostgreSQL, MySQL/MariaDB "
        "or SQLite tables (insert, upsert or update; deletes on tombstones). Consumed positions "
        "commit in the target database with the rows, so restarts and rebalances neither lose nor "
        "double a change."
    ),
    no_args_is_help=True,
)

ConfigArg = Annotated[Path, typer.Argument(help="the sink's YAML config", show_default=False)]
LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR")]
LogFormat = Annotated[
    str | None, typer.Option("--log-format", help="json or human (default: human in a terminal, else json)")
]

log = logging.getLogger("cdc")


@sink_app.command("validate")
def validate(config: ConfigArg) -> None:
    """Check a sink config offline: YAML, keys, types; every problem at once with its dotted path."""
    from cdc.sink.loader import load_sink_config

    cfg = load_sink_config(config)
    typer.echo(
        f"{config}: valid ({len(cfg.topics)} topic(s) -> {cfg.target.url}, group {cfg.group}, "
        f"on_error {cfg.on_error.value})"
    )


@sink_app.command("run")
def run(config: ConfigArg, log_level: LogLevel = "INFO", log_format: LogFormat = None) -> None:
    """Run the sink until SIGTERM/SIGINT (then finish the current batch, leave the group, exit 0).

    Several instances with the same config split the partitions. Retriable failures (the
    database or the broker down) are retried with backoff; poison messages stop the sink
    (on_error: fail, with the error's exit code) or go to <topic>.sink-dlq (on_error: dead_letter).
    """
    from cdc import logs
    from cdc.sink.loader import load_sink_config
    from cdc.sink.runner import SinkRunner

    logs.setup(log_level, log_format)
    cfg = load_sink_config(config)
    runner = SinkRunner(cfg)
    runner.install_signal_handlers()
    log.info("starting sink %s (group %s, target %s)", cfg.name, cfg.group, cfg.target.url)
    raise typer.Exit(runner.run())


@sink_app.command("status")
def status(config: ConfigArg) -> None:
    """Show the stored offsets per partition and the lag (high watermark - next offset)."""
    from cdc.sink.loader import load_sink_config
    from cdc.sink.status import sink_status

    cfg = load_sink_config(config)
    typer.echo(
        f"sink {cfg.name}: group {cfg.group}, offsets in {cfg.target.offsets_table} at {cfg.target.url}"
    )
    for line in sink_status(cfg):
        typer.echo(f"  {line}")
