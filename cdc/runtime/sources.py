"""Building a connector's source and its streams' eventifiers from the configuration.

A module of its own, importing no Kafka client: the capture process builds its source here,
and importing the runner there would load the producer, the registry client and everything the
connector process needs (about 20 MB of a second interpreter that never uses them).
"""

from __future__ import annotations

from cdc.config.model import AppConfig
from cdc.plugin import SourceConnector, StreamSpec
from cdc.registry import load_source_class
from cdc.schemas.eventify import StreamEventifier


def build_source(app: AppConfig) -> tuple[SourceConnector, dict[str, StreamEventifier]]:
    """Instantiate the source and the stream eventifiers (no I/O beyond reading .avsc files)."""
    cls = load_source_class(app.source.connector)
    source_cfg = cls.config_model.model_validate(app.source.options())
    eventifiers = {s.name: StreamEventifier(app, s) for s in app.streams}
    specs = [
        StreamSpec(
            name=s.name,
            key_columns=eventifiers[s.name].key_columns,
            columns=eventifiers[s.name].columns,
            capture=cls.stream_model.model_validate(s.capture).model_dump(),
            where=s.where,
            field_map=dict(s.fields),
        )
        for s in app.streams
    ]
    source = cls(source_cfg, specs)
    source.transaction_metadata_wanted = app.transactions is not None
    return source, eventifiers
